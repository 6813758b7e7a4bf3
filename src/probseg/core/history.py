"""Undo and redo over saved states, for any editor (Qt-free, in memory).

The history does not know what a state is: an array, a rectangle of one,
a dict. Before a change, the caller pushes what the change is about to
overwrite; undo hands that back to a ``restore`` function, which puts it in
place and returns what it overwrote in turn, kept for redo.

>>> history = History(limit=20)
>>> history.push(labels.copy())                  # before changing labels
>>> labels[...] = 0
>>> def restore(saved):
...     replaced = labels.copy()
...     labels[...] = saved
...     return replaced                           # what redo brings back
>>> history.undo(restore)                        # labels as they were
>>> history.redo(restore)                        # and zeroed again
"""

from __future__ import annotations

from typing import Callable

from probseg.core.errors import InputError

__all__ = ["History"]


class History:
    """A linear undo/redo history of saved states, newest last.

    Parameters
    ----------
    limit : int, optional
        The most undo steps kept; pushing beyond it forgets the oldest.
        None keeps every step.

    Notes
    -----
    Consecutive pushes with the same ``key`` are one step (a run of slider
    moves on one region is undone at once); a push without a key, an undo or
    a redo ends such a run. A push discards whatever was undone before it,
    as in any editor.
    """

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InputError(f"the history limit must be a positive whole number or None, got {limit!r}")
        self._limit = limit
        self._undo: list = []
        self._redo: list = []
        self._key = None

    @property
    def limit(self) -> int | None:
        """The most undo steps kept (None: no limit)."""
        return self._limit

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def __len__(self) -> int:
        """Number of steps that can be undone."""
        return len(self._undo)

    def joins(self, key) -> bool:
        """Whether a :meth:`push` with ``key`` would join the newest step (so its state need not be made)."""
        return key is not None and key == self._key and bool(self._undo)

    def push(self, state, key=None) -> bool:
        """Save ``state``, what a change is about to overwrite, as a new undo step.

        Parameters
        ----------
        state : object
            Anything but None; handed back to ``restore`` on undo. The
            history keeps it as given, so pass a copy of anything the
            change modifies in place.
        key : hashable, optional
            Pushes with the key of the step before (and no undo or redo in
            between) join that step: its older state is kept and ``state``
            dropped, so one undo goes back past the whole run.

        Returns
        -------
        bool
            True when a step was added, False when ``state`` joined the last one.
        """
        if state is None:
            raise InputError("the history cannot save None: it stands for 'nothing to restore'")
        self._redo.clear()
        if self.joins(key):
            return False
        self._undo.append(state)
        if self._limit is not None:
            del self._undo[: -self._limit]
        self._key = key
        return True

    def undo(self, restore: Callable[[object], object]):
        """Undo the newest step.

        Parameters
        ----------
        restore : callable(state) -> state or None
            Puts a saved state back and returns what it overwrote (the
            state :meth:`redo` brings back), or None when there is nothing
            to redo.

        Returns
        -------
        object or None
            The state handed to ``restore``; None when there was nothing to
            undo. If ``restore`` raises, the history is left as it was.
        """
        return self._step(self._undo, self._redo, restore)

    def redo(self, restore: Callable[[object], object]):
        """Redo the newest undone step; as :meth:`undo`, the other way."""
        return self._step(self._redo, self._undo, restore)

    def clear(self) -> None:
        """Forget every step."""
        self._undo.clear()
        self._redo.clear()
        self._key = None

    def _step(self, source: list, target: list, restore):
        if not source:
            return None
        state = source[-1]
        replaced = restore(state)
        source.pop()
        if replaced is not None:
            target.append(replaced)
            if self._limit is not None:
                del target[: -self._limit]
        self._key = None
        return state
