"""Raw network output and post-processing, for every built-in method.

The network runs in ``predict_raw`` only: re-tuning the post-processing of a
prediction (in memory or from a raw store) never calls it, and one sample
costs one network pass.
"""

import numpy as np
import pytest

import probseg
from probseg import methods
from probseg.core.errors import InputError
from probseg.io.rawstore import load_raw, save_raw
from probseg.evaluation.synthetic import touching_blobs

TINY = {
    "cellulus": dict(num_fmaps=8, fmap_inc_factor=2, crop_size=48, batch_size=2, density=0.05, object_size=12),
    "concrete-dropout": dict(num_fmaps=4, crop_size=64, batch_size=2, learning_rate=5e-3),
    "spoco": dict(num_fmaps=4, embedding_dims=8, crop_size=48, batch_size=2, learning_rate=5e-3),
}
STEPS = {"cellulus": 2, "concrete-dropout": 30, "spoco": 30}  # enough for concrete-dropout to find objects
# Settings that change the default result (both leave a valid, non-empty segmentation) ...
OTHER = {"cellulus": {"halo_shrink": 2}, "concrete-dropout": {"partition": "meanshift", "min_size": 5},
         "spoco": {"bias": 0.7, "min_size": 5}}
# ... and settings that remove every object.
NOTHING = {"min_size": 10**6}


@pytest.fixture(scope="module")
def data():
    return touching_blobs(shape=(64, 64), object_size=12, seed=0)


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request, data):
    image, labels = data
    name = request.param
    use = labels if methods.get(name).labels != "none" else None
    return probseg.train(name, image, use, config=TINY[name], steps=STEPS[name], device="cpu", seed=0)


@pytest.fixture(scope="module")
def prediction(model, data):
    return model.predict(data[0], n_samples=4, seed=0)


@pytest.fixture
def no_network(model, monkeypatch):
    """Make every call of the model's network an error."""

    def boom(*args, **kwargs):
        raise AssertionError("the network ran during post-processing")

    monkeypatch.setattr(model.net, "forward", boom)
    monkeypatch.setattr(model.net, "forward_same", boom)
    return model


def _check_valid(pred, shape, n):
    assert pred.segmentation.shape == shape and pred.segmentation.dtype == np.int32
    assert pred.samples.shape == (n,) + shape and pred.samples.dtype == np.int32
    assert pred.uncertainty.shape == shape and 0 <= pred.uncertainty.min() and pred.uncertainty.max() <= 1
    assert pred.probability.shape == shape and 0 <= pred.probability.min() and pred.probability.max() <= 1
    ids = np.unique(pred.segmentation)
    np.testing.assert_array_equal(ids[ids > 0], np.arange(1, ids.max() + 1))


def test_prediction_keeps_its_raw_output(model, prediction, data):
    raw = prediction.raw
    assert raw.n_samples == 4 and not raw.is_stack and raw.shape == data[0].shape
    assert raw.attrs["method"] == model.method and raw.attrs["seed"] == 0
    assert raw.attrs["weights_sha256"] == model.record.get("weights_sha256")  # None until saved
    for name, array in raw.planes[0].items():
        assert array.dtype == np.float32 and array.shape[-2:] == data[0].shape, name
    assert raw.planes[0]["embeddings"].shape[0] == 5  # the clean pass and one per sample
    assert prediction.settings == model.settings
    assert prediction.segmentation.max() > 0, "the tiny model should find objects"


def test_re_tuning_does_not_run_the_network(no_network, prediction, data):
    model = no_network
    with pytest.raises(AssertionError, match="network ran"):
        model.predict(data[0], n_samples=1)  # the patch works
    same = model.postprocess(prediction.raw)
    np.testing.assert_array_equal(same.segmentation, prediction.segmentation)
    np.testing.assert_array_equal(same.samples, prediction.samples)
    np.testing.assert_array_equal(same.uncertainty, prediction.uncertainty)

    other = model.postprocess(prediction.raw, OTHER[model.method])
    _check_valid(other, data[0].shape, 4)
    assert other.settings == model.make_settings(OTHER[model.method]) != prediction.settings
    assert other.segmentation.max() > 0
    assert not np.array_equal(other.segmentation, prediction.segmentation)
    assert other.raw is prediction.raw

    nothing = model.postprocess(prediction.raw, NOTHING)
    _check_valid(nothing, data[0].shape, 4)
    assert not nothing.segmentation.any() and not nothing.samples.any()
    assert model.settings == prediction.settings, "postprocess(settings=...) leaves the model's own alone"


def test_raw_store_round_trip_gives_the_same_labels(model, prediction, tmp_path, monkeypatch):
    path = save_raw(tmp_path / "raw.zarr", prediction.raw, model.meta())
    with pytest.raises(InputError, match="exists"):
        save_raw(path, prediction.raw, model.meta())
    raw, meta = load_raw(path)
    assert meta["method"] == model.method
    assert raw.n_samples == 4 and raw.is_stack is False and raw.attrs == prediction.raw.attrs
    assert set(raw.planes[0]) == set(prediction.raw.planes[0])
    for name, array in prediction.raw.planes[0].items():
        np.testing.assert_array_equal(raw.planes[0][name], array)

    info = methods.get(meta["method"])
    for settings in (None, OTHER[model.method], NOTHING):
        offline = info.model_class.for_postprocessing(meta, settings)
        assert offline.net is None
        expected = model.postprocess(prediction.raw, settings)
        got = offline.postprocess(raw)
        assert got.settings == expected.settings
        np.testing.assert_array_equal(got.segmentation, expected.segmentation)
        np.testing.assert_array_equal(got.samples, expected.samples)
        np.testing.assert_array_equal(got.uncertainty, expected.uncertainty)
    with pytest.raises(InputError, match="no network weights"):
        offline.predict_raw(np.zeros((32, 32)))


def test_stack_raw_store_round_trip(model, data, tmp_path):
    image = data[0]
    stack = np.stack([image, image[::-1].copy()])
    raw = model.predict_raw(stack, n_samples=2)
    raw2, meta = load_raw(save_raw(tmp_path / "stack.zarr", raw, model.meta()))
    assert raw2.is_stack and raw2.shape == (2, 64, 64) and len(raw2.planes) == 2
    a = model.postprocess(raw)
    b = methods.get(meta["method"]).model_class.for_postprocessing(meta).postprocess(raw2)
    assert b.segmentation.shape == (2, 64, 64) and b.samples.shape == (2, 2, 64, 64)
    np.testing.assert_array_equal(a.segmentation, b.segmentation)


def test_load_raw_rejects_what_is_not_a_raw_store(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_raw(tmp_path / "missing.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["format"] = "something-else"
    with pytest.raises(InputError, match="not a probseg raw store"):
        load_raw(tmp_path / "other.zarr")


def _count_passes(model, monkeypatch):
    calls = []
    forward = model.net.forward

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.net, "forward", counting)
    return calls


def test_one_sample_is_one_network_pass(model, data, monkeypatch):
    image = data[0]  # 64 x 64: one tile of 512, so one pass is one call
    assert model.tile_size >= 64
    calls = _count_passes(model, monkeypatch)
    model.predict(image, n_samples=1)
    assert len(calls) == 1
    calls.clear()
    model.predict(image, n_samples=3)
    # the pass that gives the segmentation, and one pass per sample
    assert len(calls) == 1 + 3
    calls.clear()
    model.postprocess(model.predict_raw(image, n_samples=3), OTHER[model.method])
    assert len(calls) == 1 + 3


def test_tiles_of_one_pass(model, data, monkeypatch):
    image = data[0]
    calls = _count_passes(model, monkeypatch)
    model.tile_size = 64
    try:
        model.predict_raw(np.tile(image, (2, 2)), n_samples=1)  # 128 x 128 in tiles of 64
    finally:
        model.tile_size = 512
    tiles = len(calls)
    assert tiles > 1
    calls.clear()
    model.tile_size = 64
    try:
        model.predict_raw(np.tile(image, (2, 2)), n_samples=2)
    finally:
        model.tile_size = 512
    assert len(calls) == (1 + 2) * tiles
