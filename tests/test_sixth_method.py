""""A new method is one file plus one registry line", proved with a real method built only from the shared
packages (tests/_sixth_method.py): train, segment, instances and tune through the command line and the API,
and the proofreading loop's retraining. The widgets' part is in tests/test_widgets.py."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

import probseg
from probseg import cli, methods
from probseg.core.labels import reviewed_labels
from probseg.io.rawstore import load_raw

HERE = Path(__file__).resolve().parent


@pytest.fixture
def sixth(monkeypatch):
    """The sixth method, registered for one test and removed afterwards."""
    monkeypatch.syspath_prepend(str(HERE))
    methods.register("sixth", "_sixth_method")  # the one line a new method needs
    yield methods.get("sixth")
    methods.unregister("sixth")


def _blobs(size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    centres = [(14, 14), (14, 40), (40, 16), (42, 44), (26, 28)]
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 40] = i
    image = (labels > 0) * 200.0 + rng.normal(20, 5, labels.shape)
    return image.astype(np.float32), labels


@pytest.fixture
def files(tmp_path):
    image, labels = _blobs()
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "gt.tif", labels.astype(np.uint16))
    return tmp_path


@pytest.fixture
def trained(sixth, files, capsys):
    code = cli.main(["train", "sixth", str(files / "image.tif"), "--labels", str(files / "gt.tif"),
                     "--out", str(files / "model"), "--steps", "150", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return files / "model"


def test_no_engine_file_names_it(sixth):
    src = Path(probseg.__file__).resolve().parent
    assert not [p for p in src.rglob("*.py") if re.search(r"[\"']sixth[\"']|_sixth_method", p.read_text())]
    assert "sixth" in methods.available() and "sixth" in probseg.list_methods()


def test_flags_come_from_its_configs(sixth, capsys):
    assert cli.main(["train", "sixth", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--embedding-dims INT" in text and "--label-mode" in text and "--bandwidth" not in text


def test_segment_instances_and_tune_through_the_cli(trained, files, capsys):
    meta = json.loads((trained / "config.json").read_text())
    assert meta["method"] == "sixth" and meta["training"]["steps_done"] == 150
    raw = files / "raw.zarr"
    assert cli.main(["segment", str(trained), str(files / "image.tif"), "--out", str(files / "a.tif"),
                     "--samples", "3", "--samples-out", str(files / "s.tif"), "--raw-out", str(raw),
                     "--device", "cpu"]) == 0
    assert tifffile.imread(files / "s.tif").shape == (3, 64, 64)
    stored, stored_meta = load_raw(raw)
    assert stored_meta["method"] == "sixth" and set(stored.planes[0]) == {"embeddings", "foreground"}
    assert stored.planes[0]["embeddings"].shape == (4, 4, 64, 64)  # draw 0 and three samples
    assert cli.main(["instances", str(raw), "--out", str(files / "b.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(files / "b.tif"), tifffile.imread(files / "a.tif"))
    assert cli.main(["instances", str(raw), "--out", str(files / "c.tif"), "--threshold", "1.0"]) == 0
    assert "wrote 0 objects" in capsys.readouterr().out
    assert cli.main(["tune", str(trained), str(files / "image.tif"), str(files / "gt.tif"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["threshold", "bandwidth"] and out.count("<- best") == 1
    stored_settings = json.loads((trained / "settings.json").read_text())["settings"]
    assert stored_settings["threshold"] in (0.4, 0.5, 0.6)


def test_the_api_draws_samples_and_keeps_one_draw_in_memory(trained):
    image, labels = _blobs(seed=1)
    model = probseg.load_model(trained, device="cpu")
    kept = model.predict(image, n_samples=3, seed=5)
    streamed = model.predict(image, n_samples=3, seed=5, keep_raw=False)
    np.testing.assert_array_equal(kept.samples, streamed.samples)
    np.testing.assert_array_equal(kept.segmentation, streamed.segmentation)
    assert kept.embeddings.shape == (4, 64, 64) and streamed.raw.n_samples == 1
    # 150 steps on one image find the blobs of another.
    assert probseg.metrics.f1_score(kept.segmentation, labels) >= 0.6


def test_the_proofreading_loop_retrains_it(trained):
    from probseg.proofreading import retrain_from_review

    image, labels = _blobs(seed=2)
    model = probseg.load_model(trained, device="cpu")
    reviewed = np.zeros(labels.shape, bool)
    reviewed[:32, :32] = True
    corrected = np.where(reviewed, labels, 0)
    result = retrain_from_review(image, corrected, reviewed, model, steps=5, n_samples=2, device="cpu", seed=0)
    assert type(result.model).method == "sixth"  # fine-tuned, not replaced by another method
    assert result.model.train_log["fine_tuned_from"]["method"] == "sixth"
    np.testing.assert_array_equal(result.labels[reviewed], labels[reviewed])  # every correction kept
    codes = reviewed_labels(corrected, reviewed)
    assert (codes[reviewed & (labels == 0)] == 65535).all()
