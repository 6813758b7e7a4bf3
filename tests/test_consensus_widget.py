"""The Consensus widget on a (virtual) display: build, live region slider, Auto, whole image."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("needs a display: install Xvfb (apt-get install xvfb) for pytest-xvfb", allow_module_level=True)

from napari.utils.colormaps.standardize_color import transform_color  # noqa: E402

from napari_probseg._layers import OUTPUT_META_KEY  # noqa: E402
from napari_probseg.consensus_widget import FIELD_OF_VIEW, ConsensusWidget  # noqa: E402
from probseg.evaluation.metrics import f1_score  # noqa: E402
from probseg.evaluation.synthetic import perturbed_samples, touching_blobs  # noqa: E402

pytestmark = pytest.mark.widget
TIMEOUT_MS = 60_000
RECT = (20, 30, 70, 90)


@pytest.fixture(scope="module")
def truth_and_samples():
    _, truth = touching_blobs((128, 160), object_size=16, seed=7)
    return truth, perturbed_samples(truth, 8, split=0.15, merge=0.15, seed=2)


@pytest.fixture
def viewer(make_napari_viewer, truth_and_samples):
    _, samples = truth_and_samples
    v = make_napari_viewer()
    v.add_labels(samples, name="blobs samples", metadata={OUTPUT_META_KEY: {"role": "samples", "source": "blobs"}})
    y0, x0, y1, x1 = RECT
    v.add_shapes([np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])], shape_type="rectangle", name="tune here")
    return v


def _idle(qtbot, w):
    qtbot.waitUntil(lambda: not w.running and not w.updating, timeout=TIMEOUT_MS)


def _objects(labels):
    return np.unique(labels[labels > 0]).size


def test_slider_updates_only_the_region(viewer, qtbot, truth_and_samples):
    truth, _ = truth_and_samples
    w = ConsensusWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.samples_layer == "blobs samples"
    assert w.region_source == "tune here"  # the drawn rectangle, not the field of view
    _idle(qtbot, w)
    layer = w.consensus_layer
    assert layer is not None and layer.name == "blobs consensus" and layer.data.shape == truth.shape
    before = np.array(layer.data)
    assert f1_score(before, truth) > 0.9  # the default resolution already works on these samples

    assert w.current_rect() == RECT
    y0, x0, y1, x1 = RECT
    outside = np.ones(truth.shape, bool)
    outside[y0:y1, x0:x1] = False
    counts = {}
    for value in (0, w.slider.maximum()):  # fully merged, then every fragment alone
        n = w.region_updates
        w.slider.setValue(value)
        qtbot.waitUntil(lambda n=n: w.region_updates > n and not w.updating, timeout=TIMEOUT_MS)
        now = np.array(w.consensus_layer.data)
        np.testing.assert_array_equal(now[outside], before[outside])
        counts[value] = _objects(now[y0:y1, x0:x1])
    assert counts[0] < _objects(before[y0:y1, x0:x1]) < counts[w.slider.maximum()]
    assert w.resolution_edit.text() == f"{w.resolution:.4g}"


def test_many_slider_moves_coalesce(viewer, qtbot):
    w = ConsensusWidget(viewer)
    _idle(qtbot, w)
    n = w.region_updates
    for value in range(0, 400, 5):
        w.slider.setValue(value)
    qtbot.waitUntil(lambda: not w.updating, timeout=TIMEOUT_MS)
    # Newest wins: far fewer updates than moves, and the last one is shown.
    assert n < w.region_updates <= n + 80
    final = np.array(w.consensus_layer.data)
    w.request_region_update()
    qtbot.waitUntil(lambda: not w.updating, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(final, w.consensus_layer.data)


def test_typed_resolution_moves_the_slider(viewer, qtbot):
    w = ConsensusWidget(viewer)
    _idle(qtbot, w)
    w.resolution_edit.setText("0.0001")
    w.resolution_edit.editingFinished.emit()
    assert w.resolution == pytest.approx(1e-4, rel=0.05)
    assert 0 < w.slider.value() < w.slider.maximum()
    _idle(qtbot, w)


def test_auto_plots_and_picks_a_resolution(viewer, qtbot, truth_and_samples):
    truth, _ = truth_and_samples
    w = ConsensusWidget(viewer)
    _idle(qtbot, w)
    w.auto()
    _idle(qtbot, w)
    sweep = w.last_sweep
    assert sweep is not None and not w.plot.isHidden()
    assert w.resolution == pytest.approx(sweep.best, rel=0.02)
    assert w.auto_info.text().startswith(f"Auto: resolution {sweep.best:.4g}")
    w.apply_to_whole_image()
    _idle(qtbot, w)
    assert f1_score(w.consensus_layer.data, truth) > 0.9


def test_field_of_view_and_bad_inputs(make_napari_viewer, qtbot, truth_and_samples):
    _, samples = truth_and_samples
    viewer = make_napari_viewer()
    w = ConsensusWidget(viewer)
    w.auto()
    assert "no samples layer" in w.status
    viewer.add_labels(samples[0:3], name="stack segmentation", metadata={OUTPUT_META_KEY: {"role": "segmentation"}})
    assert w.samples_layer is None  # a (Z, Y, X) segmentation is not a set of samples
    viewer.add_labels(samples, name="s")
    assert w.samples_layer == "s"
    _idle(qtbot, w)
    assert w.region_source == FIELD_OF_VIEW
    y0, x0, y1, x1 = w.current_rect()
    assert 0 <= y0 < y1 <= samples.shape[1] and 0 <= x0 < x1 <= samples.shape[2]
    viewer.add_shapes(name="empty")
    w.region_source = "empty"
    w.auto()
    assert "has no rectangle" in w.status
    w.resolution_edit.setText("-3")
    w.resolution_edit.editingFinished.emit()
    assert w.resolution > 0
    _idle(qtbot, w)


def test_removing_the_samples_mid_update_is_harmless(viewer, qtbot):
    w = ConsensusWidget(viewer)
    _idle(qtbot, w)
    w.slider.setValue(w.slider.maximum())
    viewer.layers.remove("blobs samples")
    qtbot.waitUntil(lambda: not w.updating, timeout=TIMEOUT_MS)
    assert w.samples_layer is None


def test_undo_restores_region_sessions_and_whole_image_runs(viewer, qtbot):
    w = ConsensusWidget(viewer)
    _idle(qtbot, w)
    first = np.array(w.consensus_layer.data)
    for value in (w.slider.maximum(), w.slider.maximum() - 20):  # one region session, two moves
        n = w.region_updates
        w.slider.setValue(value)
        qtbot.waitUntil(lambda n=n: w.region_updates > n and not w.updating, timeout=TIMEOUT_MS)
    assert not np.array_equal(w.consensus_layer.data, first)
    assert w.undo_button.isEnabled()
    w.undo()
    np.testing.assert_array_equal(w.consensus_layer.data, first)
    w.live_check.setChecked(False)  # move without region updates: only the whole-image run changes the layer
    w.slider.setValue(0)
    assert not w.updating
    w.apply_to_whole_image()
    _idle(qtbot, w)
    merged = np.array(w.consensus_layer.data)
    w.undo()  # the whole-image run
    np.testing.assert_array_equal(w.consensus_layer.data, first)
    assert not np.array_equal(merged, first)


def _count_in(layer, rect):
    y0, x0, y1, x1 = rect
    return _objects(np.asarray(layer.data)[y0:y1, x0:x1])


def test_auto_reports_the_count_it_applies(viewer, qtbot):
    w = ConsensusWidget(viewer)
    w.min_size_spin.value = 40  # min size and split communities used to be left out of Auto's count
    _idle(qtbot, w)
    w.auto()
    _idle(qtbot, w)
    sweep = w.last_sweep
    reported = int(sweep.n_objects[sweep.best_index])
    assert sweep.windows == (RECT,) and sweep.min_size == 40
    assert f"{reported} objects in the 50x60 px region" in w.auto_info.text()
    assert _count_in(w.consensus_layer, RECT) == reported
    # The bar shows the region update, not the build that came before it.
    assert w.progress_label.text() == "region re-segmented"
    # Applying the region's pick to the whole image says so.
    w.apply_to_whole_image()
    assert "Auto's pick for the 50x60 px region" in w.status
    _idle(qtbot, w)
    assert "Auto's pick for the 50x60 px region" in w.status
    w.slider.setValue(w.slider.value() + 1)  # the user's own resolution: no note
    _idle(qtbot, w)
    w.apply_to_whole_image()
    _idle(qtbot, w)
    assert "Auto's pick" not in w.status


def test_whole_image_auto_sweeps_windows_and_applies_its_pick(viewer, qtbot, truth_and_samples):
    truth, _ = truth_and_samples
    w = ConsensusWidget(viewer)
    w.auto_window, w.auto_windows = 64, 3
    _idle(qtbot, w)
    w.auto_whole_image()
    _idle(qtbot, w)
    sweep = w.last_sweep
    assert len(sweep.windows) == 3 and w.resolution == pytest.approx(sweep.best, rel=0.02)
    layer = w.consensus_layer
    n = _objects(np.asarray(layer.data))
    assert f"applied: {n} objects in {layer.name}" in w.auto_info.text()
    assert f1_score(layer.data, truth) > 0.9
    assert w.region_updates == 0  # the whole image was written, not re-done region by region
    w.apply_to_whole_image()
    _idle(qtbot, w)
    assert "Auto's pick" not in w.status


def test_draw_region_adds_a_transparent_rectangle_layer(viewer, qtbot):
    w = ConsensusWidget(viewer)
    _idle(qtbot, w)
    layer = w.draw_region()
    assert w.region_source == layer.name and layer.mode == "add_rectangle"
    assert transform_color(layer.current_face_color)[0][-1] == 0
    layer.add_rectangles(np.array([[10, 10], [40, 50]]))
    assert layer.face_color[-1][-1] == 0  # outline only: the cells inside stay visible
    assert w.current_rect() == (10, 10, 40, 50)
    _idle(qtbot, w)
