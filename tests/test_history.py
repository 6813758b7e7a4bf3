"""The plain undo history (probseg.core.history) and the consensus labels' undo built on it."""

from __future__ import annotations

import numpy as np
import pytest

from probseg.consensus.labels_history import UNDO_DEPTH, LabelsHistory
from probseg.core.errors import InputError
from probseg.core.history import History


class Document:
    """A value changed by ``set``, saving what it overwrites in a history."""

    def __init__(self, history: History, value=0):
        self.history, self.value = history, value

    def set(self, value, key=None):
        self.history.push(self.value, key=key)
        self.value = value

    def restore(self, saved):
        replaced, self.value = self.value, saved
        return replaced

    def undo(self):
        return self.history.undo(self.restore)

    def redo(self):
        return self.history.redo(self.restore)


def test_undo_and_redo_walk_the_states_back_and_forth():
    doc = Document(History())
    assert not doc.history.can_undo and not doc.history.can_redo and len(doc.history) == 0
    assert doc.undo() is None and doc.redo() is None and doc.value == 0
    for value in (1, 2, 3):
        doc.set(value)
    assert len(doc.history) == 3 and doc.history.can_undo and not doc.history.can_redo
    assert doc.undo() == 2 and doc.value == 2
    assert doc.undo() == 1 and doc.value == 1
    assert doc.history.can_redo and len(doc.history) == 1
    assert doc.redo() == 2 and doc.value == 2
    assert doc.redo() == 3 and doc.value == 3
    assert doc.redo() is None and doc.value == 3
    assert [doc.undo(), doc.undo(), doc.undo(), doc.undo()] == [2, 1, 0, None]
    assert doc.value == 0 and not doc.history.can_undo


def test_a_new_change_discards_what_was_undone():
    doc = Document(History())
    doc.set(1)
    doc.set(2)
    doc.undo()
    doc.set(5)
    assert not doc.history.can_redo and doc.redo() is None
    assert doc.undo() == 1 and doc.undo() == 0 and doc.value == 0


def test_the_limit_forgets_the_oldest_steps():
    doc = Document(History(limit=3))
    for value in range(1, 8):
        doc.set(value)
    assert len(doc.history) == 3 and doc.history.limit == 3
    assert [doc.undo() for _ in range(4)] == [6, 5, 4, None]
    assert doc.value == 4  # 0..3 were forgotten
    for _ in range(3):
        doc.redo()
    assert doc.value == 7 and len(doc.history) == 3


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, "3"])
def test_a_bad_limit_is_an_input_error(limit):
    with pytest.raises(InputError, match="limit"):
        History(limit)


def test_pushes_with_one_key_are_one_step_until_something_else_happens():
    doc = Document(History())
    doc.set(1, key="region a")
    assert doc.history.joins("region a") and not doc.history.joins("region b") and not doc.history.joins(None)
    doc.set(2, key="region a")
    doc.set(3, key="region a")
    assert len(doc.history) == 1
    doc.set(4, key="region b")
    doc.set(5)
    doc.set(6)  # no key: never joins
    assert len(doc.history) == 4
    assert doc.undo() == 5 and doc.undo() == 4 and doc.undo() == 3 and doc.undo() == 0
    doc.set(1, key="region a")
    doc.undo()
    doc.set(2, key="region a")  # an undo ends the run
    assert len(doc.history) == 1 and not doc.history.can_redo


def test_a_failing_restore_leaves_the_history_as_it_was():
    history = History()
    history.push("saved")

    def broken(_):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        history.undo(broken)
    assert len(history) == 1 and not history.can_redo
    assert history.undo(lambda saved: None) == "saved"
    assert not history.can_undo and not history.can_redo  # restore kept nothing to redo


def test_none_cannot_be_saved_and_clear_forgets_everything():
    history = History()
    with pytest.raises(InputError):
        history.push(None)
    history.push(1, key="k")
    history.push(2)
    history.undo(lambda saved: "now")
    history.clear()
    assert len(history) == 0 and not history.can_redo and not history.joins("k")


def test_labels_history_undoes_a_region_session_at_once_and_whole_images():
    labels = np.arange(48, dtype=np.int32).reshape(6, 8)
    first = labels.copy()
    history = LabelsHistory()
    rect = (1, 2, 4, 6)
    assert history.before_region(labels, rect)
    labels[1:4, 2:6] = 100
    assert not history.before_region(labels, rect)  # the same region: the same step
    labels[1:4, 2:6] = 200
    assert len(history) == 1
    shown = history.undo(labels)
    assert shown is labels  # a region is put back in place
    np.testing.assert_array_equal(labels, first)
    assert not history.can_undo and history.undo(labels) is None

    history.before_whole(labels)
    replaced = np.zeros_like(labels)
    history.before_region(replaced, (0, 0, 2, 2))
    replaced[0:2, 0:2] = 7
    np.testing.assert_array_equal(history.undo(replaced)[0:2, 0:2], 0)
    np.testing.assert_array_equal(history.undo(replaced), first)  # the saved whole image
    history.before_whole(labels)
    assert history.undo(np.zeros((3, 3), np.int32)).shape == (3, 3)  # another shape: left as it is


def test_labels_history_keeps_its_depth_and_copies_what_it_saves():
    labels = np.zeros((4, 4), np.int32)
    history = LabelsHistory()
    for i in range(UNDO_DEPTH + 5):
        history.before_whole(labels)
        labels[:] = i + 1  # in place: the saved copies must not follow
    assert len(history) == UNDO_DEPTH
    while history.can_undo:
        labels = history.undo(labels)
    np.testing.assert_array_equal(labels, 5)  # the oldest kept: before the 6th change
