"""Shared command-line plumbing: a quiet TensorFlow start, ``--help`` with status 0,
one-line errors, range checks, and muting native log chatter.

Standard library (and the network's config) only: the TensorFlow-free runner ``python -m
export.run`` uses it, and a command line can answer ``--help`` and usage errors before
TensorFlow loads.
"""
import contextlib
import math
import os
import signal
import sys

from rbqe_tf.config import RBQEConfig

HELP_ARGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


@contextlib.contextmanager
def native_stderr_muted(enabled=True):
    """Sends file descriptor 2 to /dev/null for the block (``enabled=False``: no-op).

    Native libraries (TensorFlow's C++ runtime, the TFLite converter, LiteRT's XNNPACK
    delegate) log straight to the descriptor, past Python's ``sys.stderr``; Python
    exceptions still propagate and are reported after the block.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly():
    """Imports TensorFlow with stderr muted at the file-descriptor level.

    TF 2.21's CUDA probe prints "Could not find cuda drivers" through absl logging
    before any log level applies; command lines hide that so that a user sees only
    their own output and one-line errors. Import errors are re-raised unmuted. Call it
    in ``main`` after the usage checks, so ``--help`` and usage errors are instant.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with native_stderr_muted():
        import tensorflow as tf
        tf.zeros(())  # device initialisation logs too


def parse_flags(argv, known_only=False):
    """absl flag parsing with flag errors as one ``error:`` line and exit status 2.

    ``-h``, ``-?``, ``--help``, ``--helpshort`` print the command's docstring and its
    flags on stdout and exit with status 0 (absl's own help exits 1); ``--helpfull``
    adds the flags of every imported module. ``known_only``: flags absl does not know
    are returned with the arguments (``rbqe_tf.pipeline`` hands them to Beam).
    """
    from absl import app, flags
    args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(a.split("=")[0] in HELP_ARGS for a in args):
        app.usage(shorthelp="--helpfull" not in args, writeto_stdout=True, exitcode=0)
    try:
        return flags.FLAGS(argv, known_only=known_only)
    except flags.Error as e:
        sys.exit(fail(str(e).splitlines()[0]))


def fail(message):
    """Prints ``error: message`` on stderr and returns the usage-error status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def printable(text):
    """``text`` with control characters and undecodable bytes of file names escaped
    (``\\n``, ``\\x1b``, ``\\xff``), so a hostile name cannot break a report line or
    drive the terminal."""
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # a byte the file system name did not decode
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def exit_on_sigterm():
    """Turns SIGTERM into SystemExit, so ``finally`` blocks run (temporary files are
    removed) when a job is stopped the polite way."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


MAX_EXIT = RBQEConfig().num_exits
"""The shipped variants' exits (``--exit`` is checked against it before a model loads; a
model with fewer exits is checked once loaded)."""
SIZE_MULTIPLE = RBQEConfig().size_multiple
"""What ``--tile`` must be a multiple of (the shipped variants' downsampling)."""


def enhancement_flag_problem(flags):
    """The first problem with the flags ``python -m rbqe_tf.enhance`` and
    ``python -m rbqe_tf.pipeline`` share (``--threshold``, ``--exit``, ``--quality``,
    ``--max_megapixels``, ``--crf`` with ``--video_codec``, ``--weights``), or None."""
    return (check_range("--threshold", flags.threshold, 0.0, 1.0)
            or check_range("--exit", flags.exit, 0, MAX_EXIT)
            or check_range("--quality", flags.quality, 1, 100)
            or check_range("--max_megapixels", flags.max_megapixels, 0.01, what="> 0")
            or check_range("--crf", flags.crf, 0, 51)
            or (flags["crf"].present and flags.video_codec == "ffv1"
                and "--crf applies to --video_codec libx264 or libx265")
            or (flags.weights and not os.path.isfile(flags.weights)
                and f"{flags.weights}: no such file"))


def check_range(name, value, low=None, high=None, multiple=None, what=None):
    """``None`` if ``value`` is in [low, high] (and a multiple of ``multiple``), else the
    one-line message for :func:`fail` (``name``: the flag, e.g. ``--tile``; ``what``:
    the rule in words, e.g. "a positive multiple of 32", instead of the bounds)."""
    if value is None:
        return None
    bad = isinstance(value, float) and not math.isfinite(value)
    bad = bad or (low is not None and value < low) or (high is not None and value > high)
    bad = bad or (multiple is not None and value % multiple != 0)
    if not bad:
        return None
    if what is None:
        integer = isinstance(value, int)
        if low is not None and high is not None:
            what = f"in {low}..{high}" if integer else f"a number in [{low:g}, {high:g}]"
        else:
            bound = f">= {low:g}" if low is not None else f"<= {high:g}"
            what = bound if integer else f"a number {bound}"
    return f"{name} must be {what}, got {value:g}"
