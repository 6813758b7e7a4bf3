"""What keeps memory bounded on large images, checked on small ones.

Speed and peak RSS on 1024^2 to 4096^2 px images are measured by
``benchmarks/large_image.py``; these tests pin the mechanisms: windows are
written into one preallocated output, draws are not held twice, one draw is
made when only the labels are asked for, and results do not alias.
"""

import json
import tracemalloc

import numpy as np
import pytest
import tifffile

import probseg
from probseg import cli
from probseg.core.callbacks import Callbacks
from probseg.evaluation.synthetic import touching_blobs
from probseg.nn.tiling import tiled_apply

TINY = {
    "cellulus": dict(num_fmaps=8, fmap_inc_factor=2, crop_size=48, batch_size=2, density=0.05, object_size=12),
    "concrete-dropout": dict(num_fmaps=4, crop_size=64, batch_size=2, learning_rate=5e-3),
    "spoco": dict(num_fmaps=4, embedding_dims=8, crop_size=48, batch_size=2, learning_rate=5e-3),
}
STEPS = {"cellulus": 2, "concrete-dropout": 30, "spoco": 30}


@pytest.fixture(scope="module")
def data():
    return touching_blobs(shape=(96, 96), object_size=12, seed=0)


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request, data, tmp_path_factory):
    image, labels = data
    name = request.param
    use = labels if name != "cellulus" else None
    out = tmp_path_factory.mktemp(name) / "model"
    trained = probseg.train(name, image, use, config=TINY[name], steps=STEPS[name], device="cpu", seed=0, out=out)
    trained.tile_size = 64  # several windows on the 96 px image
    return trained


def test_tiled_apply_writes_into_the_given_output():
    rng = np.random.default_rng(0)
    image = rng.random((2, 70, 90), dtype=np.float32)
    fn = lambda x: x * 2.0  # noqa: E731
    expected = tiled_apply(fn, image, 2, tile=32, overlap=16, margin=4, align=4)
    out = np.full((2, 70, 90), np.nan, dtype=np.float32)
    got = tiled_apply(fn, image, 2, tile=32, overlap=16, margin=4, align=4, out=out)
    assert got is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, image * 2.0, rtol=1e-6)


def test_tiled_apply_leaves_the_input_alone():
    # The identity network hands back views of the input windows; blending
    # must not scale them in place.
    image = np.ones((1, 40, 40), dtype=np.float32)
    tiled_apply(lambda x: x, image, 1, tile=32, overlap=16, margin=4)
    assert np.all(image == 1.0)


@pytest.mark.parametrize("shape, dtype", [((2, 70, 91), np.float32), ((2, 70, 90), np.float64), ((1, 70, 90), np.float32)])
def test_tiled_apply_refuses_a_wrong_output(shape, dtype):
    image = np.zeros((2, 70, 90), dtype=np.float32)
    with pytest.raises(ValueError, match="out must be"):
        tiled_apply(lambda x: x, image, 2, tile=32, overlap=16, margin=4, out=np.zeros(shape, dtype=dtype))


def _raw_peak(model, plane, n):
    """NumPy's peak bytes while ``model.raw`` draws ``n`` samples, and the bytes it returns."""
    tracemalloc.start()
    try:
        raw = model.raw(plane, n, np.random.default_rng(0), Callbacks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, sum(a.nbytes for a in raw.values())


def test_raw_does_not_hold_the_draws_twice(model, data):
    # tracemalloc sees NumPy's buffers (not torch's). Each extra draw may
    # raise the peak by what it adds to the result, not by twice that (a
    # list of draws and then its stack); one draw's working set is the same
    # for any number of draws, so it cancels out of the difference.
    plane = model.prepare(data[0]).data[0]
    _raw_peak(model, plane, 1)  # warm-up: first-call allocations
    peak_few, kept_few = _raw_peak(model, plane, 2)
    peak_many, kept_many = _raw_peak(model, plane, 8)
    assert kept_many > kept_few
    assert peak_many - peak_few < 1.25 * (kept_many - kept_few), (peak_few, kept_few, peak_many, kept_many)


def test_one_draw_results_do_not_alias(model, data):
    pred = model.predict(data[0], n_samples=1)
    assert not np.shares_memory(pred.segmentation, pred.samples)
    pred.segmentation[:] = 0  # as a paint tool would
    assert pred.samples.any()


def test_labels_need_only_the_first_draw(model, data):
    one = model.predict(data[0], n_samples=1, seed=4)
    many = model.predict(data[0], n_samples=5, seed=4)
    np.testing.assert_array_equal(one.segmentation, many.segmentation)
    assert model.draws_independent(model.settings) is True


def _segment(model, tmp_path, name, *extra):
    image = tmp_path / "image.tif"
    if not image.exists():
        tifffile.imwrite(image, touching_blobs(shape=(96, 96), object_size=12, seed=0)[0])
    out = tmp_path / f"{name}.tif"
    assert cli.main(["segment", str(model.folder), str(image), "--out", str(out), "--device", "cpu", "--tile-size", "64",
                     *extra]) == 0
    return tifffile.imread(out), json.loads((tmp_path / f"{name}.tif.json").read_text())


def test_cli_draws_one_sample_for_labels_only(model, tmp_path, capsys, monkeypatch):
    counted = []
    original = type(model).raw_draws

    def counting(self, plane, n_samples, rng, callbacks):
        counted.append(n_samples)
        return original(self, plane, n_samples, rng, callbacks)

    # The CLI loads its own model from the folder: patch the class.
    monkeypatch.setattr(type(model), "raw_draws", counting)
    labels, sidecar = _segment(model, tmp_path, "labels")  # the default --samples 8
    full, full_sidecar = _segment(model, tmp_path, "full", "--samples", "3", "--uncertainty-out", str(tmp_path / "u.tif"))
    capsys.readouterr()
    assert counted == [1, 3]
    assert sidecar["n_samples"] == 1 and full_sidecar["n_samples"] == 3
    np.testing.assert_array_equal(labels, full)


def test_cli_draws_the_samples_a_spread_foreground_needs(tmp_path, capsys, data):
    image, _ = data
    model = probseg.train("cellulus", image, config=TINY["cellulus"], steps=2, device="cpu", seed=0, out=tmp_path / "m")
    assert not model.draws_independent(model.make_settings({"foreground": "spread"}))
    _, sidecar = _segment(model, tmp_path, "spread", "--samples", "2", "--foreground", "spread")
    capsys.readouterr()
    assert sidecar["n_samples"] == 2


def test_stack_results_match_plane_by_plane(model, data):
    image = data[0]
    stack = np.stack([image, image[::-1].copy()])
    pred = model.predict(stack, n_samples=2, seed=1)
    assert pred.segmentation.shape == (2, 96, 96) and pred.samples.shape == (2, 2, 96, 96)
    for z in range(2):
        plane = {k: v for k, v in pred.raw.planes[z].items()}
        single = model.postprocess(probseg.engine.model.Raw([plane], 2))
        np.testing.assert_array_equal(pred.segmentation[z], single.segmentation)
        np.testing.assert_array_equal(pred.samples[:, z], single.samples)
        np.testing.assert_array_equal(pred.uncertainty[z], single.uncertainty)
        np.testing.assert_array_equal(pred.probability[z], single.probability)


@pytest.mark.parametrize("n", [1, 3])
def test_draw_by_draw_gives_the_same_results(model, data, n):
    image = data[0]
    kept = model.predict(image, n_samples=n, seed=2)
    streamed = model.predict(image, n_samples=n, seed=2, keep_raw=False)
    for name in ("segmentation", "samples", "uncertainty", "probability"):
        a, b = getattr(kept, name), getattr(streamed, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    # Only draw 0's maps are kept: the embeddings, not the samples' draws.
    assert streamed.raw.n_samples == 1
    assert all(a.shape[0] == 1 for a in streamed.raw.planes[0].values() if a.ndim >= 3)
    np.testing.assert_array_equal(kept.embeddings, streamed.embeddings)
    assert not np.shares_memory(streamed.segmentation, streamed.samples)


def test_draw_by_draw_on_a_stack(model, data):
    image = data[0]
    stack = np.stack([image, image[::-1].copy()])
    kept = model.predict(stack, n_samples=2, seed=1)
    streamed = model.predict(stack, n_samples=2, seed=1, keep_raw=False)
    for name in ("segmentation", "samples", "uncertainty", "probability", "embeddings"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(streamed, name), err_msg=name)


def test_draw_by_draw_falls_back_where_draws_are_shared(data):
    # The spread foreground needs every draw at once: all are kept.
    model = probseg.train("cellulus", data[0], config=TINY["cellulus"], steps=2, device="cpu", seed=0)
    settings = {"foreground": "spread"}
    streamed = model.predict(data[0], n_samples=2, seed=0, settings=settings, keep_raw=False)
    kept = model.predict(data[0], n_samples=2, seed=0, settings=settings)
    assert streamed.raw.n_samples == 2
    np.testing.assert_array_equal(kept.samples, streamed.samples)


def test_raw_draws_match_raw(model, data):
    plane = model.prepare(data[0]).data[0]
    full = model.raw(plane, 3, np.random.default_rng(7), Callbacks())
    draws = list(model.raw_draws(plane, 3, np.random.default_rng(7), Callbacks()))
    assert len(draws) == 4
    for k, draw in enumerate(draws):
        for name, array in full.items():
            expected = array[k : k + 1] if array.ndim >= 3 else array
            np.testing.assert_array_equal(draw[name], expected)


def test_raw_writer_stores_what_save_raw_stores(model, data, tmp_path):
    from probseg.io.rawstore import RawWriter, load_raw, save_raw

    image = data[0]
    writer = RawWriter(tmp_path / "streamed.zarr", model.meta(), 3)
    streamed = model.predict(image, n_samples=3, seed=5, keep_raw=False, on_draw=writer.add)
    writer.close(streamed.raw)
    kept = model.predict(image, n_samples=3, seed=5)
    save_raw(tmp_path / "saved.zarr", kept.raw, model.meta())
    a, meta_a = load_raw(tmp_path / "streamed.zarr")
    b, meta_b = load_raw(tmp_path / "saved.zarr")
    assert meta_a == meta_b and a.n_samples == b.n_samples == 3 and a.attrs == b.attrs
    assert list(a.planes[0]) == list(b.planes[0]) == list(model.raw_maps)
    for name in a.planes[0]:
        np.testing.assert_array_equal(a.planes[0][name], b.planes[0][name])
    np.testing.assert_array_equal(model.postprocess(a).samples, streamed.samples)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_raw_writer_leaves_nothing_when_cancelled(model, data, tmp_path):
    from probseg.core.errors import Cancelled
    from probseg.io.rawstore import RawWriter

    writer = RawWriter(tmp_path / "raw.zarr", model.meta(), 2)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3  # after a few windows of the first draws

    with pytest.raises(Cancelled):
        try:
            model.predict(data[0], n_samples=2, keep_raw=False, on_draw=writer.add, callbacks=Callbacks(should_stop=stop))
        except Cancelled:
            writer.abort()
            raise
    assert list(tmp_path.iterdir()) == []


def test_raw_writer_refuses_an_existing_store(model, tmp_path):
    from probseg.core.errors import InputError
    from probseg.io.rawstore import RawWriter

    (tmp_path / "raw.zarr").mkdir()
    with pytest.raises(InputError, match="exists"):
        RawWriter(tmp_path / "raw.zarr", model.meta(), 2)


def test_write_image_zarr_round_trip(tmp_path):
    from probseg.io.images import read_image, write_image

    for array in (np.arange(12, dtype=np.uint16).reshape(3, 4), np.random.default_rng(0).random((3, 20, 30), dtype=np.float32)):
        path = write_image(tmp_path / f"a{array.ndim}.zarr", array)
        back = read_image(path)
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a2.zarr", "a3.zarr"]  # no partial folder left


def test_write_image_zarr_never_replaces_a_folder(tmp_path):
    from probseg.core.errors import InputError
    from probseg.io.images import write_image

    kept = tmp_path / "labels.zarr"
    kept.mkdir()
    (kept / "mine.txt").write_text("user data")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="it exists"):
            write_image(kept, np.zeros((4, 4), np.uint16), overwrite=overwrite)
    assert (kept / "mine.txt").read_text() == "user data"
    # A zarr array is replaced only when asked to.
    array = tmp_path / "array.zarr"
    write_image(array, np.ones((4, 4), np.uint16))
    with pytest.raises(InputError, match="it exists"):
        write_image(array, np.zeros((4, 4), np.uint16))
    write_image(array, np.full((4, 4), 7, np.uint16), overwrite=True)
    from probseg.io.images import read_image

    assert (read_image(array) == 7).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["array.zarr", "labels.zarr"]


def test_cli_writes_labels_and_samples_to_zarr(model, tmp_path, capsys):
    from probseg.io.images import read_image

    labels, _ = _segment(model, tmp_path, "labels")
    image = tmp_path / "image.tif"
    zarr_out, zarr_samples = tmp_path / "labels.zarr", tmp_path / "samples.zarr"
    assert cli.main(["segment", str(model.folder), str(image), "--out", str(zarr_out), "--device", "cpu",
                     "--tile-size", "64", "--samples", "2", "--samples-out", str(zarr_samples)]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(read_image(zarr_out), labels)
    assert read_image(zarr_samples).shape == (2, 96, 96)
    assert json.loads((tmp_path / "labels.zarr.json").read_text())["n_samples"] == 2


def test_draw_by_draw_checks_the_seed(model, data):
    from probseg.core.errors import InputError

    with pytest.raises(InputError, match="seed"):
        model.predict(data[0], n_samples=2, seed=-1, keep_raw=False)
