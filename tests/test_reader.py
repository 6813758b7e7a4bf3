"""Raw stores open in napari as layers through the plugin's reader (no viewer needed for the hook itself)."""

import numpy as np
import pytest

import probseg
from napari_probseg._reader import get_reader, read_raw
from probseg.io.rawstore import save_raw


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    image = probseg.datasets.nuclei()[0][:64, :64]
    model = probseg.train("cellulus", image, config={"steps": 2, "crop_size": 48, "num_fmaps": 4}, device="cpu")
    model.settings = model.make_settings({"min_size": 30})
    pred = model.predict(image, n_samples=2)
    path = tmp_path_factory.mktemp("raw") / "nuclei.zarr"
    save_raw(path, pred.raw, model.meta())
    return path, pred


def test_reader_claims_raw_stores_only(store, tmp_path):
    path, _ = store
    assert get_reader(str(path)) is read_raw and get_reader([str(path)]) is read_raw
    assert get_reader(str(tmp_path)) is None  # a plain folder
    assert get_reader(str(tmp_path / "missing.zarr")) is None
    assert get_reader([str(path), str(path)]) is None


def test_raw_store_opens_as_map_layers_and_its_segmentation(store):
    path, pred = store
    layers = read_raw(str(path))
    names = [meta["name"] for _, meta, _ in layers]
    assert names == ["nuclei embeddings", "nuclei intensity", "nuclei segmentation"]
    emb, _, kind = layers[0]
    assert kind == "image" and emb.shape == (2, 64, 64)
    np.testing.assert_allclose(emb, pred.embeddings)
    seg, _, kind = layers[-1]
    assert kind == "labels"
    # Re-computed with the settings the store was made with (min_size 30), not the defaults.
    np.testing.assert_array_equal(seg, pred.segmentation)
