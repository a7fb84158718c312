"""``python -m export.benchmark --models DIR --json OUT.json``: what early exit saves,
measured on this device (ai-edge-litert + NumPy; OpenCV only for the image set).

1. Every model file: ``--warmup`` untimed then ``--runs`` timed invokes (each file in
   its own rounds, alternating with its ``--baseline`` twin) → min / median / p90 ms,
   and GMAC/s from the manifest's MACs.
2. Each exit k: the monolithic ``exit_k`` vs stages 1..k run as the runner runs them
   (``rbqe_tf.litert.stages``, features passed on), timed alternately → ratio; and the stage
   files' invokes alone, which separates their compute from passing features on.
3. The quality-score model's cost, and its ratio to a full exit-K pass.
4. A mixed-quality image set through ``rbqe_tf.litert.runner.Runner`` with the export's own
   decision (the gain decision where it carries a predictor): early exit vs always
   exit K — mean ms per image, exit histogram 0..K, MACs per image (tiles × the
   manifest's MACs; exit 0 runs no stage). ``--mixed DIR`` makes the set from lossless
   photos (JPEG QF 10–95 and uncompressed, ``rbqe_tf.harness.images.mixed_set``), ``--images DIR``
   takes files as they are, else generated scenes are used. A saving measured while
   every image took one exit says nothing about routing: it is flagged, and its target
   is not counted as met.
5. Peak resident memory; energy per image from battery counters with
   ``--energy_seconds`` (``rbqe_tf.harness.energy``), else MACs per image as the proxy.
6. With ``--op_profile exit_5``: time per op and op type (``rbqe_tf.harness.op_profile``).

``--baseline DIR`` times another export (e.g. the one before a change) in the same
rounds: each model file both folders hold alternately with its twin, and each image of
the set through both runners, interleaved, so the ratios (medians, new / baseline)
share the background load.

``--print_commands`` prints the official ``benchmark_model`` command lines for the
export instead, and ``--parse_logs DIR`` turns their logs into the same kind of JSON
(``rbqe_tf.harness.benchmark_model``). Errors are one ``error:`` line (exit status 2).
"""
import argparse
import json
import os
import shlex
import sys

from rbqe_tf.files import write_text
from rbqe_tf.harness import benchmark_model
from rbqe_tf.harness.bench import Bench, logs_result
from rbqe_tf.harness.energy import DEFAULT_ROOT
from rbqe_tf.harness.images import GENERATED_QUALITIES
from rbqe_tf.harness.report import logs_markdown, markdown
from rbqe_tf.image_io import ImageError
from rbqe_tf.litert.interpreter import ModelError
from rbqe_tf.litert.manifest import ManifestError, read_manifest


def _parser():
    p = argparse.ArgumentParser(prog="python -m export.benchmark",
                                description=__doc__.split("\n")[0])
    p.add_argument("--models", help="export folder (python -m export.tflite)")
    p.add_argument("--images", help="folder of compressed test images (default: generated "
                   f"scenes at JPEG QF {', '.join(str(q) for q in GENERATED_QUALITIES if q)} "
                   "and uncompressed)")
    p.add_argument("--mixed", help="folder of lossless images (recursive) to make the set "
                   "from: Y crops JPEG-coded at QF 10-95 and uncompressed (use training images)")
    p.add_argument("--mixed_images", type=int, default=4,
                   help="--mixed: this many source images (default 4; 11 variants each)")
    p.add_argument("--size", type=int, help="side of the generated images and --mixed crops "
                   "(default: the tile)")
    p.add_argument("--baseline", help="another export folder to time interleaved with "
                   "--models (ratios new / baseline)")
    p.add_argument("--codec", choices=("jpeg", "hevc"), help="score model and threshold "
                   "(default: the export's first codec)")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--noxnnpack", dest="xnnpack", action="store_false",
                   help="plain TFLite kernels instead of the XNNPACK CPU delegate")
    p.add_argument("--delegate", help="delegate library for the exit and stage models")
    p.add_argument("--runs", type=int, default=10, help="timed invokes per model (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed invokes first (default 2)")
    p.add_argument("--image_repeats", type=int, default=1,
                   help="runs per image and mode; the median counts (default 1)")
    p.add_argument("--energy_seconds", type=float, default=0.0,
                   help="repeat the image set for at least this long per mode while reading "
                   "battery counters (0: energy not measured)")
    p.add_argument("--power_supply", default=DEFAULT_ROOT, help="power-supply sysfs folder")
    p.add_argument("--op_profile", default="", metavar="MODEL[,MODEL]",
                   help="op-level timing of these model files, e.g. exit_5 (one-op models, "
                   "rbqe_tf.harness.op_profile; default: none)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", help="write a markdown summary here")
    p.add_argument("--print_commands", "--print-commands", action="store_true",
                   help="print benchmark_model command lines for --models and exit")
    p.add_argument("--binary", default="benchmark_model", help="benchmark_model path "
                   "(as the device sees it) for --print_commands")
    p.add_argument("--device_dir", help="folder of the models on the device "
                   "(default: --models)")
    p.add_argument("--log_dir", default="bm_logs", help="log folder for --print_commands")
    p.add_argument("--gpu", action="store_true", help="--print_commands: add GPU lines")
    p.add_argument("--profile", action="store_true",
                   help="--print_commands: --enable_op_profiling=true")
    p.add_argument("--parse_logs", "--parse-logs", metavar="DIR",
                   help="parse benchmark_model logs in DIR into --json/--markdown")
    return p


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        if args.parse_logs:
            if not os.path.isdir(args.parse_logs):
                return fail(f"--parse_logs {args.parse_logs}: no such folder")
            result = logs_result(args.parse_logs,
                                 read_manifest(args.models) if args.models else None)
            text = logs_markdown(result)
        else:
            if not args.models:
                return fail("--models is required (an export folder written by "
                            "python -m export.tflite)")
            if args.print_commands:
                manifest = read_manifest(args.models)
                cfg = benchmark_model.configs((1, args.threads) if args.threads > 1 else (1,),
                                              args.xnnpack, not args.xnnpack, args.gpu)
                print("\n".join(benchmark_model.command_lines(
                    manifest, args.device_dir or args.models, args.log_dir, args.binary, cfg,
                    args.runs, args.warmup, args.profile)))
                return 0
            if args.runs < 1 or args.warmup < 0 or args.image_repeats < 1:
                return fail("--runs and --image_repeats must be ≥ 1, --warmup ≥ 0")
            for flag in ("images", "mixed", "baseline"):
                if getattr(args, flag) and not os.path.isdir(getattr(args, flag)):
                    return fail(f"--{flag} {getattr(args, flag)}: no such folder")
            if args.images and args.mixed:
                return fail("--images and --mixed are two image sets: give one")
            if args.mixed_images < 1:
                return fail("--mixed_images must be ≥ 1")
            if args.delegate and not os.path.isfile(args.delegate):
                return fail(f"--delegate {args.delegate}: no such file")
            result = Bench(args, "python -m export.benchmark " + shlex.join(argv)).run()
            text = markdown(result)
    except (ManifestError, ModelError, ImageError, ImportError, OSError, ValueError) as e:
        return fail(str(e))
    print(text, end="")
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")
    if args.markdown:
        write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
