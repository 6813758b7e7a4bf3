"""Atomic file writes: a file is either its old self or its new self, never torn.

Every write goes to a new temporary file with a unique hidden name in the
target's folder (``.<name>.<pid>-<8 hex>.tmp``), is flushed and fsynced, renamed
over the target with :func:`os.replace`, and the folder is fsynced so the
rename itself survives a power cut. A failed write removes its temporary
file and leaves the old file untouched. Model folders
(:mod:`probseg.io.checkpoint`), proofreading sessions
(:mod:`probseg.proofreading.session`) and written images (:mod:`probseg.io.images`)
all write through :func:`atomic_write`.

The temporary file is created next to the target, not in the system's
temporary folder, because :func:`os.replace` is atomic only within one file
system.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["atomic_write", "write_bytes", "write_json", "write_npy", "fsync_folder", "create_temporary"]


def create_temporary(path: Path) -> tuple[int, Path]:
    """Create a new hidden file next to ``path``.

    Unlike :func:`tempfile.mkstemp` (owner-only permissions) the file gets the
    permissions the umask gives any new file, so the renamed file is as
    readable as if it had been written directly.

    Parameters
    ----------
    path : Path
        The file the temporary one will replace; its folder must exist.

    Returns
    -------
    fd : int
        A descriptor open for writing; the caller closes it.
    tmp : Path
        ``<folder>/.<name>.<pid>-<8 random hex digits>.tmp``, a file that did
        not exist before; the pid lets a cleanup spare the files of processes
        that still run.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable.

    A no-op where folders cannot be opened (Windows) or refuse fsync (some
    network file systems); the rename itself is atomic either way.

    Parameters
    ----------
    folder : Path
        The folder whose entries changed.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(fd)


def _fsync_file(name: Path) -> None:
    fd = os.open(name, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable, *, by_name: bool = False) -> Path:
    """Write ``path`` through ``write`` so that it is either old or new, never torn.

    Parameters
    ----------
    path : str or Path
        The file to write; its folder must exist. An existing file is replaced.
    write : callable
        ``write(handle)`` writes the content to ``handle``, a binary file
        object open on the temporary file (it need not flush or close it).
    by_name : bool, default False
        Call ``write(tmp)`` with the temporary file's path instead, for
        writers that open the file themselves (safetensors'
        ``save_file``). They must close it before returning.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        If the folder cannot be written (permissions, full disk). Whatever
        ``write`` raises is raised unchanged. Either way the temporary file is
        removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = create_temporary(path)
    try:
        os.close(fd)
        if by_name:
            mode = os.stat(tmp).st_mode & 0o777  # what the umask gives a new file, e.g. 0644
            write(tmp)
            # Writers that make the file anew themselves (safetensors) leave it owner-only (0600): colleagues
            # on a shared disk could not read the model. Give it back the permissions it was created with.
            os.chmod(tmp, mode)
            _fsync_file(tmp)
        else:
            # Opened by name, so ``handle.name`` is a path: some writers
            # (tifffile) need it, and none guesses a format from it.
            with open(tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or Path
    data : bytes

    Returns
    -------
    Path
        ``path``.
    """
    return atomic_write(path, lambda handle: handle.write(data))


def write_json(path, data) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`atomic_write`).

    The text is indented by one space and ends with a newline. NaN and
    infinity are refused, so the file is strict JSON that any reader accepts.

    Parameters
    ----------
    path : str or Path
    data : JSON-serialisable object

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``data`` holds NaN or infinity; nothing is written.
    TypeError
        If ``data`` is not JSON-serialisable; nothing is written.
    """
    text = (json.dumps(data, indent=1, allow_nan=False) + "\n").encode()
    return write_bytes(path, text)


def write_npy(path, array: np.ndarray) -> Path:
    """Write ``array`` to ``path`` as a ``.npy`` file atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or Path
    array : numpy.ndarray
        Any array without Python objects (it is saved with
        ``allow_pickle=False``).

    Returns
    -------
    Path
        ``path``.
    """
    return atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))
