"""Enhancing a list of image files into a folder, one line per file (NumPy and OpenCV only:
both ``python -m rbqe_tf.enhance`` and the TFLite runner's ``python -m export.run`` use it).

Outputs are PNGs named after the inputs. An input is never replaced, an existing
output only with ``overwrite``, and two inputs of one name are not written over
each other; writes are atomic (:func:`rbqe_tf.image_io.write_image`). A bad file
gets one ``error:`` line on stderr and the rest still run.
"""
import os
import sys

from rbqe_tf.image_io import ImageError, read_image, write_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pnm")


def expand_inputs(paths):
    """Files as given; folders expand to their image files, sorted."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if n.lower().endswith(IMAGE_EXTENSIONS))
        else:
            files.append(path)
    return files


def enhance_files(inputs, out, enhance, describe, overwrite=False):
    """Writes ``enhance(image)`` of each input to ``out``; → number of failed files.

    ``enhance`` returns a result with ``image`` and ``ms``; ``describe(result)``
    gives the middle of its report line (the exit taken). Prints a summary line.
    """
    input_paths = {os.path.realpath(p) for p in inputs}
    written, failures = set(), 0
    for n, path in enumerate(inputs, 1):
        prefix = f"[{n}/{len(inputs)}] {path}"
        target = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + ".png")
        try:
            if os.path.realpath(target) in input_paths:
                raise ImageError(f"{path}: output {target} would overwrite an input; "
                                 "choose another --out")
            if os.path.realpath(target) in written:
                raise ImageError(f"{path}: output {target} already written by another input "
                                 "with the same name in this run")
            if os.path.exists(target) and not overwrite:  # checked again when writing
                raise ImageError(f"{target}: exists (use --overwrite to replace it)")
            result = enhance(read_image(path))
            write_image(target, result.image, overwrite=overwrite)
        except ImageError as e:
            failures += 1
            print(f"{prefix}: error: {str(e).removeprefix(path + ': ')}", file=sys.stderr)
            continue
        except Exception as e:  # one bad image must not stop the batch or dump a traceback
            failures += 1
            print(f"{prefix}: error: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        written.add(os.path.realpath(target))
        print(f"{prefix}: {describe(result)} {result.ms:.0f} ms -> {target}")
    print(f"{len(written)} enhanced, {failures} failed")
    return failures
