"""The on-disk format of a proofreading session: file names, checksums, and reading the files.

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
                           pid, host and since when (see :mod:`probseg.proofreading.lock`)
        labels.npy         the current corrected labels (int32)
        edits.json         the log: [{id, kind, params, time, pixels, undone, discarded}, ...]
        edits/000001.npz   one compressed file per edit: index, before, after and a
        edits/000002.npz   JSON header (kind, params, time); written once, never changed
        ...

Everything here reads or describes single files and never writes a folder;
the order in which a change writes them is :mod:`probseg.proofreading.transactions`,
reading a whole folder is :mod:`probseg.proofreading.loading`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from probseg.core.errors import InputError
from probseg.io.atomic import atomic_write
from probseg.proofreading.edits import KINDS, Edit

__all__ = ["FORMAT", "FORMAT_VERSION", "FOLDER_SUFFIX", "SESSION_NAME", "LABELS_NAME", "LOG_NAME", "EDITS_DIR",
           "LABEL_DTYPE", "session_folder", "image_checksum", "labels_checksum"]

FORMAT = "probseg-proofreading-session"
FORMAT_VERSION = 1
FOLDER_SUFFIX = ".probseg"
SESSION_NAME = "session.json"
LABELS_NAME = "labels.npy"
LOG_NAME = "edits.json"
EDITS_DIR = "edits"
LABEL_DTYPE = np.dtype(np.int32)


def session_folder(image_path) -> Path:
    """The session folder of an image: its path with ``.probseg`` appended."""
    path = Path(image_path)
    return path.with_name(path.name + FOLDER_SUFFIX)


def digest(array: np.ndarray) -> str:
    """blake2b of an array's dtype, shape and bytes, so equal bytes in another shape differ."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.reshape(-1).view(np.uint8).data if array.size else b"")
    return "blake2b:" + h.hexdigest()


def image_checksum(image) -> str:
    """Checksum of the image data a session belongs to (``"blake2b:<hex>"``)."""
    return digest(np.asarray(image))


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
    return digest(array.astype(LABEL_DTYPE))


# -- edit files --------------------------------------------------------------------------


def edit_name(edit_id: int) -> str:
    return f"{EDITS_DIR}/{edit_id:06d}.npz"


def write_edit(path: Path, edit: Edit, entry: dict) -> None:
    header = json.dumps({"id": entry["id"], "kind": edit.kind, "params": edit.params, "time": entry["time"],
                         "shape": list(edit.shape)})
    arrays = {"index": edit.index, "before": edit.before, "after": edit.after, "header": np.array(header)}
    atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


# -- patch ids ---------------------------------------------------------------------------


def patch_id(value):
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


def ordered(ids) -> list:
    """Patch ids in a stable order (ints, strs and tuples do not compare with each other)."""
    return sorted(ids, key=lambda v: (type(v).__name__, v))


def ids_json(ids) -> list:
    return [list(v) if isinstance(v, tuple) else v for v in ordered(ids)]


# -- session.json ------------------------------------------------------------------------


def new_record(image_name: str, image: np.ndarray, checksum: str, labels: np.ndarray, inputs: dict | None,
               now: str) -> dict:
    """The record of a session that begins with ``labels`` and no edit (reviewed ids as a set)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "image": {"name": image_name, "shape": list(image.shape), "dtype": image.dtype.str, "checksum": checksum},
        "labels": {"shape": list(labels.shape), "dtype": LABEL_DTYPE.str, "checksum": digest(labels)},
        "initial_labels_checksum": digest(labels),
        "inputs": copy.deepcopy(inputs) if inputs is not None else {},
        "created": now,
        "modified": now,
        "reviewed": set(),
        "position": 0,
        "n_edits": 0,
        "discarded": [],
        "last_op": None,
    }


def record_json(record: dict) -> dict:
    data = dict(record)
    data["reviewed"] = ids_json(record["reviewed"])
    return data


def check_inputs(inputs) -> dict:
    """A copy of ``inputs`` as it will be stored: a JSON object."""
    if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
        raise InputError(f"inputs must be a dict with string keys, got {type(inputs).__name__}")
    try:
        return json.loads(json.dumps(inputs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"inputs cannot be saved as JSON ({exc})") from None


# -- reading the files (never writes) ----------------------------------------------------


class Problem(Exception):
    """Why a session folder cannot be used; turned into a SessionError naming the folder."""


def read_json(folder: Path, name: str):
    path = folder / name
    if not path.is_file():
        raise Problem(f"lacks {name}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(f"has an unreadable {name} ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise Problem(f"has a {name} that cannot be read ({exc.strerror or exc})") from None


def field(record: dict, key: str, kind, name: str = SESSION_NAME):
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise Problem(f"has a {name} without a valid {key!r}")
    return value


def read_record(folder: Path) -> dict:
    record = read_json(folder, SESSION_NAME)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise Problem(f"has a {SESSION_NAME} that is not a probseg proofreading session")
    version = record.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Problem(f"has a {SESSION_NAME} with format version {version!r}, which no probseg writes")
    if version > FORMAT_VERSION:
        raise Problem(f"was written by a newer probseg (format version {version!r}; this one reads up to {FORMAT_VERSION})")
    image, labels = field(record, "image", dict), field(record, "labels", dict)
    for part, keys in ((image, ("name", "dtype", "checksum")), (labels, ("dtype", "checksum"))):
        for key in keys:
            field(part, key, str)
    for part in (image, labels):
        shape = field(part, "shape", list)
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise Problem(f"has a {SESSION_NAME} with an invalid shape {shape!r}")
    if len(labels["shape"]) != 2 or labels["dtype"] != LABEL_DTYPE.str:
        raise Problem(f"has a {SESSION_NAME} describing {labels['dtype']} labels of shape {labels['shape']}")
    for key in ("position", "n_edits"):
        if field(record, key, int) < 0:
            raise Problem(f"has a {SESSION_NAME} with a negative {key!r}")
    for key in ("created", "modified"):
        field(record, key, str)
    discarded, reviewed = field(record, "discarded", list), field(record, "reviewed", list)
    if not all(isinstance(i, int) and 1 <= i <= record["n_edits"] for i in discarded):
        raise Problem(f"has a {SESSION_NAME} whose discarded edits are not in the log")
    try:
        record["reviewed"] = {patch_id(v) for v in reviewed}
    except InputError:
        raise Problem(f"has a {SESSION_NAME} with an invalid reviewed patch id") from None
    if record["position"] > record["n_edits"] - len(set(discarded)):
        raise Problem(f"has a {SESSION_NAME} whose position is past the end of the edit log")
    if not isinstance(record.get("inputs", {}), dict):
        raise Problem(f"has a {SESSION_NAME} with an invalid 'inputs'")
    if not isinstance(record.get("initial_labels_checksum", ""), str):
        raise Problem(f"has a {SESSION_NAME} with an invalid 'initial_labels_checksum'")
    last = record.get("last_op")
    if last is not None and not (
        isinstance(last, dict) and last.get("op") in ("apply", "undo", "redo")
        and isinstance(last.get("edit"), int) and 1 <= last["edit"] <= record["n_edits"]
    ):
        raise Problem(f"has a {SESSION_NAME} with an invalid 'last_op'")
    return record


def read_log(folder: Path, record: dict) -> tuple[list[dict], bool]:
    """The committed log entries, with flags recomputed from ``session.json``.

    ``edits.json`` may hold entries and flags of an operation that was
    written ahead of its commit and then interrupted; those are dropped.

    Returns
    -------
    entries : list of dict
    ahead : bool
        Whether ``edits.json`` differs from ``entries`` and must be rewritten.
    """
    log = read_json(folder, LOG_NAME)
    n = record["n_edits"]
    if not isinstance(log, list) or len(log) < n:
        raise Problem(f"has an {LOG_NAME} with fewer entries than the {n} its {SESSION_NAME} records")
    discarded = set(record["discarded"])
    entries = []
    for number, raw in enumerate(log[:n], start=1):
        if not (isinstance(raw, dict) and raw.get("id") == number and raw.get("kind") in KINDS
                and isinstance(raw.get("params"), dict) and isinstance(raw.get("time"), str)
                and isinstance(raw.get("pixels"), int) and not isinstance(raw.get("pixels"), bool)
                and raw["pixels"] >= 0):
            raise Problem(f"has an {LOG_NAME} whose entry {number} is damaged")
        entry = {key: raw[key] for key in ("id", "kind", "params", "time", "pixels")}
        entry["discarded"] = number in discarded
        entries.append(entry)
    set_flags(entries, record["position"])
    return entries, log != entries


def set_flags(entries: list[dict], position: int) -> None:
    """Mark as undone the entries of the live branch at or after ``position``."""
    live = [e for e in entries if not e["discarded"]]
    for i, entry in enumerate(live):
        entry["undone"] = i >= position
    for entry in entries:
        if entry["discarded"]:
            entry["undone"] = True


def read_edit(folder: Path, entry: dict, shape: tuple) -> Edit:
    name = edit_name(entry["id"])
    try:
        with np.load(folder / name, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
            for key in ("index", "before", "after"):
                # Edits hold pixel indices and label ids; other numbers would be cast silently.
                if not np.issubdtype(data[key].dtype, np.integer):
                    raise ValueError(f"its {key} values are {data[key].dtype}, not integers")
            edit = Edit(entry["kind"], header.get("params", {}), data["index"], data["before"], data["after"], shape)
    except FileNotFoundError:
        raise Problem(f"lacks {name} (edit {entry['id']} of its log)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, InputError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Problem(f"has a corrupt {name} ({reason})") from None
    if header.get("kind") != entry["kind"] or header.get("id") != entry["id"] or header.get("shape") != list(shape):
        raise Problem(f"has a {name} that does not match entry {entry['id']} of {LOG_NAME}")
    return edit

