"""Enhancing a list of image files into a folder, one line per file (NumPy and OpenCV only:
both ``python -m rbqe_tf.enhance`` and the TFLite runner's ``python -m export.run`` use it).

Outputs are named after the inputs (a folder's files with ``recursive`` keep their
path below it), PNG unless another format is asked for. An input is never replaced, an
existing output only with ``overwrite``, and two inputs of one name are not written over
each other; writes are atomic (:func:`rbqe_tf.image_io.write_image`) and carry the
input's colour profile, EXIF and XMP where the format holds them. The output folder is
created when the first file is written; temporary files a killed run left in it are
removed. A bad file gets one ``error:`` line on stderr and the rest still run; names
are printed escaped and every line is flushed (progress shows through a pipe).
Video files go to a callable instead (``python -m rbqe_tf.enhance`` passes
:func:`rbqe_tf.video.enhance_video`) under the same output rules, into ``.mkv`` files.
"""
import dataclasses
import os
import sys

from rbqe_tf.cli import printable
from rbqe_tf.files import remove_orphan_temps
from rbqe_tf.image_io import ImageError, encoding_problem, read_image_with_metadata, write_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pnm", ".heic", ".heif")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".264", ".h264", ".265", ".hevc")
VIDEO_OUTPUT_EXTENSION = ".mkv"  # rbqe_tf.video writes Matroska
# rbqe_tf.video's output codecs and defaults, here so that every CLI's --help needs no PyAV.
VIDEO_CODECS = ("ffv1", "libx264", "libx265")
DEFAULT_CRF = 18  # libx264/libx265: visually lossless-ish, so the encoder keeps the gain
DEFAULT_DECIDE_EVERY = 10
"""Frames one decision serves within a shot: reuse barely moves a clip's ΔPSNR and saves
most of an unchanged frame's time (measured in docs/video.md)."""
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tiff", "same": None}
"""``--format`` → output extension; ``same``: the input's own extension (format family)."""
FORMAT_HELP = ("Output format: png (lossless, the default), tiff (lossless), jpg or webp "
               "(lossy, 8-bit; see --quality), same (the input's own format).")
NOT_AN_IMAGE = "not an image file"
NOT_A_FILE = "not a regular file"
A_FOLDER = "a folder: add --recursive to enter it"


@dataclasses.dataclass(frozen=True)
class Input:
    """A file to enhance and its output name below the output folder, without extension."""

    path: str
    name: str


@dataclasses.dataclass
class Inputs:
    """Expanded command-line inputs: the files, and the entries left out with the reason."""

    files: list
    skipped: list  # (path, reason)
    empty: list    # folders given that hold no image file

    def skipped_line(self, limit=5):
        """One line listing the skipped entries by reason (None if none were skipped)."""
        if not self.skipped:
            return None
        by_reason = {}
        for path, reason in self.skipped:
            by_reason.setdefault(reason, []).append(path)
        parts = []
        for reason, paths in by_reason.items():
            more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
            parts.append(f"{', '.join(paths[:limit])}{more} ({reason})")
        return printable(f"skipped {len(self.skipped)}: " + "; ".join(parts))


def _is_image(name, extensions=IMAGE_EXTENSIONS):
    return name.lower().endswith(extensions)


def expand_inputs(paths, recursive=False, exclude=None, extensions=IMAGE_EXTENSIONS):
    """Files as given (missing ones too: reading them reports it); folders expand to
    their files with ``extensions`` (``rbqe_tf.enhance`` adds :data:`VIDEO_EXTENSIONS`),
    sorted, and with ``recursive`` to those of their subfolders (named by their path below
    the folder). ``exclude``: a folder never entered (the output folder, so a re-run does
    not enhance its own outputs). → :class:`Inputs`."""
    exclude = exclude and os.path.realpath(exclude)
    files, skipped, empty = [], [], []
    for path in paths:
        if not os.path.isdir(path):
            files.append(Input(path, os.path.splitext(os.path.basename(path))[0]))
            continue
        found = []
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            for sub in list(subfolders):
                full = os.path.join(folder, sub)
                if exclude and os.path.realpath(full) == exclude:
                    subfolders.remove(sub)
                    skipped.append((full + os.sep, "the output folder"))
                elif not recursive:
                    skipped.append((full + os.sep, A_FOLDER))
            if not recursive:
                subfolders.clear()
            for name in sorted(names):
                full = os.path.join(folder, name)
                if not os.path.isfile(full):  # a FIFO named a.png would block the batch
                    skipped.append((full, NOT_A_FILE))
                elif _is_image(name, extensions):
                    rel = os.path.relpath(full, path)
                    found.append(Input(full, os.path.splitext(rel)[0]))
                else:
                    skipped.append((full, NOT_AN_IMAGE))
        if not found:
            empty.append(path)
        files += found
    return Inputs(files, skipped, empty)


def output_extension(path, out_format="png"):
    """The output file's extension for input ``path`` under ``--format out_format``."""
    if out_format not in FORMATS:
        raise ValueError(f"unknown format {out_format!r} (expected one of {', '.join(FORMATS)})")
    ext = FORMATS[out_format]
    if ext is None:
        ext = os.path.splitext(path)[1].lower()
        ext = ext if _is_image(ext) else ".png"
    return ext


def enhance_files(inputs, out, enhance, describe, overwrite=False, out_format="png",
                  quality=None, video=None):
    """Writes ``enhance(image)`` of each input to ``out``; → number of failed files.

    ``inputs``: :class:`Input` items (or paths: output named after the file).
    ``enhance`` returns a result with ``image`` and ``ms``; ``describe(result)``
    gives the middle of its report line (the exit taken). ``out_format``: a key of
    :data:`FORMATS`; ``quality``: JPEG/WebP quality. ``video(path, target, overwrite)``
    writes a file of :data:`VIDEO_EXTENSIONS` to ``target`` (a ``.mkv``) and returns the
    middle of its report line; without it such files are read as images. Prints a
    summary line.
    """
    inputs = [i if isinstance(i, Input) else
              Input(i, os.path.splitext(os.path.basename(i))[0]) for i in inputs]
    input_paths = {os.path.realpath(i.path) for i in inputs}
    if os.path.isdir(out):
        removed = remove_orphan_temps(out)
        if removed:
            _say(f"removed {len(removed)} temporary file(s) an interrupted run left in {out}")
    written, failures = set(), 0
    for n, item in enumerate(inputs, 1):
        path = item.path
        prefix = f"[{n}/{len(inputs)}] {path}"
        is_video = video is not None and path.lower().endswith(VIDEO_EXTENSIONS)
        ext = VIDEO_OUTPUT_EXTENSION if is_video else output_extension(path, out_format)
        target = os.path.join(out, item.name + ext)
        try:
            if os.path.realpath(target) in input_paths:
                raise ImageError(f"{path}: output {target} would overwrite an input; "
                                 "choose another --out")
            if os.path.realpath(target) in written:
                raise ImageError(f"{path}: output {target} already written by another input "
                                 "with the same name in this run")
            if os.path.exists(target) and not overwrite:  # checked again when writing
                raise ImageError(f"{target}: exists (use --overwrite to replace it)")
            if is_video:
                done = video(path, target, overwrite)
            else:
                image, metadata = read_image_with_metadata(path)
                problem = encoding_problem(image, ext)
                if problem:
                    raise ImageError(f"{path}: cannot write {ext[1:]}: {problem} "
                                     "(choose --format png or tiff)")
                result = enhance(image)
                make_folder(os.path.dirname(target))
                write_image(target, result.image, overwrite=overwrite, quality=quality,
                            metadata=metadata)
                done = f"{describe(result)} {result.ms:.0f} ms"
        except (ImageError, ValueError) as e:
            failures += 1
            _say(f"{prefix}: error: {str(e).removeprefix(path + ': ')}", sys.stderr)
            continue
        except Exception as e:  # one bad image must not stop the batch or dump a traceback
            failures += 1
            _say(f"{prefix}: error: {type(e).__name__}: {e}", sys.stderr)
            continue
        written.add(os.path.realpath(target))
        _say(f"{prefix}: {done} -> {target}")
    _say(f"{len(written)} enhanced, {failures} failed")
    return failures


def _say(line, stream=None):
    print(printable(line), file=stream or sys.stdout, flush=True)


def make_folder(folder):
    """Creates output folder ``folder`` (and its parents) if missing; ImageError if not."""
    if folder and not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise ImageError(f"{folder}: cannot create output folder "
                             f"({e.strerror or e})") from None


def output_folder_problem(out):
    """Why ``out`` cannot become the output folder (None if it can), checked without
    creating anything: an existing non-folder on its path, or no write permission."""
    path = os.path.abspath(out)
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{out}: cannot create output folder (a file of that name exists)"
        return None if os.access(path, os.W_OK) else f"{out}: output folder is not writable"
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{out}: cannot create output folder ({parent} is not a folder)"
    if not os.access(parent, os.W_OK):
        return f"{out}: cannot create output folder ({parent} is not writable)"
    return None
