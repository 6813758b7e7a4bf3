"""Proofreading edits and the session store: exact undo, restore on reopen, nothing lost."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from probseg.core.errors import InputError, ProbsegError
from probseg.io.images import read_image
from probseg.proofreading.edits import Edit, delete, diff, merge, paint, replace_region, split_line
from probseg.proofreading.session import (
    LABELS_NAME,
    LOCK_NAME,
    LOG_NAME,
    SESSION_NAME,
    Session,
    SessionError,
    SessionLocked,
    image_checksum,
    labels_checksum,
    saved_session_info,
    session_folder,
)

ROOT = Path(__file__).resolve().parents[1]


def _labels():
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[4:16, 4:30] = 1
    labels[20:34, 6:14] = 2
    labels[22:30, 20:34] = 3
    return labels


@pytest.fixture
def labels():
    return _labels()


@pytest.fixture
def image():
    return np.random.default_rng(0).random((40, 40)).astype(np.float32)


@pytest.fixture
def image_path(tmp_path, image):
    path = tmp_path / "cells.npy"
    np.save(path, image)
    return path


def _snapshot(folder: Path) -> dict:
    # The lock file says who has the session open, not what it holds.
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def _open(image_path, image, labels=None, **kwargs):
    return Session.open(image_path, image, _labels() if labels is None else labels, **kwargs)


# -- edits -------------------------------------------------------------------------------


EDIT_MAKERS = {
    "merge": lambda lab: merge(lab, 1, 2),
    "split": lambda lab: split_line(lab, 1, (0, 17), (20, 17)),
    "delete": lambda lab: delete(lab, 3),
    "paint": lambda lab: paint(lab, np.pad(np.ones((10, 10), bool), ((15, 15), (15, 15))), 7),
    "replace": lambda lab: replace_region(lab, (18, 18, 34, 38), np.full((16, 20), 9, dtype=np.int32)),
    "diff": lambda lab: diff(lab, np.where(lab == 2, 5, lab), "paint", {"tool": "fill"}),
}


@pytest.mark.parametrize("name", sorted(EDIT_MAKERS))
def test_each_edit_leaves_input_alone_and_reverts_exactly(labels, name):
    original = labels.copy()
    edit = EDIT_MAKERS[name](labels)
    assert isinstance(edit, Edit) and edit.size > 0
    np.testing.assert_array_equal(labels, original)
    assert edit.index.dtype == np.int64 and np.all(np.diff(edit.index) > 0)
    assert np.all(edit.before != edit.after)
    json.dumps(edit.params)
    edited = labels.copy()
    edit.apply(edited)
    assert not np.array_equal(edited, original)
    np.testing.assert_array_equal(edited.flat[edit.index], edit.after)
    edit.revert(edited)
    np.testing.assert_array_equal(edited, original)


def test_merge_and_delete_change_only_their_objects(labels):
    merged = labels.copy()
    merge(labels, 1, 2).apply(merged)
    assert 2 not in merged and np.array_equal(merged == 1, (labels == 1) | (labels == 2))
    deleted = labels.copy()
    delete(labels, 3).apply(deleted)
    assert 3 not in deleted and np.array_equal(deleted[labels != 3], labels[labels != 3])


def test_split_keeps_every_pixel_and_gives_new_ids_to_smaller_parts(labels):
    edit = split_line(labels, 1, (0, 17), (20, 17))
    out = labels.copy()
    edit.apply(out)
    assert edit.params["new_ids"] == [4]
    np.testing.assert_array_equal(out > 0, labels > 0)  # no pixel became background
    assert (out == 1).sum() > (out == 4).sum() > 0  # the larger part keeps the id
    assert set(np.unique(out[:, :17][labels[:, :17] == 1])) == {1}
    assert set(np.unique(out[:, 18:][labels[:, 18:] == 1])) == {4}


def test_one_pixel_diagonal_line_splits():
    labels = np.zeros((20, 20), dtype=np.uint16)
    labels[2:18, 2:18] = 5
    out = labels.copy()
    split_line(labels, 5, (0, 0), (19, 19)).apply(out)
    assert set(np.unique(out)) == {0, 5, 6}
    assert (out > 0).sum() == 256


def test_split_only_renumbers_the_piece_it_cuts():
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[2:8, 2:28] = 1
    labels[12:18, 2:8] = 1  # a second, separate piece of the same object
    out = labels.copy()
    split_line(labels, 1, (0, 20), (10, 20)).apply(out)
    assert set(np.unique(out[12:18, 2:8])) == {1}
    assert set(np.unique(out[2:8, 2:20])) == {1} and set(np.unique(out[2:8, 21:28])) == {2}


@pytest.mark.parametrize("p0, p1", [((0, 10), (8, 10)), ((5, 5), (6, 6)), ((0, 35), (0, 39))])
def test_split_that_does_not_cut_raises(labels, p0, p1):
    with pytest.raises(InputError, match="does not cut object 1") as info:
        split_line(labels, 1, p0, p1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lab: merge(lab, 1, 1), "itself"),
        (lambda lab: merge(lab, 1, 8), "no object 8"),
        (lambda lab: merge(lab, 0, 2), "0 is background"),
        (lambda lab: delete(lab, 2.5), "integer id"),
        (lambda lab: paint(lab, lab > 0, -1), "0 \\(background\\)"),
        (lambda lab: paint(lab, (lab > 0).astype(int), 3), "boolean array"),
        (lambda lab: paint(lab.astype(np.uint8), lab > 0, 300), "do not fit"),
        (lambda lab: replace_region(lab, (0, 0, 10, 10), np.zeros((5, 5), int)), "shape"),
        (lambda lab: replace_region(lab, (30, 30, 50, 50), np.zeros((20, 20), int)), "outside"),
        (lambda lab: diff(lab, lab[:10]), "shapes"),
        (lambda lab: split_line(lab, 1, (0, 17), (20, 17), width=0), "width"),
    ],
)
def test_bad_edit_arguments_give_one_line_errors(labels, call, message):
    with pytest.raises(InputError, match=message) as info:
        call(labels)
    assert "\n" not in str(info.value)


def test_apply_refuses_labels_the_edit_was_not_made_for(labels):
    edit = merge(labels, 1, 2)
    out = labels.copy()
    edit.apply(out)
    with pytest.raises(InputError, match="changed since"):
        edit.apply(out)
    with pytest.raises(InputError, match="made for a"):
        edit.apply(np.zeros((5, 5), np.int32))


def test_replace_region_stitch_continues_objects_across_the_border(labels):
    region = np.zeros((10, 10), dtype=np.int32)
    region[:, :5] = 1  # touches object 1 along the top border
    region[3:6, 6:9] = 2  # touches nothing outside
    region[8:, 7:] = 3  # touches object 2 along the bottom border
    out = labels.copy()
    replace_region(labels, (16, 4, 26, 14), region, stitch=True).apply(out)
    assert set(np.unique(out[16:26, 4:9])) == {1}
    assert out[20, 11] == labels.max() + 1
    assert out[25, 12] == 2


# -- session -------------------------------------------------------------------------------


def test_session_folder_sits_beside_the_image(tmp_path):
    assert session_folder(tmp_path / "cells.tif") == tmp_path / "cells.tif.probseg"
    assert session_folder(tmp_path / "plate.zarr") == tmp_path / "plate.zarr.probseg"


def test_create_writes_the_documented_layout(image_path, image, labels):
    session = _open(image_path, image, labels)
    folder = session.folder
    assert folder == session_folder(image_path)
    assert {p.name for p in folder.iterdir()} == {SESSION_NAME, LABELS_NAME, LOG_NAME, LOCK_NAME, "edits"}
    record = json.loads((folder / SESSION_NAME).read_text())
    assert record["image"]["name"] == "cells.npy"
    assert record["image"]["shape"] == [40, 40] and record["image"]["checksum"] == image_checksum(image)
    assert record["position"] == 0 and record["reviewed"] == []
    np.testing.assert_array_equal(np.load(folder / LABELS_NAME), labels)
    labels[0, 0] = 99  # the session copied its start
    assert session.labels[0, 0] == 0
    with pytest.raises(ValueError):
        session.labels[0, 0] = 5


def test_edits_undo_and_review_survive_reopen(image_path, image, labels):
    session = _open(image_path, image, labels)
    session.apply(merge(session.labels, 1, 2))
    session.apply(split_line(session.labels, 1, (0, 17), (20, 17)))
    session.apply(paint(session.labels, session.labels == 3, 0))
    session.undo()
    session.mark_reviewed((0, 0, 20, 20))
    session.mark_reviewed(7)
    session.mark_reviewed("corner")
    session.mark_reviewed(7, reviewed=False)
    expected = session.labels.copy()
    edit_files = sorted(p.name for p in (session.folder / "edits").iterdir())
    assert edit_files == ["000001.npz", "000002.npz", "000003.npz"]

    again = Session.open(image_path, image)  # initial labels not needed to resume
    np.testing.assert_array_equal(again.labels, expected)
    assert again.history == session.history
    assert [e["kind"] for e in again.history] == ["merge", "split", "paint"]
    assert [e["undone"] for e in again.history] == [False, False, True]
    assert again.position == 2 and again.can_undo and again.can_redo
    assert again.reviewed == {(0, 0, 20, 20), "corner"}
    assert again.created == session.created


def test_undo_and_redo_across_reopen(image_path, image, labels):
    session = _open(image_path, image, labels)
    states = [session.labels.copy()]
    for make in (lambda lab: merge(lab, 1, 3), lambda lab: delete(lab, 2)):
        session.apply(make(session.labels))
        states.append(session.labels.copy())
    session.undo()
    session = Session.open(image_path, image)
    np.testing.assert_array_equal(session.labels, states[1])
    session.redo()
    session = Session.open(image_path, image)
    np.testing.assert_array_equal(session.labels, states[2])
    assert session.redo() is None
    assert isinstance(session.undo(), Edit) and isinstance(session.undo(), Edit)
    assert session.undo() is None and not session.can_undo
    session = Session.open(image_path, image)
    np.testing.assert_array_equal(session.labels, states[0])
    assert session.can_redo and not session.can_undo


def test_new_edit_after_undo_discards_the_redo_branch(image_path, image, labels):
    session = _open(image_path, image, labels)
    session.apply(delete(session.labels, 1))
    session.apply(delete(session.labels, 2))
    session.undo()
    entry = session.apply(delete(session.labels, 3))
    assert entry["id"] == 3 and not session.can_redo
    history = Session.open(image_path, image).history
    assert [(e["id"], e["undone"], e["discarded"]) for e in history] == [(1, False, False), (2, True, True), (3, False, False)]
    session = Session.open(image_path, image)
    session.undo()
    session.undo()
    np.testing.assert_array_equal(session.labels, labels)
    session.redo()
    session.redo()  # redoes 1 then 3, never the discarded 2
    assert set(np.unique(session.labels)) == {0, 2}


def test_failed_apply_or_undo_changes_nothing(image_path, image, labels):
    session = _open(image_path, image, labels)
    stale = delete(session.labels, 2)
    session.apply(merge(session.labels, 1, 2))
    before = _snapshot(session.folder)
    with pytest.raises(InputError, match="changed since"):
        session.apply(stale)
    (session.folder / "edits" / "000001.npz").write_bytes(b"not a zip")
    with pytest.raises(SessionError, match="cannot undo edit 1"):
        session.undo()
    assert session.position == 1 and len(session.history) == 1
    assert set(np.unique(session.labels)) == {0, 1, 3}
    del before["edits/000001.npz"]
    after = _snapshot(session.folder)
    del after["edits/000001.npz"]
    assert after == before


def test_empty_edit_is_not_logged(image_path, image, labels):
    session = _open(image_path, image, labels)
    assert session.apply(paint(session.labels, session.labels == 1, 1)) is None
    assert session.commit_external(session.labels.copy()) is None
    assert session.history == []


def test_commit_external_records_napari_paint(image_path, image, labels):
    session = _open(image_path, image, labels)
    layer_data = session.labels.copy()
    layer_data[0:3, 0:3] = 4  # what napari's brush would do in place
    entry = session.commit_external(layer_data, "paint", {"tool": "brush"})
    assert entry["kind"] == "paint" and entry["pixels"] == 9 and entry["params"] == {"tool": "brush"}
    np.testing.assert_array_equal(session.labels, layer_data)
    session.undo()
    np.testing.assert_array_equal(session.labels, labels)


def _damage_session_json(folder):
    (folder / SESSION_NAME).write_text('{"format": "probseg-proofreading-session", ')


def _truncate(name):
    def damage(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return damage


def _remove(name):
    return lambda folder: (folder / name).unlink()


def _tamper_labels(folder):
    labels = np.load(folder / LABELS_NAME)
    labels[0, 0] = 42
    np.save(folder / LABELS_NAME, labels)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (_damage_session_json, "unreadable session.json"),
        (_remove(SESSION_NAME), "lacks session.json"),
        (_truncate(LABELS_NAME), "corrupt labels.npy"),
        (_remove(LABELS_NAME), "lacks labels.npy"),
        (_tamper_labels, "does not match its edit log"),
        (_remove(LOG_NAME), "lacks edits.json"),
        (lambda f: (f / LOG_NAME).write_text("[]"), "fewer entries"),
        (_truncate("edits/000001.npz"), "corrupt edits/000001.npz"),
        (_remove("edits/000002.npz"), "lacks edits/000002.npz"),
    ],
)
def test_corrupt_session_raises_and_is_left_untouched(image_path, image, labels, damage, problem):
    session = _open(image_path, image, labels)
    session.apply(merge(session.labels, 1, 2))
    session.apply(delete(session.labels, 3))
    damage(session.folder)
    before = _snapshot(session.folder)
    with pytest.raises(SessionError, match=problem) as info:
        Session.open(image_path, image, labels)
    message = str(info.value)
    assert isinstance(info.value, ProbsegError) and "\n" not in message
    assert str(session.folder) in message and "left untouched" in message
    assert _snapshot(session.folder) == before


@pytest.mark.parametrize("other", ["data", "shape"])
def test_session_of_another_image_raises_and_is_left_untouched(image_path, image, labels, other):
    session = _open(image_path, image, labels)
    session.apply(delete(session.labels, 1))
    session.mark_reviewed(1)
    before = _snapshot(session.folder)
    foreign = image + 1 if other == "data" else np.zeros((40, 41), np.float32)
    with pytest.raises(SessionError, match="other image data" if other == "data" else "shape") as info:
        Session.open(image_path, foreign, np.zeros(foreign.shape, np.int32))
    assert "left untouched" in str(info.value)
    assert _snapshot(session.folder) == before


def test_start_over_moves_the_old_session_aside(image_path, image, labels):
    session = _open(image_path, image, labels)
    session.apply(delete(session.labels, 1))
    _damage_session_json(session.folder)
    old = _snapshot(session.folder)
    fresh = _open(image_path, image + 1, np.zeros((40, 40), np.int32), start_over=True)
    assert fresh.history == [] and not fresh.labels.any()
    aside = [p for p in image_path.parent.iterdir() if p.name.startswith("cells.npy.probseg.old-")]
    assert len(aside) == 1 and _snapshot(aside[0]) == old
    again = _open(image_path, image + 1, start_over=True)
    assert len([p for p in image_path.parent.iterdir() if ".old-" in p.name]) == 2
    np.testing.assert_array_equal(again.labels, labels)


def test_bad_initial_labels_leave_an_old_session_in_place(image_path, image, labels):
    session = _open(image_path, image, labels)
    before = _snapshot(session.folder)
    with pytest.raises(InputError, match="shape"):
        _open(image_path, image, np.zeros((3, 3), np.int32), start_over=True)
    assert _snapshot(session.folder) == before


def test_interrupted_operations_reopen_as_old_or_new_state(image_path, image, labels):
    """Simulate kills between the writes of one operation (the kill test hits them by chance)."""
    session = _open(image_path, image, labels)
    session.apply(delete(session.labels, 1))
    folder = session.folder
    committed = _snapshot(folder)
    old_labels = session.labels.copy()

    # Killed after the edit file and edits.json were written ahead, before the commit.
    session.apply(delete(session.labels, 2))
    (folder / SESSION_NAME).write_bytes(committed[SESSION_NAME])
    (folder / LABELS_NAME).write_bytes(committed[LABELS_NAME])
    again = Session.open(image_path, image)
    np.testing.assert_array_equal(again.labels, old_labels)
    assert len(again.history) == 1 and len(json.loads((folder / LOG_NAME).read_text())) == 1

    # Killed after the commit, before labels.npy: the edit is replayed.
    again.apply(delete(again.labels, 3))
    (folder / LABELS_NAME).write_bytes(committed[LABELS_NAME])
    dead = _dead_pid()
    left = folder / f".labels.npy.{dead}-0123abcd.tmp"  # by the killed writer
    left.write_bytes(b"half a file")
    # A process still running may be writing: its temporary files stay.
    running = [folder / f".session.json.{os.getppid()}-0123abcd.tmp", folder / "edits" / f".x.{os.getpid()}-0123abcd.tmp"]
    for path in running:
        path.write_bytes(b"being written")
    reopened = Session.open(image_path, image)
    assert set(np.unique(reopened.labels)) == {0, 2}
    np.testing.assert_array_equal(np.load(folder / LABELS_NAME), reopened.labels)
    assert not left.exists() and all(path.exists() for path in running)
    for path in running:
        path.unlink()

    # The same for an undo.
    lagging = (folder / LABELS_NAME).read_bytes()
    reopened.undo()
    (folder / LABELS_NAME).write_bytes(lagging)
    np.testing.assert_array_equal(Session.open(image_path, image).labels, old_labels)


def test_export_labels(image_path, image, labels, tmp_path):
    session = _open(image_path, image, labels)
    session.apply(merge(session.labels, 1, 2))
    out = session.export_labels(tmp_path / "out" / "corrected.tif")
    np.testing.assert_array_equal(read_image(out), session.labels)


def test_export_reviewed_writes_sparse_labels_and_a_mask(image_path, image, labels, tmp_path):
    session = _open(image_path, image, labels)
    with pytest.raises(InputError, match="nothing to export"):
        session.export_reviewed(tmp_path / "sparse.tif")
    session.mark_reviewed("a")
    session.mark_reviewed("b")
    patches = {"a": (0, 0, 10, 20), "b": (20, 20, 40, 40), "c": (20, 0, 40, 20)}
    lab_path, mask_path = session.export_reviewed(tmp_path / "sparse.tif", patches)
    assert mask_path == tmp_path / "sparse_reviewed.tif"
    sparse, mask = read_image(lab_path), read_image(mask_path)
    expected_mask = np.zeros((40, 40), np.uint8)
    expected_mask[0:10, 0:20] = 1
    expected_mask[20:40, 20:40] = 1
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(sparse, np.where(mask == 1, labels, 0))
    assert 2 not in sparse  # object 2 lies in the unreviewed patch "c"
    with pytest.raises(InputError, match="'b' has no"):
        session.export_reviewed(tmp_path / "x.tif", {"a": (0, 0, 10, 20)})

    session.mark_reviewed("a", reviewed=False)
    session.mark_reviewed("b", reviewed=False)
    session.mark_reviewed((20, 0, 40, 20))  # a rectangle as the id needs no table
    sparse2, mask2 = session.export_reviewed(tmp_path / "sparse2.npy", mask_path=tmp_path / "m.npy")
    assert set(np.unique(np.load(sparse2))) == {0, 2} and np.load(mask2).sum() == 400


# -- one writer at a time -------------------------------------------------------------------


def test_close_and_with_release_the_lock(image_path, image, labels):
    with _open(image_path, image, labels) as session:
        lock = session.folder / LOCK_NAME
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["since"]
        session.apply(delete(session.labels, 1))
    assert not lock.exists() and session.closed
    with pytest.raises(SessionError, match="was closed; open it again"):
        session.apply(delete(session.labels, 2))
    assert set(np.unique(session.labels)) == {0, 2, 3}  # still readable
    session.close()  # twice is fine
    again = Session.open(image_path, image)
    assert lock.exists() and again.notices == () and len(again.history) == 1
    del again  # garbage collection releases it too
    assert not lock.exists()


def test_reopening_in_one_process_retires_the_older_object(image_path, image, labels):
    old = _open(image_path, image, labels)
    old.apply(delete(old.labels, 1))
    new = Session.open(image_path, image)
    for change in (lambda s: s.apply(delete(s.labels, 2)), lambda s: s.undo(), lambda s: s.mark_reviewed(1)):
        with pytest.raises(SessionError, match="opened again in this process; use the newer Session"):
            change(old)
    new.apply(delete(new.labels, 2))
    assert old.closed and not new.closed
    assert [e["id"] for e in Session.open(image_path, image).history] == [1, 2]


def test_read_only_session_reads_but_never_writes(image_path, image, labels, tmp_path):
    session = _open(image_path, image, labels)
    session.apply(merge(session.labels, 1, 2))
    session.mark_reviewed((0, 0, 20, 20))
    before = _snapshot(session.folder)
    reader = Session.open(image_path, image, read_only=True)
    assert reader.read_only and len(reader.history) == 1 and reader.reviewed == {(0, 0, 20, 20)}
    np.testing.assert_array_equal(reader.labels, session.labels)
    changes = {
        "apply the delete edit": lambda: reader.apply(delete(reader.labels, 3)),
        "paint": lambda: reader.commit_external(reader.labels.copy() + 1),
        "undo": reader.undo,
        "redo": reader.redo,
        "mark a patch reviewed": lambda: reader.mark_reviewed(3),
        "change its inputs": lambda: reader.set_inputs({"a": 1}),
    }
    for action, change in changes.items():
        with pytest.raises(SessionError, match="is open read-only") as info:
            change()
        assert "\n" not in str(info.value)
    assert reader.export_labels(tmp_path / "copy.tif").exists()  # exporting elsewhere is reading
    with pytest.raises(InputError, match="cannot export into the session folder"):
        reader.export_labels(session.folder / "labels.npy")
    with pytest.raises(InputError, match="cannot export into the session folder"):
        session.export_reviewed(session.folder / "edits" / "sparse.npy")
    assert _snapshot(session.folder) == before
    session.apply(delete(session.labels, 3))  # the writer is unaffected
    with pytest.raises(SessionError, match="no proofreading session"):
        Session.open(tmp_path / "other.npy", image, read_only=True)
    with pytest.raises(InputError, match="read-only cannot start over"):
        Session.open(image_path, image, read_only=True, start_over=True)


def _write_lock(folder: Path, **holder) -> None:
    (folder / LOCK_NAME).write_text(json.dumps({"since": "2026-01-01T00:00:00.000+00:00", **holder}))


def test_lock_of_another_host_is_never_taken_over(image_path, image, labels):
    session = _open(image_path, image, labels)
    folder = session.folder
    session.close()
    _write_lock(folder, pid=os.getpid(), host="other-machine.example")
    with pytest.raises(SessionLocked) as info:
        Session.open(image_path, image)
    message = str(info.value)
    assert "\n" not in message and f"process {os.getpid()} on other-machine.example since 2026-01-01" in message
    assert "read_only=True" in message and f"delete {folder / LOCK_NAME}" in message
    assert info.value.holder["host"] == "other-machine.example"
    with pytest.raises(SessionLocked):
        _open(image_path, image, start_over=True)  # a session in use is never moved aside
    assert not [p for p in image_path.parent.iterdir() if ".old-" in p.name]
    assert Session.open(image_path, image, read_only=True).notices == (
        f"opened read-only; process {os.getpid()} on other-machine.example since 2026-01-01T00:00:00.000+00:00 "
        "has it open for writing",)


@pytest.mark.parametrize("content", ["dead", "reused", "garbage", "empty"])
def test_stale_lock_of_this_host_is_taken_over_with_a_notice(image_path, image, labels, content):
    if content == "reused" and not Path("/proc/self/stat").exists():
        pytest.skip("process start times come from /proc")
    session = _open(image_path, image, labels)
    session.apply(delete(session.labels, 1))
    folder = session.folder
    session.close()
    host = __import__("socket").gethostname()
    if content == "dead":
        _write_lock(folder, pid=_dead_pid(), host=host)
    elif content == "reused":  # a running process, but not the one that started at that time
        _write_lock(folder, pid=os.getppid(), host=host, started=1)
    else:
        (folder / LOCK_NAME).write_text("{half" if content == "garbage" else "")
    again = Session.open(image_path, image)
    assert len(again.history) == 1
    assert len(again.notices) == 1 and "took over the lock" in again.notices[0] and "no longer running" in again.notices[0]
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_inputs_and_start_checksum_are_kept(image_path, image, labels):
    assert saved_session_info(image_path) is None
    inputs = {"labels": {"layer": "cells segmentation"}, "patch": 48}
    session = _open(image_path, image, labels.astype(np.uint16), inputs=inputs)
    session.apply(delete(session.labels, 1))
    assert labels_checksum(labels.astype(np.int64)) == labels_checksum(labels) == session.initial_labels_checksum
    assert session.labels_checksum == labels_checksum(session.labels) != session.initial_labels_checksum
    assert labels_checksum(labels.astype(np.float32)) is None and labels_checksum(labels - 1) is None
    info = saved_session_info(image_path)
    assert info["inputs"] == inputs and info["n_edits"] == 1 and info["n_reviewed"] == 0
    assert info["initial_labels_checksum"] == labels_checksum(labels)
    assert info["labels_checksum"] == session.labels_checksum
    session.set_inputs({**inputs, "patch": 64})
    session = Session.open(image_path, image, inputs={"ignored": True})
    assert session.inputs == {**inputs, "patch": 64}
    with pytest.raises(InputError, match="JSON"):
        session.set_inputs({"x": float("nan")})
    with pytest.raises(InputError, match="dict with string keys"):
        _open(image_path, image, start_over=True, inputs=["not", "a", "dict"])


# -- real processes ---------------------------------------------------------------------------


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _worker(image_path: Path, *args: str) -> tuple[subprocess.Popen, queue.Queue]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "_proofread_worker.py"), str(image_path), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def _confirmed(proc: subprocess.Popen, lines: queue.Queue, n: int, until: str | None = None) -> list[tuple]:
    """The first ``n`` edits the worker confirmed (and its ``until`` line, when given)."""
    deadline = time.monotonic() + 30
    run = []
    while len(run) < n or until is not None:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        assert line is not None, f"worker stopped: {proc.stderr.read()}"
        if line.strip() == until:
            break
        run.append(tuple(int(v) for v in line.split()))
    return run


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _image(tmp_path: Path) -> tuple[Path, np.ndarray]:
    image_path = tmp_path / "big.npy"
    image = np.random.default_rng(1).random((256, 256)).astype(np.float32)
    np.save(image_path, image)
    return image_path, image


def _check_has(session: Session, confirmed: list[tuple]) -> None:
    for number, row, col, value in confirmed:
        assert session.labels[row, col] == value, f"confirmed edit {number} was lost"
    assert len(session.history) >= confirmed[-1][0]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_killed_process_loses_no_confirmed_edit(tmp_path):
    image_path, image = _image(tmp_path)
    confirmed = []
    for _ in range(2):  # the second run resumes what the killed one left
        proc, lines = _worker(image_path)
        try:
            confirmed += _confirmed(proc, lines, 5)
        finally:
            _kill(proc)

    session = Session.open(image_path, image)
    _check_has(session, confirmed)
    folder = session.folder
    json.loads((folder / SESSION_NAME).read_text())
    json.loads((folder / LOG_NAME).read_text())
    for entry in session.history:
        with np.load(folder / "edits" / f"{entry['id']:06d}.npz", allow_pickle=False) as data:
            assert data["index"].size == entry["pixels"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_second_process_is_refused_reads_and_takes_over_once_the_first_dies(tmp_path):
    image_path, image = _image(tmp_path)
    holder, lines = _worker(image_path, "--hold", "6")
    try:
        confirmed = _confirmed(holder, lines, 6, until="holding")
        folder = session_folder(image_path)
        before = _snapshot(folder)
        with pytest.raises(SessionLocked) as info:
            Session.open(image_path, image)
        message = str(info.value)
        assert "\n" not in message and f"in use by process {holder.pid} on " in message
        assert " since 20" in message and "read_only=True" in message
        with pytest.raises(SessionLocked):
            Session.open(image_path, image, start_over=True)
        reader = Session.open(image_path, image, read_only=True)
        _check_has(reader, confirmed)
        assert f"process {holder.pid}" in reader.notices[0]
        with pytest.raises(SessionError, match="read-only"):
            reader.apply(paint(reader.labels, reader.labels == 0, 1))
        assert _snapshot(folder) == before and holder.poll() is None
    finally:
        _kill(holder)

    session = Session.open(image_path, image)
    assert len(session.notices) == 1 and f"left by process {holder.pid}" in session.notices[0]
    assert "no longer running" in session.notices[0]
    _check_has(session, confirmed)
    session.apply(paint(session.labels, session.labels == 0, 7))
    session.close()
    assert not (folder / LOCK_NAME).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_two_processes_started_at_once_one_is_refused_in_one_line(tmp_path):
    """Both find no session: one creates it, the other meets its lock (formerly: a crash or lost edits)."""
    image_path, image = _image(tmp_path)
    workers = [_worker(image_path) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        refused = []
        while not refused and time.monotonic() < deadline:
            time.sleep(0.02)
            refused = [proc for proc, _ in workers if proc.poll() is not None]
        running = [(proc, lines) for proc, lines in workers if proc not in refused]
        assert len(refused) == 1 and len(running) == 1
        assert refused[0].returncode == 3
        err = refused[0].stderr.read().strip()
        assert "\n" not in err and "Traceback" not in err
        assert f"in use by process {running[0][0].pid}" in err
        confirmed = _confirmed(*running[0], 5)
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                _kill(proc)
    _check_has(Session.open(image_path, image), confirmed)
