"""``python -m export.run IMAGE_OR_VIDEO_OR_DIR... --models DIR --out DIR``: early-exit
enhancement with exported TFLite models, without TensorFlow.

Needs ai-edge-litert, NumPy and OpenCV (opencv-python-headless: reading and writing
image files), and the TensorFlow-free ``rbqe_tf.color``, ``rbqe_tf.image_io``,
``rbqe_tf.batch`` and ``rbqe_tf.cli``; videos also PyAV and ``rbqe_tf.video``, imported
when the first video comes. Prints one line per image or video; a bad file gets one
error line and the rest still run; exit status 1 if any file failed, 2 on bad usage or
a bad export folder. Outputs are PNGs named after the inputs (``--format``); videos
(.mp4 .mkv .mov .webm .avi, raw .264/.h264/.265/.hevc) become ``.mkv`` files with a
JSON sidecar of per-frame exits, as with ``python -m rbqe_tf.enhance`` (every stream
uses the export's ``--codec``: an export holds one model). Inputs and existing files
are never replaced (``--overwrite`` replaces the latter). LiteRT's own log lines
(XNNPACK) are shown only with ``--verbose``.
"""
import argparse
import sys

from rbqe_tf.batch import (DEFAULT_CRF, DEFAULT_DECIDE_EVERY, FORMAT_HELP, FORMATS,
                           IMAGE_EXTENSIONS, VIDEO_CODECS, VIDEO_EXTENSIONS)
from rbqe_tf.image_io import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP, set_pixel_budget

DECISIONS = ("gain", "image", "tile")  # rbqe_tf.litert.runner.DECISIONS (a test checks they agree)
# A batch whose images take every exit held every exit file (XNNPACK's buffers: over
# 1 GB at a 512² int8 tile); one large file still fits, so one-exit batches never reopen.
DEFAULT_MODELS_MB = 512


def _parser():
    p = argparse.ArgumentParser(prog="python -m export.run",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("images", nargs="*", help="image or video files, or folders")
    p.add_argument("--models", required=True, help="export folder (python -m export.tflite)")
    p.add_argument("--out", required=True, help="output folder for the enhanced images "
                   "(created when the first one is written)")
    p.add_argument("--codec", choices=("jpeg", "hevc"),
                   help="codec family (score block size, default threshold); "
                        "default: the export's first codec")
    p.add_argument("--threshold", type=float, help="quality-score threshold in [0, 1] "
                   "(default: the manifest's for the codec)")
    p.add_argument("--exit", type=int, help="force this exit (0: leave the image as it is); "
                   "no early exit")
    p.add_argument("--decision", choices=DECISIONS,
                   help="gain: the export's gain predictor picks one exit per image (the "
                        "default where the export has one); image: the quality score, one "
                        "exit per image (the default otherwise); tile: the score, per tile")
    p.add_argument("--cache_mb", type=float, default=1024,
                   help="memory for tile features kept between exits with --decision image "
                        "(default 1024); tiles beyond it are re-run from stage 1")
    p.add_argument("--models_mb", type=float, default=DEFAULT_MODELS_MB,
                   help="memory for the exit files kept open between images (default "
                        f"{DEFAULT_MODELS_MB:g}); the least recently used is closed when an "
                        "image needs another that does not fit")
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
    p.add_argument("--recursive", action="store_true", help="also enhance the images in "
                   "subfolders of the folders given (outputs keep their subfolder)")
    p.add_argument("--format", choices=tuple(FORMATS), default="png",
                   help=FORMAT_HELP.lower().rstrip("."))
    p.add_argument("--quality", type=int, help="JPEG/WebP quality, 1..100 (default 95)")
    p.add_argument("--max_megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                   help=MAX_MEGAPIXELS_HELP)
    p.add_argument("--video_codec", choices=VIDEO_CODECS, default=VIDEO_CODECS[0],
                   help="videos: ffv1 (lossless, the default) or libx264/libx265 at --crf "
                        "(plays anywhere)")
    p.add_argument("--crf", type=int, help=f"videos: libx264/libx265 constant rate factor, "
                   f"0..51 (default {DEFAULT_CRF}; lower: larger and closer to the enhanced "
                   f"frames)")
    p.add_argument("--decide_every", type=int, default=DEFAULT_DECIDE_EVERY,
                   help="videos: decide a frame's exit afresh every this many frames; the "
                        "frames between reuse the last decision unless a scene cut comes "
                        f"first (1: every frame; default {DEFAULT_DECIDE_EVERY})")
    p.add_argument("--verbose", action="store_true", help="show LiteRT's own log lines")
    return p


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def usage_problem(args, inputs):
    """The first usage error (a one-line message), or None; loads no model."""
    import os

    from rbqe_tf.batch import output_folder_problem
    from rbqe_tf.cli import check_range
    if not inputs.files:
        if inputs.empty:
            return (f"{', '.join(inputs.empty)}: no image files"
                    + (f" ({inputs.skipped_line()})" if inputs.skipped else ""))
        return "no input images given (usage: python -m export.run IMAGE... --models DIR --out DIR)"
    if args.delegate is not None and not os.path.isfile(args.delegate):
        return f"--delegate {args.delegate}: no such file"
    return (check_range("--threshold", args.threshold, 0.0, 1.0)
            or check_range("--exit", args.exit, 0)
            or check_range("--quality", args.quality, 1, 100)
            or check_range("--overlap", args.overlap, 8, multiple=8,
                           what="a multiple of 8, at least 8")
            or check_range("--cache_mb", args.cache_mb, 0.0)
            or check_range("--models_mb", args.models_mb, 0.0)
            or check_range("--threads", args.threads, 1, what="at least 1")
            or check_range("--max_megapixels", args.max_megapixels, 0.01, what="> 0")
            or check_range("--crf", args.crf, 0, 51)
            or (args.crf is not None and args.video_codec == "ffv1"
                and "--crf applies to --video_codec libx264 or libx265")
            or check_range("--decide_every", args.decide_every, 1, what="at least 1")
            or _video_problem(inputs)
            or output_folder_problem(args.out))


def _video_problem(inputs):
    """Why the videos among the inputs cannot be read here (no PyAV), or None."""
    import importlib.util
    if any(i.path.lower().endswith(VIDEO_EXTENSIONS) for i in inputs.files):
        if importlib.util.find_spec("av") is None:
            return "reading video needs PyAV: pip install av"
    return None


def main(argv=None):
    args = _parser().parse_args(argv)
    from rbqe_tf.batch import expand_inputs
    inputs = expand_inputs(args.images, args.recursive, exclude=args.out,
                           extensions=IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    problem = usage_problem(args, inputs)
    if problem:
        return fail(problem)
    from rbqe_tf.cli import exit_on_sigterm
    exit_on_sigterm()
    set_pixel_budget(args.max_megapixels)
    from rbqe_tf.litert.interpreter import ModelError
    from rbqe_tf.litert.manifest import ManifestError
    from rbqe_tf.litert.runner import Runner
    from rbqe_tf.batch import enhance_files
    from rbqe_tf.cli import native_stderr_muted
    from rbqe_tf.image_io import quiet_opencv
    try:
        quiet_opencv()
        with native_stderr_muted(not args.verbose):
            runner = Runner(args.models, args.codec, args.threshold, args.threads, args.xnnpack,
                            args.delegate, args.overlap, args.decision, args.cache_mb,
                            args.models_mb)
    except (ImportError, ManifestError, ModelError, ValueError, OSError) as e:
        return fail(str(e))
    if args.exit is not None and not 0 <= args.exit <= runner.num_exits:
        return fail(f"--exit must be in 0..{runner.num_exits}")
    if inputs.skipped:
        print(inputs.skipped_line())
    failures = enhance_files(inputs.files, args.out, lambda image: runner(image, args.exit),
                             _taken, args.overwrite, args.format, args.quality,
                             video=_video_writer(runner, args))
    return 1 if failures else 0


def _video_writer(runner, args):
    """batch's ``video(path, target, overwrite)``: every frame through ``runner``."""
    def enhance(y, exit=None):
        return runner(y, args.exit if args.exit is not None else exit)

    def write(path, target, overwrite):
        from rbqe_tf import video
        report = video.enhance_video(
            path, target, lambda stream_codec: (enhance, f"{runner.codec} export"),
            args.video_codec, DEFAULT_CRF if args.crf is None else args.crf, overwrite,
            decide_every=args.decide_every)
        return video.summary(report)
    return write


def _taken(result):
    if getattr(result, "gains", None):
        gains = " ".join(f"{g:+.2f}" for g in result.gains)
        return f"exit {result.exit} (predicted gains {gains} dB)"
    if len(result.exits) == 1:
        scores = " ".join(f"{s:.3f}" for s in result.scores[0]) or "-"
        return f"exit {result.exit} (scores {scores})"
    counts = {k: result.exits.count(k) for k in sorted(set(result.exits))}
    return "exits " + ", ".join(f"{k}×{c}" for k, c in counts.items()) + " (per tile)"


if __name__ == "__main__":
    sys.exit(main())
