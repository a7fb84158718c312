"""``python -m rbqe_tf.enhance IMAGE_OR_DIR... --out DIR``: enhance images with early exit.

Prints one line per image (exit, scores, milliseconds); a bad file gets one error
line and the rest still run; exit status 1 if any image failed, 2 on bad usage.
"""
import os
import sys

from absl import app, flags

from rbqe_tf.calibration import resolve_threshold
from rbqe_tf.cli import fail, import_tensorflow_quietly, parse_flags

import_tensorflow_quietly()

from rbqe_tf.enhancer import Enhancer  # noqa: E402
from rbqe_tf.image_io import ImageError, read_image, write_image  # noqa: E402
from rbqe_tf.model import WeightsError, default_weights, load_model  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pnm")
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


def _expand_inputs(paths):
    """Files as given; folders expand to their image files, sorted."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if n.lower().endswith(IMAGE_EXTENSIONS))
        else:
            files.append(path)
    return files


def main(argv):
    inputs = _expand_inputs(argv[1:])
    if not inputs:
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
        enhancer = Enhancer(model, FLAGS.codec, threshold)
    except (WeightsError, ValueError) as e:
        return fail(str(e))
    if FLAGS.exit is not None and not 1 <= FLAGS.exit <= enhancer.num_exits:
        return fail(f"--exit must be in 1..{enhancer.num_exits}")
    if FLAGS.exit is None:
        print(f"{FLAGS.codec}: early exit at quality score >= {threshold:.3f} ({source})")

    input_paths = {os.path.realpath(p) for p in inputs}
    written, failures = set(), 0
    for n, path in enumerate(inputs, 1):
        prefix = f"[{n}/{len(inputs)}] {path}"
        target = os.path.join(FLAGS.out, os.path.splitext(os.path.basename(path))[0] + ".png")
        try:
            if os.path.realpath(target) in input_paths:
                raise ImageError(f"{path}: output {target} would overwrite an input; "
                                 "choose another --out")
            if os.path.realpath(target) in written:
                raise ImageError(f"{path}: output {target} already written by another input "
                                 "with the same name in this run")
            result = enhancer(read_image(path), FLAGS.exit)
            write_image(target, result.image, overwrite=FLAGS.overwrite)
        except ImageError as e:
            failures += 1
            print(f"{prefix}: error: {str(e).removeprefix(path + ': ')}", file=sys.stderr)
            continue
        except Exception as e:  # one bad image must not stop the batch or dump a traceback
            failures += 1
            print(f"{prefix}: error: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        written.add(os.path.realpath(target))
        scores = " ".join(f"{s:.3f}" for s in result.scores) or "-"
        print(f"{prefix}: exit {result.exit} (scores {scores}) {result.ms:.0f} ms -> {target}")
    print(f"{len(written)} enhanced, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
