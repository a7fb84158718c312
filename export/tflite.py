"""``python -m export.tflite [--weights W.keras | --quantize --from-qat RUN] --out DIR
[--quantize MODE] [--tile 256]``.

Writes ``exit_k.tflite`` and ``stage_k.tflite`` (k = 1..5), ``score_<codec>.tflite`` and
``manifest.json``, after checking every file (rbqe_tf/conversion/verify.py); on a failed check it
prints the failures, writes no manifest and exits with status 1. ``--quantize`` alone
means ``int8`` = int8_full_int8_io; without it the export is fp32. See docs/export.md.
``--from-qat RUN`` exports the fake-quantized model of a ``python -m rbqe_tf.qat`` run
(its latest checkpoint, or a checkpoint prefix) in an int8 mode, with ranges learned in
training and checks against that model (docs/qat.md). Prints a line as each file starts
and ends converting; the converter's and LiteRT's own log lines only with ``--verbose``.
"""
import os
import sys
import time

from absl import app, flags, logging

from rbqe_tf.cli import (check_range, fail, import_tensorflow_quietly, native_stderr_muted,
                         parse_flags)
from rbqe_tf.levels import CODECS
from rbqe_tf.litert.manifest import INT8_MODES, MANIFEST, QUANT_MODES

INT8_ALIAS = "int8_full_int8_io"
SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")

FLAGS = flags.FLAGS
flags.DEFINE_string("weights", None, "Model file (.keras) written by rbqe_tf.train "
                    "(default: the model shipped for the first of --codecs).")
flags.DEFINE_string("out", None, "Output folder for the .tflite files and manifest.json.")
flags.DEFINE_enum("quantize", "fp32", [*QUANT_MODES, "int8"],
                  f"Quantization; 'int8' (or --quantize alone) = {INT8_ALIAS}.")
flags.DEFINE_integer("tile", 256, "Tile size (square, a multiple of 32) of every model.")
flags.DEFINE_integer("calib_tile", 0, "int8: calibrate at this smaller tile (a divisor of "
                     "--tile) and re-shape the files to --tile; calibration time grows with "
                     "the tile's area (0: calibrate at --tile).")
flags.DEFINE_string("calib", SAMPLES, "Folder of images for int8 calibration (recursive).")
flags.DEFINE_integer("calib_images", 4, "Use at most this many calibration images.")
flags.DEFINE_string("val", None, "Folder of validation images (default: --calib).")
flags.DEFINE_integer("val_images", 4, "Use at most this many validation images.")
flags.DEFINE_list("codecs", list(CODECS), "Codecs to export score models for.")
flags.DEFINE_integer("threads", 2, "Interpreter threads for the checks.")
flags.DEFINE_bool("overwrite", False, "Replace an earlier export in --out.")
flags.DEFINE_string("from_qat", None, "Export this QAT run directory (python -m rbqe_tf.qat) "
                    "or checkpoint instead of --weights; needs an int8 --quantize.")
flags.DEFINE_bool("verbose", False, "Show the TFLite converter's and LiteRT's own log lines.")


def bare_quantize(argv):
    """``--quantize`` without a value → ``--quantize=int8`` (absl needs a value);
    ``--from-qat`` → ``--from_qat``."""
    argv = ["--from_qat" + a[len("--from-qat"):] if a.split("=")[0] == "--from-qat" else a
            for a in argv]
    return ["--quantize=int8" if a == "--quantize" and (i + 1 == len(argv)
            or argv[i + 1].startswith("-")) else a for i, a in enumerate(argv)]


def qat_exporter(path, tile, codecs):
    """Exporter of a QAT run's fake-quantized graphs (thresholds: those of its --init).

    The Keras 3 model (configuration, MAC counts) is built before the QAT modules are
    imported, as tfmot sets TF_USE_LEGACY_KERAS=1 on import (docs/method.md, Toolchain
    notes)."""
    from rbqe_tf.conversion.exporter import Exporter
    from rbqe_tf.conversion.graphs import qat_graphs
    from rbqe_tf.qat_checkpoint import QATError, load_qat
    try:
        qat, cfg, saved, prefix, step = load_qat(path)
    except QATError as e:
        raise ValueError(str(e)) from None
    from rbqe_tf import qat_model
    from rbqe_tf.model import RBQE
    model = RBQE(**cfg.to_dict())
    qat_model.copy_weights(qat, model)
    init = saved["config"]["init"]
    source = {"checkpoint": os.path.abspath(prefix), "step": step, "init": init}
    return Exporter(model, tile, codecs, init if os.path.isfile(init) else None,
                    graphs=qat_graphs(qat_model.exit_models(qat, cfg),
                                      qat_model.stage_models(qat, cfg), cfg, tile),
                    source=source)


def usage_problem(argv, mode):
    """The first usage error (a one-line message), or None; needs no TensorFlow."""
    if len(argv) > 1:
        return f"unexpected arguments: {' '.join(argv[1:])}"
    if not FLAGS.out:
        return "--out is required"
    if not FLAGS.codecs or set(FLAGS.codecs) - set(CODECS):
        return (f"--codecs: expected some of {', '.join(CODECS)}, "
                f"got {','.join(FLAGS.codecs) or 'none'}")
    problem = (check_range("--tile", FLAGS.tile, 32, multiple=32,
                           what="a positive multiple of 32")
               or check_range("--calib_images", FLAGS.calib_images, 1, what="at least 1")
               or check_range("--val_images", FLAGS.val_images, 1, what="at least 1")
               or check_range("--threads", FLAGS.threads, 1, what="at least 1"))
    if problem:
        return problem
    if FLAGS.calib_tile and (FLAGS.calib_tile < 32 or FLAGS.calib_tile % 32
                             or FLAGS.tile % FLAGS.calib_tile):
        return (f"--calib_tile must be 0 or a multiple of 32 dividing --tile {FLAGS.tile}, "
                f"got {FLAGS.calib_tile}")
    if os.path.exists(FLAGS.out) and not os.path.isdir(FLAGS.out):
        return f"{FLAGS.out}: not a folder"
    if os.path.isdir(FLAGS.out) and not FLAGS.overwrite and any(
            n == MANIFEST or n.endswith(".tflite") for n in os.listdir(FLAGS.out)):
        return f"{FLAGS.out}: holds an earlier export (use --overwrite to replace it)"
    for name, folder in (("--calib", FLAGS.calib), ("--val", FLAGS.val or FLAGS.calib)):
        if not os.path.isdir(folder):
            return f"{name} {folder}: no such folder"
    if FLAGS.from_qat and (FLAGS.weights or mode not in INT8_MODES):
        return ("--from-qat takes the model from the QAT run: drop --weights and use "
                "--quantize int8 (or int8_full_fp32_io)")
    if FLAGS.from_qat and not os.path.exists(FLAGS.from_qat) \
            and not os.path.exists(FLAGS.from_qat + ".index"):
        return f"--from-qat {FLAGS.from_qat}: no such run folder or checkpoint"
    if FLAGS.weights and not os.path.isfile(FLAGS.weights):
        return f"{FLAGS.weights}: no such file"
    return None


def progress_printer(stream=None):
    """A ``log`` for the exporter: a line ending in "…" (a step starting) is replaced
    on a terminal by the next line (its result); elsewhere every line is kept."""
    def log(line):
        out = stream or sys.stdout
        tty = out.isatty()
        if tty and line.endswith("…"):
            print("\r\x1b[K" + line, end="", file=out, flush=True)
        else:
            print(("\r\x1b[K" if tty else "") + line, file=out, flush=True)
    return log


def main(argv):
    mode = INT8_ALIAS if FLAGS.quantize == "int8" else FLAGS.quantize
    problem = usage_problem(argv, mode)
    if problem:
        return fail(problem)
    log = progress_printer()
    log("loading TensorFlow…")
    # TensorFlow's oneDNN kernels keep scratch memory per convolution shape: tracing and
    # checking the 12 graphs at 512² left 4.5 GB resident with them and 0.8 GB without
    # (docs/benchmarks.md, Issue 23); the float references run about half as fast.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import_tensorflow_quietly()
    if not FLAGS.verbose:
        logging.set_verbosity(logging.ERROR)  # the converter's deprecation chatter
    from rbqe_tf.conversion.exporter import Exporter, ExportError
    from rbqe_tf.model import WeightsError, default_weights, load_model
    error = None
    with native_stderr_muted(not FLAGS.verbose):  # converter and XNNPACK log lines
        try:
            start = time.perf_counter()
            log(f"tracing the graphs at {FLAGS.tile}×{FLAGS.tile}…")
            if FLAGS.from_qat:
                exporter = qat_exporter(FLAGS.from_qat, FLAGS.tile, FLAGS.codecs)
            else:
                weights = FLAGS.weights or default_weights(FLAGS.codecs[0])
                exporter = Exporter(load_model(weights), FLAGS.tile, FLAGS.codecs, weights,
                                    calib_tile=FLAGS.calib_tile or None)
            log(f"traced {len(exporter.graphs)} graphs at {FLAGS.tile}×{FLAGS.tile} "
                f"({time.perf_counter() - start:.0f} s)")
            manifest = exporter.export(FLAGS.out, mode, (FLAGS.calib, FLAGS.calib_images),
                                       (FLAGS.val or FLAGS.calib, FLAGS.val_images),
                                       FLAGS.threads, log=log)
        except (WeightsError, ValueError) as e:
            error = (str(e), 2)
        except ExportError as e:
            error = (str(e), 1)
    if error:
        print(f"error: {error[0]}", file=sys.stderr)
        return error[1]
    report = manifest["verification"]
    print("exit thresholds: " + ", ".join(
        f"{c} {manifest['thresholds'][c]:.4f} ({manifest['threshold_sources'][c]})"
        for c in manifest["codecs"]))
    print(f"verified {mode} at {FLAGS.tile}×{FLAGS.tile} on {report['pairs']} validation "
          "pairs; per exit:")
    mono = zip(report["psnr_vs_float_monolithic"], report["delta_psnr_lost_monolithic"])
    for k, (vs, lost, (m_vs, m_lost)) in enumerate(zip(report["psnr_vs_float"],
                                                       report["delta_psnr_lost"], mono), 1):
        print(f"  exit {k}: PSNR vs float {vs:6.2f} dB, ΔPSNR lost {lost:+.4f} dB (stages); "
              f"{m_vs:6.2f} dB, {m_lost:+.4f} dB (exit_{k}.tflite)")
    print(f"wrote {len(manifest['files'])} models and {MANIFEST} to {FLAGS.out}")
    return 0


if __name__ == "__main__":
    app.run(main, argv=bare_quantize(sys.argv), flags_parser=parse_flags)
