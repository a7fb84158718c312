"""The Apache Beam steps of ``python -m rbqe_tf.pipeline``: match, claim output names,
read, enhance (``RunInference``), write, and one manifest record per input. A video is
one element: ``rbqe_tf.video`` enhances and writes it inside the model handler.

Every failure becomes a record with an ``error`` (a dead letter) instead of an exception,
so one bad file never fails the pipeline. The output rules are ``python -m
rbqe_tf.enhance``'s (rbqe_tf.batch): names, extensions, atomic writes that never replace
an input, nor an existing file without ``overwrite``, and one writer per output name;
but an existing output is *finished work* here (status ``exists``), which is what lets a
killed run be re-run. Inputs are read through Beam's file systems (local paths,
``gs://``, ...); outputs go to a folder every worker sees (atomic rename needs POSIX).
"""
import dataclasses
import json
import os
import threading

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler, PredictionResult,
                                           RunInference)

from rbqe_tf.batch import VIDEO_EXTENSIONS, VIDEO_OUTPUT_EXTENSION, make_folder, output_extension
from rbqe_tf.image_io import (ImageError, check_file_size, decode_image, encoding_problem,
                              quiet_opencv, set_pixel_budget, write_image)
from rbqe_tf.video import DEFAULT_CRF, enhance_video

NAMESPACE = "rbqe_pipeline"
"""Beam metrics namespace of the counters the command line sums up (one per status)."""
WILDCARDS = "*?["
RECORDS = "records"  # the tag of the manifest records beside each step's main output


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model every worker loads: ``kind`` "keras" (``path``: a .keras file, None for
    the model shipped for ``codec``, found in each worker's own installation) or "tflite"
    (``path``: an export folder), the decision's settings, and ``threads`` (None: the
    library's default) so that parallel workers do not oversubscribe cores."""

    kind: str
    path: str
    codec: str
    decision: str = None
    threshold: float = None
    threads: int = None

    def load(self):
        """→ the Enhancer or Runner; its errors are the CLIs' one-line ones."""
        if self.kind == "tflite":
            from rbqe_tf.litert.runner import Runner
            decision = "image" if self.decision == "score" else self.decision
            return Runner(self.path, self.codec, self.threshold, self.threads or 2,
                          decision=decision)
        from rbqe_tf.cli import import_tensorflow_quietly
        import_tensorflow_quietly()
        from rbqe_tf.enhancer import Enhancer
        return Enhancer.from_weights(self.path, self.codec, self.threshold, self.decision)

    @property
    def name(self):
        return f"{self.kind}:{self.path or 'shipped'}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the steps need, pickled to the workers: an absolute output folder, the model,
    and the enhance CLI's output flags."""

    output: str
    model: ModelSpec
    exit: int = None
    out_format: str = "png"
    quality: int = None
    overwrite: bool = False
    max_megapixels: float = None
    video_codec: str = "ffv1"
    crf: int = DEFAULT_CRF


@dataclasses.dataclass(frozen=True)
class Clip:
    """A video as ``RunInference``'s example: too large to travel decoded, so the model
    handler decodes, enhances and writes it where it lies (one clip per element)."""

    path: str
    target: str


def _is_video(path):
    return path.lower().endswith(VIDEO_EXTENSIONS)


def output_name(pattern, path):
    """The output name (no extension) of ``path`` matched by ``pattern``: its path below
    the pattern's fixed folder (the part before the first wildcard), as ``enhance
    --recursive`` keeps a folder's subfolders; a pattern without wildcards names the file."""
    cut = min([pattern.index(c) for c in WILDCARDS if c in pattern], default=None)
    base = "" if cut is None else pattern[:pattern.rfind("/", 0, cut) + 1]
    name = path[len(base):] if base and path.startswith(base) else path.rsplit("/", 1)[-1]
    return os.path.splitext(name)[0]


def _is_local(path):
    return FileSystems.get_scheme(path) is None


def _key(path):
    """Where a path lands: outputs and inputs meet under the same key when they are one file."""
    return os.path.realpath(path) if _is_local(path) else path


def _message(error, path):
    """An exception as the CLIs' one-line error, without the file name the record holds."""
    if isinstance(error, (ImageError, ValueError)):
        return str(error).removeprefix(f"{path}: ")
    return f"{type(error).__name__}: {error}"


def record(settings, path, status, target=None, error=None, result=None):
    """A manifest record (every key always present; null where it does not apply)."""
    Metrics.counter(NAMESPACE, "failed" if error else status).inc()
    fields = dict.fromkeys(("exit", "gains", "scores", "ms", "frames", "exit_histogram"))
    if isinstance(result, dict):  # a video's report (its sidecar has every frame's)
        fields.update(ms=round(result["seconds"] * 1e3, 1), frames=result["frames"],
                      exit_histogram=result["exit_histogram"])
    elif result is not None:
        # The Runner keeps scores per tile group; the pipeline's decisions are per image.
        scores = result.scores[0] if hasattr(result, "exits") else result.scores
        fields.update(exit=int(result.exit),
                      gains=[round(float(g), 4) for g in result.gains] or None,
                      scores=[round(float(s), 4) for s in scores] or None,
                      ms=round(result.ms, 1))
    return {"input": path, "output": target, "status": "error" if error else status,
            "model": settings.model.name, "codec": settings.model.codec, **fields,
            "error": error}


@beam.typehints.with_output_types(tuple[str, tuple])  # keyed for the GroupByKey
class MatchFiles(beam.DoFn):
    """A pattern → its files, each twice: as a claim on its output name and as an input
    (keyed by where they land, so a GroupByKey finds names taken twice and outputs that
    would replace an input). A pattern matching nothing is a dead letter; files inside
    the output folder are not enhanced (a re-run must not enhance its own outputs), only
    kept from being replaced."""

    def __init__(self, settings):
        self.settings = settings

    def process(self, pattern):
        if _is_local(pattern) and os.path.isdir(pattern):
            yield beam.pvalue.TaggedOutput(RECORDS, record(
                self.settings, pattern, "error", error="a folder: give a glob such as "
                f"{os.path.join(pattern, '*.jpg')} or {os.path.join(pattern, '**')}"))
            return
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # BeamIOError: a missing bucket, no permission
            yield beam.pvalue.TaggedOutput(RECORDS, record(
                self.settings, pattern, "error", error=f"cannot list ({e})"))
            return
        if not found:
            wild = any(c in pattern for c in WILDCARDS)
            yield beam.pvalue.TaggedOutput(RECORDS, record(
                self.settings, pattern, "error",
                error="no file matches" if wild else "no such file"))
        inside = os.path.join(os.path.realpath(self.settings.output), "")
        for file in found:
            yield _key(file.path), ("input", file.path, None, None)
            if _key(file.path).startswith(inside):
                Metrics.counter(NAMESPACE, "in_output_folder").inc()
                continue
            ext = (VIDEO_OUTPUT_EXTENSION if _is_video(file.path)
                   else output_extension(file.path, self.settings.out_format))
            target = os.path.join(self.settings.output, output_name(pattern, file.path) + ext)
            yield _key(target), ("claim", file.path, file.size_in_bytes, target)


class ClaimOutputs(beam.DoFn):
    """One writer per output (grouped by where it lands): the first input by path, unless
    the output would replace an input; the others are dead letters with the CLI's reasons."""

    def __init__(self, settings):
        self.settings = settings

    def process(self, keyed):
        _, entries = keyed
        claims = sorted({(path, size, target) for kind, path, size, target in entries
                         if kind == "claim"})
        is_input = any(kind == "input" for kind, *_ in entries)
        for n, (path, size, target) in enumerate(claims):
            if is_input or n:
                why = ("would overwrite an input; choose another --output" if is_input else
                       "already written by another input with the same name in this run")
                yield beam.pvalue.TaggedOutput(RECORDS, record(
                    self.settings, path, "error", target, f"output {target} {why}"))
            else:
                yield path, size, target


class ReadImages(beam.DoFn):
    """(path, size, target) → ((path, target, metadata), image), read through Beam's file
    systems and decoded as the CLIs decode files, or a :class:`Clip` for a video (read by
    PyAV from a mounted file system); an output already there is finished work."""

    def __init__(self, settings):
        self.settings = settings

    def setup(self):
        if self.settings.max_megapixels:
            set_pixel_budget(self.settings.max_megapixels)
        quiet_opencv()

    def process(self, claim):
        path, size, target = claim
        if not self.settings.overwrite and os.path.exists(target):
            yield beam.pvalue.TaggedOutput(RECORDS, record(self.settings, path, "exists", target))
            return
        if _is_video(path):
            if _is_local(path):
                yield (path, target, None), Clip(path, target)
            else:
                yield beam.pvalue.TaggedOutput(RECORDS, record(
                    self.settings, path, "error", target,
                    "videos are read from a mounted file system, not through Beam's"))
            return
        try:
            check_file_size(path, size)
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                image, metadata = decode_image(f.read(), path)
            problem = encoding_problem(image, os.path.splitext(target)[1])
            if problem:
                raise ImageError(f"{target}: cannot write: {problem} (choose --format png or tiff)")
        except Exception as e:  # one bad file must not fail the pipeline
            yield beam.pvalue.TaggedOutput(RECORDS, record(
                self.settings, path, "error", target, _message(e, path)))
            return
        yield (path, target, metadata), image


class EnhanceHandler(ModelHandler):
    """``RunInference``'s model handler: one Enhancer or Runner per worker process (Beam
    shares it between the process's threads, one image at a time: the TFLite interpreters
    are not reentrant), one image per batch (sizes differ). An image the model fails on
    comes back with the exception as its inference (a dead letter)."""

    def __init__(self, settings):
        spec = settings.model
        threads = spec.threads and spec.kind == "keras"
        super().__init__(max_batch_size=1,
                         env_vars={"TF_NUM_INTRAOP_THREADS": str(spec.threads)} if threads else {})
        self.settings = settings

    def load_model(self):
        return _Serialized(self.settings.model.load())

    def run_inference(self, batch, model, inference_args=None):
        results = []
        for example in batch:
            try:
                results.append(PredictionResult(example, self._video(example, model)
                                                if isinstance(example, Clip)
                                                else model(example, self.settings.exit)))
            except Exception as e:
                results.append(PredictionResult(example, e))
        return results

    def _video(self, clip, model):
        """A clip through rbqe_tf.video with this worker's model, one for every stream, as
        the enhance CLI with --codec or --weights given and export.run do (their sidecars'
        model names too) → its report."""
        settings = self.settings
        spec = settings.model
        described = f"{spec.codec} {'export' if spec.kind == 'tflite' else 'model'}"

        def enhance_for(stream_codec):
            return (lambda y, exit=None: model(y, settings.exit if exit is None else exit),
                    described)
        return enhance_video(clip.path, clip.target, enhance_for, settings.video_codec,
                             settings.crf, settings.overwrite, progress_every=0)

    def get_num_bytes(self, batch):
        return sum(getattr(example, "nbytes", 0) for example in batch)


class _Serialized:
    """A model called by one thread at a time (an object Beam's cache can refer to weakly)."""

    def __init__(self, model):
        self.model, self.lock = model, threading.Lock()

    def __call__(self, image, exit):
        with self.lock:
            return self.model(image, exit)


class WriteImages(beam.DoFn):
    """((path, target, metadata), prediction) → the output file, written atomically,
    and its record; an output that appeared meanwhile (a retried bundle, a worker of a
    killed run) is finished work, not an error."""

    def __init__(self, settings):
        self.settings = settings

    def process(self, keyed):
        (path, target, metadata), prediction = keyed
        result = prediction.inference
        if isinstance(result, Exception):
            yield record(self.settings, path, "error", target, _message(result, path))
            return
        if isinstance(result, dict):  # a video, written by the model handler
            yield record(self.settings, path, "enhanced", target, result=result)
            return
        try:
            make_folder(os.path.dirname(target))
            write_image(target, result.image, overwrite=self.settings.overwrite,
                        quality=self.settings.quality, metadata=metadata)
        except ImageError as e:
            if not self.settings.overwrite and os.path.exists(target):
                yield record(self.settings, path, "exists", target)
            else:
                yield record(self.settings, path, "error", target, _message(e, path))
            return
        yield record(self.settings, path, "enhanced", target, result=result)


def absolute(pattern, base):
    """A local pattern made absolute against folder ``base`` (workers do not share the
    launching shell's folder); URLs of other file systems as they are."""
    pattern = pattern.strip()
    if not _is_local(pattern):
        return pattern
    return os.path.abspath(os.path.join(base, os.path.expanduser(pattern)))


def build(pipeline, patterns, lists, settings, manifest):
    """Adds the steps to ``pipeline``: ``patterns`` (absolute), ``lists`` (files of
    patterns, one a line, relative ones to the list's folder) → outputs under
    ``settings.output`` and the JSON-lines ``manifest``."""
    sources = [pipeline | "Patterns" >> beam.Create(patterns)]
    for n, path in enumerate(lists):
        base = os.path.dirname(path) if _is_local(path) else path.rsplit("/", 1)[0]
        sources.append(pipeline | f"List{n}" >> beam.io.ReadFromText(path)
                       | f"Lines{n}" >> beam.Filter(lambda line: line.strip()
                                                   and not line.lstrip().startswith("#"))
                       | f"Resolve{n}" >> beam.Map(absolute, base))
    matched = (sources | "AllPatterns" >> beam.Flatten()
               | "Match" >> beam.ParDo(MatchFiles(settings)).with_outputs(RECORDS, main="files"))
    claimed = (matched.files | "ByOutput" >> beam.GroupByKey()
               | "Claim" >> beam.ParDo(ClaimOutputs(settings)).with_outputs(RECORDS, main="claims"))
    # Spread the claims over the workers: the grouping's own split puts a file's claim and
    # input entries apart, so the claims alone could all land on one worker.
    read = (claimed.claims | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadImages(settings)).with_outputs(RECORDS, main="images"))
    written = (read.images | "Enhance" >> RunInference(KeyedModelHandler(EnhanceHandler(settings)))
               | "Write" >> beam.ParDo(WriteImages(settings)))
    return ((matched[RECORDS], claimed[RECORDS], read[RECORDS], written)
            | "Records" >> beam.Flatten()
            | "Json" >> beam.Map(json.dumps)
            | "Manifest" >> beam.io.WriteToText(manifest, shard_name_template="", num_shards=1))
