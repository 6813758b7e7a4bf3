"""The lock of a proofreading session folder: one writing process at a time.

A session folder holds ``session.lock``, created with ``O_CREAT | O_EXCL`` and
kept under an exclusive ``flock`` while its session is open. The file records
the holder's pid, host, start time and the time it took the lock. The kernel
drops a ``flock`` when its holder dies, however it dies, so a live holder is
told from a dead one even when its pid has been reused; where ``flock`` is
missing (Windows, some network file systems) the record alone decides. A lock
left by a dead process of this host is taken over, with a notice; one held by
a live process, or by another host, is refused in one line that says who
holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from probseg.io.lock import (  # noqa: F401 - the generic mechanism; re-exported for the session's modules
    LOCK_WAIT, LockHeld, describe, host, now, process_alive, process_start, read_holder, read_holder_at, release,
    same_file, take, try_flock, write_holder,
)
from probseg.proofreading.errors import SessionError, SessionLocked

LOCK_NAME = "session.lock"


def locked_error(folder: Path, holder: dict | None) -> SessionLocked:
    path = folder / LOCK_NAME
    if holder is None:
        hint = f"; if no program uses the session, delete {path}"
    elif holder["host"] != host():
        hint = f"; if that machine no longer uses it, delete {path}"
    else:
        hint = ""
    return SessionLocked(
        f"the proofreading session {folder} is in use by {describe(holder)}; close it there, or open it "
        f"read-only (Session.open(..., read_only=True)){hint}",
        holder,
    )


class FolderLock:
    """This process's hold on one session folder's lock file, shared by the Session objects it hands on."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd: int | None = fd
        self.owner: int | None = None  # the token of the Session that may write

    @property
    def held(self) -> bool:
        return self.fd is not None

    def intact(self) -> bool:
        """Whether the lock file in the folder is still the one this process holds."""
        return self.fd is not None and same_file(self.fd, self.path)

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            release(fd, self.path)
        finally:
            for key, lock in list(HELD.items()):
                if lock is self:
                    del HELD[key]


#: Locks this process holds, by (st_dev, st_ino) of the session folder.
HELD: dict[tuple[int, int], FolderLock] = {}


def folder_key(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def acquire(folder: Path) -> tuple[FolderLock, str | None]:
    """Take the lock of an existing session folder.

    Returns
    -------
    lock : FolderLock
        This process's lock; the same object when this process holds it already.
    notice : str or None
        Says whose stale lock was taken over.

    Raises
    ------
    SessionLocked
        If another live process holds it, or a process of another host.
    SessionError
        If the folder cannot be written.
    """
    key = folder_key(folder)
    held = HELD.get(key)
    if held is not None:
        if held.intact():
            return held, None
        held.release()  # its file was removed by hand: the Sessions using it stop writing
    path = folder / LOCK_NAME
    try:
        fd, stale = take(path)
    except LockHeld as exc:
        raise locked_error(folder, exc.holder) from None
    except FileNotFoundError:
        raise SessionError(f"the proofreading session {folder} was removed while it was being opened") from None
    except PermissionError:
        raise SessionError(
            f"cannot write to the proofreading session {folder} (permission denied); open it read-only"
        ) from None
    lock = FolderLock(path, fd)
    HELD[key] = lock
    if stale is None:
        return lock, None
    notice = (f"took over the lock of the proofreading session {folder} left by {stale}, which is no longer "
              "running; every edit it saved is kept")
    return lock, notice


def release_owned(lock: FolderLock, token: int) -> None:
    """Release ``lock`` if the Session with ``token`` still owns it (from close, garbage collection, exit)."""
    if lock.owner == token:
        lock.release()





def holds(folder: Path) -> bool:
    """Whether this process holds the lock of ``folder`` (and its file is still the folder's)."""
    lock = HELD.get(folder_key(folder))
    return lock is not None and lock.intact()


def lock_new(staging: Path) -> int:
    """Create and take the lock file of a session being built in the hidden folder ``staging``; return its fd."""
    fd = os.open(staging / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try_flock(fd)  # a new file in our own hidden folder: nobody else has it open
    write_holder(fd)
    return fd


def adopt(folder: Path, fd: int) -> FolderLock:
    """This process's lock of ``folder``, whose lock file ``fd`` (from :func:`lock_new`) was renamed into it."""
    lock = FolderLock(folder / LOCK_NAME, fd)
    key = folder_key(folder)
    old = HELD.get(key)
    if old is not None:
        old.release()
    HELD[key] = lock
    return lock
