"""The proofreading session store: corrected labels and their edit log, never lost.

A session lives in a folder beside the image, named after it: for
``/data/cells.tif`` it is ``/data/cells.tif.probseg/`` (for a zarr store
``plate.zarr`` it is ``plate.zarr.probseg/``). It holds::

    cells.tif.probseg/
        session.json       the commit record: format, image name, shape, dtype and
                           checksum, label shape and checksum, the checksum of the
                           labels the session started from, the inputs it was made
                           from (see :attr:`Session.inputs`), created/modified
                           times, reviewed patch ids, position in the edit log
        session.lock       while a process has the session open for writing: its
                           pid, host and since when (see "One writer at a time")
        labels.npy         the current corrected labels (int32)
        edits.json         the log: [{id, kind, params, time, pixels, undone, discarded}, ...]
        edits/000001.npz   one compressed file per edit: index, before, after and a
        edits/000002.npz   JSON header (kind, params, time); written once, never changed
        ...

Crash safety
------------
Every file is written to a temporary file in the same folder, flushed,
fsynced and renamed over the old one (``os.replace``; see
:mod:`probseg.io.atomic`), so no file is ever seen half-written. An operation
touches several files, so their order makes the whole operation atomic: (1)
the new edit's ``.npz``; (2) ``edits.json``; (3) ``session.json``, the commit
point; (4) ``labels.npy``. ``session.json`` is authoritative: before (3)
lands the session is in its old state (an ``edits.json`` or ``.npz`` already
written ahead is ignored and overwritten), after it the new one. Only
``labels.npy`` can lag, by exactly the last operation, which ``session.json``
names (``last_op``) together with the checksum the labels must have;
:meth:`Session.open` replays that one edit and checks the result. A process
killed at any moment therefore reopens as the state before or after the
operation it was doing, and an edit whose :meth:`Session.apply` returned is
always there.

A folder that is unreadable, truncated, tampered with, or made for other
image data is never repaired or overwritten: :meth:`Session.open` raises
:class:`SessionError` and leaves it as it is. ``start_over=True`` moves it
aside to ``cells.tif.probseg.old-<timestamp>`` and begins a new session.

One writer at a time
--------------------
:meth:`Session.open` takes the folder's ``session.lock``: created with
``O_CREAT | O_EXCL`` (so two processes cannot both create it), holding the
pid, host and start time of the process, and kept ``flock``-ed while open so
that the kernel itself tells a live holder from a dead one. The lock is
released by :meth:`Session.close` (or leaving a ``with`` block), when the
session object is garbage collected, and at interpreter exit. A second process
gets :class:`SessionLocked`, one line naming the holder; it can open the
session with ``read_only=True`` to read the labels and history while the other
one edits. A lock left by a process of this host that is no longer running
(killed, crashed) is taken over, and :attr:`Session.notices` says so. A lock
of another host is never taken over: its process cannot be checked from here.

Within one process, opening the same folder again hands the lock to the new
:class:`Session`; the older object can still be read but raises
:class:`SessionError` on any change, so two objects never overwrite each
other's edits.

Temporary files and staging folders carry the writing process's pid and a
random suffix (``.labels.npy.<pid>-<8 hex>.tmp``). Opening a session removes
only those left by processes that are no longer running, never the files of
one that is still writing.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import time
import weakref
import zipfile
from pathlib import Path

import numpy as np

from probseg.io.atomic import atomic_write, fsync_folder, write_json, write_npy
from probseg.core.errors import InputError
from probseg.core.inputs import check_labels
from probseg.io.images import write_image
from probseg.proofreading import lock as folderlock
from probseg.proofreading.edits import KINDS, Edit, check_rect, diff
from probseg.proofreading.errors import SessionError, SessionLocked
from probseg.proofreading.lock import LOCK_NAME

__all__ = [
    "Session",
    "SessionError",
    "SessionLocked",
    "session_folder",
    "saved_session_info",
    "image_checksum",
    "labels_checksum",
    "FOLDER_SUFFIX",
]

FORMAT = "probseg-proofreading-session"
FORMAT_VERSION = 1
FOLDER_SUFFIX = ".probseg"
SESSION_NAME = "session.json"
LABELS_NAME = "labels.npy"
LOG_NAME = "edits.json"
EDITS_DIR = "edits"
LABEL_DTYPE = np.dtype(np.int32)
# Temporary files of probseg.io.atomic: ".<name>.<pid>-<8 hex>.tmp".
_TMP_PATTERN = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")




def session_folder(image_path) -> Path:
    """The session folder of an image: its path with ``.probseg`` appended."""
    path = Path(image_path)
    return path.with_name(path.name + FOLDER_SUFFIX)


def _digest(array: np.ndarray) -> str:
    """blake2b of an array's dtype, shape and bytes, so equal bytes in another shape differ."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.reshape(-1).view(np.uint8).data if array.size else b"")
    return "blake2b:" + h.hexdigest()


def image_checksum(image) -> str:
    """Checksum of the image data a session belongs to (``"blake2b:<hex>"``)."""
    return _digest(np.asarray(image))


def labels_checksum(labels) -> str | None:
    """Checksum of a label image as a session stores it (int32), to compare with its start.

    Parameters
    ----------
    labels : array_like of int, shape (Y, X)

    Returns
    -------
    str or None
        ``"blake2b:<hex>"`` of the labels cast to int32, so that the same
        labels in uint16 or int64 give the same checksum; None for arrays
        that a session cannot hold (not 2-D, not integer, negative ids or ids
        of 2**31 and more).
    """
    array = np.asarray(labels)
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        return None
    if array.size and (array.min() < 0 or array.max() > np.iinfo(LABEL_DTYPE).max):
        return None
    return _digest(array.astype(LABEL_DTYPE))


_now = folderlock.now
_TOKENS = itertools.count(1)  # tells apart the Session objects sharing one lock


def _edit_name(edit_id: int) -> str:
    return f"{EDITS_DIR}/{edit_id:06d}.npz"


# -- edit files --------------------------------------------------------------------------


def _write_edit(path: Path, edit: Edit, entry: dict) -> None:
    header = json.dumps({"id": entry["id"], "kind": edit.kind, "params": edit.params, "time": entry["time"],
                         "shape": list(edit.shape)})
    arrays = {"index": edit.index, "before": edit.before, "after": edit.after, "header": np.array(header)}
    atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


# -- patch ids ---------------------------------------------------------------------------


def _patch_id(value):
    """A patch id as stored: an int, a str, or a tuple of ints (e.g. the patch's rectangle)."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"a patch id is an integer, a string or a tuple of integers, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)) and value and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value
    ):
        return tuple(int(v) for v in value)
    raise InputError(f"a patch id is an integer, a string or a tuple of integers, got {value!r}")


def _ordered(ids) -> list:
    """Patch ids in a stable order (ints, strs and tuples do not compare with each other)."""
    return sorted(ids, key=lambda v: (type(v).__name__, v))


def _ids_json(ids) -> list:
    return [list(v) if isinstance(v, tuple) else v for v in _ordered(ids)]


# -- reading a session folder (never writes) ---------------------------------------------


class _Problem(Exception):
    """Why a session folder cannot be used; turned into a SessionError naming the folder."""


def _read_json(folder: Path, name: str):
    path = folder / name
    if not path.is_file():
        raise _Problem(f"lacks {name}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Problem(f"has an unreadable {name} ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise _Problem(f"has a {name} that cannot be read ({exc.strerror or exc})") from None


def _field(record: dict, key: str, kind, name: str = SESSION_NAME):
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _Problem(f"has a {name} without a valid {key!r}")
    return value


def _read_session(folder: Path) -> dict:
    record = _read_json(folder, SESSION_NAME)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _Problem(f"has a {SESSION_NAME} that is not a probseg proofreading session")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _Problem(f"was written by a newer probseg (format version {version!r}; this one reads up to {FORMAT_VERSION})")
    image, labels = _field(record, "image", dict), _field(record, "labels", dict)
    for part, keys in ((image, ("name", "dtype", "checksum")), (labels, ("dtype", "checksum"))):
        for key in keys:
            _field(part, key, str)
    for part in (image, labels):
        shape = _field(part, "shape", list)
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _Problem(f"has a {SESSION_NAME} with an invalid shape {shape!r}")
    if len(labels["shape"]) != 2 or labels["dtype"] != LABEL_DTYPE.str:
        raise _Problem(f"has a {SESSION_NAME} describing {labels['dtype']} labels of shape {labels['shape']}")
    for key in ("position", "n_edits"):
        if _field(record, key, int) < 0:
            raise _Problem(f"has a {SESSION_NAME} with a negative {key!r}")
    for key in ("created", "modified"):
        _field(record, key, str)
    discarded, reviewed = _field(record, "discarded", list), _field(record, "reviewed", list)
    if not all(isinstance(i, int) and 1 <= i <= record["n_edits"] for i in discarded):
        raise _Problem(f"has a {SESSION_NAME} whose discarded edits are not in the log")
    try:
        record["reviewed"] = {_patch_id(v) for v in reviewed}
    except InputError:
        raise _Problem(f"has a {SESSION_NAME} with an invalid reviewed patch id") from None
    if record["position"] > record["n_edits"] - len(set(discarded)):
        raise _Problem(f"has a {SESSION_NAME} whose position is past the end of the edit log")
    if not isinstance(record.get("inputs", {}), dict):
        raise _Problem(f"has a {SESSION_NAME} with an invalid 'inputs'")
    if not isinstance(record.get("initial_labels_checksum", ""), str):
        raise _Problem(f"has a {SESSION_NAME} with an invalid 'initial_labels_checksum'")
    last = record.get("last_op")
    if last is not None and not (
        isinstance(last, dict) and last.get("op") in ("apply", "undo", "redo")
        and isinstance(last.get("edit"), int) and 1 <= last["edit"] <= record["n_edits"]
    ):
        raise _Problem(f"has a {SESSION_NAME} with an invalid 'last_op'")
    return record


def _read_log(folder: Path, record: dict) -> tuple[list[dict], bool]:
    """The committed log entries, with flags recomputed from ``session.json``.

    ``edits.json`` may hold entries and flags of an operation that was
    written ahead of its commit and then interrupted; those are dropped.

    Returns
    -------
    entries : list of dict
    ahead : bool
        Whether ``edits.json`` differs from ``entries`` and must be rewritten.
    """
    log = _read_json(folder, LOG_NAME)
    n = record["n_edits"]
    if not isinstance(log, list) or len(log) < n:
        raise _Problem(f"has an {LOG_NAME} with fewer entries than the {n} its {SESSION_NAME} records")
    discarded = set(record["discarded"])
    entries = []
    for number, raw in enumerate(log[:n], start=1):
        if not (isinstance(raw, dict) and raw.get("id") == number and raw.get("kind") in KINDS
                and isinstance(raw.get("params"), dict) and isinstance(raw.get("time"), str)
                and isinstance(raw.get("pixels"), int)):
            raise _Problem(f"has an {LOG_NAME} whose entry {number} is damaged")
        entry = {key: raw[key] for key in ("id", "kind", "params", "time", "pixels")}
        entry["discarded"] = number in discarded
        entries.append(entry)
    _set_flags(entries, record["position"])
    return entries, log != entries


def _set_flags(entries: list[dict], position: int) -> None:
    """Mark as undone the entries of the live branch at or after ``position``."""
    live = [e for e in entries if not e["discarded"]]
    for i, entry in enumerate(live):
        entry["undone"] = i >= position
    for entry in entries:
        if entry["discarded"]:
            entry["undone"] = True


def _check_edit_files(folder: Path, entries: list[dict]) -> None:
    for entry in entries:
        if entry["discarded"]:
            continue  # never needed again
        path = folder / _edit_name(entry["id"])
        if not path.is_file():
            raise _Problem(f"lacks {_edit_name(entry['id'])} (edit {entry['id']} of its log)")
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise _Problem(f"has a truncated or corrupt {_edit_name(entry['id'])} ({exc})") from None
        if not {"index.npy", "before.npy", "after.npy", "header.npy"} <= names:
            raise _Problem(f"has an incomplete {_edit_name(entry['id'])}")


def _read_edit(folder: Path, entry: dict, shape: tuple) -> Edit:
    name = _edit_name(entry["id"])
    try:
        with np.load(folder / name, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
            edit = Edit(entry["kind"], header.get("params", {}), data["index"], data["before"], data["after"], shape)
    except FileNotFoundError:
        raise _Problem(f"lacks {name} (edit {entry['id']} of its log)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, InputError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Problem(f"has a corrupt {name} ({reason})") from None
    if header.get("kind") != entry["kind"] or header.get("id") != entry["id"] or header.get("shape") != list(shape):
        raise _Problem(f"has a {name} that does not match entry {entry['id']} of {LOG_NAME}")
    return edit


def _read_labels(folder: Path, record: dict) -> np.ndarray:
    path = folder / LABELS_NAME
    if not path.is_file():
        raise _Problem(f"lacks {LABELS_NAME}")
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Problem(f"has a truncated or corrupt {LABELS_NAME} ({reason})") from None
    expected = tuple(record["labels"]["shape"])
    if labels.shape != expected or labels.dtype != LABEL_DTYPE:
        raise _Problem(f"has a {LABELS_NAME} of {labels.dtype} {labels.shape}, expected {LABEL_DTYPE} {expected}")
    return np.ascontiguousarray(labels)


def _catch_up(folder: Path, record: dict, entries: list[dict], labels: np.ndarray) -> bool:
    """Bring ``labels`` up to the committed state; True if they lagged.

    Only the last committed operation can be missing from ``labels.npy``
    (see the module notes), so replaying it must give the recorded checksum;
    anything else means the folder was damaged.
    """
    if _digest(labels) == record["labels"]["checksum"]:
        return False
    last = record.get("last_op")
    mismatch = _Problem(f"has a {LABELS_NAME} that does not match its edit log")
    if last is None:
        raise mismatch
    edit = _read_edit(folder, entries[last["edit"] - 1], labels.shape)
    try:
        if last["op"] == "undo":
            edit.revert(labels)
        else:
            edit.apply(labels)
    except InputError:
        raise mismatch from None
    if _digest(labels) != record["labels"]["checksum"]:
        raise mismatch
    return True


def _load(folder: Path, image: np.ndarray, checksum: str) -> tuple:
    """Read a whole session folder and check it belongs to ``image``; writes nothing.

    Returns
    -------
    record, entries, labels, lagged, log_ahead
        As :func:`_read_session`, :func:`_read_log`, :func:`_read_labels`
        (caught up) and whether the labels lagged and the log ran ahead.
    """
    if not folder.is_dir():
        raise _Problem("is not a folder")
    record = _read_session(folder)
    saved = record["image"]
    if tuple(saved["shape"]) != image.shape:
        raise _Problem(f"belongs to an image of shape {tuple(saved['shape'])}, not {image.shape}")
    if saved["checksum"] != checksum:
        raise _Problem(f"belongs to other image data ({saved['name']} with a different checksum)")
    entries, log_ahead = _read_log(folder, record)
    _check_edit_files(folder, entries)
    labels = _read_labels(folder, record)
    lagged = _catch_up(folder, record, entries, labels)
    return record, entries, labels, lagged, log_ahead


def saved_session_info(image_path) -> dict | None:
    """What the saved session of an image holds, read without opening or locking it.

    For a program that must choose its inputs before resuming (the
    Proofread widget picks the layers the session was made from).

    Parameters
    ----------
    image_path : str or Path
        The image; its session folder is :func:`session_folder` of it.

    Returns
    -------
    dict or None
        None when there is no session folder; else ``inputs`` (the dict
        given to :meth:`Session.open`, ``{}`` if none was),
        ``initial_labels_checksum`` (None for sessions of older probseg),
        ``labels_checksum`` (the current labels), ``image`` (``name``,
        ``shape``, ``dtype``, ``checksum``), ``n_edits`` and ``n_reviewed``.

    Raises
    ------
    SessionError
        If ``session.json`` cannot be read.
    """
    folder = session_folder(image_path)
    if not folder.is_dir():
        return None
    try:
        record = _read_session(folder)
    except _Problem as problem:
        raise SessionError(f"the proofreading session {folder} {problem}; it was left untouched") from None
    return {
        "inputs": copy.deepcopy(record.get("inputs", {})),
        "initial_labels_checksum": record.get("initial_labels_checksum"),
        "labels_checksum": record["labels"]["checksum"],
        "image": dict(record["image"]),
        "n_edits": record["n_edits"],
        "n_reviewed": len(record["reviewed"]),
    }


# -- the session ---------------------------------------------------------------------------


class Session:
    """Corrected labels of one image, with undo/redo and reviewed patches, saved as they change.

    Create or resume one with :meth:`open`; see the module notes for the
    folder layout, the lock, and why nothing is lost when the process dies.
    Use it as a context manager, or call :meth:`close`, to release the lock
    as soon as the work is done.

    Attributes
    ----------
    folder : Path
        The session folder.
    image_path : Path
        The image the session belongs to.
    read_only : bool
        Opened with ``read_only=True``: the labels, history and inputs can be
        read, every change raises :class:`SessionError`.
    notices : tuple of str
        What :meth:`open` did that the user should hear of: a stale lock
        taken over, a read-only open while another process writes.
    """

    def __init__(self, folder: Path, image_path: Path, record: dict, entries: list[dict], labels: np.ndarray,
                 lock: folderlock.FolderLock | None = None, notices: tuple = ()):
        # Use open(); this only wires up state that has been read or created.
        self.folder = folder
        self.image_path = image_path
        self._record = record
        self._entries = entries
        self._labels = labels
        self._labels_lag = False
        self.read_only = lock is None
        self.notices = tuple(notices)
        self._lock = lock
        self._token = next(_TOKENS)
        self._closed = False
        if lock is not None:
            lock.owner = self._token  # an older Session of this folder in this process stops writing
            # Also runs at interpreter exit; never refers to self, so the session can be collected.
            self._finalizer = weakref.finalize(self, folderlock.release_owned, lock, self._token)

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, image_path, image, initial_labels=None, *, start_over: bool = False, read_only: bool = False,
             inputs: dict | None = None) -> "Session":
        """Resume the session of ``image_path``, or begin one.

        Parameters
        ----------
        image_path : str or Path
            The image file (or zarr store); the session folder is
            :func:`session_folder` of it. The file itself is not read.
        image : array_like
            The image data, to check that a saved session belongs to it
            (shape and checksum; the file name is not compared, so renaming
            the image together with its folder keeps the session).
        initial_labels : array_like of int, optional
            Labels to start a new session from (copied; shape
            ``image.shape[:2]`` or ``image.shape[-2:]``). Default: all
            background, for a 2-D image. Ignored when a session is resumed:
            the saved corrections win.
        start_over : bool
            Move an existing session folder aside to
            ``<name>.probseg.old-<timestamp>`` (never deleted) and begin anew.
        read_only : bool
            Open an existing session for reading only, without taking its
            lock: possible while another process edits it. Nothing in the
            folder is written, and every change raises :class:`SessionError`.
        inputs : dict, optional
            What a new session is made from, kept as :attr:`inputs` (any
            JSON object, e.g. the layer names of the image, labels and
            uncertainty). Ignored when a session is resumed; change it with
            :meth:`set_inputs`.

        Returns
        -------
        Session

        Raises
        ------
        SessionLocked
            If another live process has the session open (a
            :class:`SessionError`); open it with ``read_only=True`` instead.
        SessionError
            If the folder exists but is corrupt, incomplete, of a newer
            format, or made for other image data; the folder is left as it
            is. With ``read_only``, also when there is no session to read.
        InputError
            For unusable labels or inputs, a missing parent folder, or
            ``read_only`` together with ``start_over``.
        """
        image_path = Path(image_path)
        image = np.asarray(image)
        folder = session_folder(image_path)
        checksum = image_checksum(image)
        exists = folder.exists() or folder.is_symlink()
        if read_only:
            if start_over:
                raise InputError("a session opened read-only cannot start over")
            if not folder.is_dir():
                raise SessionError(f"there is no proofreading session {folder} to open read-only")
            return cls._read(folder, image_path, image, checksum)
        if inputs is not None:
            inputs = _check_inputs(inputs)
        if start_over or not exists:
            labels = _initial_labels(initial_labels, image)
            if exists:
                _move_aside_locked(folder)
            session = cls._create(folder, image_path, image, checksum, labels, inputs)
            if session is not None:
                return session
            # Another process created the folder a moment ago: resume it (or meet its lock).
        return cls._resume(folder, image_path, image, checksum)

    @classmethod
    def _create(cls, folder: Path, image_path: Path, image: np.ndarray, checksum: str, labels: np.ndarray,
                inputs: dict | None) -> "Session | None":
        """Create the session folder; None if another process created it first."""
        if not folder.parent.is_dir():
            raise InputError(f"cannot create the session {folder}: the folder {folder.parent} does not exist")
        now = _now()
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "image": {"name": image_path.name, "shape": list(image.shape), "dtype": image.dtype.str, "checksum": checksum},
            "labels": {"shape": list(labels.shape), "dtype": LABEL_DTYPE.str, "checksum": _digest(labels)},
            "initial_labels_checksum": _digest(labels),
            "inputs": copy.deepcopy(inputs) if inputs is not None else {},
            "created": now,
            "modified": now,
            "reviewed": set(),
            "position": 0,
            "n_edits": 0,
            "discarded": [],
            "last_op": None,
        }
        # Built in a hidden folder and renamed into place, so a session folder
        # that exists is always complete, and locked from its first moment.
        staging = _make_staging(folder)
        fd = None
        try:
            (staging / EDITS_DIR).mkdir()
            write_npy(staging / LABELS_NAME, labels)
            write_json(staging / LOG_NAME, [])
            write_json(staging / SESSION_NAME, _record_json(record))
            fd = folderlock.lock_new(staging)
            try:
                os.rename(staging, folder)
            except OSError:
                if not (folder.exists() or folder.is_symlink()):
                    raise
                os.close(fd)
                fd = None
                shutil.rmtree(staging, ignore_errors=True)
                return None
        except PermissionError:
            if fd is not None:
                os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)
            raise _no_permission(folder) from None
        except BaseException:
            if fd is not None:
                os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_folder(folder.parent)
        lock = folderlock.adopt(folder, fd)
        return cls(folder, image_path, record, [], labels, lock)

    @classmethod
    def _resume(cls, folder: Path, image_path: Path, image: np.ndarray, checksum: str) -> "Session":
        if not folder.is_dir():
            raise SessionError(
                f"the proofreading session {folder} is not a folder; it was left untouched "
                "(open it with start over to move it aside and begin again)"
            )
        had_it = folderlock.holds(folder)
        lock, notice = folderlock.acquire(folder)
        try:
            record, entries, labels, lagged, log_ahead = _load(folder, image, checksum)
        except _Problem as problem:
            if not had_it:
                lock.release()
            raise SessionError(
                f"the proofreading session {folder} {problem}; it was left untouched "
                "(open it with start over to move it aside and begin again)"
            ) from None
        except BaseException:
            if not had_it:
                lock.release()
            raise
        session = cls(folder, image_path, record, entries, labels, lock, (notice,) if notice else ())
        session._finish_interrupted(lagged, log_ahead)
        return session

    @classmethod
    def _read(cls, folder: Path, image_path: Path, image: np.ndarray, checksum: str) -> "Session":
        holder = folderlock.read_holder_at(folder / LOCK_NAME)
        attempts = 5
        for attempt in range(attempts):
            try:
                record, entries, labels, _, _ = _load(folder, image, checksum)
                break
            except _Problem as problem:
                # A writer may replace files between our reads; only a lasting problem is damage.
                if attempt + 1 < attempts and (folder / LOCK_NAME).exists():
                    time.sleep(0.05)
                    continue
                raise SessionError(f"the proofreading session {folder} {problem}; it was left untouched") from None
        notices = ()
        if holder is not None and not (holder["pid"] == os.getpid() and holder["host"] == folderlock.host()):
            notices = (f"opened read-only; {folderlock.describe(holder)} has it open for writing",)
        return cls(folder, image_path, record, entries, labels, None, notices)

    def _finish_interrupted(self, labels_lag: bool, log_ahead: bool) -> None:
        """Complete what a killed process left: lagging labels, a log written ahead, temporary files."""
        if labels_lag:
            write_npy(self.folder / LABELS_NAME, self._labels)
        if log_ahead:
            write_json(self.folder / LOG_NAME, self._entries)
        # We hold the lock, so no other process writes here; still, a file is
        # removed only when the process that made it no longer runs.
        for sub in (self.folder, self.folder / EDITS_DIR):
            for path in sub.glob(".*.tmp"):
                match = _TMP_PATTERN.match(path.name)
                if match and path.is_file() and int(match.group(1)) != os.getpid() \
                        and not folderlock.process_alive(int(match.group(1)), None):
                    path.unlink(missing_ok=True)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Release the lock so another process can open the session; the object stays readable.

        Every change was saved when it was made, so closing writes nothing.
        Closing twice, or a read-only session, does nothing.
        """
        self._closed = True
        if self._lock is not None:
            folderlock.release_owned(self._lock, self._token)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether this object can no longer change the session (closed, or replaced by a newer open)."""
        return self._closed or self._lock is None or self._lock.owner != self._token or not self._lock.held

    def _check_writable(self, action: str) -> None:
        if self._lock is None:
            raise SessionError(
                f"the proofreading session {self.folder} is open read-only; cannot {action} "
                "(open it without read_only once no other process has it open)"
            )
        if self._closed:
            raise SessionError(f"this proofreading session {self.folder} was closed; open it again to {action}")
        if self._lock.owner != self._token or not self._lock.held:
            raise SessionError(
                f"the proofreading session {self.folder} was opened again in this process; "
                f"use the newer Session to {action}"
            )
        if not self._lock.intact():
            raise SessionError(
                f"the lock file {self._lock.path} was removed or replaced by another program; "
                f"cannot {action}; open the session again"
            )

    # -- state -------------------------------------------------------------------------

    @property
    def labels(self) -> np.ndarray:
        """The current labels, int32, read-only.

        Change them through :meth:`apply` (or :meth:`commit_external`); give
        napari a copy (``session.labels.copy()``) to paint into.
        """
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def shape(self) -> tuple[int, int]:
        return self._labels.shape

    @property
    def history(self) -> list[dict]:
        """The edit log, oldest first: copies of ``{id, kind, params, time, pixels, undone, discarded}``.

        ``undone`` edits can be redone unless ``discarded``: a new edit made
        after undoing discards the undone ones (they stay in the log).
        """
        return copy.deepcopy(self._entries)

    @property
    def position(self) -> int:
        """How many edits of the live (not discarded) branch are applied."""
        return self._record["position"]

    @property
    def can_undo(self) -> bool:
        return self.position > 0

    @property
    def can_redo(self) -> bool:
        return self.position < len(self._live())

    @property
    def reviewed(self) -> frozenset:
        """Ids of the patches marked reviewed."""
        return frozenset(self._record["reviewed"])

    @property
    def created(self) -> str:
        """ISO 8601 UTC time the session was created."""
        return self._record["created"]

    @property
    def inputs(self) -> dict:
        """What the session was made from, as given to :meth:`open` or :meth:`set_inputs` (a copy)."""
        return copy.deepcopy(self._record.get("inputs", {}))

    @property
    def initial_labels_checksum(self) -> str | None:
        """:func:`labels_checksum` of the labels the session started from; None for older sessions."""
        return self._record.get("initial_labels_checksum")

    @property
    def labels_checksum(self) -> str:
        """:func:`labels_checksum` of the current labels."""
        return self._record["labels"]["checksum"]

    @property
    def modified(self) -> str:
        """ISO 8601 UTC time of the last saved change."""
        return self._record["modified"]

    def _live(self) -> list[dict]:
        return [e for e in self._entries if not e["discarded"]]

    # -- changing ----------------------------------------------------------------------

    def apply(self, edit: Edit) -> dict | None:
        """Apply ``edit`` to the labels and save it; discards anything undone.

        Parameters
        ----------
        edit : Edit
            Made from :attr:`labels` by a function of
            :mod:`probseg.proofreading.edits`.

        Returns
        -------
        dict or None
            The new log entry; None (nothing saved) for an edit that changes
            no pixel.

        Raises
        ------
        InputError
            If the edit was made for other labels; nothing changes.
        SessionError
            If the session is read-only, closed, or was opened again; nothing
            changes.
        OSError
            If the disk cannot be written. Raised before the commit, nothing
            changes; after it (only ``labels.npy`` failed), the edit stands
            and ``labels.npy`` is rewritten by the next operation or open.
        """
        self._check_writable(f"apply the {getattr(edit, 'kind', 'given')} edit")
        if not isinstance(edit, Edit):
            raise InputError(f"apply takes an Edit, got {type(edit).__name__}")
        try:
            json.dumps(edit.params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"the {edit.kind} edit's params cannot be saved as JSON ({exc})") from None
        if edit.size == 0:
            return None
        self._write_lagging_labels()
        saved = self._save_point()
        edit.apply(self._labels)
        try:
            live = self._live()
            for entry in live[self.position:]:
                entry["discarded"] = True
            entry = {"id": len(self._entries) + 1, "kind": edit.kind, "params": copy.deepcopy(edit.params),
                     "time": _now(), "pixels": edit.size, "discarded": False, "undone": False}
            self._entries.append(entry)
            self._record["n_edits"] = len(self._entries)
            self._record["discarded"] = [e["id"] for e in self._entries if e["discarded"]]
            self._record["position"] += 1
            self._record["last_op"] = {"op": "apply", "edit": entry["id"]}
            _write_edit(self.folder / _edit_name(entry["id"]), edit, entry)
            self._commit()
        except BaseException:
            edit.revert(self._labels, check=False)
            self._restore(saved)
            raise
        self._write_labels()
        return dict(entry)

    def commit_external(self, new_labels, kind: str = "paint", params: dict | None = None) -> dict | None:
        """Record a change made outside the session, e.g. with napari's brush or fill.

        Parameters
        ----------
        new_labels : array_like of int, shape of :attr:`labels`
            The labels after the change (napari's layer data, painted into
            a copy of :attr:`labels`). Copied; the differences from
            :attr:`labels` become one edit.
        kind : str
            Log kind, one of :data:`probseg.proofreading.edits.KINDS`.
        params : dict, optional
            JSON-serialisable description for the log.

        Returns
        -------
        dict or None
            As :meth:`apply`.
        """
        new = np.asarray(new_labels)
        if new.shape != self.shape:
            raise InputError(f"the new labels have shape {new.shape} but the session's are {self.shape}")
        if new.size and np.issubdtype(new.dtype, np.integer) and new.min() < 0:
            raise InputError("the new labels contain negative ids; background is 0 and objects are 1, 2, ...")
        return self.apply(diff(self._labels, new, kind, params))

    def undo(self) -> Edit | None:
        """Revert the last applied edit and save; returns it, or None when there is none.

        Raises
        ------
        SessionError
            If the edit's file in the session folder is missing or corrupt,
            or the session is read-only, closed or was opened again;
            nothing changes.
        """
        self._check_writable("undo")
        if not self.can_undo:
            return None
        return self._step(self._live()[self.position - 1], forward=False)

    def redo(self) -> Edit | None:
        """Re-apply the next undone edit and save; returns it, or None when there is none.

        Raises
        ------
        SessionError
            As :meth:`undo`.
        """
        self._check_writable("redo")
        if not self.can_redo:
            return None
        return self._step(self._live()[self.position], forward=True)

    def _step(self, entry: dict, forward: bool) -> Edit:
        try:
            edit = _read_edit(self.folder, entry, self.shape)
        except _Problem as problem:
            verb = "redo" if forward else "undo"
            raise SessionError(f"the proofreading session {self.folder} {problem}; cannot {verb} edit {entry['id']}") from None
        self._write_lagging_labels()
        saved = self._save_point()
        if forward:
            edit.apply(self._labels)
        else:
            edit.revert(self._labels)
        try:
            entry["undone"] = not forward
            self._record["position"] += 1 if forward else -1
            self._record["last_op"] = {"op": "redo" if forward else "undo", "edit": entry["id"]}
            self._commit()
        except BaseException:
            if forward:
                edit.revert(self._labels, check=False)
            else:
                edit.apply(self._labels, check=False)
            self._restore(saved)
            raise
        self._write_labels()
        return edit

    def mark_reviewed(self, patch_id, reviewed: bool = True) -> None:
        """Mark a patch reviewed (or not, with ``reviewed=False``) and save.

        Parameters
        ----------
        patch_id : int, str or tuple of int
            Any stable name for the patch; the patch's ``(y0, x0, y1, x1)``
            rectangle is a good one (then :meth:`export_reviewed` needs no
            table of rectangles).

        Raises
        ------
        SessionError
            If the session is read-only, closed, or was opened again.
        """
        self._check_writable("mark a patch reviewed")
        patch_id = _patch_id(patch_id)
        current = self._record["reviewed"]
        if (patch_id in current) == bool(reviewed):
            return
        saved = self._save_point()
        self._record["reviewed"] = current | {patch_id} if reviewed else current - {patch_id}
        try:
            self._commit(labels_changed=False)
        except BaseException:
            self._restore(saved)
            raise

    def set_inputs(self, inputs: dict) -> None:
        """Replace :attr:`inputs` (e.g. a layer renamed, a new patch size) and save.

        Parameters
        ----------
        inputs : dict
            Any JSON object.

        Raises
        ------
        InputError
            If ``inputs`` is not a JSON object; nothing changes.
        SessionError
            If the session is read-only, closed, or was opened again.
        """
        self._check_writable("change its inputs")
        inputs = _check_inputs(inputs)
        if inputs == self._record.get("inputs", {}):
            return
        saved = self._save_point()
        self._record["inputs"] = inputs
        try:
            self._commit(labels_changed=False)
        except BaseException:
            self._restore(saved)
            raise

    # -- saving ------------------------------------------------------------------------

    def _save_point(self) -> dict:
        return {"record": copy.deepcopy(self._record), "entries": copy.deepcopy(self._entries)}

    def _restore(self, saved: dict) -> None:
        self._record = saved["record"]
        self._entries = saved["entries"]

    def _commit(self, labels_changed: bool = True) -> None:
        """Write the log, then ``session.json``: the moment the operation counts."""
        self._record["modified"] = _now()
        if labels_changed:
            self._record["labels"]["checksum"] = _digest(self._labels)
        write_json(self.folder / LOG_NAME, self._entries)
        write_json(self.folder / SESSION_NAME, _record_json(self._record))

    def _write_labels(self) -> None:
        self._labels_lag = True
        write_npy(self.folder / LABELS_NAME, self._labels)
        self._labels_lag = False

    def _write_lagging_labels(self) -> None:
        # Open can replay only the last operation onto labels.npy, so a failed
        # labels write must be made good before the next operation commits.
        if self._labels_lag:
            self._write_labels()

    # -- export ------------------------------------------------------------------------

    def export_labels(self, path) -> Path:
        """Write the current labels with :func:`probseg.io.images.write_image` (TIFF, ``.npy``...).

        Possible in a read-only session too.

        Raises
        ------
        InputError
            If ``path`` lies inside the session folder, whose files only the
            session itself writes.
        """
        self._check_outside(path)
        return write_image(path, self._labels)

    def _check_outside(self, *paths) -> None:
        folder = os.path.realpath(self.folder)
        for path in paths:
            real = os.path.realpath(Path(path))
            if real == folder or real.startswith(folder + os.sep):
                raise InputError(f"cannot export into the session folder {self.folder}; choose a path outside it")

    def export_reviewed(self, path, patches=None, mask_path=None) -> tuple[Path, Path]:
        """Write sparse labels of the reviewed patches, for training on them.

        Two images are written: the labels, where pixels inside reviewed
        patches keep their ids (0 there is checked background) and all
        other pixels are 0; and a mask that tells the two kinds of 0 apart:
        1 where a pixel was reviewed, 0 where it is unknown and must be
        ignored by a loss. Objects crossing a patch border are kept only
        inside it; the rest of them is unknown, not background, so a
        trainer that ignores masked-out pixels never sees a false border.

        Parameters
        ----------
        path : str or Path
            The labels (int32; ``.tif`` or ``.npy``).
        patches : mapping or iterable of (id, rect) pairs, optional
            The ``(y0, x0, y1, x1)`` rectangle of every reviewed patch id
            (others are ignored). Default: the reviewed ids are themselves
            rectangles.
        mask_path : str or Path, optional
            Default: ``<stem>_reviewed<suffix>`` beside ``path`` (uint8).

        Returns
        -------
        (Path, Path)
            The labels and the mask.

        Raises
        ------
        InputError
            If nothing is reviewed, a reviewed patch has no rectangle, or a
            path lies inside the session folder.
        """
        if not self._record["reviewed"]:
            raise InputError("no patch is marked reviewed yet; there is nothing to export")
        known = self.reviewed_mask(patches)
        path = Path(path)
        mask_path = Path(mask_path) if mask_path is not None else path.with_name(f"{path.stem}_reviewed{path.suffix}")
        if mask_path == path:
            raise InputError(f"the labels and the reviewed mask cannot both be written to {path}")
        self._check_outside(path, mask_path)
        labels = np.where(known, self._labels, 0).astype(LABEL_DTYPE)
        return write_image(path, labels), write_image(mask_path, known.astype(np.uint8))

    def reviewed_mask(self, patches=None) -> np.ndarray:
        """Where the pixels were reviewed: the union of the reviewed patches.

        Possible in a read-only session too.

        Parameters
        ----------
        patches : mapping or iterable of (id, rect) pairs, optional
            The ``(y0, x0, y1, x1)`` rectangle of every reviewed patch id
            (others are ignored). Default: the reviewed ids are themselves
            rectangles.

        Returns
        -------
        ndarray of bool, shape of :attr:`labels`
            True inside a reviewed patch.

        Raises
        ------
        InputError
            If nothing is reviewed or a reviewed patch has no rectangle.
        """
        if not self._record["reviewed"]:
            raise InputError("no patch is marked reviewed yet; accept a patch first")
        known = np.zeros(self.shape, dtype=bool)
        for y0, x0, y1, x1 in self._reviewed_rects(patches):
            known[y0:y1, x0:x1] = True
        return known

    def _reviewed_rects(self, patches) -> list[tuple[int, int, int, int]]:
        reviewed = self._record["reviewed"]
        if patches is None:
            table = {pid: pid for pid in reviewed if isinstance(pid, tuple) and len(pid) == 4}
        else:
            try:
                table = {_patch_id(pid): rect for pid, rect in (patches.items() if hasattr(patches, "items") else patches)}
            except (TypeError, ValueError):
                raise InputError("patches must map each patch id to its (y0, x0, y1, x1) rectangle") from None
        rects = []
        for pid in _ordered(reviewed):
            if pid not in table:
                where = "in the patches given" if patches is not None else "(its id is not a rectangle; pass patches)"
                raise InputError(f"reviewed patch {pid!r} has no (y0, x0, y1, x1) rectangle {where}")
            rects.append(check_rect(table[pid], self.shape))
        return rects


# -- helpers for open ------------------------------------------------------------------------


def _record_json(record: dict) -> dict:
    data = dict(record)
    data["reviewed"] = _ids_json(record["reviewed"])
    return data


def _initial_labels(initial_labels, image: np.ndarray) -> np.ndarray:
    if initial_labels is None:
        if image.ndim != 2:
            raise InputError(
                f"the image has shape {image.shape}; give initial labels to start a session on a non-2-D image"
            )
        return np.zeros(image.shape, dtype=LABEL_DTYPE)
    array = np.asarray(initial_labels)
    if array.ndim != 2:
        raise InputError(f"the initial labels must be 2-D, got shape {array.shape}")
    if image.ndim >= 2 and array.shape not in (image.shape[:2], image.shape[-2:]):
        raise InputError(f"the initial labels have shape {array.shape} but the image is {image.shape}")
    array = check_labels(array, array.shape, "the initial labels")
    if array.size and array.max() > np.iinfo(LABEL_DTYPE).max:
        raise InputError(f"the initial labels hold ids up to {array.max()}; a session keeps ids below 2**31")
    return array.astype(LABEL_DTYPE)


def _check_inputs(inputs) -> dict:
    """A copy of ``inputs`` as it will be stored: a JSON object."""
    if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
        raise InputError(f"inputs must be a dict with string keys, got {type(inputs).__name__}")
    try:
        return json.loads(json.dumps(inputs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"inputs cannot be saved as JSON ({exc})") from None


def _no_permission(folder: Path) -> SessionError:
    return SessionError(f"cannot create the session {folder}: permission denied; copy the image to a folder you can write")


def _make_staging(folder: Path) -> Path:
    while True:
        staging = folder.parent / f".{folder.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            # 0o777 minus the umask, like any new folder (mkdtemp would make it private).
            staging.mkdir(0o777)
            return staging
        except FileExistsError:
            continue
        except PermissionError:
            raise _no_permission(folder) from None


def _move_aside_locked(folder: Path) -> Path:
    """Move a session aside once its lock is ours, so a session in use elsewhere is never moved."""
    lock = folderlock.acquire(folder)[0] if folder.is_dir() else None
    try:
        target = _move_aside(folder)
    except BaseException:
        if lock is not None and lock.owner is None:
            lock.release()  # taken just for this; a Session of this process keeps its own
        raise
    if lock is not None:
        # The lock file went along; a folder set aside is not in use.
        lock.path = target / LOCK_NAME
        lock.release()
    return target


def _move_aside(folder: Path) -> Path:
    """Rename ``folder`` to ``<name>.old-<timestamp>`` (numbered if taken); never deletes."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.old-{stamp}")
    number = 1
    while target.exists() or target.is_symlink():
        number += 1
        target = folder.with_name(f"{folder.name}.old-{stamp}-{number}")
    os.rename(folder, target)
    fsync_folder(folder.parent)
    return target
