"""Shared command-line plumbing: a quiet TensorFlow start and one-line errors."""
import os
import sys


def import_tensorflow_quietly():
    """Imports TensorFlow with stderr muted at the file-descriptor level.

    TF 2.21's CUDA probe prints "Could not find cuda drivers" through absl logging
    before any log level applies; command lines hide that so that a user sees only
    their own output and one-line errors. Import errors are re-raised unmuted.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
        tf.zeros(())  # device initialisation logs too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def parse_flags(argv):
    """absl flag parsing with flag errors as one ``error:`` line and exit status 2."""
    from absl import flags
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(fail(str(e).splitlines()[0]))


def fail(message):
    """Prints ``error: message`` on stderr and returns the usage-error status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2
