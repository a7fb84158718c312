"""Building compressed-image datasets (ground-truth Y + decoded JPEG/HEVC) for RBQE.

``datasets.build`` (CLI and :func:`datasets.build.build`), ``datasets.codecs``
(in-process compress-then-decode), ``datasets.manifest`` (:func:`read_manifest`),
``datasets.sources`` (source discovery and the Y convention). See README.md.
"""
