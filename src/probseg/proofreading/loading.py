"""Reading a whole proofreading session folder and checking it belongs to an image; never writes.

A folder is used only when every file agrees with ``session.json``, the
commit record (see :mod:`probseg.proofreading.transactions` for why only the
labels can lag, by one operation); anything else is a :class:`Problem` that
the caller turns into a :class:`~probseg.proofreading.errors.SessionError`,
leaving the folder as it is.
"""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import numpy as np

from probseg.core.errors import InputError
from probseg.proofreading.errors import SessionError
from probseg.proofreading.format import (
    LABEL_DTYPE,
    LABELS_NAME,
    Problem,
    digest,
    edit_name,
    read_edit,
    read_log,
    read_record,
    session_folder,
)

__all__ = ["load", "saved_session_info"]


def check_edit_files(folder: Path, entries: list[dict]) -> None:
    for entry in entries:
        if entry["discarded"]:
            continue  # never needed again
        path = folder / edit_name(entry["id"])
        if not path.is_file():
            raise Problem(f"lacks {edit_name(entry['id'])} (edit {entry['id']} of its log)")
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise Problem(f"has a truncated or corrupt {edit_name(entry['id'])} ({exc})") from None
        if not {"index.npy", "before.npy", "after.npy", "header.npy"} <= names:
            raise Problem(f"has an incomplete {edit_name(entry['id'])}")


def read_labels(folder: Path, record: dict) -> np.ndarray:
    path = folder / LABELS_NAME
    if not path.is_file():
        raise Problem(f"lacks {LABELS_NAME}")
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Problem(f"has a truncated or corrupt {LABELS_NAME} ({reason})") from None
    expected = tuple(record["labels"]["shape"])
    if labels.shape != expected or labels.dtype != LABEL_DTYPE:
        raise Problem(f"has a {LABELS_NAME} of {labels.dtype} {labels.shape}, expected {LABEL_DTYPE} {expected}")
    return np.ascontiguousarray(labels)


def catch_up(folder: Path, record: dict, entries: list[dict], labels: np.ndarray) -> bool:
    """Bring ``labels`` up to the committed state; True if they lagged.

    Only the last committed operation can be missing from ``labels.npy``
    (see :mod:`probseg.proofreading.transactions`), so replaying it must give the recorded checksum;
    anything else means the folder was damaged.
    """
    if digest(labels) == record["labels"]["checksum"]:
        return False
    last = record.get("last_op")
    mismatch = Problem(f"has a {LABELS_NAME} that does not match its edit log")
    if last is None:
        raise mismatch
    edit = read_edit(folder, entries[last["edit"] - 1], labels.shape)
    try:
        if last["op"] == "undo":
            edit.revert(labels)
        else:
            edit.apply(labels)
    except InputError:
        raise mismatch from None
    if digest(labels) != record["labels"]["checksum"]:
        raise mismatch
    return True


def load(folder: Path, image: np.ndarray, checksum: str) -> tuple:
    """Read a whole session folder and check it belongs to ``image``; writes nothing.

    Returns
    -------
    record, entries, labels, lagged, log_ahead
        As :func:`read_record`, :func:`read_log`, :func:`read_labels`
        (caught up) and whether the labels lagged and the log ran ahead.
    """
    if not folder.is_dir():
        raise Problem("is not a folder")
    record = read_record(folder)
    saved = record["image"]
    if tuple(saved["shape"]) != image.shape:
        raise Problem(f"belongs to an image of shape {tuple(saved['shape'])}, not {image.shape}")
    if saved["checksum"] != checksum:
        raise Problem(f"belongs to other image data ({saved['name']} with a different checksum)")
    entries, log_ahead = read_log(folder, record)
    check_edit_files(folder, entries)
    labels = read_labels(folder, record)
    lagged = catch_up(folder, record, entries, labels)
    return record, entries, labels, lagged, log_ahead


def saved_session_info(image_path) -> dict | None:
    """What the saved session of an image holds, read without opening or locking it.

    For a program that must choose its inputs before resuming (the
    Proofread widget picks the layers the session was made from).

    Parameters
    ----------
    image_path : str or Path
        The image; its session folder is :func:`~probseg.proofreading.format.session_folder` of it.

    Returns
    -------
    dict or None
        None when there is no session folder; else ``inputs`` (the dict
        given to :meth:`~probseg.proofreading.session.Session.open`, ``{}`` if none was),
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
        record = read_record(folder)
    except Problem as problem:
        raise SessionError(f"the proofreading session {folder} {problem}; it was left untouched") from None
    return {
        "inputs": copy.deepcopy(record.get("inputs", {})),
        "initial_labels_checksum": record.get("initial_labels_checksum"),
        "labels_checksum": record["labels"]["checksum"],
        "image": dict(record["image"]),
        "n_edits": record["n_edits"],
        "n_reviewed": len(record["reviewed"]),
    }
