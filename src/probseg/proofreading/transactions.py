"""Folder transactions of a proofreading session: several files changed as one operation, or not at all.

Every file is written to a temporary file in the same folder, flushed,
fsynced and renamed over the old one (``os.replace``; see
:mod:`probseg.io.atomic`), so no file is ever seen half-written. An operation
touches several files, so their order makes the whole operation atomic: (1)
the new edit's ``.npz``; (2) ``edits.json``; (3) ``session.json``, the commit
point (:func:`commit` writes both); (4) ``labels.npy``. ``session.json`` is
authoritative: before (3) lands the session is in its old state (an
``edits.json`` or ``.npz`` already written ahead is ignored and overwritten),
after it the new one. Only ``labels.npy`` can lag, by exactly the last
operation, which ``session.json`` names (``last_op``) together with the
checksum the labels must have; opening replays that one edit
(:func:`probseg.proofreading.loading.load`) and :func:`finish_interrupted`
writes the result. A process killed at any moment therefore reopens as the
state before or after the operation it was doing.

A new session is built in a hidden staging folder and renamed into place
(:func:`create_folder`), so a session folder that exists is always complete;
an old one is only ever renamed aside (:func:`move_aside_locked`), never
deleted.

Temporary files and staging folders carry the writing process's pid and a
random suffix (``.labels.npy.<pid>-<8 hex>.tmp``). Opening a session removes
only those left by processes that are no longer running, never the files of
one that is still writing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from probseg.core.errors import InputError
from probseg.io.atomic import fsync_folder, write_json, write_npy
from probseg.proofreading import format as fmt
from probseg.proofreading import lock as folderlock
from probseg.proofreading.edits import Edit, diff
from probseg.proofreading.errors import SessionError
from probseg.proofreading.format import EDITS_DIR, LABELS_NAME, LOG_NAME, SESSION_NAME, record_json
from probseg.proofreading.lock import LOCK_NAME
from probseg.proofreading.state import SessionState

__all__ = ["SavedState", "commit", "create_folder", "finish_interrupted", "move_aside_locked"]

# Temporary files of probseg.io.atomic: ".<name>.<pid>-<8 hex>.tmp".
_TMP_PATTERN = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")


def commit(folder: Path, record: dict, entries: list[dict]) -> None:
    """Write the log, then ``session.json``: the moment the operation counts."""
    write_json(folder / LOG_NAME, entries)
    write_json(folder / SESSION_NAME, record_json(record))


def create_folder(folder: Path, record: dict, labels: np.ndarray) -> folderlock.FolderLock | None:
    """Create the session folder holding ``record`` and ``labels``, locked; None if another process created it first."""
    # Built in a hidden folder and renamed into place, so a session folder
    # that exists is always complete, and locked from its first moment.
    staging = _make_staging(folder)
    fd = None
    try:
        (staging / EDITS_DIR).mkdir()
        write_npy(staging / LABELS_NAME, labels)
        write_json(staging / LOG_NAME, [])
        write_json(staging / SESSION_NAME, record_json(record))
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
    return folderlock.adopt(folder, fd)


def finish_interrupted(folder: Path, labels: np.ndarray, entries: list[dict], labels_lag: bool,
                       log_ahead: bool) -> None:
    """Complete what a killed process left: lagging labels, a log written ahead, temporary files.

    Only for the holder of the folder's lock.
    """
    if labels_lag:
        write_npy(folder / LABELS_NAME, labels)
    if log_ahead:
        write_json(folder / LOG_NAME, entries)
    # We hold the lock, so no other process writes here; still, a file is
    # removed only when the process that made it no longer runs.
    for sub in (folder, folder / EDITS_DIR):
        for path in sub.glob(".*.tmp"):
            match = _TMP_PATTERN.match(path.name)
            if match and path.is_file() and int(match.group(1)) != os.getpid() \
                    and not folderlock.process_alive(int(match.group(1)), None):
                path.unlink(missing_ok=True)


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


def move_aside_locked(folder: Path) -> Path:
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


class SavedState(SessionState):
    """A session state whose every change is written to its folder as one transaction.

    Subclasses set ``folder`` and define ``_check_writable(action)``, which
    raises :class:`SessionError` when this object may not change the folder
    (:class:`~probseg.proofreading.session.Session` checks its lock).
    """

    folder: Path  # set by the subclass

    def __init__(self, record: dict, entries: list[dict], labels: np.ndarray):
        super().__init__(record, entries, labels)
        self._labels_lag = False

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
        edit.apply(self._labels)
        with self._transaction(undo=lambda: edit.revert(self._labels, check=False)):
            entry = self._log_applied(edit)
            fmt.write_edit(self.folder / fmt.edit_name(entry["id"]), edit, entry)
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
            edit = fmt.read_edit(self.folder, entry, self.shape)
        except fmt.Problem as problem:
            verb = "redo" if forward else "undo"
            raise SessionError(f"the proofreading session {self.folder} {problem}; cannot {verb} edit {entry['id']}") from None
        self._write_lagging_labels()
        if forward:
            edit.apply(self._labels)
        else:
            edit.revert(self._labels)
        undo = (lambda: edit.revert(self._labels, check=False)) if forward else (
            lambda: edit.apply(self._labels, check=False))
        with self._transaction(undo=undo):
            self._log_step(entry, forward)
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
        patch_id = fmt.patch_id(patch_id)
        current = self._record["reviewed"]
        if (patch_id in current) == bool(reviewed):
            return
        with self._transaction(labels_changed=False):
            self._record["reviewed"] = current | {patch_id} if reviewed else current - {patch_id}

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
        inputs = fmt.check_inputs(inputs)
        if inputs == self._record.get("inputs", {}):
            return
        with self._transaction(labels_changed=False):
            self._record["inputs"] = inputs

    # -- saving ------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, labels_changed: bool = True, undo=None):
        """Change the state in the ``with`` block, then commit it; on any failure, take it back.

        ``undo`` reverts a change of the labels made before the block.
        """
        saved = self._save_point()
        try:
            yield
            self._stamp(labels_changed)
            commit(self.folder, self._record, self._entries)
        except BaseException:
            if undo is not None:
                undo()
            self._restore(saved)
            raise

    def _write_labels(self) -> None:
        self._labels_lag = True
        write_npy(self.folder / LABELS_NAME, self._labels)
        self._labels_lag = False

    def _write_lagging_labels(self) -> None:
        # Open can replay only the last operation onto labels.npy, so a failed
        # labels write must be made good before the next operation commits.
        if self._labels_lag:
            self._write_labels()
