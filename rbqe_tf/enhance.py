"""``python -m rbqe_tf.enhance IMAGE_OR_DIR... --out DIR``: enhance images with early exit.

Prints one line per image (exit, scores, milliseconds); a bad file gets one error
line and the rest still run; exit status 1 if any image failed, 2 on bad usage.
``--demo`` instead compresses the CC0 photos shipped in the package at every level of
``--codec`` and prints a before/after table (rbqe_tf/demo.py).
"""
import os

from absl import app, flags

from rbqe_tf.calibration import resolve_threshold
from rbqe_tf.cli import fail, import_tensorflow_quietly, parse_flags

import_tensorflow_quietly()

from rbqe_tf.batch import enhance_files, expand_inputs  # noqa: E402
from rbqe_tf.enhancer import DEFAULT_CACHE_MB, DEFAULT_OVERLAP, DEFAULT_TILE, Enhancer  # noqa: E402
from rbqe_tf.image_io import quiet_opencv  # noqa: E402
from rbqe_tf.model import WeightsError, default_weights, load_model  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder for the enhanced PNGs.")
flags.DEFINE_string("weights", None, "Model file (.keras) written by rbqe_tf.train "
                    "(default: the model shipped for --codec).")
flags.DEFINE_enum("codec", "jpeg", ["jpeg", "hevc"],
                  "Codec family: sets the score's block size and the default threshold.")
flags.DEFINE_float("threshold", None, "Quality-score threshold (default: calibrated beside the weights, "
                   "else the paper's for --codec).")
flags.DEFINE_integer("exit", None, "Force this exit (1..5); no early exit.")
flags.DEFINE_bool("overwrite", False, "Replace existing output files.")
flags.DEFINE_bool("demo", False, "Compress the photos shipped in the package at every level "
                  "of --codec, enhance them and print PSNR before/after (no inputs needed).")
flags.DEFINE_integer("tile", DEFAULT_TILE, "Tile side in pixels (a multiple of 32): larger "
                     "images are enhanced in overlapping tiles to bound memory; an image of "
                     "at most tile×tile pixels runs in one piece.")
flags.DEFINE_integer("overlap", DEFAULT_OVERLAP, "Tile overlap margin in pixels (a multiple of 8); "
                     "neighbouring tiles overlap by twice this.")
flags.DEFINE_float("cache_mb", DEFAULT_CACHE_MB, "Memory for the features tiles keep between "
                   "exits; tiles beyond it are re-run from the first stage (slower, same result).")


def main(argv):
    try:
        quiet_opencv()
    except ImportError as e:
        return fail(str(e))
    inputs = expand_inputs(argv[1:])
    if FLAGS.demo and inputs:
        return fail("--demo takes no input images")
    if not inputs and not FLAGS.demo:
        return fail("no input images given (usage: python -m rbqe_tf.enhance IMAGE... --out DIR)")
    if not FLAGS.out:
        return fail("--out is required")
    try:
        os.makedirs(FLAGS.out, exist_ok=True)
    except OSError as e:
        return fail(f"{FLAGS.out}: cannot create output folder ({e.strerror or e})")
    if not os.access(FLAGS.out, os.W_OK):
        return fail(f"{FLAGS.out}: output folder is not writable")
    try:
        weights = FLAGS.weights or default_weights(FLAGS.codec)
        threshold, source = resolve_threshold(FLAGS.codec, weights, FLAGS.threshold)
        model = load_model(weights)
        enhancer = Enhancer(model, FLAGS.codec, threshold, FLAGS.tile, FLAGS.overlap,
                            FLAGS.cache_mb)
    except (WeightsError, ValueError) as e:
        return fail(str(e))
    if FLAGS.exit is not None and not 1 <= FLAGS.exit <= enhancer.num_exits:
        return fail(f"--exit must be in 1..{enhancer.num_exits}")
    if FLAGS.exit is None:
        print(f"{FLAGS.codec}: early exit at quality score >= {threshold:.3f} ({source})")
    if FLAGS.demo:
        return _demo(enhancer)

    failures = enhance_files(inputs, FLAGS.out, lambda image: enhancer(image, FLAGS.exit),
                             _taken, FLAGS.overwrite)
    return 1 if failures else 0


def _demo(enhancer):
    from datasets.codecs import CodecError
    from rbqe_tf import demo
    from rbqe_tf.image_io import ImageError
    print(demo.HEADER)
    try:
        rows = demo.run({FLAGS.codec: enhancer}, FLAGS.out, FLAGS.overwrite,
                        exit=FLAGS.exit)
    except (CodecError, ImageError, ValueError, OSError) as e:
        fail(str(e).splitlines()[0])
        return 1
    print("\n".join(demo.summary(rows)))
    print(f"wrote {2 * len(rows)} PNGs (compressed *_in, enhanced *_out) to {FLAGS.out}")
    return 0


def _taken(result):
    return f"exit {result.exit} (scores {' '.join(f'{s:.3f}' for s in result.scores) or '-'})"


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
