"""Building compressed-image datasets (ground-truth Y + decoded JPEG/HEVC) for RBQE.

``python -m datasets.build`` (the CLI and its engine :func:`datasets.build.build`). What
it stands on lives in the package, below it: ``rbqe_tf.compression`` (in-process
compress-then-decode), ``rbqe_tf.sources`` (source discovery and the Y convention) and
``rbqe_tf.pairs_manifest`` (the manifest that the training and evaluation data read).
See README.md.
"""
