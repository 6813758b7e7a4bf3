"""The sixth method (tests/_sixth_method.py), registered with one line, in the Train, Predict and Proofread widgets:
trained from a labels layer, predicted with samples, re-computed from a setting, and retrained from proofread
patches by fine-tuning, with no widget code that knows it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("needs a display: install Xvfb (apt-get install xvfb) for pytest-xvfb", allow_module_level=True)

from napari_probseg import _models, proofread_widget  # noqa: E402
from napari_probseg.predict_widget import PredictWidget  # noqa: E402
from napari_probseg.proofread_widget import ProofreadWidget  # noqa: E402
from napari_probseg.train_widget import TrainWidget  # noqa: E402
from probseg import methods  # noqa: E402
from probseg.evaluation.synthetic import touching_blobs  # noqa: E402

pytestmark = pytest.mark.widget
HERE = Path(__file__).resolve().parent
TIMEOUT_MS = 120_000


@pytest.fixture
def sixth(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setattr(_models, "MODELS_HOME", tmp_path / "models")
    monkeypatch.setattr(proofread_widget, "SESSIONS_HOME", tmp_path / "sessions")
    methods.register("sixth", "_sixth_method")  # the one line
    yield methods.get("sixth")
    methods.unregister("sixth")


def test_train_predict_and_retrain_from_reviewed_objects(sixth, make_napari_viewer, qtbot, tmp_path):
    image, truth = touching_blobs((96, 96), object_size=14, seed=3)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="blobs")
    viewer.add_labels(truth, name="truth")
    store = _models.ModelStore()

    trainer = TrainWidget(viewer, store=store)
    trainer.method = "sixth"
    assert set(trainer.form.fields) >= {"embedding_dims", "label_mode"} and "bandwidth" not in trainer.form.fields
    assert trainer.labels_combo.enabled  # it learns from labels
    trainer.image_layers = ["blobs"]
    trainer.labels_layer = "truth"
    trainer.form.set_values({"steps": 150})
    trainer.output_folder = tmp_path / "sixth"
    assert trainer.start() is not None, trainer.status
    qtbot.waitUntil(lambda: not trainer.running, timeout=TIMEOUT_MS)
    assert trainer.model.method == "sixth" and (tmp_path / "sixth" / "config.json").is_file(), trainer.status

    predictor = PredictWidget(viewer, store=store)
    predictor.model_name = trainer.model_name
    predictor.image_layer = "blobs"
    assert set(predictor.settings_form.fields) == {"threshold", "bandwidth", "min_size"}
    predictor.n_samples = 3
    predictor.device.value = "cpu"
    assert predictor.run() is not None, predictor.status
    qtbot.waitUntil(lambda: not predictor.running and predictor.prediction is not None, timeout=TIMEOUT_MS)
    layers = predictor.output_layers
    assert layers["samples"].data.shape == (3, 96, 96) and layers["embeddings"].data.shape[:2] == (96, 96)
    first = predictor.prediction
    predictor.settings_form.set_values({"threshold": 0.99})
    qtbot.waitUntil(lambda: predictor.prediction is not first and not predictor.running, timeout=TIMEOUT_MS)
    assert predictor.prediction.settings.threshold == 0.99 and predictor.prediction.raw is first.raw  # no network
    predictor.settings_form.set_values({"threshold": 0.5})
    qtbot.waitUntil(lambda: predictor.prediction.settings.threshold == 0.5 and not predictor.running,
                    timeout=TIMEOUT_MS)

    proofreader = ProofreadWidget(viewer, store)
    assert f"'{trainer.model_name}'" in proofreader.retrain_from.text()  # it fine-tunes the sixth model
    assert proofreader.start(), proofreader.status
    proofreader.next_patch()
    proofreader.accept_patch()
    proofreader.retrain_steps.value = 5
    proofreader.device.value = "cpu"
    assert proofreader.retrain() is not None, proofreader.status
    qtbot.waitUntil(lambda: not proofreader.running, timeout=TIMEOUT_MS)
    assert "fine-tuned for 5 steps" in proofreader.status, proofreader.status
    retrained = store.get(store.names()[-1])
    assert retrained.method == "sixth" and retrained.train_log["fine_tuned_from"]["method"] == "sixth"
    assert np.array_equal(proofreader.corrected_layer.data, proofreader.session.labels)
