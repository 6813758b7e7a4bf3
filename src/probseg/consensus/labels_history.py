"""Undo for a consensus label image that changes a region or the whole image at a time.

A region session (the resolution moving while one rectangle is
re-segmented) is one step, and so is each whole-image run; only the pixels
a step overwrote are kept, so undoing a region costs the region.
"""

from __future__ import annotations

import numpy as np

from probseg.core.history import History

__all__ = ["UNDO_DEPTH", "LabelsHistory"]

#: Earlier states of the consensus labels kept for undo.
UNDO_DEPTH = 20


class LabelsHistory:
    """Undo steps of one label image: ``(rect, labels there before)`` or ``(None, whole image before)``.

    Parameters
    ----------
    limit : int
        The most steps kept; the oldest are forgotten first.

    Examples
    --------
    >>> history = LabelsHistory()
    >>> history.before_region(labels, (0, 0, 64, 64))   # then write the region
    >>> history.before_region(labels, (0, 0, 64, 64))   # same region: same step
    >>> labels = history.undo(labels)                   # the region as it was
    """

    def __init__(self, limit: int = UNDO_DEPTH) -> None:
        self._steps = History(limit)

    @property
    def can_undo(self) -> bool:
        return self._steps.can_undo

    def __len__(self) -> int:
        return len(self._steps)

    def before_whole(self, labels: np.ndarray) -> None:
        """Save all of ``labels`` (copied) before a whole-image run replaces them."""
        self._steps.push((None, np.array(labels, copy=True)))

    def before_region(self, labels: np.ndarray, rect) -> bool:
        """Save ``labels[y0:y1, x0:x1]`` before the region ``rect`` is written.

        Consecutive calls for the same ``rect`` are one step: the first
        call's pixels are the ones undo puts back.

        Returns
        -------
        bool
            True when this call started a step, False when it joined the last one.
        """
        rect = tuple(int(v) for v in rect)
        if self._steps.joins(rect):
            return False  # the step holds the region as it was before the run
        y0, x0, y1, x1 = rect
        return self._steps.push((rect, labels[y0:y1, x0:x1].copy()), key=rect)

    def undo(self, labels: np.ndarray) -> np.ndarray | None:
        """Put the newest step back; returns the labels to show, or None when there is nothing to undo.

        A region step is written into ``labels`` in place (and ``labels``
        returned); a whole-image step returns the saved image, unless it
        has another shape than ``labels`` (the step is dropped and
        ``labels`` returned unchanged).
        """
        state = self._steps.undo(lambda step: _put_back(labels, step))
        if state is None:
            return None
        rect, saved = state
        if rect is None:
            return saved if saved.shape == labels.shape else labels
        return labels


def _put_back(labels: np.ndarray, step) -> None:
    rect, saved = step
    if rect is not None:
        y0, x0, y1, x1 = rect
        labels[y0:y1, x0:x1] = saved
    # No redo in the consensus widget, so what was overwritten is not kept.
    return None
