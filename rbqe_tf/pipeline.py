"""``python -m rbqe_tf.pipeline --input PATTERNS --output DIR``: enhance a corpus with
Apache Beam (``pip install -e ".[pipeline]"``), on this machine or a cluster.

The same outputs as ``python -m rbqe_tf.enhance`` (images byte for byte, videos frame for
frame, one clip per element; same names and rules),
from a ``RunInference`` model handler that loads the model once per worker (Keras, or
``--model tflite --models DIR`` for an export folder). Every input gets one record in a
JSON-lines manifest (input, output, status, model, codec, exit, gains or scores, ms,
error); a bad file is such a record (a dead letter), never a failed pipeline. Outputs
already there are finished work: a run killed halfway, run again, enhances the rest.

Flags this command does not define are Beam pipeline options: by default the
DirectRunner runs here with one worker process per core; ``--runner`` and that
runner's options send the same pipeline to a cluster (docs/pipeline.md). Exit status 1
if any input failed, 2 on bad usage (answered before Beam or TensorFlow load).
"""
import dataclasses
import datetime
import functools
import json
import os
import sys

from absl import app, flags

from rbqe_tf.batch import FORMAT_HELP, FORMATS
from rbqe_tf.cli import (check_range, enhancement_flag_problem, exit_on_sigterm, fail,
                         native_stderr_muted, parse_flags)
from rbqe_tf.image_io import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP
from rbqe_tf.video import DEFAULT_CRF, VIDEO_CODECS

ERROR_LINES = 10  # dead letters named on the terminal; the manifest holds them all

FLAGS = flags.FLAGS
flags.DEFINE_list("input", None, "Files to enhance: comma-separated paths or globs "
                  "(photos/*.jpg, photos/**/*.png; gs:// and the other file systems Beam "
                  "reads too), or @LIST: a text file of them, one a line.")
flags.DEFINE_string("output", None, "Output folder on a file system every worker mounts. "
                    "Outputs are named as python -m rbqe_tf.enhance names them, keeping "
                    "their path below the folder of a glob (the part before its first "
                    "wildcard).")
flags.DEFINE_enum("model", "keras", ["keras", "tflite"], "keras: a .keras model "
                  "(--weights); tflite: an export folder (--models), run without TensorFlow.")
flags.DEFINE_string("weights", None, "Model file (.keras) for --model keras (default: the "
                    "model shipped for --codec).")
flags.DEFINE_string("models", None, "Export folder (python -m export.tflite) for --model tflite.")
flags.DEFINE_enum("codec", None, ["jpeg", "hevc"], "Codec family (default: jpeg; with "
                  "--model tflite, the export's first).")
flags.DEFINE_enum("decision", None, ["gain", "score"], "How the exit is chosen: 'gain' "
                  "(the default where the model has a gain predictor; exit 0 leaves light "
                  "images alone) or 'score' (the paper's quality score), one exit per image.")
flags.DEFINE_float("threshold", None, "Quality-score threshold in [0, 1] (default: the "
                   "model's calibrated one).")
flags.DEFINE_integer("exit", None, "Force this exit (1..5, or 0: leave the image as it is); "
                     "no decision.")
flags.DEFINE_enum("format", "png", list(FORMATS), FORMAT_HELP)
flags.DEFINE_integer("quality", None, "JPEG/WebP quality, 1..100 (default 95).")
flags.DEFINE_bool("overwrite", False, "Enhance inputs whose output exists again, replacing "
                  "it (default: an existing output is finished work, skipped).")
flags.DEFINE_float("max_megapixels", DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP)
flags.DEFINE_enum("video_codec", VIDEO_CODECS[0], list(VIDEO_CODECS), "Videos (one clip per "
                  "element, .mkv outputs as the enhance CLI writes them): ffv1 (lossless, the "
                  "default) or libx264/libx265 at --crf.")
flags.DEFINE_integer("crf", DEFAULT_CRF, "Videos: libx264/libx265 constant rate factor, 0..51.")
flags.DEFINE_string("manifest", None, "JSON-lines record of every input (default: "
                    "OUTPUT/manifest-<UTC time>.jsonl; any file system Beam writes).")
flags.DEFINE_integer("threads", None, "Threads per worker process for the model (default: "
                     "on the DirectRunner the cores shared among its workers; on a cluster "
                     "TensorFlow's default, 2 for TFLite).")
flags.DEFINE_bool("verbose", False, "Show the runner's and the workers' own log lines.")


def usage_problem():
    """The first usage error (a one-line message), or None; needs neither Beam nor
    TensorFlow (Beam's own options are checked once it loads)."""
    if not FLAGS.input:
        return ("--input is required (usage: python -m rbqe_tf.pipeline --input "
                "'photos/*.jpg' --output DIR)")
    if not FLAGS.output:
        return "--output is required"
    if "://" in FLAGS.output:
        return "--output must be a folder on a mounted file system (outputs are renamed into place)"
    if FLAGS.model == "tflite" and not FLAGS.models:
        return "--model tflite needs --models (an export folder)"
    if FLAGS.models and FLAGS.model != "tflite":
        return "--models is the export folder of --model tflite"
    if FLAGS.weights and FLAGS.model != "keras":
        return "--weights is the model file of --model keras"
    lists = [p[1:] for p in FLAGS.input if p.startswith("@")]
    from rbqe_tf.batch import output_folder_problem
    return (enhancement_flag_problem(FLAGS)
            or check_range("--threads", FLAGS.threads, 1, what="at least 1")
            or (FLAGS.models and not os.path.isdir(FLAGS.models)
                and f"{FLAGS.models}: no such folder")
            or next((f"@{p}: no such file" for p in lists
                     if "://" not in p and not os.path.isfile(p)), None)
            or output_folder_problem(FLAGS.output))


def beam_options(args):
    """Beam's PipelineOptions from the flags left over, every unknown one refused in one
    line; the DirectRunner runs one worker process per core unless told otherwise."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
    parsers = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)  # all runners' flags

    def error(message):
        raise ValueError(message)
    parsers[0].error = error  # argparse would print its whole usage
    unknown = parsers[0].parse_known_args(args)[1]
    if unknown:
        raise ValueError(f"unknown flag(s): {' '.join(unknown)}")
    options = PipelineOptions(args)
    given = {arg.split("=")[0].lstrip("-") for arg in args if arg.startswith("--")}
    direct = options.view_as(DirectOptions)
    if "direct_running_mode" not in given:
        direct.direct_running_mode = "multi_processing"
    if "direct_num_workers" not in given:
        direct.direct_num_workers = 0  # all cores
    return options


def worker_threads(options):
    """``--threads``, else for the DirectRunner's worker processes the cores shared among
    them (not each of them using all); None elsewhere (the library's default)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    if FLAGS.threads:
        return FLAGS.threads
    direct = options.view_as(DirectOptions)
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner not in ("DirectRunner", "direct") or direct.direct_running_mode != "multi_processing":
        return None
    cores = os.cpu_count() or 1
    return max(1, cores // (direct.direct_num_workers or cores))


def main(argv):
    problem = usage_problem()
    if problem:
        return fail(problem)
    try:
        with native_stderr_muted(not FLAGS.verbose):  # Beam's import-time warnings
            import apache_beam  # noqa: F401
    except ImportError:
        return fail("the pipeline needs Apache Beam: pip install -e \".[pipeline]\"")
    from rbqe_tf import pipeline_steps as steps
    try:
        options = beam_options(argv[1:])
    except ValueError as e:
        return fail(str(e).splitlines()[0])
    output = os.path.abspath(FLAGS.output)
    patterns = [steps.absolute(p, os.getcwd()) for p in FLAGS.input if not p.startswith("@")]
    lists = [steps.absolute(p[1:], os.getcwd()) for p in FLAGS.input if p.startswith("@")]
    spec = steps.ModelSpec(FLAGS.model, os.path.abspath(FLAGS.models) if FLAGS.models else None,
                           FLAGS.codec, FLAGS.decision, FLAGS.threshold, worker_threads(options))
    from rbqe_tf.litert.interpreter import ModelError
    from rbqe_tf.litert.manifest import ManifestError
    from rbqe_tf.model_file import WeightsError
    try:
        spec = _checked(spec)
    except (WeightsError, ManifestError, ModelError, ValueError, OSError) as e:
        return fail(str(e))
    settings = steps.Settings(output, spec, FLAGS.exit, FLAGS.format, FLAGS.quality,
                              FLAGS.overwrite, FLAGS.max_megapixels, FLAGS.video_codec, FLAGS.crf)
    manifest = FLAGS.manifest or os.path.join(
        output, f"manifest-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}.jsonl")
    exit_on_sigterm()  # Beam stops its workers on the way out
    _remove_leftovers(output)
    print(f"{spec.name} ({spec.codec}) -> {output}", flush=True)
    import apache_beam as beam
    try:
        with native_stderr_muted(not FLAGS.verbose):
            pipeline = beam.Pipeline(options=options)
            steps.build(pipeline, patterns, lists, settings, manifest)
            result = pipeline.run()
            result.wait_until_finish()
    except Exception as e:  # a runner or worker failure (files are never partial)
        # Beam wraps a worker's exception with its traceback: the last line names it.
        lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        fail(f"pipeline failed: {lines[-1].strip()}")
        return 1
    counts = _counts(result, steps.NAMESPACE)
    skipped = counts.pop("in_output_folder", 0)
    print(f"{counts.get('enhanced', 0)} enhanced, {counts.get('exists', 0)} already there, "
          f"{counts.get('failed', 0)} failed" + (f", {skipped} in the output folder left out"
                                                 if skipped else "") + f"; manifest {manifest}")
    if counts.get("failed"):
        _print_errors(manifest, counts["failed"])
        return 1
    return 0


def _checked(spec):
    """Loads the model here once, so a bad model is one error line, not a failure on
    every worker; → the spec with its codec resolved and ``--exit`` checked."""
    if spec.kind == "keras":
        spec = dataclasses.replace(spec, codec=spec.codec or "jpeg", path=FLAGS.weights
                                   and os.path.abspath(FLAGS.weights))
    with native_stderr_muted(not FLAGS.verbose):  # TensorFlow's and LiteRT's start-up lines
        model = spec.load()
    if FLAGS.exit is not None and not 0 <= FLAGS.exit <= model.num_exits:
        raise ValueError(f"--exit must be in 0..{model.num_exits}")
    return dataclasses.replace(spec, codec=model.codec)


def _remove_leftovers(output):
    """Temporary files a killed run left (as the enhance CLI does for its folder)."""
    from rbqe_tf.files import remove_orphan_temps
    if os.path.isdir(output):
        removed = remove_orphan_temps(output)
        if removed:
            print(f"removed {len(removed)} temporary file(s) an interrupted run left in {output}")


def _counts(result, namespace):
    from apache_beam.metrics.metric import MetricsFilter
    counts = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counts[counter.key.metric.name] = counts.get(counter.key.metric.name, 0) + value
    return counts


def _print_errors(manifest, failed):
    """The first dead letters as the CLIs' ``error:`` lines (on stderr)."""
    from apache_beam.io.filesystems import FileSystems

    from rbqe_tf.cli import printable
    shown = 0
    with FileSystems.open(manifest) as f:
        for line in f:
            entry = json.loads(line)
            if entry["error"]:
                print(printable(f"{entry['input']}: error: {entry['error']}"),
                      file=sys.stderr, flush=True)
                shown += 1
                if shown == ERROR_LINES:
                    break
    if failed > shown:
        print(f"... and {failed - shown} more errors in {manifest}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main, flags_parser=functools.partial(parse_flags, known_only=True))
