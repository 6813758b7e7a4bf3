"""The in-memory state of a proofreading session: labels, edit log, reviewed patches, and their changes.

:class:`SessionState` holds what a session folder holds once read (see
:mod:`probseg.proofreading.format`) and answers every question about it; its
changes touch memory only. :class:`~probseg.proofreading.session.Session`
adds the folder: it makes each change inside a transaction that writes it
(:mod:`probseg.proofreading.transactions`) or takes it back.
"""

from __future__ import annotations

import copy

import numpy as np

from probseg.core.errors import InputError
from probseg.core.inputs import check_labels
from probseg.proofreading.edits import Edit, check_rect
from probseg.proofreading.format import LABEL_DTYPE, digest, ordered, patch_id
from probseg.proofreading.lock import now

__all__ = ["SessionState", "starting_labels"]


class SessionState:
    """Corrected labels of one image with their edit log and reviewed patches, in memory.

    Parameters
    ----------
    record : dict
        The contents of ``session.json``, reviewed ids as a set.
    entries : list of dict
        The edit log.
    labels : ndarray of int32, shape (Y, X)
        The current labels, taken over (not copied).
    """

    def __init__(self, record: dict, entries: list[dict], labels: np.ndarray):
        self._record = record
        self._entries = entries
        self._labels = labels

    @property
    def labels(self) -> np.ndarray:
        """The current labels, int32, read-only.

        Change them through :meth:`~probseg.proofreading.session.Session.apply` (or
        :meth:`~probseg.proofreading.session.Session.commit_external`); give
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
        """What the session was made from, as given to ``open`` or ``set_inputs`` (a copy)."""
        return copy.deepcopy(self._record.get("inputs", {}))

    @property
    def initial_labels_checksum(self) -> str | None:
        """:func:`~probseg.proofreading.format.labels_checksum` of the labels the session started from.

        None for sessions of older probseg.
        """
        return self._record.get("initial_labels_checksum")

    @property
    def labels_checksum(self) -> str:
        """:func:`~probseg.proofreading.format.labels_checksum` of the current labels."""
        return self._record["labels"]["checksum"]

    @property
    def modified(self) -> str:
        """ISO 8601 UTC time of the last saved change."""
        return self._record["modified"]

    def _live(self) -> list[dict]:
        return [e for e in self._entries if not e["discarded"]]

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
                table = {patch_id(pid): rect for pid, rect in (patches.items() if hasattr(patches, "items") else patches)}
            except (TypeError, ValueError):
                raise InputError("patches must map each patch id to its (y0, x0, y1, x1) rectangle") from None
        rects = []
        for pid in ordered(reviewed):
            if pid not in table:
                where = "in the patches given" if patches is not None else "(its id is not a rectangle; pass patches)"
                raise InputError(f"reviewed patch {pid!r} has no (y0, x0, y1, x1) rectangle {where}")
            rects.append(check_rect(table[pid], self.shape))
        return rects


    # -- changes in memory -------------------------------------------------------------

    def _save_point(self) -> dict:
        return {"record": copy.deepcopy(self._record), "entries": copy.deepcopy(self._entries)}

    def _restore(self, saved: dict) -> None:
        self._record = saved["record"]
        self._entries = saved["entries"]

    def _log_applied(self, edit: Edit) -> dict:
        """Log ``edit``, just applied to the labels, as the next edit; anything undone is discarded."""
        live = self._live()
        for entry in live[self.position:]:
            entry["discarded"] = True
        entry = {"id": len(self._entries) + 1, "kind": edit.kind, "params": copy.deepcopy(edit.params),
                 "time": now(), "pixels": edit.size, "discarded": False, "undone": False}
        self._entries.append(entry)
        self._record["n_edits"] = len(self._entries)
        self._record["discarded"] = [e["id"] for e in self._entries if e["discarded"]]
        self._record["position"] += 1
        self._record["last_op"] = {"op": "apply", "edit": entry["id"]}
        return entry

    def _log_step(self, entry: dict, forward: bool) -> None:
        """Log that ``entry`` was just redone (``forward``) or undone."""
        entry["undone"] = not forward
        self._record["position"] += 1 if forward else -1
        self._record["last_op"] = {"op": "redo" if forward else "undo", "edit": entry["id"]}

    def _stamp(self, labels_changed: bool) -> None:
        """Record the time of a change and, if the labels changed, their checksum."""
        self._record["modified"] = now()
        if labels_changed:
            self._record["labels"]["checksum"] = digest(self._labels)


def starting_labels(initial_labels, image: np.ndarray) -> np.ndarray:
    """The labels a new session of ``image`` begins with: ``initial_labels`` as int32, or all background.

    Raises
    ------
    InputError
        For labels that are not 2-D, of another shape than the image, not
        integer, negative, or of ids of 2**31 and more; and for no labels
        with an image that is not 2-D.
    """
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

