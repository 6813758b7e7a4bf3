"""The Proofread widget: queue, navigation, edits, undo/redo, autosave and restore."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("needs a display: install Xvfb (apt-get install xvfb) for pytest-xvfb", allow_module_level=True)

from napari_probseg import _models, proofread_widget  # noqa: E402
from napari_probseg._layers import OUTPUT_META_KEY  # noqa: E402
from napari_probseg.proofread_widget import ProofreadWidget, image_path_of  # noqa: E402
from probseg.proofreading.session import LOCK_NAME, session_folder  # noqa: E402
from probseg.consensus.agglomerate import agglomerate  # noqa: E402
from probseg.proofreading.retrain import FINE_TUNE_STEPS  # noqa: E402
from probseg.evaluation.synthetic import perturbed_samples, touching_blobs  # noqa: E402

pytestmark = pytest.mark.widget


@pytest.fixture(autouse=True)
def sessions_home(tmp_path, monkeypatch):
    home = tmp_path / "sessions"
    monkeypatch.setattr(proofread_widget, "SESSIONS_HOME", home)
    return home


@pytest.fixture(scope="module")
def data():
    image, truth = touching_blobs((96, 128), object_size=14, seed=5)
    samples = perturbed_samples(truth, 6, split=0.2, merge=0.2, seed=1)
    agg = agglomerate(samples)
    return image, truth, samples, agg.labels, np.clip(agg.entropy(), 0, 1)  # as concrete-dropout gives it


def _viewer(make_napari_viewer, data):
    image, _, samples, labels, uncertainty = data
    v = make_napari_viewer()
    v.add_image(image, name="blobs")
    v.add_labels(labels, name="blobs segmentation", metadata={OUTPUT_META_KEY: {"role": "segmentation", "source": "blobs"}})
    v.add_image(uncertainty, name="blobs uncertainty", metadata={OUTPUT_META_KEY: {"role": "uncertainty", "source": "blobs"}})
    v.add_labels(samples, name="blobs samples", metadata={OUTPUT_META_KEY: {"role": "samples", "source": "blobs"}})
    return v


def test_queue_navigation_and_review(make_napari_viewer, data, sessions_home):
    viewer = _viewer(make_napari_viewer, data)
    w = ProofreadWidget(viewer)
    assert (w.image_layer, w.labels_layer, w.uncertainty_layer, w.samples_layer) == (
        "blobs", "blobs segmentation", "blobs uncertainty", "blobs samples")
    assert w.start()
    assert (sessions_home / "blobs.probseg").is_dir()
    assert len(w.queue) > 2 and w.queue_list.count() == len(w.queue)
    scores = [e.score for e in w.queue]
    assert scores == sorted(scores, reverse=True)
    w.next_patch()
    assert w.position == 0
    patch = viewer.layers["blobs patch"]
    assert len(patch.data) == 1
    w.accept_patch()
    assert w.position == 1 and w.reviewed_label.text() == f"reviewed 1 of {len(w.queue)}"
    w.previous_patch()
    assert w.position == 0
    w.next_patch()  # skips the reviewed patch
    assert w.position == 1


def test_merge_delete_split_undo_redo(make_napari_viewer, data):
    viewer = _viewer(make_napari_viewer, data)
    w = ProofreadWidget(viewer)
    assert w.start()
    layer = w.corrected_layer
    labels = np.array(layer.data)
    ids = [int(i) for i in np.unique(labels) if i > 0]
    a, b = ids[0], ids[1]
    assert w.merge(a, b)
    assert not (layer.data == b).any() and (layer.data == a).sum() == (labels == a).sum() + (labels == b).sum()
    assert w.delete(a)
    assert not (layer.data == a).any()
    w.undo()
    w.undo()
    np.testing.assert_array_equal(layer.data, labels)
    w.redo()
    assert not (layer.data == b).any()
    w.undo()
    # Split the largest object with a vertical line through its middle.
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    obj = int(sizes.argmax())
    ys, xs = np.nonzero(labels == obj)
    x = float(np.median(xs))
    viewer.layers["blobs split line"].add_lines(np.array([[ys.min() - 2.0, x], [ys.max() + 2.0, x]]))
    assert w.split_along_line()
    assert len(np.unique(layer.data)) == len(np.unique(labels)) + 1
    assert ((layer.data > 0) == (labels > 0)).all()  # no pixel lost to the cut
    split = np.array(layer.data)
    assert not w.merge(obj, obj)  # a bad edit is a message, not an exception
    assert "merge" in w.status and str(obj) in w.status
    np.testing.assert_array_equal(layer.data, split)


def test_paint_resplit_autosave_and_restore(make_napari_viewer, qtbot, data, tmp_path):
    viewer = _viewer(make_napari_viewer, data)
    w = ProofreadWidget(viewer)
    assert w.start()
    layer = w.corrected_layer
    # napari's own brush: paint a 5x5 square with a new id.
    new_id = int(layer.data.max()) + 1
    layer.selected_label = new_id
    layer.brush_size = 5
    layer.paint((10, 10), new_id)
    assert (layer.data == new_id).sum() > 0
    qtbot.waitUntil(lambda: w.session.can_undo, timeout=5000)
    assert w.session.history[-1]["kind"] == "paint"
    w.next_patch()
    before = np.array(layer.data)
    assert w.resegment_patch(factor=30.0)  # a much higher resolution splits objects in the patch
    y0, x0, y1, x1 = w.queue[w.position].rect
    outside = np.ones(before.shape, bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(layer.data[outside], before[outside])
    w.accept_patch()
    saved = np.array(layer.data)
    n_edits = len(w.session.history)
    out = w.export_labels(tmp_path / "corrected.tif")
    assert out is not None and out.exists()
    assert w.export_reviewed(tmp_path / "reviewed.tif") is not None

    # Close everything and open the same image again: every edit comes back.
    viewer.close()
    viewer2 = _viewer(make_napari_viewer, data)
    w2 = ProofreadWidget(viewer2)  # finds the saved session and resumes it without a click
    assert w2.session is not None and w2.corrected_layer is not None
    np.testing.assert_array_equal(w2.corrected_layer.data, saved)
    assert len(w2.session.history) == n_edits and "restored" in w2.session_label.text()
    assert w2.reviewed_label.text().startswith("reviewed 1 of")
    w2.undo()
    assert not np.array_equal(w2.corrected_layer.data, saved)


def test_missing_inputs_are_messages(make_napari_viewer):
    viewer = make_napari_viewer()
    w = ProofreadWidget(viewer)
    assert not w.start()
    assert "choose" in w.status
    w.next_patch()
    assert "Start" in w.status


def test_resume_with_wrong_layers_refuses_them_and_picks_the_right_ones(make_napari_viewer, data):
    image, truth, _, labels, uncertainty = data
    viewer = _viewer(make_napari_viewer, data)
    w = ProofreadWidget(viewer)
    w.patch_spin.value = 48  # not the default: the review marks are patches of this size
    assert w.start()
    ids = [int(i) for i in np.unique(labels) if i > 0]
    assert w.merge(ids[0], ids[1])
    w.next_patch()
    w.accept_patch()
    w.accept_patch()
    reviewed, saved = set(w.session.reviewed), np.array(w.corrected_layer.data)
    assert len(reviewed) == 2
    viewer.close()

    # The viewer reopened as a user does it: from files, without probseg's layer roles, the ground
    # truth and the 8-bit raw image open too, and the segmentation and uncertainty not yet.
    viewer2 = make_napari_viewer()
    viewer2.add_image(image, name="blobs")
    viewer2.add_labels(truth, name="ground truth")
    viewer2.add_image(np.clip(image * 255, 0, 255).astype(np.uint8), name="raw 8-bit")
    w2 = ProofreadWidget(viewer2)
    assert w2.session is None and w2.corrected_layer is None
    assert "continues from the labels 'blobs segmentation' and the uncertainty 'blobs uncertainty'" in w2.status
    assert w2.patch_spin.value == 48

    w2.labels_layer, w2.uncertainty_layer = "ground truth", "raw 8-bit"
    assert not w2.start()
    assert "'raw 8-bit' cannot be the uncertainty: it holds uint8 values" in w2.status
    assert "blobs" not in w2.uncertainty_combo.choices  # the image itself is never offered
    viewer2.add_image(image * 4, name="raw float")  # float, but an intensity image
    w2.reset_choices()
    w2.uncertainty_layer = "raw float"
    assert not w2.start()
    assert "'raw float' cannot be the uncertainty: its values run from -0.25" in w2.status
    viewer2.add_image(uncertainty, name="uncertainty.tif")  # the right data under a file's name
    w2.reset_choices()
    w2.uncertainty_layer = "uncertainty.tif"
    assert not w2.start()
    assert ("'ground truth' is not the labels the saved session of 'blobs' continues from ('blobs segmentation')"
            in w2.status) and "Start over" in w2.status
    assert w2.session is None and "\n" not in w2.status

    viewer2.add_labels(labels, name="segmentation.tif")
    w2.reset_choices()  # napari does this when a layer is added: the session finds its layers and resumes
    assert w2.session is not None and w2.session.history[-1]["kind"] == "merge"
    assert (w2.labels_layer, w2.uncertainty_layer) == ("segmentation.tif", "uncertainty.tif")
    np.testing.assert_array_equal(w2.corrected_layer.data, saved)
    assert set(w2.session.reviewed) == reviewed
    assert w2.reviewed_label.text() == f"reviewed 2 of {len(w2.queue)}"
    assert sum(w2.queue_list.item(i).text().startswith("\u2713") for i in range(w2.queue_list.count())) == 2
    assert w2.session.inputs["labels"]["layer"] == "segmentation.tif"  # the new names are remembered


def test_start_over_begins_from_the_chosen_labels_and_keeps_the_old_session(make_napari_viewer, data, sessions_home):
    _, truth, _, labels, _ = data
    viewer = _viewer(make_napari_viewer, data)
    w = ProofreadWidget(viewer)
    assert w.start()
    w.delete(int(labels.max()))
    viewer.add_labels(truth, name="ground truth")
    w.reset_choices()
    w.labels_layer = "ground truth"
    assert not w.start()
    assert w.start(start_over=True)
    np.testing.assert_array_equal(w.corrected_layer.data, truth)
    assert w.session.history == [] and w.session.inputs["labels"]["layer"] == "ground truth"
    assert len([p for p in sessions_home.iterdir() if ".old-" in p.name]) == 1


def test_session_open_elsewhere_is_shown_read_only(make_napari_viewer, data):
    viewer = _viewer(make_napari_viewer, data)
    w = ProofreadWidget(viewer)
    assert w.start()
    folder = session_folder(image_path_of(viewer.layers["blobs"]))
    w.session.close()
    (folder / LOCK_NAME).write_text('{"pid": 4242, "host": "microscope-pc", "since": "2026-11-30T08:00:00+00:00"}')
    w2 = ProofreadWidget(_viewer(make_napari_viewer, data))
    assert w2.session is not None and w2.session.read_only
    assert "read-only: process 4242 on microscope-pc has this session open for editing" in w2.status
    assert "read-only" in w2.session_label.text()
    assert not w2.accept_button.isEnabled() and not w2.undo_button.isEnabled()
    assert w2.next_button.isEnabled() and not w2.corrected_layer.editable
    assert not w2.merge(1, 2) and "read-only" in w2.status


def test_merge_boxes_say_which_label_is_kept(make_napari_viewer):
    from qtpy.QtWidgets import QLabel

    w = ProofreadWidget(make_napari_viewer())
    texts = [label.text() for label in w.findChildren(QLabel)]
    assert "keep" in texts and "merge into it" in texts
    assert w.a_spin.tooltip.startswith("keep:") and w.b_spin.tooltip.startswith("merge into it:")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((4, 4), 200, np.uint8), "holds uint8 values"),
        (np.full((4, 4), 0.5, np.float64) * np.array([1, 1, 1, np.nan]), "NaN or infinite"),
        (np.linspace(0, 72.4, 16, dtype=np.float32).reshape(4, 4), "values run from 0 to 72.4"),
        (np.linspace(-1, 0, 16, dtype=np.float32).reshape(4, 4), "values run from -1 to 0"),
    ],
)
def test_an_intensity_image_is_never_an_uncertainty(array, message):
    with pytest.raises(proofread_widget.InputError, match=message) as info:
        proofread_widget.check_uncertainty(array, "raw")
    assert str(info.value).startswith("'raw' cannot be the uncertainty") and "\n" not in str(info.value)
    image = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    with pytest.raises(proofread_widget.InputError, match="holds the image itself"):
        proofread_widget.check_uncertainty(image, "img", image)
    out = proofread_widget.check_uncertainty(image.astype(np.float64), "unc", image * 0.5)
    assert out.dtype == np.float32 and out.max() == 1


# -- the closed loop: train from reviewed objects -------------------------------------------------

TINY_SPOCO = dict(num_fmaps=4, embedding_dims=8, crop_size=48, batch_size=2)


@pytest.fixture(scope="module")
def spoco_model(data):
    import probseg

    image, truth, *_ = data
    ids = np.unique(truth)[1:]
    return probseg.train("spoco", image, np.where(np.isin(truth, ids[::3]), truth, 0), config=TINY_SPOCO, steps=20,
                         device="cpu")


def _reviewed_with_edits(w):
    """Merge two objects of the first patch, delete a third, accept it; the labels after."""
    w.next_patch()
    ids = list(w.queue[w.position].labels)
    assert len(ids) >= 3
    assert w.merge(ids[0], ids[1]) and w.delete(ids[2])
    w.accept_patch()
    return np.array(w.corrected_layer.data)


def test_train_from_reviewed_objects_keeps_edits_is_one_undo_and_reranks(make_napari_viewer, qtbot, data,
                                                                         spoco_model):
    viewer = _viewer(make_napari_viewer, data)
    store = _models.ModelStore()
    store.add("spoco @ tiny", spoco_model)
    w = ProofreadWidget(viewer, store)
    assert "fine-tunes 'spoco @ tiny'" in w.retrain_from.text() and w.retrain_steps.value == FINE_TUNE_STEPS
    assert w.start()
    assert not w.retrain_button.isEnabled()  # nothing reviewed yet
    edited = _reviewed_with_edits(w)
    assert w.retrain_button.isEnabled()
    rect = next(iter(w.session.reviewed))
    y0, x0, y1, x1 = rect
    kept_ids = [int(i) for i in np.unique(edited[y0:y1, x0:x1]) if i > 0]
    kept = np.isin(edited, kept_ids)
    kept[y0:y1, x0:x1] = True
    n_edits = len(w.session.history)
    w.retrain_steps.value = 5
    w.device.value = "cpu"
    assert w.retrain() is not None
    assert w.running and not w.retrain_button.isEnabled() and not w.accept_button.isEnabled()
    assert not w.corrected_layer.editable
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    assert "fine-tuned for 5 steps" in w.status and "objects before" in w.status, w.status
    history = w.session.history
    assert len(history) == n_edits + 1 and history[-1]["params"]["source"] == "retrain"
    after = np.array(w.corrected_layer.data)
    np.testing.assert_array_equal(after[kept], edited[kept])  # reviewed objects exactly as corrected
    assert not np.array_equal(after[~kept], edited[~kept])  # the new prediction elsewhere
    np.testing.assert_array_equal(after, w.session.labels)
    assert w.corrected_layer.editable and w.retrain_button.isEnabled()
    # The queue is ranked by the new uncertainty and still shows the reviewed patch.
    uncertainty = viewer.layers["blobs retrained uncertainty"]
    assert uncertainty.data.shape == edited.shape and w.uncertainty_layer == "blobs uncertainty"
    assert w.queue and w.queue_list.count() == len(w.queue) and rect in [e.rect for e in w.queue]
    assert w.reviewed_label.text() == f"reviewed 1 of {len(w.queue)}"
    assert len(store) == 2 and store.get(store.names()[-1]).train_log["fine_tuned_from"]["steps_done"] == 20
    assert "fine-tunes 'spoco retrained on blobs'" in w.retrain_from.text()
    w.undo()
    np.testing.assert_array_equal(w.corrected_layer.data, edited)
    np.testing.assert_array_equal(w.session.labels, edited)
    w.next_patch()
    w.accept_patch()  # a patch of the re-ranked queue
    reviewed = set(w.session.reviewed)
    assert len(reviewed) == 2
    viewer.close()
    # Resumed, the queue comes from the session's own uncertainty again and still lists both reviewed patches.
    w2 = ProofreadWidget(_viewer(make_napari_viewer, data), store)
    assert w2.session is not None and reviewed <= {e.rect for e in w2.queue}
    assert w2.reviewed_label.text() == f"reviewed 2 of {len(w2.queue)}"


def test_cancelled_retraining_changes_nothing(make_napari_viewer, qtbot, data):
    viewer = _viewer(make_napari_viewer, data)
    store = _models.ModelStore()
    w = ProofreadWidget(viewer, store)
    assert "from scratch" in w.retrain_from.text() and w.retrain_steps.value > FINE_TUNE_STEPS
    assert w.start()
    edited = _reviewed_with_edits(w)
    history, queue = w.session.history, list(w.queue)
    w.retrain_steps.value = 100_000
    w.device.value = "cpu"
    assert w.retrain() is not None
    qtbot.waitUntil(lambda: w.progress_bar.value() > 0, timeout=60_000)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    assert w.status == "retraining cancelled; nothing was changed"
    assert w.session.history == history and w.queue == queue and len(store) == 0
    np.testing.assert_array_equal(w.corrected_layer.data, edited)
    np.testing.assert_array_equal(w.session.labels, edited)
    assert "blobs retrained uncertainty" not in viewer.layers
    assert w.retrain_button.isEnabled() and w.corrected_layer.editable
