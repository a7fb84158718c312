"""Building compressed-image datasets (ground-truth Y + decoded JPEG/HEVC) for RBQE.

``python -m datasets.build``, run from the repository root: the command alone. Its engine
(:func:`rbqe_tf.build_pairs.build`) and what that stands on live in the package:
``rbqe_tf.compression`` (in-process compress-then-decode), ``rbqe_tf.sources`` (source
discovery and the Y convention) and ``rbqe_tf.pairs_manifest`` (the manifest that the
training and evaluation data read). This folder is not installed with the package (the
top-level name ``datasets`` belongs to Hugging Face's library). See README.md.
"""
