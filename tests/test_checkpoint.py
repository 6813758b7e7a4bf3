"""Model folders: round trips, atomic writes, no pickles, and clear errors."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from probseg.engine import api

from probseg.io import checkpoint
from probseg.io.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint
from probseg.core.errors import CheckpointError
from probseg.core.config import config_to_dict
from probseg.engine.model import SETTINGS_NAME

TINY = dict(num_fmaps=8, fmap_inc_factor=2, crop_size=48, batch_size=2, density=0.05)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64]
    img = 0.2 * rng.random((64, 64))
    for cy, cx in [(16, 16), (20, 46), (46, 24), (48, 50)]:
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def trained(image):
    return api.train("cellulus", image, config=TINY, steps=2, device="cpu", seed=0)


@pytest.fixture
def saved(trained, tmp_path):
    folder = tmp_path / "model"
    trained.save(folder)
    return folder


def _state():
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(8, generator=g),
        "steps": torch.arange(5, dtype=torch.int64),
        "half": torch.randn(4, generator=g).to(torch.float16),
    }


def _edit_config(folder, **changes):
    path = folder / CONFIG_NAME
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            meta.pop(key)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))
    return meta


_DELETE = object()


# -- round trips ------------------------------------------------------------------------------


def test_save_load_checkpoint_round_trip(tmp_path):
    state = _state()
    config = {"a": 1, "b": 2.5, "c": "x", "d": True}
    extra = {"in_channels": 3, "normalization": {"percentiles": [1.0, 99.8]}}
    folder = save_checkpoint(tmp_path / "m", "cellulus", config, state, extra)
    assert folder == tmp_path / "m"
    meta, loaded = load_checkpoint(folder, expected_method="cellulus")
    assert meta["method"] == "cellulus"
    assert meta["config"] == config
    assert meta["in_channels"] == 3
    assert meta["normalization"] == extra["normalization"]
    assert meta["format"] == checkpoint.FORMAT and meta["format_version"] == checkpoint.FORMAT_VERSION
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype
        assert loaded[key].device.type == "cpu"
        assert torch.equal(loaded[key], tensor)


def test_save_leaves_no_temporary_files(tmp_path):
    folder = tmp_path / "m"
    save_checkpoint(folder, "cellulus", {}, _state())
    save_checkpoint(folder, "cellulus", {"again": 1}, _state())  # overwrite in place
    assert sorted(os.listdir(folder)) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    assert load_checkpoint(folder)[0]["config"] == {"again": 1}


def test_failed_save_keeps_old_model_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    save_checkpoint(folder, "cellulus", {"version": 1}, _state())
    before = {name: (folder / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}

    def broken(tensors, path, metadata=None):
        with open(path, "wb") as fh:
            fh.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(folder, "cellulus", {"version": 2}, _state())
    assert sorted(os.listdir(folder)) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    for name, content in before.items():
        assert (folder / name).read_bytes() == content


def test_trained_model_round_trip_gives_identical_predictions(trained, saved, image):
    # Untuned models keep the method's defaults implicit: no settings.json.
    assert sorted(os.listdir(saved)) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    loaded = api.load_model(saved, device="cpu")
    assert type(loaded) is type(trained)
    assert loaded.config == trained.config
    assert loaded.settings == trained.settings
    assert loaded.record["weights_sha256"] == trained.record["weights_sha256"]
    assert loaded.folder == saved
    assert loaded.in_channels == trained.in_channels
    assert loaded.normalization == trained.normalization
    assert loaded.train_log["steps_done"] == 2
    own, other = trained.net.state_dict(), loaded.net.state_dict()
    assert set(own) == set(other)
    for key in own:
        assert torch.equal(own[key], other[key]), key
    # copies: predict may normalise a float32 input in place (see test_engine)
    a = trained.predict(image.copy(), n_samples=2, seed=5)
    b = loaded.predict(image.copy(), n_samples=2, seed=5)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.segmentation, b.segmentation)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)


def test_loading_does_not_unpickle(saved, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle anything")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    model = api.load_model(saved, device="cpu")
    assert model.method == "cellulus"
    meta, state = load_checkpoint(saved)
    assert state


def test_weights_file_is_safetensors_not_pickle(saved):
    head = (saved / WEIGHTS_NAME).read_bytes()[:16]
    assert not head.startswith(b"\x80"), "looks like a pickle"
    assert not head.startswith(b"PK"), "looks like a torch zip archive"
    header_len = int.from_bytes(head[:8], "little")
    header = json.loads((saved / WEIGHTS_NAME).read_bytes()[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == checkpoint.FORMAT


# -- errors: every one is a CheckpointError naming the file ----------------------------------


def test_missing_folder(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match="nowhere"):
        api.load_model(folder)


def test_folder_is_a_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"not a folder")
    with pytest.raises(CheckpointError, match="model.bin"):
        api.load_model(path)


def test_missing_config(saved):
    (saved / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        api.load_model(saved)


@pytest.mark.parametrize("text", ["{not json", "", '{"format": "probseg-model", "format_version"'])
def test_invalid_json(saved, text):
    (saved / CONFIG_NAME).write_text(text)
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        api.load_model(saved)


def test_config_not_utf8(saved):
    (saved / CONFIG_NAME).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        api.load_model(saved)


@pytest.mark.parametrize("value", ["someone-elses-model", None, _DELETE])
def test_wrong_format_field(saved, value):
    _edit_config(saved, format=value)
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        api.load_model(saved)


def test_json_that_is_not_an_object(saved):
    (saved / CONFIG_NAME).write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        api.load_model(saved)


@pytest.mark.parametrize("version", [checkpoint.FORMAT_VERSION + 1, 99, "1", None])
def test_newer_or_bad_format_version(saved, version):
    _edit_config(saved, format_version=version)
    with pytest.raises(CheckpointError, match=CONFIG_NAME) as info:
        api.load_model(saved)
    assert "version" in str(info.value)


def test_missing_weights(saved):
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        api.load_model(saved)


def test_truncated_weights(saved):
    path = saved / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        api.load_model(saved)


@pytest.mark.parametrize("content", [b"", b"\x01\x00", bytes(range(256)) * 4, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"])
def test_garbage_weights(saved, content):
    (saved / WEIGHTS_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        api.load_model(saved)


def test_weights_of_a_different_shape(saved):
    meta = json.loads((saved / CONFIG_NAME).read_text())
    meta["config"]["num_fmaps"] = meta["config"]["num_fmaps"] * 2
    (saved / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME) as info:
        api.load_model(saved)
    assert "shape" in str(info.value)


def test_weights_with_missing_tensors(saved):
    from safetensors.torch import load_file, save_file

    state = load_file(str(saved / WEIGHTS_NAME))
    state.pop(sorted(state)[0])
    save_file(state, str(saved / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME) as info:
        api.load_model(saved)
    assert "missing" in str(info.value)


def test_unknown_method_name(saved):
    _edit_config(saved, method="stardust")
    with pytest.raises(CheckpointError, match=CONFIG_NAME) as info:
        api.load_model(saved)
    assert "stardust" in str(info.value)


@pytest.mark.parametrize("method", [5, ["cellulus"]])
def test_non_string_method_name(saved, method):
    _edit_config(saved, method=method)
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        api.load_model(saved)


def test_model_of_another_method_is_refused_by_the_model_class(tmp_path):
    from probseg.methods.cellulus import CellulusModel

    save_checkpoint(tmp_path / "m", "othermethod", {}, _state(), {"in_channels": 1})
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        CellulusModel.load(tmp_path / "m")


@pytest.mark.parametrize(
    "changes",
    [
        {"config": {"num_fmaps": 1}},  # below the minimum
        {"config": {"no_such_setting": 1}},
        {"in_channels": _DELETE},
        {"in_channels": "three"},
        {"config": "not a mapping"},
    ],
)
def test_invalid_settings_in_config(saved, changes):
    _edit_config(saved, **changes)
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        api.load_model(saved)


# -- settings.json ----------------------------------------------------------------------------


def test_settings_json_round_trip(trained, saved, image):
    model = api.load_model(saved, device="cpu")
    model.settings = model.make_settings({"min_size": 7, "halo_shrink": 1})
    assert model.save_settings() == saved / SETTINGS_NAME
    stored = json.loads((saved / SETTINGS_NAME).read_text())
    assert stored["method"] == "cellulus" and stored["settings"]["min_size"] == 7
    again = api.load_model(saved, device="cpu")
    assert again.settings.min_size == 7 and again.settings.halo_shrink == 1
    assert again.predict(image.copy(), n_samples=1).settings == again.settings


def test_missing_settings_json_means_defaults(trained, saved):
    model = api.load_model(saved, device="cpu")
    model.settings = model.make_settings({"min_size": 7})
    model.save_settings()
    (saved / SETTINGS_NAME).unlink()
    model = api.load_model(saved, device="cpu")
    assert model.settings == type(trained).settings_class()


def test_saving_default_settings_removes_a_stale_settings_json(trained, saved, tmp_path):
    model = api.load_model(saved, device="cpu")
    model.settings = model.make_settings({"min_size": 7})
    folder = model.save(tmp_path / "copy")
    assert (folder / SETTINGS_NAME).is_file()
    model.settings = model.make_settings(config_to_dict(type(trained).settings_class()))
    model.save(folder)
    assert not (folder / SETTINGS_NAME).exists()


@pytest.mark.parametrize(
    "text", ["{not json", '{"method": "cellulus"}', '{"method": "cellulus", "settings": {"no_such": 1}}',
             '{"method": "cellulus", "settings": {"min_size": -4}}'],
)
def test_broken_settings_json_is_a_checkpoint_error(saved, text):
    (saved / SETTINGS_NAME).write_text(text)
    with pytest.raises(CheckpointError, match=SETTINGS_NAME):
        api.load_model(saved)
