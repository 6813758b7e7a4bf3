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

Folders (raw stores, zarr images) are built under a hidden sibling name and
swapped in by :func:`replace_folder`. Inside a :func:`replace_on_success`
block, every write and swap (and :func:`remove_file`) is prepared now and
applied only when the block ends without an error, all together, so a run
that fails or is interrupted after it started writing its outputs leaves the
old ones as they were (``--overwrite`` never deletes anything before then).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["atomic_write", "write_bytes", "write_json", "write_npy", "fsync_folder", "create_temporary",
           "replace_on_success", "replace_folder", "remove_file", "hidden_sibling", "interrupts_deferred"]


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

    Notes
    -----
    Inside a :func:`replace_on_success` block the temporary file is written
    now and renamed over ``path`` when the block succeeds.
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
        if _stage(_Step("file", tmp, path)):
            return path
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


# -- several outputs replaced together, only after success ------------------------------------------

class _Step:
    """One prepared change: a file or folder ``new`` to move over ``target``, or ``target`` to remove."""

    def __init__(self, kind: str, new: Path | None, target: Path):
        self.kind, self.new, self.target = kind, new, target

    def apply(self) -> None:
        if self.kind == "file":
            os.replace(self.new, self.target)
        elif self.kind == "folder":
            _swap_folder(self.new, self.target)
        else:
            self.target.unlink(missing_ok=True)

    def discard(self) -> None:
        if self.new is not None:
            _remove(self.new)


#: The changes the innermost :func:`replace_on_success` block of this thread or task has prepared.
_PENDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("probseg_pending_replacements", default=None)


def _stage(step: _Step) -> bool:
    """Keep ``step`` for the end of the :func:`replace_on_success` block; False outside one (apply it now)."""
    pending = _PENDING.get()
    if pending is None:
        return False
    pending.append(step)
    return True


@contextlib.contextmanager
def replace_on_success() -> Iterator[None]:
    """Apply the writes of the block to their targets only when the block ends without an error.

    Within the block, :func:`atomic_write` (and the writers built on it),
    :func:`replace_folder` and :func:`remove_file` prepare their change
    beside the target; at the end of the block the changes are applied in
    the order they were made, with Ctrl-C held back until the last one is
    done. If the block raises (a failure, Ctrl-C) the prepared files and
    folders are removed and every target is left as it was. A block inside
    another joins the outer one.

    Examples
    --------
    >>> with replace_on_success():  # doctest: +SKIP
    ...     write_image("labels.tif", labels)      # written beside labels.tif
    ...     write_json("labels.tif.json", record)  # both renamed into place here
    """
    if _PENDING.get() is not None:
        yield
        return
    steps: list[_Step] = []
    token = _PENDING.set(steps)
    try:
        yield
    except BaseException:
        _PENDING.reset(token)
        for step in reversed(steps):
            step.discard()
        raise
    _PENDING.reset(token)
    with interrupts_deferred():
        for i, step in enumerate(steps):
            try:
                step.apply()
            except BaseException:
                for later in steps[i:]:  # the failing step's own temporary too
                    later.discard()
                raise
    for folder in {step.target.parent for step in steps}:
        fsync_folder(folder)


def remove_file(path) -> None:
    """Remove the file ``path`` if it exists; inside :func:`replace_on_success`, when the block succeeds.

    Parameters
    ----------
    path : str or Path
    """
    path = Path(path)
    if not _stage(_Step("remove", None, path)):
        path.unlink(missing_ok=True)


def hidden_sibling(path, tag: str) -> Path:
    """A name beside ``path`` that nothing uses: ``.<name>.<tag>-<pid>-<8 hex>``, for a folder being built.

    Parameters
    ----------
    path : str or Path
        The target.
    tag : str
        What the folder is, e.g. ``"partial"``.
    """
    path = Path(path)
    while True:
        candidate = path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")
        if not (candidate.exists() or candidate.is_symlink()):
            return candidate


def replace_folder(new, target) -> Path:
    """Move the complete folder ``new`` to ``target``, replacing what is there; inside
    :func:`replace_on_success`, when the block succeeds.

    ``new`` should be a sibling of ``target`` (see :func:`hidden_sibling`).
    An existing ``target`` is exchanged with ``new`` in one step where the
    system can (Linux ``renameat2(RENAME_EXCHANGE)``), else renamed aside
    just before ``new`` is renamed in (and renamed back if that fails); the
    old one is then removed. A reader never sees half of either.

    Parameters
    ----------
    new : str or Path
        The folder built; it is gone afterwards.
    target : str or Path

    Returns
    -------
    Path
        ``target``.
    """
    new, target = Path(new), Path(target)
    if not _stage(_Step("folder", new, target)):
        _swap_folder(new, target)
        fsync_folder(target.parent)
    return target


def _swap_folder(new: Path, target: Path) -> None:
    if not (target.exists() or target.is_symlink()):
        os.rename(new, target)
        return
    if _exchange(new, target):
        _remove(new)  # now the old one
        return
    aside = hidden_sibling(target, "replaced")
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(aside, target)
        raise
    _remove(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False  # glibc before 2.28, musl
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # a file system without it: rename aside instead
    raise OSError(code, os.strerror(code), str(b))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back during the block and deliver it after, so a few renames are done all or none.

    Outside the main thread (where Python cannot handle signals) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(*caught[0])
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)
