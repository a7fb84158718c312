"""``python -m datasets.build``: ground-truth Y images and their decoded JPEG/HEVC versions,
with a manifest, for training and evaluation (the engine: ``rbqe_tf.build_pairs``).

    python -m datasets.build --src DIR --out DIR --codec jpeg|hevc
                             [--levels 10,20,30,40,50] [--workers N]

Resumable: running the same command again builds only what is missing. Exit status:
0 all built, 1 some sources skipped (listed at the end), 2 nothing could start (bad
arguments, no ffmpeg/libx265, OUT busy), 130 on Ctrl-C.
"""
import sys

import cv2
from absl import app, flags

from rbqe_tf.build_pairs import BuildError, build
from rbqe_tf.cli import check_range
from rbqe_tf.image_io import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP, set_pixel_budget
from rbqe_tf.levels import CODECS

FLAGS = flags.FLAGS


def _define_flags():
    """CLI flags, defined only when run as a program (absl flags are process-global)."""
    flags.DEFINE_string("src", None, "Directory of lossless source images (searched "
                        "recursively).", required=True)
    flags.DEFINE_string("out", None, "Output dataset directory (created; resumable).",
                        required=True)
    flags.DEFINE_enum("codec", None, list(CODECS), "Codec to compress with.", required=True)
    flags.DEFINE_list("levels", None, "JPEG qualities or HEVC QPs (default: the codec's "
                      "DEFAULT_LEVELS, JPEG 10..50, HEVC 22..42).")
    flags.DEFINE_integer("workers", None, "Images compressed in parallel (default: CPU count).")
    flags.DEFINE_float("max_megapixels", DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # the summary says it
    problem = check_range("--max_megapixels", FLAGS.max_megapixels, 0.01, what="> 0")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    set_pixel_budget(FLAGS.max_megapixels)
    try:
        summary = build(FLAGS.src, FLAGS.out, FLAGS.codec, FLAGS.levels, FLAGS.workers,
                        progress=True)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.format())
    return 1 if summary.skipped else 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
