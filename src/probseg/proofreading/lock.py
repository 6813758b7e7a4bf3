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

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from probseg.proofreading.errors import SessionError, SessionLocked

LOCK_NAME = "session.lock"


def now() -> str:
    """The time as ISO 8601 UTC with milliseconds, as sessions record it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


try:  # POSIX: the kernel releases a flock when its holder dies, however it dies
    import fcntl
except ImportError:  # Windows: judged by the lock file's content alone
    fcntl = None

#: How long an unreadable (still being written) lock file is waited for, in seconds.
LOCK_WAIT = 2.0


def host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to see through pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` of this host still runs (and is the one that started at ``started``)."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: assume it runs
        if fields and fields[0] in (b"Z", b"X"):
            return False  # a zombie has closed its files; it writes nothing any more
        if started is not None and len(fields) > 19 and fields[19].isdigit() and int(fields[19]) != started:
            return False  # the pid was reused by another process
        return True
    if os.name == "nt":
        return True  # os.kill would terminate it; a lock left on Windows is removed by hand
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def try_flock(fd: int) -> bool | None:
    """Take an exclusive flock without waiting: True, False if another open file holds it, None if unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None  # e.g. a network file system without locks: judge by the content
    return True


def same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def read_holder(fd: int) -> dict | None:
    """The lock file's record, or None while it is empty or unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        info = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (isinstance(info, dict) and isinstance(info.get("pid"), int) and isinstance(info.get("host"), str)):
        return None
    return info


def read_holder_at(path: Path) -> dict | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return read_holder(fd)
    finally:
        os.close(fd)


def write_holder(fd: int) -> None:
    pid = os.getpid()
    info = {"pid": pid, "host": host(), "since": now(), "started": process_start(pid)}
    data = (json.dumps(info) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def describe(holder: dict | None) -> str:
    if holder is None:
        return "an unknown process"
    since = holder.get("since")
    return f"process {holder['pid']} on {holder['host']}" + (f" since {since}" if isinstance(since, str) else "")


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
            # Unlinked before the flock goes with the close: a process that
            # opened the old file and then gets the flock sees that it is no
            # longer the folder's lock file and tries again.
            if same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)
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
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise SessionError(f"the proofreading session {folder} was removed while it was being opened") from None
        except PermissionError:
            raise SessionError(
                f"cannot write to the proofreading session {folder} (permission denied); open it read-only"
            ) from None
        else:
            if try_flock(fd) is False:
                # Another process probed the empty new file first; it takes over, and we look again.
                os.close(fd)
                time.sleep(0.01)
                continue
            write_holder(fd)
            lock = FolderLock(path, fd)
            HELD[key] = lock
            return lock, None
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            continue  # released meanwhile
        except PermissionError:
            raise SessionError(
                f"cannot write to the proofreading session {folder} (permission denied); open it read-only"
            ) from None
        got = try_flock(fd)
        holder = read_holder(fd)
        stale = False
        if got is False:
            pass  # held by a live process
        elif not same_file(fd, path):
            os.close(fd)
            continue  # released and maybe re-created meanwhile
        elif holder is None:
            # Empty or garbled. With a flock, nobody holds it: its writer died
            # between creating and writing it. Without, give a writer time.
            stale = got is True or time.monotonic() > deadline
        elif holder["host"] == host():
            started = holder.get("started") if isinstance(holder.get("started"), int) else None
            # Our own pid with a free flock: a lock this process let go of
            # without removing the file (it holds every lock it uses in HELD).
            mine = got is True and holder["pid"] == os.getpid()
            stale = mine or not process_alive(holder["pid"], started)
        if not stale:
            os.close(fd)
            if holder is None and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise locked_error(folder, holder)
        write_holder(fd)
        lock = FolderLock(path, fd)
        HELD[key] = lock
        what = describe(holder) if holder is not None else "a process that died while taking it"
        notice = (f"took over the lock of the proofreading session {folder} left by {what}, which is no longer "
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
