"""``python -m rbqe_tf.enhance IMAGE_OR_DIR... --out DIR``: enhance images with early exit.

Prints one line per image (exit, the decision's numbers, milliseconds); exit 0 means the
image was left as it was (the gain decision, docs/decision.md; ``--decision score`` is the
paper's). A bad file gets one error line and the rest still run; exit status 1 if any
image failed, 2 on bad usage.
Folders expand to their image and video files (``--recursive``: also their subfolders');
skipped entries are listed in one line. Outputs are PNGs named after the inputs
(``--format``); videos (.mp4 .mkv .mov .webm .avi, raw .264/.h264/.265/.hevc) become
``.mkv`` files with a JSON sidecar of per-frame exits (rbqe_tf/video.py, ``--video_codec``).
``--demo`` instead compresses the CC0 photos shipped in the package at every level of
``--codec`` and prints a before/after table (rbqe_tf/demo.py); re-running it replaces
its own outputs.
"""
import importlib.util
import os
import sys
import types

from absl import app, flags

from rbqe_tf.batch import (DEFAULT_CRF, DEFAULT_DECIDE_EVERY, FORMAT_HELP, FORMATS,
                           IMAGE_EXTENSIONS, VIDEO_CODECS, VIDEO_EXTENSIONS)
from rbqe_tf.cli import (SIZE_MULTIPLE, check_range, enhancement_flag_problem,
                         exit_on_sigterm, fail, import_tensorflow_quietly, parse_flags)
from rbqe_tf.image_io import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP, set_pixel_budget

# rbqe_tf.enhancer's defaults, repeated here so that --help needs no TensorFlow
# (tests/test_cli_enhance.py checks that they agree).
DEFAULT_TILE, DEFAULT_OVERLAP, DEFAULT_CACHE_MB = 512, 32, 512

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder for the enhanced images (created when the "
                    "first one is written).")
flags.DEFINE_string("weights", None, "Model file (.keras) written by rbqe_tf.train "
                    "(default: the model shipped for --codec).")
flags.DEFINE_enum("codec", "jpeg", ["jpeg", "hevc"],
                  "Codec family: sets the score's block size and the default threshold. "
                  "Videos: by default the stream's (HEVC streams hevc, others jpeg); "
                  "giving --codec or --weights forces it.")
flags.DEFINE_float("threshold", None, "Quality-score threshold in [0, 1] (default: calibrated "
                   "beside the weights, else the paper's for --codec).")
flags.DEFINE_integer("exit", None, "Force this exit (1..5, or 0: leave the image as it is); "
                     "no decision.")
flags.DEFINE_enum("decision", None, ["gain", "score"], "How the exit is chosen: 'gain' "
                  "(predicted ΔPSNR per exit, exit 0 leaves light images alone; the default "
                  "where the weights have a gain predictor) or 'score' (the paper's quality "
                  "score after each exit; never exit 0).")
flags.DEFINE_bool("overwrite", False, "Replace existing output files.")
flags.DEFINE_bool("recursive", False, "Also enhance the images in subfolders of the folders "
                  "given (outputs keep their subfolder below --out).")
flags.DEFINE_enum("format", "png", list(FORMATS), FORMAT_HELP)
flags.DEFINE_integer("quality", None, "JPEG/WebP quality, 1..100 (default 95).")
flags.DEFINE_float("max_megapixels", DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP)
flags.DEFINE_bool("demo", False, "Compress the photos shipped in the package at every level "
                  "of --codec, enhance them and print PSNR before/after (no inputs needed); "
                  "writes PNGs, replacing its own earlier outputs in --out.")
flags.DEFINE_integer("tile", DEFAULT_TILE, "Tile side in pixels (a multiple of 32): larger "
                     "images are enhanced in overlapping tiles to bound memory; an image of "
                     "at most tile×tile pixels runs in one piece.")
flags.DEFINE_integer("overlap", DEFAULT_OVERLAP, "Tile overlap margin in pixels (a multiple of 8, "
                     "below tile/2); neighbouring tiles overlap by twice this.")
flags.DEFINE_enum("video_codec", VIDEO_CODECS[0], list(VIDEO_CODECS), "Videos: ffv1 "
                  "(lossless, the default) or libx264/libx265 at --crf (plays anywhere).")
flags.DEFINE_integer("crf", DEFAULT_CRF, "Videos: libx264/libx265 constant rate factor, "
                     "0..51 (lower: larger and closer to the enhanced frames).")
flags.DEFINE_integer("decide_every", DEFAULT_DECIDE_EVERY, "Videos: decide a frame's exit "
                     "afresh every this many frames; the frames between reuse the last "
                     "decision unless a scene cut comes first (1: decide every frame; "
                     "docs/video.md).")
flags.DEFINE_float("cache_mb", DEFAULT_CACHE_MB, "Memory for the features tiles keep between "
                   "exits (>= 0); tiles beyond it are re-run from the first stage (slower, same "
                   "result).")


def usage_problem(inputs):
    """The first usage error (a one-line message), or None; needs no TensorFlow."""
    if FLAGS.demo and inputs.files + inputs.empty:
        return "--demo takes no input images"
    if FLAGS.demo and FLAGS.format != "png":
        return "--demo writes PNGs; --format applies to input images"
    if not FLAGS.demo and not inputs.files:
        if inputs.empty:
            return (f"{', '.join(inputs.empty)}: no image files"
                    + (f" ({inputs.skipped_line()})" if inputs.skipped else ""))
        return "no input images given (usage: python -m rbqe_tf.enhance IMAGE... --out DIR)"
    if not FLAGS.out:
        return "--out is required"
    if not FLAGS.demo and not any(os.path.exists(i.path) for i in inputs.files):
        return f"{inputs.files[0].path}: no such file" if len(inputs.files) == 1 else \
            "none of the input files exists"
    return (enhancement_flag_problem(FLAGS)
            # --tile, --overlap, --cache_mb: the Enhancer's own checks and words, made early
            or check_range("tile", FLAGS.tile, SIZE_MULTIPLE, multiple=SIZE_MULTIPLE,
                           what=f"a positive multiple of {SIZE_MULTIPLE}")
            or check_range("overlap", FLAGS.overlap, 0, FLAGS.tile // 2 - 1, multiple=8,
                           what=f"a multiple of 8 in 0..{FLAGS.tile // 2 - 1}")
            or check_range("cache_mb", FLAGS.cache_mb, 0.0, what=">= 0")
            or check_range("--decide_every", FLAGS.decide_every, 1, what="at least 1")
            or _output_problem())


def _video_problem(inputs):
    """Why the videos among the inputs cannot be read here (no PyAV), or None."""
    if any(i.path.lower().endswith(VIDEO_EXTENSIONS) for i in inputs.files):
        if importlib.util.find_spec("av") is None:
            return "reading video needs PyAV: pip install av"
    return None


def _output_problem():
    from rbqe_tf.batch import output_folder_problem
    return output_folder_problem(FLAGS.out)


def main(argv):
    from rbqe_tf.batch import expand_inputs
    inputs = expand_inputs(argv[1:], FLAGS.recursive, exclude=FLAGS.out,
                           extensions=IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    problem = usage_problem(inputs) or _video_problem(inputs)
    if problem:
        return fail(problem)
    exit_on_sigterm()
    set_pixel_budget(FLAGS.max_megapixels)
    try:
        from rbqe_tf.image_io import quiet_opencv
        quiet_opencv()
    except ImportError as e:
        return fail(str(e))
    try:
        enhancer, source = load_enhancer(FLAGS.codec)
    except ValueError as e:
        return fail(str(e))
    if FLAGS.exit is not None and not 0 <= FLAGS.exit <= enhancer.num_exits:
        return fail(f"--exit must be in 0..{enhancer.num_exits}")
    if FLAGS.exit is None:
        print(_decision_line(enhancer, source, FLAGS.codec))
    if FLAGS.demo:
        return _demo(enhancer)
    if inputs.skipped:
        print(inputs.skipped_line())
    return 1 if enhance_inputs(inputs, enhancer) else 0


def load_enhancer(codec):
    """Imports TensorFlow and builds the Enhancer for ``codec`` → (enhancer, where its
    decision's numbers come from); ValueError (WeightsError included) with the message."""
    import_tensorflow_quietly()
    from rbqe_tf.calibration import resolve_gain_rule, resolve_threshold
    from rbqe_tf.enhancer import Enhancer
    from rbqe_tf.model import WeightsError, default_weights
    try:
        weights = FLAGS.weights or default_weights(codec)
        enhancer = Enhancer.from_weights(weights, codec, FLAGS.threshold, FLAGS.decision,
                                         tile=FLAGS.tile, overlap=FLAGS.overlap,
                                         cache_mb=FLAGS.cache_mb)
    except WeightsError as e:
        raise ValueError(str(e)) from None
    source = (resolve_gain_rule(codec, weights)[1] if enhancer.decision == "gain"
              else resolve_threshold(codec, weights, FLAGS.threshold)[1])
    return enhancer, source


def _decision_line(enhancer, source, codec):
    if enhancer.decision == "gain":
        rule = enhancer.gain_rule
        return (f"{codec}: gain decision: exit 0 (unchanged) unless an exit is predicted "
                f"to gain >= {rule['margin']:.2f} dB, else the cheapest exit within "
                f"{rule['tolerance']:.2f} dB of the best ({source})")
    return f"{codec}: early exit at quality score >= {enhancer.threshold:.4g} ({source})"


def enhance_inputs(inputs, enhancer):
    """Enhances every input file into --out → the number of failed files."""
    from rbqe_tf.batch import enhance_files
    return enhance_files(inputs.files, FLAGS.out, lambda image: enhancer(image, FLAGS.exit),
                         _taken, FLAGS.overwrite, FLAGS.format, FLAGS.quality,
                         video=_video_writer(enhancer))


def _video_writer(enhancer):
    """batch's ``video(path, target, overwrite)``: the model follows each stream's codec
    (rbqe_tf.video.model_for_stream) unless --codec or --weights forces one; enhancers
    are built once per model, each announcing its decision line."""
    enhancers = {FLAGS.codec: enhancer}
    forced = FLAGS["codec"].present or FLAGS.weights

    def enhance_for(stream_codec):
        from rbqe_tf import video
        from rbqe_tf.model import DEFAULT_WEIGHTS
        codec, note = ((FLAGS.codec, None) if forced
                       else video.model_for_stream(stream_codec, DEFAULT_WEIGHTS))
        if codec not in enhancers:
            enhancers[codec], source = load_enhancer(codec)
            if FLAGS.exit is None:
                print(_decision_line(enhancers[codec], source, codec), flush=True)
        chosen = enhancers[codec]
        return ((lambda y, exit=None: chosen(y, FLAGS.exit if exit is None else exit)),
                f"{codec} model" + (f", {note}" if note else ""))

    def write(path, target, overwrite):
        from rbqe_tf import video
        return video.summary(video.enhance_video(path, target, enhance_for, FLAGS.video_codec,
                                                 FLAGS.crf, overwrite,
                                                 decide_every=FLAGS.decide_every))
    return write


def _demo(enhancer):
    from rbqe_tf import demo
    from rbqe_tf.compression import CodecError
    from rbqe_tf.image_io import ImageError
    print(demo.HEADER)
    try:
        os.makedirs(FLAGS.out, exist_ok=True)
        # The demo's file names are its own: a re-run replaces them (idempotent).
        rows = demo.run({FLAGS.codec: enhancer}, FLAGS.out, overwrite=True, exit=FLAGS.exit)
    except (CodecError, ImageError, ValueError, OSError) as e:
        fail(str(e).splitlines()[0])
        return 1
    print("\n".join(demo.summary(rows)))
    print(f"wrote {2 * len(rows)} PNGs (compressed *_in, enhanced *_out) to {FLAGS.out}")
    return 0


def _taken(result):
    if result.gains:
        predicted = " ".join(f"{g:+.2f}" for g in result.gains)
        kept = ", left as it was" if result.exit == 0 else ""
        return f"exit {result.exit} (predicted dB {predicted}{kept})"
    if result.exit == 0:
        return "exit 0 (left as it was)"
    return f"exit {result.exit} (scores {' '.join(f'{s:.3f}' for s in result.scores) or '-'})"


class _CallableModule(types.ModuleType):
    """Importing this module binds it as the package's ``enhance`` attribute, where the
    API function :func:`rbqe_tf.enhancer.enhance` lives: calling the module calls the
    function, so ``rbqe_tf.enhance(image)`` works whichever was imported first."""

    def __call__(self, *args, **kwargs):
        from rbqe_tf.enhancer import enhance
        return enhance(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
