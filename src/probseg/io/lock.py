"""Lock files: one writing process at a time for an output, a model folder or a proofreading session.

A lock is a file created with ``O_CREAT | O_EXCL`` and kept under an
exclusive ``flock`` while its holder writes. The file records the holder's
pid, host, start time and the time it took the lock. The kernel drops a
``flock`` when its holder dies, however it dies, so a live holder is told
from a dead one even when its pid has been reused; where ``flock`` is
missing (Windows, some network file systems) the record alone decides. A lock
left by a dead process of this host is taken over; one held by a live
process, or by another host, is refused with :class:`LockHeld`, which names
the holder.

:func:`take` is the mechanism; the proofreading session
(:mod:`probseg.proofreading.lock`) keeps its lock inside the session folder,
and :func:`hold` / :func:`hold_all` lock any output path or model folder
through a hidden sibling file ``.<name>.lock``, so that ``probseg segment``,
``probseg train``, ``model.save`` and the other writers of one path refuse
each other instead of losing one result.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from probseg.core.errors import InputError, ProbsegError

try:  # POSIX: the kernel releases a flock when its holder dies, however it dies
    import fcntl
except ImportError:  # Windows: judged by the lock file's content alone
    fcntl = None

__all__ = ["LockHeld", "take", "hold", "hold_all", "lock_file_of", "describe", "now", "host", "process_alive"]

#: How long an unreadable (still being written) lock file is waited for, in seconds.
LOCK_WAIT = 2.0


class LockHeld(ProbsegError):
    """The lock is held by a live process or by another host.

    Attributes
    ----------
    path : Path
        The lock file.
    holder : dict or None
        Its record: ``pid``, ``host``, ``since`` (ISO 8601 UTC); None when it
        cannot be read.
    """

    def __init__(self, message: str, path: Path, holder: dict | None):
        super().__init__(message)
        self.path = path
        self.holder = holder


def now() -> str:
    """The time as ISO 8601 UTC with milliseconds, as lock files and sessions record it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def host() -> str:
    """This machine's name, as lock files record it."""
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
    """Whether the open file ``fd`` is the file at ``path`` (not removed or replaced meanwhile)."""
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
    """The record of the lock file at ``path``, or None if there is none or it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return read_holder(fd)
    finally:
        os.close(fd)


def write_holder(fd: int) -> None:
    """Record this process (pid, host, since, start time) in the lock file ``fd``."""
    pid = os.getpid()
    info = {"pid": pid, "host": host(), "since": now(), "started": process_start(pid)}
    data = (json.dumps(info) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def describe(holder: dict | None) -> str:
    """``process <pid> on <host> since <time>``, or ``an unknown process`` for an unreadable record."""
    if holder is None:
        return "an unknown process"
    since = holder.get("since")
    return f"process {holder['pid']} on {holder['host']}" + (f" since {since}" if isinstance(since, str) else "")


def take(path: Path, wait: float = LOCK_WAIT) -> tuple[int, str | None]:
    """Create or take over the lock file ``path`` and hold its flock.

    Parameters
    ----------
    path : Path
        The lock file; its folder must exist.
    wait : float
        Seconds an empty or garbled lock file (its writer may be writing the
        record) is waited for where there is no ``flock``.

    Returns
    -------
    fd : int
        The open lock file; closing it drops the flock (remove the file
        first, see :func:`release`).
    stale : str or None
        Whose stale lock was taken over (``describe`` of its record), or None
        when the lock was free.

    Raises
    ------
    LockHeld
        If a live process, or a process of another host, holds it. The
        message is generic; callers say what the lock protects.
    OSError
        ``FileNotFoundError`` if the folder is missing, ``PermissionError``
        if it cannot be written.
    """
    path = Path(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        except FileExistsError:
            pass
        else:
            if try_flock(fd) is False:
                # Another process probed the empty new file first; it takes over, and we look again.
                os.close(fd)
                time.sleep(0.01)
                continue
            write_holder(fd)
            return fd, None
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            continue  # released meanwhile
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
            # without removing the file (its users keep every lock they hold).
            mine = got is True and holder["pid"] == os.getpid()
            stale = mine or not process_alive(holder["pid"], started)
        if not stale:
            os.close(fd)
            if holder is None and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise LockHeld(f"{path} is held by {describe(holder)}", path, holder)
        write_holder(fd)
        return fd, describe(holder) if holder is not None else "a process that died while taking it"


def release(fd: int, path: Path) -> None:
    """Remove the lock file ``path`` if it is still ``fd``'s, then close ``fd`` (which drops the flock).

    Removed before the flock goes with the close: a process that opened the
    old file and then gets the flock sees that it is no longer the lock file
    and tries again.
    """
    try:
        if same_file(fd, path):
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- locks of outputs and model folders ----------------------------------------------------------

def lock_file_of(target) -> Path:
    """The lock file of the output or model folder ``target``: ``.<name>.lock`` beside it.

    The folder part is resolved (symbolic links followed), so two spellings
    of one path share one lock; a file ``target`` may be a link, which a
    write replaces, while a folder ``target`` is resolved too, since its
    files are written through the link.
    """
    absolute = Path(os.path.abspath(target))
    if absolute.is_dir():
        # A folder (a model folder) is written through a link, not replaced: lock where the files go.
        absolute = Path(os.path.realpath(absolute))
    parent = Path(os.path.realpath(absolute.parent))
    name = absolute.name or "root"
    return parent / f".{name}.lock"


class _Held:
    """This process's hold on one output's lock file; counted, so nested holds of one path are one lock."""

    def __init__(self, path: Path, fd: int, made: list):
        self.path, self.fd, self.made, self.count = path, fd, made, 1


#: Output locks this process holds, by lock file path.
_HELD: dict[str, _Held] = {}


def _make_parents(folder: Path) -> list:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    made = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        made.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write in {folder}: Not a directory ({probe} is a file)")
    folder.mkdir(parents=True, exist_ok=True)
    return made


@contextlib.contextmanager
def hold(target, what: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``target`` (an output file or a model folder) for the block.

    Missing folders above ``target`` are created (its writer would create
    them) and removed again, when still empty, at the end of the block. A
    stale lock of a dead process is taken over. Holding a lock this process
    holds already is allowed (``model.save`` inside ``train``): the lock is
    released when the outermost block ends.

    Parameters
    ----------
    target : str or Path
        What is about to be written.
    what : str, optional
        How to name it in the error, e.g. ``"--out"`` or ``"the model folder"``.

    Yields
    ------
    Path
        The lock file (see :func:`lock_file_of`).

    Raises
    ------
    LockHeld
        In one line naming the holder (pid, host, since), if another live
        process, or another host, writes ``target``.
    ProbsegError
        If the folder of ``target`` cannot be written.

    Examples
    --------
    >>> with hold("labels.tif", "--out"):  # doctest: +SKIP
    ...     write_image("labels.tif", labels, overwrite=True)
    """
    path = lock_file_of(target)
    key = str(path)
    held = _HELD.get(key)
    if held is not None and same_file(held.fd, path):
        held.count += 1
        try:
            yield path
        finally:
            held.count -= 1
        return
    name = f"{what} {target}" if what else str(target)
    try:
        made = _make_parents(path.parent)
    except PermissionError:
        raise ProbsegError(f"cannot write {name}: permission denied") from None
    try:
        fd, _ = take(path)
    except LockHeld as exc:
        _remove_empty(made)
        raise _held_error(name, exc) from None
    except PermissionError:
        _remove_empty(made)
        raise ProbsegError(f"cannot write {name}: its folder {path.parent} is not writable (permission denied)") from None
    held = _HELD[key] = _Held(path, fd, made)
    try:
        yield path
    finally:
        held.count -= 1
        if held.count == 0:
            if _HELD.get(key) is held:  # a nested hold may have replaced a lock file someone deleted
                del _HELD[key]
            release(fd, path)
            _remove_empty(held.made)


@contextlib.contextmanager
def hold_all(targets: dict) -> Iterator[None]:
    """Hold the locks of several outputs, ``{name in errors: path}`` (None values skipped), for the block.

    They are taken in one order (by lock file), so two runs that write some
    of the same outputs cannot each hold a part and refuse each other.

    Raises
    ------
    LockHeld
        As :func:`hold`, for the first output another process writes; the
        locks taken before it are released.
    """
    named = sorted(((lock_file_of(p), what, p) for what, p in targets.items() if p is not None), key=lambda t: str(t[0]))
    with contextlib.ExitStack() as stack:
        seen = set()
        for lock, what, p in named:
            if lock not in seen:
                seen.add(lock)
                stack.enter_context(hold(p, what))
        yield


def _held_error(name: str, exc: LockHeld) -> LockHeld:
    holder = exc.holder
    if holder is None or holder["host"] != host():
        hint = f"; if no program writes it any more, delete {exc.path}"
    else:
        hint = "; wait until it is done, or choose another name"
    return LockHeld(f"{name} is being written by {describe(holder)}{hint}", exc.path, holder)


def _remove_empty(folders: list) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return
