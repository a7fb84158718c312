"""Files written whole or not at all, with the user's umask (standard library only: the
TF-free runner and the dataset builder use it too).

A write goes to a temporary file beside the target and is renamed onto it, so a crash
never leaves a half-written file under the final name. Temporary names carry the
writer's process id, so a later run can tell the leftovers of a killed process (SIGKILL
cannot be caught) from the live files of a process still writing into the same folder.
"""
import os
import tempfile

TEMP_PREFIX = ".tmp-"


def file_mode():
    """The mode ``open()`` gives a new file under the current umask (mkstemp's is 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path, write, overwrite=True):
    """Calls ``write(temporary path)`` beside ``path``, then moves the result onto ``path``.

    The temporary file keeps ``path``'s extension (writers that pick a format from it
    work). Without ``overwrite`` an existing ``path`` is never replaced, even one another
    process creates meanwhile: FileExistsError. The temporary file is removed on any
    failure, Ctrl-C included.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-",
                               suffix=os.path.splitext(name)[1], dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # refuses an existing path, atomically
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_bytes(path, data, overwrite=True):
    """Writes ``data`` (bytes) to ``path`` atomically (see :func:`write_atomically`)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    write_atomically(path, write, overwrite)


def write_text(path, text, overwrite=True):
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`write_atomically`)."""
    write_bytes(path, text.encode("utf-8"), overwrite)


def _writer_gone(name):
    pid = name[len(TEMP_PREFIX):].partition("-")[0]
    if not pid.isdigit():
        return False  # not one of ours: leave it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, under another user
        return False
    return False


def remove_orphan_temps(folder):
    """Deletes the temporary files under ``folder`` whose writing process has ended (left
    by a killed run) → their paths. Files of live writers and foreign names are kept."""
    removed = []
    for root, _, names in os.walk(folder):
        for name in names:
            if name.startswith(TEMP_PREFIX) and _writer_gone(name):
                path = os.path.join(root, name)
                try:
                    os.unlink(path)
                except OSError:
                    continue
                removed.append(path)
    return removed
