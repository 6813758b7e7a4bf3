"""The napari widgets, driven the way a user would, on a (virtual) display.

Select with ``-m widget``. Needs Xvfb (pytest-xvfb starts it) because
napari's canvas needs OpenGL, which Qt's offscreen platform lacks.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    # Qt aborts the whole process without a display; pytest-xvfb sets DISPLAY when Xvfb is installed.
    pytest.skip("needs a display: install Xvfb (apt-get install xvfb) for pytest-xvfb", allow_module_level=True)

from napari.layers import Image, Labels  # noqa: E402

from napari_probseg import _models, train_widget  # noqa: E402
from napari_probseg._layers import OUTPUT_META_KEY  # noqa: E402
from napari_probseg._sample_data import nuclei, touching_blobs  # noqa: E402
from napari_probseg.consensus_widget import ConsensusWidget  # noqa: E402
from napari_probseg.predict_widget import PredictWidget  # noqa: E402
from napari_probseg.train_widget import TrainWidget  # noqa: E402
from probseg.engine import api  # noqa: E402
from probseg.evaluation import datasets  # noqa: E402

pytestmark = pytest.mark.widget

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(steps=5, crop_size=48, batch_size=2, num_fmaps=8)
TIMEOUT_MS = 90_000  # two shared CPU cores; a tiny run takes a few seconds


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return datasets.nuclei()[0][:96, :96]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, crop) -> Path:
    """A tiny model trained by the engine directly, for the tests that only predict."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    api.train("cellulus", crop, config=TINY, device="cpu", out=folder)
    return folder


@pytest.fixture
def store() -> _models.ModelStore:
    return _models.ModelStore()


@pytest.fixture(autouse=True)
def models_home(tmp_path, monkeypatch) -> Path:
    """Default output folders go to tmp_path, never the real ~/probseg-models."""
    home = tmp_path / "probseg-models"
    monkeypatch.setattr(_models, "MODELS_HOME", home)
    return home


@pytest.fixture(autouse=True)
def clean_global_store():
    """Widgets opened through napari use the session-wide store; leave it empty for the next test."""
    yield
    _models.store.clear()


@pytest.fixture
def viewer(make_napari_viewer, crop):
    v = make_napari_viewer()
    v.add_image(crop, name="nuclei")
    return v


def _dock(viewer, widget):
    viewer.window.add_dock_widget(widget, name=type(widget).__name__)
    return widget


def _wait(qtbot, widget, timeout=TIMEOUT_MS):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def _train(qtbot, widget, folder, **values):
    widget.form.set_values({**TINY, **values})
    widget.output_folder = folder
    assert widget.start() is not None, widget.status
    assert widget.running and widget.cancel_button.isEnabled() and not widget.start_button.isEnabled()
    _wait(qtbot, widget)


def _train_and_predict(qtbot, trainer, predictor, folder, values: dict, n_samples: int) -> dict:
    """Train with ``values`` into ``folder``, predict the "nuclei" layer with the new model; the output layers."""
    trainer.form.set_values(values)
    trainer.output_folder = folder
    assert trainer.start() is not None, trainer.status
    _wait(qtbot, trainer)
    assert trainer.model_name in trainer.store
    predictor.model_name = trainer.model_name
    predictor.image_layer = "nuclei"
    predictor.n_samples = n_samples
    predictor.run()
    _wait(qtbot, predictor)
    return predictor.output_layers


def _load(qtbot, widget, folder):
    worker = widget.load_model(folder)
    qtbot.waitUntil(lambda: not worker.is_running and len(widget.store) > 0, timeout=30_000)


def test_train_then_predict(viewer, qtbot, tmp_path, store):
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    assert trainer.method == "cellulus"
    assert trainer.image_layers == ["nuclei"]
    assert not trainer.labels_combo.enabled  # Cellulus needs no labels
    assert predictor.model_name is None

    out = tmp_path / "m1"
    _train(qtbot, trainer, out)
    assert (out / "config.json").is_file() and (out / "weights.safetensors").is_file()
    assert trainer.model_name == "cellulus @ m1" and trainer.model_name in store
    assert trainer.model.train_log["steps_done"] == 5 and not trainer.model.train_log["cancelled"]
    assert trainer.loss_plot.points == 5
    assert trainer.progress_bar.value() == 5
    assert "saved" in trainer.status and not trainer.cancel_button.isEnabled()

    # The store's signal put the new model into Predict without any click.
    assert predictor.model_name == "cellulus @ m1"
    assert predictor.image_layer == "nuclei"
    predictor.n_samples = 3
    assert predictor.run() is not None, predictor.status
    _wait(qtbot, predictor)
    layers = predictor.output_layers
    expected = {
        "segmentation": (Labels, (96, 96)),
        "samples": (Labels, (3, 96, 96)),
        "embeddings": (Image, (96, 96, 3)),
        "uncertainty": (Image, (96, 96)),
        "probability": (Image, (96, 96)),
    }
    assert {role: (type(layer), layer.data.shape) for role, layer in layers.items()} == expected
    probability = layers["probability"].data
    assert probability.min() >= 0.0 and probability.max() <= 1.0
    assert layers["segmentation"].name == "nuclei · m1 segmentation"  # image · model folder
    assert layers["embeddings"].rgb and layers["embeddings"].metadata["embeddings"].shape == (2, 96, 96)
    assert tuple(layers["uncertainty"].contrast_limits) == (0.0, 1.0)
    assert layers["uncertainty"].colormap.name == "magma"
    assert layers["segmentation"].data.max() > 0
    np.testing.assert_array_equal(layers["segmentation"].data, predictor.prediction.segmentation)

    # A second run updates the same layers instead of adding more.
    n_layers = len(viewer.layers)
    predictor.n_samples = 2
    predictor.run()
    _wait(qtbot, predictor)
    again = predictor.output_layers
    assert len(viewer.layers) == n_layers
    assert all(again[role] is layers[role] for role in layers)
    assert again["samples"].data.shape == (2, 96, 96)
    # Our result layers are never offered as inputs.
    assert trainer._image_choices() == ["nuclei"]


def test_cancel_keeps_the_model(viewer, qtbot, store, models_home):
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    trainer.form.set_values({**TINY, "steps": 10_000})
    trainer.output_folder = ""  # a new time-stamped folder under models_home
    trainer.start()
    qtbot.waitUntil(lambda: trainer.loss_plot.points > 0 or not trainer.running, timeout=TIMEOUT_MS)
    asked = time.monotonic()
    trainer.cancel()
    assert "cancelling" in trainer.status and not trainer.cancel_button.isEnabled()
    _wait(qtbot, trainer, timeout=15_000)
    assert time.monotonic() - asked < 15
    log = trainer.model.train_log
    assert log["cancelled"] and 0 < log["steps_done"] < 10_000
    (folder,) = models_home.iterdir()
    assert folder.name.startswith("cellulus-") and (folder / "config.json").is_file()
    assert trainer.model_name in store and "cancelled" in trainer.status
    assert api.load_model(folder).train_log["cancelled"]


def test_closing_the_widget_stops_training(viewer, qtbot, tmp_path, store):
    trainer = TrainWidget(viewer, store=store)
    trainer.form.set_values({**TINY, "steps": 10_000})
    trainer.output_folder = tmp_path / "closed"
    worker = trainer.start()
    qtbot.waitUntil(lambda: trainer.loss_plot.points > 0, timeout=TIMEOUT_MS)
    trainer.deleteLater()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=15_000)
    # Stopped like a cancel: the model so far was saved.
    assert (tmp_path / "closed" / "config.json").is_file()


def test_bad_inputs_give_messages_not_exceptions(make_napari_viewer, qtbot, tmp_path, store, model_folder):
    viewer = make_napari_viewer()
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    predictor = _dock(viewer, PredictWidget(viewer, store=store))

    # Nothing to work on yet.
    assert trainer.start() is None and "no image layer" in trainer.status
    assert predictor.run() is None and "no model" in predictor.status

    # A corrupt model folder is reported, not raised.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    worker = predictor.load_model(broken)
    qtbot.waitUntil(lambda: not worker.is_running and "not valid JSON" in predictor.status, timeout=30_000)
    assert len(store) == 0
    _load(qtbot, predictor, model_folder)
    assert predictor.model_name == "cellulus @ tiny"

    # A constant image: training and prediction both explain, nothing is added.
    viewer.add_image(np.full((96, 96), 7, np.uint16), name="flat")
    n_layers = len(viewer.layers)
    out = tmp_path / "never"
    _train(qtbot, trainer, out)
    assert "constant" in trainer.status and trainer.model is None
    assert not out.exists()  # the empty folder made for the run is removed again
    predictor.image_layer = "flat"
    predictor.run()
    _wait(qtbot, predictor)
    assert "constant" in predictor.status
    assert len(viewer.layers) == n_layers and predictor.output_layers == {}

    # An RGB image for a grayscale model: the channel mismatch is named.
    viewer.add_image(np.random.default_rng(0).random((96, 96, 3)).astype(np.float32), name="colour", rgb=True)
    predictor.image_layer = "colour"
    predictor.run()
    _wait(qtbot, predictor)
    assert "1-channel" in predictor.status and len(viewer.layers) == n_layers + 1

    # A folder that already holds a model is never overwritten.
    trainer.image_layers = ["flat"]
    trainer.output_folder = model_folder
    assert trainer.start() is None and "already holds a model" in trainer.status

    # A number field with text in it.
    trainer.form.fields["learning_rate"].widget.value = "fast"
    trainer.output_folder = tmp_path / "m"
    assert trainer.start() is None and "learning rate" in trainer.status


def test_unexpected_failure_is_reported(viewer, qtbot, tmp_path, store, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_widget.api.TrainingJob, "run", out_of_memory)
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    _train(qtbot, trainer, tmp_path / "oom")
    assert "out of memory" in trainer.status and "batch size" in trainer.status
    assert trainer.start_button.isEnabled() and not (tmp_path / "oom").exists()

    # A bug is not hidden: napari shows its traceback, the status names it.
    monkeypatch.setattr(train_widget.api.TrainingJob, "run", lambda *a, **k: 1 / 0)
    with qtbot.capture_exceptions() as caught:
        _train(qtbot, trainer, tmp_path / "bug")
    assert "ZeroDivisionError" in trainer.status and not trainer.running
    assert any(isinstance(exc, ZeroDivisionError) for _, exc, _ in caught)


def test_stack_gets_a_z_axis(make_napari_viewer, qtbot, store, model_folder, crop):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([crop, crop[::-1]]), name="stack")
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    _load(qtbot, predictor, model_folder)
    predictor.image_layer = "stack"
    predictor.n_samples = 2
    predictor.run()
    _wait(qtbot, predictor)
    shapes = {role: layer.data.shape for role, layer in predictor.output_layers.items()}
    assert shapes == {
        "segmentation": (2, 96, 96),
        "samples": (2, 2, 96, 96),
        "embeddings": (2, 96, 96, 3),
        "uncertainty": (2, 96, 96),
        "probability": (2, 96, 96),
    }
    assert "plane by plane" in predictor.status

    # Cancel: the engine stops at the next tile and the layers stay as they were.
    before = predictor.output_layers["segmentation"].data
    predictor.tile_size = 64
    predictor.run()
    predictor.cancel()
    _wait(qtbot, predictor)
    assert "cancelled" in predictor.status
    assert predictor.output_layers["segmentation"].data is before


def test_sample_data_functions():
    (image, meta, kind), (labels, lmeta, lkind) = nuclei()
    assert (kind, lkind) == ("image", "labels") and meta["name"] == "nuclei"
    assert image.shape == labels.shape == (512, 256) and labels.max() == 73
    assert meta["metadata"]["object_size"] == datasets.NUCLEI_OBJECT_SIZE
    (image, meta, kind), (labels, _, lkind) = touching_blobs()
    assert (kind, lkind) == ("image", "labels")
    assert image.shape == labels.shape == (256, 256) and image.dtype == np.float32 and labels.max() > 10


def test_plugin_contributions_in_napari(make_napari_viewer, npe2pm, qtbot, model_folder):
    """The manifest's sample data and widgets work through napari's own menus' code paths."""
    with npe2pm.tmp_plugin(manifest=str(ROOT / "napari.yaml")):
        viewer = make_napari_viewer()
        viewer.open_sample("napari-probseg", "nuclei")
        assert [layer.name for layer in viewer.layers] == ["nuclei", "nuclei ground truth"]
        assert isinstance(viewer.layers["nuclei ground truth"], Labels)
        viewer.open_sample("napari-probseg", "touching_blobs")
        assert viewer.layers["touching blobs"].data.shape == (256, 256)
        _, train = viewer.window.add_plugin_dock_widget("napari-probseg", "Train")
        _, predict = viewer.window.add_plugin_dock_widget("napari-probseg", "Predict")
        assert isinstance(train, TrainWidget) and isinstance(predict, PredictWidget)
        assert train.image_layers == ["touching blobs"]  # the newest image
        assert predict.image_layer == "touching blobs"
        # napari hands plugins a proxy of the viewer; results must still reach it.
        _load(qtbot, predict, model_folder)
        predict.n_samples = 1
        predict.run()
        assert not predict.run_button.isEnabled()
        _wait(qtbot, predict)
        assert viewer.layers["touching blobs · tiny segmentation"].data.shape == (256, 256)
        assert predict.run_button.isEnabled()
        _, consensus = viewer.window.add_plugin_dock_widget("napari-probseg", "Consensus")
        assert isinstance(consensus, ConsensusWidget)
        assert consensus.samples_layer == "touching blobs · tiny samples"
        qtbot.waitUntil(lambda: not consensus.running and not consensus.updating, timeout=TIMEOUT_MS)
        assert viewer.layers["touching blobs · tiny consensus"].data.shape == (256, 256)
        consensus.slider.setValue(10)
        qtbot.waitUntil(lambda: consensus.region_updates > 0 and not consensus.updating, timeout=TIMEOUT_MS)


def test_concrete_dropout_trains_from_a_labels_layer_and_predicts(viewer, qtbot, tmp_path, store, crop):
    truth = datasets.nuclei()[1][:96, :96]
    viewer.add_labels(truth, name="nuclei truth")
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    trainer.method = "concrete-dropout"
    assert trainer.labels_combo.enabled
    trainer.labels_layer = None
    trainer.output_folder = tmp_path / "none"
    trainer.form.set_values({"steps": 2, "crop_size": 48, "batch_size": 2, "num_fmaps": 4})
    assert trainer.start() is None and "labels" in trainer.status  # it learns from labels
    trainer.labels_layer = "nuclei truth"
    layers = _train_and_predict(qtbot, trainer, predictor, tmp_path / "cd", {"steps": 3, "crop_size": 48, "batch_size": 2, "num_fmaps": 4}, 3)
    assert trainer.model.method == "concrete-dropout"
    assert layers["samples"].data.shape == (3, 96, 96)
    assert {"probability", "uncertainty"} <= set(layers)
    assert 0.0 <= layers["uncertainty"].data.min() and layers["uncertainty"].data.max() <= 1.0


def test_retune_recomputes_without_the_network_and_tune_on_labels(viewer, qtbot, store, model_folder, crop, monkeypatch):
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    _load(qtbot, predictor, model_folder)
    predictor.n_samples = 3
    assert predictor.run() is not None
    _wait(qtbot, predictor)
    first = predictor.prediction
    assert first is not None and "min_size" in predictor.settings_form.fields
    before = predictor.output_layers["segmentation"].data.copy()
    # From here on the network must not run: re-tuning works on the kept raw output.
    model = store.entry(predictor.model_name).model

    def no_network(*_args, **_kwargs):
        raise AssertionError("the network ran during a re-tune")

    monkeypatch.setattr(model.net, "forward", no_network)
    predictor.settings_form.set_values({"min_size": 400})
    qtbot.waitUntil(lambda: predictor.prediction is not first and not predictor.running, timeout=TIMEOUT_MS)
    after = predictor.output_layers["segmentation"].data
    assert predictor.prediction.raw is first.raw
    assert predictor.prediction.settings.min_size == 400
    assert np.bincount(after.ravel())[1:].min(initial=400) >= 400
    assert after.max() < before.max()
    assert predictor.output_layers["samples"].data.shape == first.samples.shape
    monkeypatch.undo()

    # Tune on labels: only labels layers of the image's shape are offered.
    truth = datasets.nuclei()[1][:96, :96]
    viewer.add_labels(truth, name="truth")
    viewer.add_labels(truth[:50], name="other shape")
    predictor.reset_choices()
    assert predictor.labels_combo.choices == (None, "truth")
    predictor.labels_layer = "truth"
    assert predictor.tune() is not None
    qtbot.waitUntil(lambda: predictor.tune_result is not None and not predictor.running, timeout=TIMEOUT_MS)
    best = predictor.tune_result.best_row
    # The shown result is re-computed with the tuned settings.
    qtbot.waitUntil(lambda: predictor.prediction.settings.min_size == best["min_size"] and not predictor.running, timeout=TIMEOUT_MS)
    assert best["f1"] == max(row["f1"] for row in predictor.tune_result.table)
    assert predictor.settings["bandwidth"] == best["bandwidth"] and predictor.settings["min_size"] == best["min_size"]
    assert (model_folder / "settings.json").is_file() and "F1" in predictor.status


def test_a_method_registered_with_one_line_trains_and_predicts_in_the_widgets(viewer, qtbot, tmp_path, store, monkeypatch):
    from probseg import methods

    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    methods.register("toy", "_toy_method")  # the one line (see tests/_toy_method.py)
    try:
        trainer = _dock(viewer, TrainWidget(viewer, store=store))
        predictor = _dock(viewer, PredictWidget(viewer, store=store))
        trainer.method = "toy"
        assert "threshold" not in trainer.form.fields  # post-processing lives in Predict
        trainer.form.set_values({"steps": 3})
        trainer.output_folder = tmp_path / "toy"
        assert trainer.start() is not None, trainer.status
        _wait(qtbot, trainer)
        assert trainer.model.method == "toy" and (tmp_path / "toy" / "config.json").is_file()
        predictor.model_name = trainer.model_name
        assert set(predictor.settings_form.fields) == {"threshold", "min_size"}
        predictor.n_samples = 2
        assert predictor.run() is not None, predictor.status
        _wait(qtbot, predictor)
        layers = predictor.output_layers
        assert "embeddings" not in layers  # the toy method has none
        assert layers["samples"].data.shape == (2, 96, 96) and layers["segmentation"].data.shape == (96, 96)
        first = predictor.prediction
        predictor.settings_form.set_values({"threshold": 0.99})
        qtbot.waitUntil(lambda: predictor.prediction is not first and not predictor.running, timeout=TIMEOUT_MS)
        assert predictor.prediction.settings.threshold == 0.99
    finally:
        methods.unregister("toy")


def test_settings_of_another_model_never_recompute_the_shown_result(viewer, qtbot, store, model_folder, crop):
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    _load(qtbot, predictor, model_folder)
    shown_model = predictor.model_name
    assert predictor.run() is not None
    _wait(qtbot, predictor)
    first = predictor.prediction
    truth = datasets.nuclei()[1][:96, :96]
    other = api.train("concrete-dropout", crop, truth, config={"steps": 2, "crop_size": 48, "batch_size": 2, "num_fmaps": 4}, device="cpu")
    store.add("other", other)
    predictor.model_name = "other"
    assert set(predictor.settings_form.fields) >= {"partition", "seed_threshold"}  # the other model's form
    predictor.settings_form.set_values({"min_size": 5})  # no re-compute starts: the result is the Cellulus model's
    qtbot.wait(400)
    assert not predictor.running and predictor.prediction is first
    assert predictor.retune() is None and shown_model in predictor.status and "Run" in predictor.status
    # Tuning the other model does not touch the shown result either.
    viewer.add_labels(truth, name="truth")
    predictor.reset_choices()
    predictor.labels_layer = "truth"
    assert predictor.tune() is not None
    qtbot.waitUntil(lambda: predictor.tune_result is not None and not predictor.running, timeout=TIMEOUT_MS)
    assert predictor.prediction is first
    assert predictor.output_layers["segmentation"].metadata[OUTPUT_META_KEY]["model"] == shown_model


def test_two_models_side_by_side_get_their_own_layers(viewer, qtbot, tmp_path, store, model_folder):
    import shutil

    from napari_probseg.proofread_widget import ProofreadWidget

    other = tmp_path / "other"
    shutil.copytree(model_folder, other)  # another folder: another model, as far as the layers go
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    _load(qtbot, predictor, model_folder)
    predictor.load_model(other)
    qtbot.waitUntil(lambda: len(store) == 2, timeout=30_000)
    first, second = store.names()
    predictor.n_samples = 2

    def run(name):
        predictor.model_name = name
        assert predictor.run() is not None, predictor.status
        _wait(qtbot, predictor)
        return predictor.output_layers

    a = run(first)
    assert a["segmentation"].name == "nuclei · tiny segmentation"
    a_data = {role: np.array(layer.data) for role, layer in a.items()}
    n_layers = len(viewer.layers)
    b = run(second)
    assert b["segmentation"].name == "nuclei · other segmentation"
    assert len(viewer.layers) == n_layers + len(a)  # a set of its own, nothing replaced
    assert not set(map(id, a.values())) & set(map(id, b.values()))
    for role, layer in a.items():
        np.testing.assert_array_equal(layer.data, a_data[role])
    assert "nuclei · other segmentation" in predictor.status

    # The first model again: its own layers are updated, the second's stay.
    predictor.n_samples = 3
    again = run(first)
    assert len(viewer.layers) == n_layers + len(a)
    assert all(again[role] is a[role] for role in a)
    assert again["samples"].data.shape[0] == 3 and b["samples"].data.shape[0] == 2

    # The other widgets find both sets by their metadata.
    consensus = ConsensusWidget(viewer)
    assert set(consensus._samples_choices()) >= {"nuclei · tiny samples", "nuclei · other samples"}
    qtbot.waitUntil(lambda: not consensus.running and not consensus.updating, timeout=TIMEOUT_MS)
    proof = ProofreadWidget(viewer)
    assert {"nuclei · tiny segmentation", "nuclei · other segmentation"} <= set(proof.labels_combo.choices)
    assert {"nuclei · tiny uncertainty", "nuclei · other uncertainty"} <= set(proof.uncertainty_combo.choices)
    # Proofread pairs the newest segmentation with the uncertainty of the same run, not the newest one.
    viewer.layers.move(viewer.layers.index("nuclei · tiny segmentation"), len(viewer.layers))
    proof.reset_choices()
    assert proof.labels_layer == "nuclei · tiny segmentation"
    assert proof.uncertainty_layer == "nuclei · tiny uncertainty"


@pytest.mark.parametrize("cls", ["TrainWidget", "PredictWidget", "ConsensusWidget", "ProofreadWidget"])
def test_every_widget_scrolls_instead_of_growing_the_window(viewer, cls):
    from qtpy.QtWidgets import QScrollArea

    from napari_probseg import proofread_widget

    classes = {"TrainWidget": TrainWidget, "PredictWidget": PredictWidget, "ConsensusWidget": ConsensusWidget,
               "ProofreadWidget": proofread_widget.ProofreadWidget}
    widget = _dock(viewer, classes[cls](viewer))
    assert isinstance(widget.scroll_area, QScrollArea) and widget.layout().itemAt(0).widget() is widget.scroll_area
    content = widget.scroll_area.widget()
    assert widget.status_label.parent() is content
    assert widget.minimumSizeHint().height() < 300  # without the scroll area, 440 to 1000+ px
    assert widget.minimumSizeHint().width() >= content.minimumSizeHint().width()  # it scrolls up and down only


def test_demo_docks_the_four_widgets_as_tabs(make_napari_viewer, npe2pm, qtbot):
    from napari_probseg.demo import dock_all

    with npe2pm.tmp_plugin(manifest=str(ROOT / "napari.yaml")):
        viewer = make_napari_viewer()
        viewer.add_image(np.zeros((64, 64), np.float32), name="img")
        docks = dock_all(viewer)
        window = viewer.window._qt_window
        assert set(window.tabifiedDockWidgets(docks[0])) == set(docks[1:])
        # Tabbed and scrolling: about the empty window's height (1200 px stacked, 2250 px before the scroll areas).
        assert window.minimumSizeHint().height() < 800


def test_eta_follows_the_recent_pace():
    from napari_probseg._engine_widget import JobMonitor

    now = [0.0]
    monitor = JobMonitor(clock=lambda: now[0])
    now[0] = 30.0  # a slow start (loading, first step) is not a step's pace
    monitor.callbacks().progress(1, 100, 1.0)
    for step in range(2, 41):
        now[0] += 1.0
        monitor.callbacks().progress(step, 100, 1.0)
    snap = monitor.drain()
    assert snap.step_seconds == pytest.approx(1.0)
    assert snap.eta == pytest.approx(60.0)  # the mean pace would say 60 * 69/40 s
    for step in range(41, 81):  # the machine got busy: 3 s a step
        now[0] += 3.0
        monitor.callbacks().progress(step, 100, 1.0)
    snap = monitor.drain()
    assert snap.step_seconds == pytest.approx(3.0, rel=0.1)
    assert snap.eta == pytest.approx(60.0, rel=0.1)


@pytest.mark.parametrize("value, text", [
    (52736.0703, "52736"), (1234.5, "1234"), (72.41234, "72.41"), (1.23456, "1.235"), (0.0123456, "0.01235"),
    (0.0, "0"), (-3.5, "-3.500"), (2.5e-5, "2.500e-05"), (3e7, "3.000e+07"), (float("nan"), "nan"),
])
def test_format_loss_keeps_four_significant_digits(value, text):
    from napari_probseg._engine_widget import format_loss

    assert format_loss(value) == text


def test_train_widget_offers_labels_of_the_image_shape_and_keeps_the_folder_in_view(viewer, qtbot, tmp_path, store, crop):
    viewer.add_labels(np.zeros((3, 96, 96), np.int32), name="nuclei samples")
    viewer.add_labels(np.zeros((50, 50), np.int32), name="other labels")
    viewer.add_labels(datasets.nuclei()[1][:96, :96], name="nuclei truth")
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    trainer.image_layers = ["nuclei"]
    trainer.method = "concrete-dropout"
    assert trainer.labels_combo.choices == ("(none)", "nuclei truth")
    assert trainer.labels_note.text() == "Concrete-Dropout embeddings: trained on labels; choose a labels layer of the image."
    # "-1" alone says nothing; the box says what it means.
    ignore = trainer.form.fields["ignore_id"]
    assert ignore.get() == -1 and ignore.hint.text() == "none" and not ignore.hint.isHidden()
    trainer.form.set_values({"ignore_id": 65535})
    assert ignore.hint.isHidden()  # the id itself needs no explaining
    trainer.method = "cellulus"
    out = tmp_path / "kept"
    trainer.form.set_values({**TINY, "steps": 30})
    trainer.output_folder = out
    trainer.start()
    qtbot.waitUntil(lambda: trainer.progress_label.text().startswith("step"), timeout=TIMEOUT_MS)
    assert trainer.folder_label.text() == f"model folder: {out}"
    _wait(qtbot, trainer)
    assert trainer.folder_label.text() == f"model folder: {out}"


def test_device_line_wraps_and_names_no_command_line_flag(viewer, monkeypatch):
    from napari_probseg import _engine_widget
    from probseg.core.errors import InputError

    def refuse(name):
        raise InputError("device 'cuda' was requested but torch cannot use a CUDA GPU here; use --device cpu or auto")

    monkeypatch.setattr(_engine_widget, "resolve_device", refuse)
    chooser = _engine_widget.DeviceChooser()
    chooser.value = "cuda"
    assert "--" not in chooser.label.text() and "choose auto or cpu" in chooser.label.text()
    assert chooser.label.wordWrap()
    with pytest.raises(InputError, match="choose auto or cpu") as info:
        chooser.check()
    assert "--" not in str(info.value)


def test_spoco_trains_from_a_few_painted_objects_and_predicts(viewer, qtbot, tmp_path, store, crop):
    truth = datasets.nuclei()[1][:96, :96]
    ids = [i for i in np.unique(truth) if i][:5]
    viewer.add_labels(np.where(np.isin(truth, ids), truth, 0), name="five nuclei")  # the rest unlabelled
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    trainer.method = "spoco"
    assert trainer.labels_combo.enabled
    assert trainer.form.values()["label_mode"] == "sparse"
    trainer.labels_layer = "five nuclei"
    trainer.form.set_values({"steps": 3, "crop_size": 48, "batch_size": 2, "num_fmaps": 4, "embedding_dims": 8})
    trainer.output_folder = tmp_path / "spoco"
    assert trainer.start() is not None, trainer.status
    _wait(qtbot, trainer)
    assert trainer.model_name in store and trainer.model.method == "spoco"
    assert trainer.model.config.label_mode == "sparse"
    predictor.model_name = trainer.model_name
    predictor.image_layer = "nuclei"
    predictor.n_samples = 2
    predictor.run()
    _wait(qtbot, predictor)
    layers = predictor.output_layers
    assert layers["segmentation"].data.shape == (96, 96)
    assert layers["samples"].data.shape == (2, 96, 96)
    assert "embeddings" in layers


def test_cellsegmenter_trains_predicts_and_lists_its_objects(viewer, qtbot, tmp_path, store):
    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    trainer.method = "cellsegmenter"
    assert not trainer.labels_combo.enabled
    values = {"steps": 3, "crop_size": 48, "batch_size": 2, "num_fmaps": 4, "object_size_min": 8.0, "object_size_max": 40.0,
              "objects_min": 0.5, "objects_max": 3.0, "max_objects": 4, "appearance_dims": 4, "background_dims": 4}
    layers = _train_and_predict(qtbot, trainer, predictor, tmp_path / "cellsegmenter", values, 2)
    assert trainer.model.method == "cellsegmenter"
    assert layers["samples"].data.shape == (2, 96, 96)
    segmentation = layers["segmentation"]
    labels = np.unique(segmentation.data)
    labels = labels[labels > 0]
    # A three-step model may find nothing; then there is no table to show.
    assert predictor.objects_table.isHidden() == (len(labels) == 0)
    if len(labels):
        np.testing.assert_array_equal(np.sort(segmentation.features["label"]), labels)
    consensus = _dock(viewer, ConsensusWidget(viewer))
    assert consensus.samples_layer == layers["samples"].name


def test_objects_table_sorts_selects_and_colours(viewer, qtbot):
    from napari_probseg._objects_table import ObjectsTable

    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 2:6], labels[8:14, 3:9], labels[10:18, 15:28] = 1, 2, 3
    layer = viewer.add_labels(labels, name="objects")
    natural = layer.colormap
    table = ObjectsTable()
    qtbot.addWidget(table)
    columns = {"label": np.array([1, 2, 3]), "area": np.array([16, 36, 104]), "presence": np.array([0.9, 0.2, 0.6])}
    table.set_table(layer, columns)
    assert not table.isHidden()
    table.sort_by("presence", descending=True)
    assert table.labels_in_order() == [1, 3, 2]
    table.sort_by("area")
    assert table.labels_in_order() == [1, 2, 3]
    table.table.selectRow(2)
    assert layer.selected_label == 3
    table.colour_by("area")
    colours = [tuple(np.round(layer.colormap.map(i), 3)) for i in (1, 2, 3)]
    assert len(set(colours)) == 3  # low to high along viridis
    table.colour_by("label colours")
    assert layer.colormap is natural
    table.set_table(layer, None)
    assert table.isHidden()


def test_inpaintaff_trains_takes_a_foreground_layer_and_moves_alpha_live(viewer, qtbot, tmp_path, store, monkeypatch):
    from probseg.methods.inpaintaff.model import InpaintAffModel

    trainer = _dock(viewer, TrainWidget(viewer, store=store))
    predictor = _dock(viewer, PredictWidget(viewer, store=store))
    trainer.method = "inpaintaff"
    assert trainer.labels_combo.enabled  # labels are optional: they train the foreground network
    assert "foreground network" in trainer.labels_note.text()
    fg = viewer.add_labels((viewer.layers["nuclei"].data > np.percentile(viewer.layers["nuclei"].data, 60)).astype(np.int32),
                           name="nuclei foreground")
    values = {"steps": 2, "crop_size": 32, "batch_size": 2, "num_fmaps": 4, "depth": 2, "patch_size": 32,
              "patch_stride": 16, "iterations": 2, "max_depth": 2, "min_gain": 0.0}
    trainer.form.set_values(values)
    trainer.output_folder = tmp_path / "inpaintaff"
    assert trainer.start() is not None, trainer.status
    _wait(qtbot, trainer)
    predictor.model_name = trainer.model_name
    predictor.image_layer = "nuclei"
    predictor.foreground_layer = fg.name
    predictor.n_samples = 2
    predictor.run()
    _wait(qtbot, predictor)
    layers = predictor.output_layers
    segmentation = layers["segmentation"]
    assert not segmentation.data[fg.data == 0].any()  # objects only inside the chosen foreground
    assert {"map:boundaries", "map:affinity variance"} <= set(layers)
    assert not layers["map:boundaries"].visible
    assert "alpha" in predictor.settings_form.fields

    # The alpha knob re-partitions the kept affinities; the network does not run again.
    calls = []
    monkeypatch.setattr(InpaintAffModel, "raw", lambda *a, **k: calls.append(1))
    counts = []
    for alpha in (0.0, 5.0):
        predictor.settings_form.set_values({"alpha": alpha, "min_size": 1})
        qtbot.waitUntil(lambda a=alpha: predictor.prediction is not None and predictor.prediction.settings.alpha == a
                        and not predictor.running, timeout=TIMEOUT_MS)
        counts.append(int(predictor.output_layers["segmentation"].data.max()))
    assert calls == [] and counts[0] < counts[1]
    assert predictor.output_layers["segmentation"] is segmentation  # updated in place
