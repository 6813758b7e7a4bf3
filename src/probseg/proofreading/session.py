"""The proofreading session store: corrected labels and their edit log, never lost.

A session lives in a folder beside the image, named after it: for
``/data/cells.tif`` it is ``/data/cells.tif.probseg/``. Its files are
described in :mod:`probseg.proofreading.format`; how several of them change
as one operation, so that a process killed at any moment reopens as the
state before or after the operation it was doing, in
:mod:`probseg.proofreading.transactions`; what a session knows in memory in
:mod:`probseg.proofreading.state`. :class:`Session` ties them together: an
edit whose :meth:`Session.apply` returned is always there.

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
"""

from __future__ import annotations

import itertools
import os
import time
import weakref
from pathlib import Path

import numpy as np

from probseg.core.errors import InputError
from probseg.io.images import write_image
from probseg.proofreading import format as fmt
from probseg.proofreading import lock as folderlock
from probseg.proofreading import transactions
from probseg.proofreading.errors import SessionError, SessionLocked
from probseg.proofreading.format import (
    FOLDER_SUFFIX,
    LABEL_DTYPE,
    LABELS_NAME,
    LOG_NAME,
    SESSION_NAME,
    image_checksum,
    labels_checksum,
    session_folder,
)
from probseg.proofreading.loading import load, saved_session_info
from probseg.proofreading.lock import LOCK_NAME
from probseg.proofreading.state import starting_labels
from probseg.proofreading.transactions import SavedState

__all__ = [
    "Session",
    "SessionError",
    "SessionLocked",
    "session_folder",
    "saved_session_info",
    "image_checksum",
    "labels_checksum",
    "FOLDER_SUFFIX",
    "SESSION_NAME",
    "LABELS_NAME",
    "LOG_NAME",
    "LOCK_NAME",
]

_TOKENS = itertools.count(1)  # tells apart the Session objects sharing one lock


class Session(SavedState):
    """Corrected labels of one image, with undo/redo and reviewed patches, saved as they change.

    Create or resume one with :meth:`open`; see the module notes for the
    lock, :mod:`~probseg.proofreading.format` for the folder layout and
    :mod:`~probseg.proofreading.transactions` for why nothing is lost when
    the process dies.
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
        super().__init__(record, entries, labels)
        self.folder = folder
        self.image_path = image_path
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
            inputs = fmt.check_inputs(inputs)
        if start_over or not exists:
            labels = starting_labels(initial_labels, image)
            if exists:
                transactions.move_aside_locked(folder)
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
        record = fmt.new_record(image_path.name, image, checksum, labels, inputs, folderlock.now())
        lock = transactions.create_folder(folder, record, labels)
        return None if lock is None else cls(folder, image_path, record, [], labels, lock)

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
            record, entries, labels, lagged, log_ahead = load(folder, image, checksum)
        except fmt.Problem as problem:
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
        transactions.finish_interrupted(folder, session._labels, session._entries, lagged, log_ahead)
        return session

    @classmethod
    def _read(cls, folder: Path, image_path: Path, image: np.ndarray, checksum: str) -> "Session":
        holder = folderlock.read_holder_at(folder / LOCK_NAME)
        attempts = 5
        for attempt in range(attempts):
            try:
                record, entries, labels, _, _ = load(folder, image, checksum)
                break
            except fmt.Problem as problem:
                # A writer may replace files between our reads; only a lasting problem is damage.
                if attempt + 1 < attempts and (folder / LOCK_NAME).exists():
                    time.sleep(0.05)
                    continue
                raise SessionError(f"the proofreading session {folder} {problem}; it was left untouched") from None
        notices = ()
        if holder is not None and not (holder["pid"] == os.getpid() and holder["host"] == folderlock.host()):
            notices = (f"opened read-only; {folderlock.describe(holder)} has it open for writing",)
        return cls(folder, image_path, record, entries, labels, None, notices)

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
