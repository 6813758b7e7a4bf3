"""The method contract: a method defined outside probseg (tests/_toy_method.py) registered with one line
gets the CLI, training, segmentation, raw stores and tuning for free."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import probseg
import probseg.core.config
from probseg import cli, methods
from probseg.core.errors import InputError
from probseg.io.rawstore import load_raw

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy(monkeypatch):
    """The toy method, registered for one test and removed afterwards."""
    monkeypatch.syspath_prepend(str(HERE))
    methods.register("toy", "_toy_method")  # the one line a method outside probseg needs
    yield methods.get("toy")
    methods.unregister("toy")
    assert "toy" not in methods.available()


def _blobs(size=48):
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for i, (cy, cx) in enumerate([(12, 12), (12, 35), (35, 14), (34, 36)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = i
    image = (labels > 0) * 200.0 + np.random.default_rng(0).normal(20, 5, labels.shape)
    return image.astype(np.float32), labels


@pytest.fixture
def files(tmp_path):
    image, labels = _blobs()
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "gt.tif", labels.astype(np.uint16))
    return tmp_path


@pytest.fixture
def trained(toy, files, capsys):
    """A toy model trained for three steps through the command line."""
    code = cli.main(["train", "toy", str(files / "image.tif"), "--out", str(files / "model"), "--steps", "3",
                     "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "saved Toy threshold model" in captured.out and "3 steps" in captured.out
    return files / "model"


def test_registered_method_is_listed(toy, capsys):
    assert toy.name == "toy" and toy.model_class.method == "toy"
    assert "toy" in probseg.list_methods()
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "Toy threshold: a learned foreground score" in out
    assert "cellulus" in out and "concrete-dropout" in out  # the built-in ones stay


def test_train_flags_come_from_its_config(toy, capsys):
    assert cli.main(["train", "toy", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--crop-size INT" in text and "--steps INT" in text and "advanced Toy threshold settings" in text
    assert "--threshold" not in text  # a post-processing setting


def test_trains_through_the_cli(trained):
    meta = json.loads((trained / "config.json").read_text())
    assert meta["method"] == "toy" and meta["training"]["steps_done"] == 3
    assert len(meta["record"]["weights_sha256"]) == 64
    # Untuned: the defaults stay implicit, so no settings.json.
    assert not (trained / "settings.json").exists()
    model = probseg.load_model(trained, device="cpu")
    assert probseg.core.config.config_to_dict(model.settings) == {"threshold": 0.5, "min_size": 0}
    assert type(model).__name__ == "ToyModel" and model.describe().startswith("toy model")


def test_segments_through_the_cli(trained, files, capsys):
    assert cli.main(["segment", str(trained), "x.tif", "--help"]) == 0
    assert "--threshold FLOAT" in capsys.readouterr().out
    out = files / "labels.tif"
    assert cli.main(["segment", str(trained), str(files / "image.tif"), "--out", str(out), "--samples", "2",
                     "--samples-out", str(files / "samples.tif"), "--uncertainty-out", str(files / "unc.tif"),
                     "--threshold", "0.4", "--device", "cpu"]) == 0
    capsys.readouterr()
    labels = tifffile.imread(out)
    assert labels.shape == (48, 48)
    assert tifffile.imread(files / "samples.tif").shape == (2, 48, 48)
    sidecar = json.loads((files / "labels.tif.json").read_text())
    assert sidecar["method"] == "toy" and sidecar["settings"] == {"threshold": 0.4, "min_size": 0}


def test_embeddings_out_is_refused_before_anything_is_written(trained, files, capsys):
    out = files / "labels.tif"
    code = cli.main(["segment", str(trained), str(files / "image.tif"), "--out", str(out),
                     "--embeddings-out", str(files / "emb.tif"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "no embeddings" in err and "Traceback" not in err
    assert not (files / "emb.tif").exists()
    # A failed command writes nothing (as everywhere else in the CLI).
    assert not out.exists(), "segment wrote the labels and then failed on --embeddings-out"


def test_prediction_without_embeddings(trained):
    image, _ = _blobs()
    model = probseg.load_model(trained, device="cpu")
    pred = model.predict(image, n_samples=3)
    assert pred.embeddings is None
    assert set(pred.raw.planes[0]) == {"foreground"}
    assert pred.raw.planes[0]["foreground"].dtype == np.float32
    assert pred.segmentation.shape == (48, 48) and pred.samples.shape == (3, 48, 48)
    assert pred.uncertainty.shape == (48, 48) and not pred.uncertainty.any()  # identical samples agree
    stack = model.predict(np.stack([image, image[::-1]]), n_samples=2)
    assert stack.embeddings is None and stack.segmentation.shape == (2, 48, 48)
    np.testing.assert_array_equal(stack.segmentation[0], model.predict(image, n_samples=2).segmentation)


def test_raw_store_and_instances(trained, files, capsys):
    raw = files / "raw.zarr"
    assert cli.main(["segment", str(trained), str(files / "image.tif"), "--out", str(files / "a.tif"),
                     "--raw-out", str(raw), "--device", "cpu"]) == 0
    stored, meta = load_raw(raw)
    assert meta["method"] == "toy" and set(stored.planes[0]) == {"foreground"}
    assert cli.main(["instances", str(raw), "--out", str(files / "b.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(files / "b.tif"), tifffile.imread(files / "a.tif"))
    assert cli.main(["instances", str(raw), "--out", str(files / "c.tif"), "--threshold", "1.0"]) == 0
    assert "wrote 0 objects" in capsys.readouterr().out
    assert json.loads((files / "c.tif.json").read_text())["settings"]["threshold"] == 1.0


def test_tune_through_the_cli_and_the_api(trained, files, capsys):
    image, labels = _blobs()
    # Three steps find no object (every setting scores F1 = 0, which tune refuses to store); fifty find them.
    assert cli.main(["train", "toy", str(files / "image.tif"), "--out", str(trained), "--steps", "50", "--device", "cpu",
                     "--overwrite"]) == 0
    capsys.readouterr()
    assert cli.main(["tune", str(trained), str(files / "image.tif"), str(files / "gt.tif"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["threshold", "min_size", "f1", "ap_dsb"]
    assert out.count("<- best") == 1
    stored = json.loads((trained / "settings.json").read_text())["settings"]
    assert stored["threshold"] in (0.3, 0.5, 0.7) and stored["min_size"] in (0, 10)
    assert cli.main(["info", str(trained)]) == 0
    assert f"threshold={stored['threshold']:g}" in capsys.readouterr().out

    model = probseg.load_model(trained, device="cpu")
    assert (model.settings.threshold, model.settings.min_size) == (stored["threshold"], stored["min_size"])
    result = probseg.tune(model, image, labels, {"threshold": [0.2, 0.5, 0.8]}, save=False)
    assert [r["threshold"] for r in result.table] == [0.2, 0.5, 0.8]
    assert result.best_row["f1"] == max(r["f1"] for r in result.table)
    assert result.best["threshold"] == result.best_row["threshold"] and result.best["min_size"] == stored["min_size"]
    with pytest.raises(InputError, match="threshold"):
        probseg.tune(model, image, labels, {"threshold": [1.5]}, save=False)
