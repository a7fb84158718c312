"""``python -m export.run IMAGE_OR_DIR... --models DIR --out DIR``: early-exit enhancement
with exported TFLite models, without TensorFlow.

Needs ai-edge-litert and NumPy, OpenCV for image files, and the NumPy-only
``rbqe_tf.color`` and ``rbqe_tf.image_io`` (no TensorFlow). Prints one line per image;
a bad file gets one error line and the rest still run; exit status 1 if any image
failed, 2 on bad usage or a bad export folder. Outputs are PNGs named after the
inputs; inputs and existing files are never replaced (``--overwrite`` replaces the
latter).
"""
import argparse
import os
import sys

from export.litert_model import ModelError
from export.manifest import ManifestError
from export.runner import DECISIONS, Runner
from rbqe_tf.batch import IMAGE_EXTENSIONS, enhance_files, expand_inputs  # noqa: F401
from rbqe_tf.image_io import quiet_opencv


def _parser():
    p = argparse.ArgumentParser(prog="python -m export.run", description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="*", help="image files or folders")
    p.add_argument("--models", required=True, help="export folder (python -m export.tflite)")
    p.add_argument("--out", required=True, help="output folder for the enhanced PNGs")
    p.add_argument("--codec", choices=("jpeg", "hevc"),
                   help="codec family (score block size, default threshold); "
                        "default: the export's first codec")
    p.add_argument("--threshold", type=float, help="quality-score threshold "
                   "(default: the manifest's for the codec)")
    p.add_argument("--exit", type=int, help="force this exit; no early exit")
    p.add_argument("--decision", choices=DECISIONS, default="image",
                   help="one exit per image (default) or per tile")
    p.add_argument("--cache_mb", type=float, default=1024,
                   help="memory for tile features kept between exits with --decision image "
                        "(default 1024); tiles beyond it are re-run from stage 1")
    p.add_argument("--overlap", type=int, help="tile overlap margin in pixels, a multiple of "
                   "8 (default: tile/8)")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--xnnpack", action="store_true", default=True,
                   help="use the XNNPACK CPU delegate (default)")
    p.add_argument("--noxnnpack", dest="xnnpack", action="store_false",
                   help="plain TFLite kernels")
    p.add_argument("--delegate", help="delegate library for the stage models "
                   "(load_delegate, e.g. the GPU delegate's .so)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = _parser().parse_args(argv)
    inputs = expand_inputs(args.images)
    if not inputs:
        return fail("no input images given (usage: python -m export.run IMAGE... "
                    "--models DIR --out DIR)")
    if args.delegate is not None and not os.path.isfile(args.delegate):
        return fail(f"--delegate {args.delegate}: no such file")
    try:
        quiet_opencv()
        runner = Runner(args.models, args.codec, args.threshold, args.threads, args.xnnpack,
                        args.delegate, args.overlap, args.decision, args.cache_mb)
    except (ImportError, ManifestError, ModelError, ValueError, OSError) as e:
        return fail(str(e))
    if args.exit is not None and not 1 <= args.exit <= runner.num_exits:
        return fail(f"--exit must be in 1..{runner.num_exits}")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        return fail(f"{args.out}: cannot create output folder ({e.strerror or e})")

    failures = enhance_files(inputs, args.out, lambda image: runner(image, args.exit), _taken,
                             args.overwrite)
    return 1 if failures else 0


def _taken(result):
    if len(result.exits) == 1:
        scores = " ".join(f"{s:.3f}" for s in result.scores[0]) or "-"
        return f"exit {result.exit} (scores {scores})"
    counts = {k: result.exits.count(k) for k in sorted(set(result.exits))}
    return "exits " + ", ".join(f"{k}×{c}" for k, c in counts.items()) + " (per tile)"


if __name__ == "__main__":
    sys.exit(main())
