"""Walking a proofreading queue: which of its patches are reviewed, and where Next and Previous go.

A session marks a patch reviewed under its rectangle (:func:`patch_id`),
which stays valid when the queue is built again or ranked by a new
uncertainty (:func:`probseg.proofreading.retrain.reranked_queue`), so the
marks follow the patches rather than their places in the list.

>>> index, found = next_patch(queue, position, session.reviewed)
>>> session.mark_reviewed(patch_id(queue[index]))
"""

from __future__ import annotations

from probseg.proofreading.queue import QueueEntry

__all__ = ["patch_id", "is_reviewed", "count_reviewed", "clamp", "next_patch", "previous_patch"]


def patch_id(entry: QueueEntry) -> tuple[int, int, int, int]:
    """The id a session marks the patch of ``entry`` reviewed under: its ``(y0, x0, y1, x1)``."""
    return tuple(int(v) for v in entry.rect)


def is_reviewed(entry: QueueEntry, reviewed) -> bool:
    """Whether the patch of ``entry`` is among ``reviewed`` (a session's :attr:`reviewed` ids)."""
    return patch_id(entry) in reviewed


def count_reviewed(queue, reviewed) -> int:
    """How many patches of ``queue`` are among ``reviewed``."""
    return sum(is_reviewed(entry, reviewed) for entry in queue)


def clamp(queue, index) -> int:
    """``index`` moved into ``0 .. len(queue) - 1`` (0 for an empty queue)."""
    return max(0, min(len(queue) - 1, int(index)))


def next_patch(queue, position: int, reviewed) -> tuple[int, bool]:
    """Where Next goes: the first patch after ``position`` not yet reviewed.

    Parameters
    ----------
    queue : list of QueueEntry
        Most uncertain first.
    position : int
        The patch shown now; -1 before the first.
    reviewed : collection
        The reviewed patch ids.

    Returns
    -------
    index : int
        That patch; when every later patch is reviewed, simply the next one
        (the last one at the end of the queue).
    found : bool
        Whether an unreviewed patch was found.
    """
    for i in range(position + 1, len(queue)):
        if not is_reviewed(queue[i], reviewed):
            return i, True
    return min(position + 1, len(queue) - 1), False


def previous_patch(position: int) -> int:
    """Where Previous goes: the patch before ``position``, or the first one."""
    return max(0, position - 1)
