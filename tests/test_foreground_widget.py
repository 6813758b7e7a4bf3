"""The Predict widget's foreground mask, display maps and slider settings, with a toy method (no training)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("needs a display: install Xvfb (apt-get install xvfb) for pytest-xvfb", allow_module_level=True)

import torch  # noqa: E402
from magicgui.widgets import FloatSlider, FloatSpinBox  # noqa: E402

from napari_probseg import _models  # noqa: E402
from napari_probseg._form import ConfigForm  # noqa: E402
from napari_probseg.predict_widget import NO_FOREGROUND, PredictWidget  # noqa: E402
from probseg.core.config import param  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy_method import Config, Settings, ToyModel  # noqa: E402

pytestmark = pytest.mark.widget
SIZE = 48
TIMEOUT_MS = 30_000
SQUARES = [(slice(4, 16), slice(4, 16)), (slice(4, 16), slice(30, 42)), (slice(30, 42), slice(4, 16)), (slice(30, 42), slice(30, 42))]


@dataclass
class KnobSettings(Settings):
    """The toy settings plus a live knob."""

    alpha: float = param(0.5, "a knob worth dragging", minimum=0.0, maximum=1.0, slider=True)


class KnobModel(ToyModel):
    """The toy method with a slider setting and a display map."""

    settings_class = KnobSettings

    def display_maps(self, raw: dict) -> dict:
        return {"score": raw["foreground"]}


def _model() -> KnobModel:
    net = KnobModel.build_network(Config(), 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 0, 1, 1] = 20.0  # bright pixels score ~1, dark ones ~0
        net.bias.fill_(-10.0)
    return KnobModel(Config(), net, 1, {}, device="cpu")


def _image() -> np.ndarray:
    image = np.zeros((SIZE, SIZE), np.float32)
    for square in SQUARES:
        image[square] = 1.0
    return image


def _half(side: str) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.int32)
    if side == "right":
        mask[:, SIZE // 2:] = 1
    else:
        mask[:, : SIZE // 2] = 3
    return mask


@pytest.fixture(autouse=True)
def clean_global_store():
    yield
    _models.store.clear()


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="blobs")
    store = _models.ModelStore()
    store.add("knob", _model())
    w = PredictWidget(viewer, store=store)
    viewer.window.add_dock_widget(w, name="predict")
    w.model_name = "knob"
    w.image_layer = "blobs"
    return w


def _wait_for_new(qtbot, w, first):
    qtbot.waitUntil(lambda: w.prediction is not first and not w.running, timeout=TIMEOUT_MS)


def _run(qtbot, w):
    assert w.run() is not None, w.status
    qtbot.waitUntil(lambda: not w.running, timeout=TIMEOUT_MS)
    assert w.prediction is not None, w.status


def test_foreground_mask_confines_the_objects_and_changes_without_the_network(widget, qtbot, monkeypatch):
    w, viewer = widget, widget.viewer
    viewer.add_labels(_half("right"), name="right")
    viewer.add_image(_half("left").astype(np.float32) / 3, name="left")  # a probability map: foreground >= 0.5
    viewer.add_labels(np.ones((SIZE, SIZE + 2), np.uint8), name="other shape")
    viewer.add_image(np.zeros((SIZE, SIZE, 3), np.uint8), name="colour", rgb=True)
    viewer.add_labels(np.zeros((SIZE, SIZE), np.uint8), name="nothing")
    w.reset_choices()
    assert set(w.foreground_combo.choices) == {None, "right", "left", "nothing"}
    assert w.foreground_combo.native.itemText(0) == NO_FOREGROUND and w.foreground_layer is None
    assert "0.5" in w.foreground_combo.tooltip

    w.foreground_layer = "right"
    assert not w.running and w.prediction is None  # choosing before a run only sets up the next one
    w.n_samples = 2
    _run(qtbot, w)
    seg = w.output_layers["segmentation"]
    assert seg.data.max() == 2 and not seg.data[:, : SIZE // 2].any()
    assert "mask" in w.prediction.raw.planes[0]
    w.reset_choices()
    assert "blobs · knob segmentation" not in w.foreground_combo.choices  # what this model made of this image

    # From here on the network must not run: the kept raw output gets the new mask.
    model = w.store.get("knob")
    monkeypatch.setattr(model.net, "forward", lambda *_: (_ for _ in ()).throw(AssertionError("the network ran")))
    first = w.prediction
    w.foreground_layer = "left"
    _wait_for_new(qtbot, w, first)
    assert w.output_layers["segmentation"] is seg  # updated in place
    assert seg.data.max() == 2 and not seg.data[:, SIZE // 2:].any() and seg.data[:, : SIZE // 2].any()
    assert w.prediction.raw.planes[0]["foreground"] is first.raw.planes[0]["foreground"]
    second = w.prediction
    w.foreground_layer = None
    _wait_for_new(qtbot, w, second)
    assert seg.data.max() == 4 and "mask" not in w.prediction.raw.planes[0]

    # An empty mask: one line in the status, nothing re-computed, the layers as they were.
    third = w.prediction
    w.foreground_layer = "nothing"
    qtbot.wait(300)
    assert not w.running and w.prediction is third and seg.data.max() == 4
    assert "empty" in w.status and "nothing" in w.status and "\n" not in w.status


def test_a_display_map_is_a_hidden_layer_updated_in_place(widget, qtbot):
    w = widget
    _run(qtbot, w)
    layer = w.output_layers["map:score"]
    assert layer.name == "blobs · knob score" and not layer.visible
    np.testing.assert_array_equal(layer.data, w.prediction.raw.planes[0]["foreground"])
    assert "score" in w.status
    first = w.prediction
    w.settings_form.set_values({"threshold": 0.9})
    _wait_for_new(qtbot, w, first)
    assert w.output_layers["map:score"] is layer
    assert [lay.name for lay in w.viewer.layers].count("blobs · knob score") == 1


def test_a_slider_setting_sets_and_gets_like_a_spin_box(qtbot):
    form = ConfigForm(KnobSettings)
    qtbot.addWidget(form)
    assert isinstance(form.fields["alpha"].widget, FloatSlider)
    assert isinstance(form.fields["threshold"].widget, FloatSpinBox)  # no slider=True
    assert form.values()["alpha"] == 0.5
    with qtbot.waitSignal(form.changed, timeout=1000):
        form.set_values({"alpha": 0.25})
    assert form.values()["alpha"] == pytest.approx(0.25)
    form.reset()
    assert form.values() == {"threshold": 0.5, "min_size": 0, "alpha": 0.5}


def test_dragging_a_slider_recomputes_once(widget, qtbot):
    w = widget
    _run(qtbot, w)
    model = w.store.get("knob")
    calls = []
    postprocess = model.postprocess

    def counted(*args, **kwargs):
        calls.append(1)
        return postprocess(*args, **kwargs)

    model.postprocess = counted
    first = w.prediction
    slider = w.settings_form.fields["alpha"].widget
    for value in np.linspace(0.1, 0.9, 9):  # a drag: one change per step, faster than the debounce
        slider.value = float(value)
    _wait_for_new(qtbot, w, first)
    qtbot.wait(400)
    assert len(calls) == 1 and not w.running
    assert w.prediction.settings.alpha == pytest.approx(0.9)
