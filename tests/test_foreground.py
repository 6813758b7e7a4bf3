"""A user-supplied foreground mask (probseg.partition.foreground): its rules, every method's fallback, raw stores and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import probseg
from probseg import cli, methods
from probseg.core.errors import InputError
from probseg.partition.foreground import as_mask, attach_foreground
from probseg.io.rawstore import RawWriter, load_raw, save_raw

HERE = Path(__file__).resolve().parent
SIZE = 48
# Four bright squares, one per quadrant.
SQUARES = [(slice(4, 16), slice(4, 16)), (slice(4, 16), slice(30, 42)), (slice(30, 42), slice(4, 16)), (slice(30, 42), slice(30, 42))]


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    methods.register("toy", "_toy_method")
    yield methods.get("toy")
    methods.unregister("toy")


def _image() -> np.ndarray:
    image = np.zeros((SIZE, SIZE), np.float32)
    for square in SQUARES:
        image[square] = 1.0
    return image


def _model(cls):
    """A toy model whose convolution is a fixed threshold of the image (bright: score ~1), no training."""
    from _toy_method import Config

    net = cls.build_network(Config(), 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, 0, 1, 1] = 20.0
        net.bias.fill_(-10.0)
    return cls(Config(), net, 1, {}, device="cpu")


@pytest.fixture
def model(toy):
    return _model(toy.model_class)


def _right_half() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint16)
    mask[:, SIZE // 2:] = 7  # labels: any value above 0 is foreground
    return mask


# -- as_mask ------------------------------------------------------------------------------


def test_what_counts_as_foreground():
    labels = np.array([[0, 3], [1, 0]], np.int32)
    np.testing.assert_array_equal(as_mask(labels), labels > 0)
    flags = np.array([[True, False], [False, False]])
    assert as_mask(flags).dtype == bool and as_mask(flags).sum() == 1
    probabilities = np.array([[0.2, 0.5], [0.49, 1.0]], np.float32)  # an ilastik export: 0.5 and above
    np.testing.assert_array_equal(as_mask(probabilities), [[False, True], [False, True]])
    scores = np.array([[0.2, -1.0], [3.0, 0.0]], np.float64)  # not probabilities: above 0
    np.testing.assert_array_equal(as_mask(scores), [[True, False], [True, False]])


def test_shapes_that_fit():
    assert as_mask(np.ones((5, 6)), (5, 6)).shape == (5, 6)
    assert as_mask(np.ones((5, 6)), (3, 5, 6)).shape == (5, 6)  # one mask for every plane
    assert as_mask(np.ones((3, 5, 6)), (3, 5, 6)).shape == (3, 5, 6)


@pytest.mark.parametrize("mask, shape, words", [
    (np.ones((5, 6)), (6, 5), ["(5, 6)", "(6, 5)"]),
    (np.ones((2, 5, 6)), (5, 6), ["(2, 5, 6)", "(5, 6)"]),
    (np.ones((2, 5, 6)), (3, 5, 6), ["(2, 5, 6)", "(3, 5, 6)", "every plane"]),
    (np.ones(5), None, ["(5,)"]),
    (np.array([[0.2, np.nan]]), None, ["1 NaN"]),
    (np.zeros((5, 6), np.uint8), None, ["empty", "no pixel is foreground", "above 0"]),
    (np.full((5, 6), 0.3, np.float32), None, ["empty", "0.5"]),
    (np.array([["a", "b"]]), None, ["dtype <U1"]),
    (np.ones((2, 2), complex), None, ["dtype complex128"]),
])
def test_bad_masks_are_one_clear_line(mask, shape, words):
    with pytest.raises(InputError) as info:
        as_mask(mask, shape)
    message = str(info.value)
    assert "\n" not in message and message.startswith("the foreground mask")
    for word in words:
        assert word in message


# -- the engine ---------------------------------------------------------------------------


def test_predict_segments_only_inside_the_mask(model):
    image = _image()
    everywhere = model.predict(image, 2)
    assert everywhere.segmentation.max() == 4
    pred = model.predict(image, 2, foreground=_right_half())
    assert pred.segmentation.max() == 2  # renumbered 1..2 after the left squares went
    assert not pred.segmentation[:, : SIZE // 2].any() and not pred.samples[:, :, : SIZE // 2].any()
    np.testing.assert_array_equal(pred.segmentation[:, SIZE // 2:] > 0, everywhere.segmentation[:, SIZE // 2:] > 0)
    mask = pred.raw.planes[0]["mask"]
    assert mask.dtype == np.float32 and mask.shape == (SIZE, SIZE) and set(np.unique(mask)) == {0.0, 1.0}
    assert not pred.uncertainty[:, : SIZE // 2].any() and not pred.probability[:, : SIZE // 2].any()


def test_tuning_segments_inside_the_mask(model):
    image = _image()
    truth = np.zeros(image.shape, np.int32)
    for i, square in enumerate(SQUARES, 1):
        truth[square] = i
    grid = {"threshold": [0.5]}
    whole = probseg.tune(model, image, truth, grid, save=False)
    inside = probseg.tune(model, image, truth, grid, save=False, foreground=_right_half())
    assert whole.best_row["f1"] == 1.0
    assert inside.best_row["f1"] == pytest.approx(2 / 3)  # 2 of the 4 squares found, none wrong


def test_a_bad_mask_fails_before_the_network_runs(model, monkeypatch):
    def no_network(*_args, **_kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(model.net, "forward", no_network)
    with pytest.raises(InputError, match=r"shape \(10, 10\) but the image is \(48, 48\)"):
        model.predict(_image(), 2, foreground=np.ones((10, 10)))
    with pytest.raises(InputError, match="empty"):
        model.predict_raw(_image(), 2, foreground=np.zeros((SIZE, SIZE)))


def test_attach_foreground_then_postprocess_without_the_network(model, monkeypatch):
    raw = model.predict_raw(_image(), 2)
    monkeypatch.setattr(model.net, "forward", lambda *_: (_ for _ in ()).throw(AssertionError("the network ran")))
    masked = attach_foreground(raw, _right_half())
    assert "mask" not in raw.planes[0], "attach_foreground changed the raw output it was given"
    assert masked.planes[0]["foreground"] is raw.planes[0]["foreground"]  # arrays shared, not copied
    assert model.postprocess(masked).segmentation.max() == 2
    left = np.zeros((SIZE, SIZE), bool)
    left[:, :20] = True
    assert model.postprocess(attach_foreground(masked, left)).segmentation.max() == 2  # replaced, not combined
    unmasked = attach_foreground(masked, None)
    assert "mask" not in unmasked.planes[0] and model.postprocess(unmasked).segmentation.max() == 4
    with pytest.raises(InputError, match="shape"):
        attach_foreground(raw, np.ones((SIZE, SIZE + 1)))


def test_a_stack_takes_one_mask_for_every_plane_or_one_per_plane(model):
    stack = np.stack([_image(), _image()])
    pred = model.predict(stack, 1, foreground=_right_half())
    assert pred.segmentation.shape == (2, SIZE, SIZE) and not pred.segmentation[:, :, : SIZE // 2].any()
    per_plane = np.stack([_right_half(), np.ones((SIZE, SIZE), np.uint8)])
    pred = model.predict(stack, 1, foreground=per_plane)
    assert pred.segmentation[0].max() == 2 and pred.segmentation[1].max() == 4


def test_a_method_that_uses_the_mask_itself_is_left_alone(toy):
    class OwnMask(toy.model_class):
        uses_mask = True
        seen = []

        def instances(self, raw, settings, n_samples):
            self.seen.append("mask" in raw)
            return super().instances(raw, settings, n_samples)

    pred = _model(OwnMask).predict(_image(), 1, foreground=_right_half())
    assert OwnMask.seen == [True]
    assert pred.segmentation.max() == 4  # this instances() ignored it, and nothing was cut afterwards


def test_draw_by_draw_honours_the_mask_and_stores_it(toy, tmp_path):
    class DrawByDraw(toy.model_class):
        def draws_independent(self, settings):
            return True

    model = _model(DrawByDraw)
    model.folder = None
    writer = RawWriter(tmp_path / "raw.zarr", {**model.meta(), "method": "toy"}, 1)
    pred = model.predict(_image(), 1, keep_raw=False, foreground=_right_half(), on_draw=writer.add)
    writer.close(pred.raw)
    assert pred.segmentation.max() == 2 and not pred.segmentation[:, : SIZE // 2].any()
    assert "mask" in pred.raw.planes[0]
    stored, _ = load_raw(tmp_path / "raw.zarr")
    np.testing.assert_array_equal(stored.planes[0]["mask"], pred.raw.planes[0]["mask"])


def test_raw_store_round_trip_keeps_the_mask(model, tmp_path):
    raw = attach_foreground(model.predict_raw(_image(), 2), _right_half())
    save_raw(tmp_path / "raw.zarr", raw, {**model.meta(), "method": "toy"})
    stored, meta = load_raw(tmp_path / "raw.zarr")
    assert list(stored.planes[0]) == ["foreground", "mask"]
    np.testing.assert_array_equal(stored.planes[0]["mask"], raw.planes[0]["mask"])
    again = type(model).for_postprocessing(meta)
    np.testing.assert_array_equal(again.postprocess(stored).segmentation, model.postprocess(raw).segmentation)


def test_display_maps_are_stacked_over_planes(toy):
    class WithMap(toy.model_class):
        def display_maps(self, raw):
            return {"score": raw["foreground"] * 2}

    model = _model(WithMap)
    pred = model.predict(_image(), 1)
    maps = model.shown_maps(pred)
    assert list(maps) == ["score"] and maps["score"].shape == (SIZE, SIZE) and maps["score"].dtype == np.float32
    stack = model.predict(np.stack([_image(), _image()]), 1)
    assert model.shown_maps(stack)["score"].shape == (2, SIZE, SIZE)
    assert _model(toy.model_class).shown_maps(pred) == {}


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def files(model, tmp_path):
    model.save(tmp_path / "model")
    tifffile.imwrite(tmp_path / "image.tif", _image())
    tifffile.imwrite(tmp_path / "mask.tif", _right_half())
    tifffile.imwrite(tmp_path / "small.tif", np.ones((10, 10), np.uint8))
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((SIZE, SIZE), np.uint8))
    (tmp_path / "corrupt.tif").write_bytes(b"not a tiff")
    return tmp_path


def test_segment_and_instances_with_a_mask(files, capsys):
    out, raw = files / "labels.tif", files / "raw.zarr"
    assert cli.main(["segment", str(files / "model"), str(files / "image.tif"), "--out", str(out),
                     "--foreground-mask", str(files / "mask.tif"), "--raw-out", str(raw), "--device", "cpu"]) == 0
    assert "wrote 2 objects" in capsys.readouterr().out
    labels = tifffile.imread(out)
    assert labels.max() == 2 and not labels[:, : SIZE // 2].any()
    assert json.loads((files / "labels.tif.json").read_text())["foreground"] == str((files / "mask.tif").resolve())
    # The mask is stored with the raw output, so instances keeps it...
    assert cli.main(["instances", str(raw), "--out", str(files / "again.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(files / "again.tif"), labels)
    # ... unless another replaces it.
    everything = np.ones((SIZE, SIZE), np.uint8)
    tifffile.imwrite(files / "all.tif", everything)
    assert cli.main(["instances", str(raw), "--out", str(files / "all_labels.tif"), "--foreground-mask", str(files / "all.tif")]) == 0
    assert tifffile.imread(files / "all_labels.tif").max() == 4


@pytest.mark.parametrize("mask, words", [
    ("small.tif", ["small.tif", "(10, 10)", "(48, 48)"]),
    ("empty.tif", ["empty.tif", "empty"]),
    ("missing.tif", ["missing.tif", "does not exist"]),
    ("corrupt.tif", ["corrupt.tif", "not a readable"]),
])
def test_a_bad_mask_is_one_line_and_writes_nothing(files, capsys, mask, words):
    out = files / "labels.tif"
    code = cli.main(["segment", str(files / "model"), str(files / "image.tif"), "--out", str(out),
                     "--foreground-mask", str(files / mask), "--raw-out", str(files / "raw.zarr"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE
    assert err.count("\n") == 1 and err.startswith("probseg: error:") and "Traceback" not in err
    for word in words:
        assert word in err
    assert sorted(p.name for p in files.iterdir() if p.name.startswith(("labels", "raw", ".raw"))) == []


def test_instances_refuses_a_bad_mask(files, model, capsys):
    raw = files / "raw.zarr"
    save_raw(raw, model.predict_raw(_image(), 1), {**model.meta(), "method": "toy"})
    code = cli.main(["instances", str(raw), "--out", str(files / "labels.tif"), "--foreground-mask", str(files / "small.tif")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE and "(10, 10)" in err and err.count("\n") == 1
    assert not (files / "labels.tif").exists()


def test_the_mask_may_not_be_an_output(files, capsys):
    code = cli.main(["segment", str(files / "model"), str(files / "image.tif"), "--out", str(files / "mask.tif"),
                     "--foreground-mask", str(files / "mask.tif"), "--overwrite", "--device", "cpu"])
    assert code == cli.EXIT_FAILURE and "--foreground-mask" in capsys.readouterr().err
    assert tifffile.imread(files / "mask.tif").max() == 7
