"""CellSegmenter: the pieces against references, a short training, samples, windows and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probseg.engine import api
from probseg.core.errors import InputError
from probseg.methods.cellsegmenter.loss import sapr_loss, warmup_factor
from probseg.methods.cellsegmenter.model import Config
from probseg.methods.cellsegmenter.net import GLIMPSE, CellSegmenterNet
from probseg.methods.cellsegmenter.windows import mixing
from probseg.evaluation.synthetic import digit_scenes

TINY = dict(crop_size=32, object_size_min=6.0, object_size_max=16.0, objects_min=0.5, objects_max=3.0,
            foreground_min=5.0, foreground_max=40.0, max_objects=3, num_fmaps=4, appearance_dims=4,
            background_dims=4, batch_size=4, warmup_steps=5)


def _scenes(n=6, seed=0):
    return digit_scenes(n, size=32, n_digits=(1, 2), digit_size=(12, 14), noise=0.0, seed=seed)


@pytest.fixture(scope="module")
def tiny_model():
    return api.train("cellsegmenter", list(_scenes().images), config=TINY, steps=3, device="cpu", seed=0)


def test_mixing_sums_to_one_and_stays_in_the_boxes():
    boxes = torch.tensor([[[2.0, 2.0, 12.0, 12.0], [6.0, 6.0, 20.0, 18.0]]])
    masks = torch.full((1, 2, GLIMPSE, GLIMPSE), 0.9)
    pi, w, _ = mixing(boxes, masks, torch.ones(1, 2), 32)
    torch.testing.assert_close(pi.sum(1), torch.ones(1, 32, 32))
    assert float(pi[0, 1, 14:, :].max()) == 0.0 and float(pi[0, 2, :5, :].max()) == 0.0
    # Where both boxes hold, the two masks (0.9 each) share the pixel: 0.5 each.
    assert float(pi[0, 1, 9, 9]) == pytest.approx(0.5, abs=1e-5)
    assert float(pi[0, 0, 9, 9]) == pytest.approx(0.0, abs=1e-5)


def test_warmup_holds_then_fades():
    assert [warmup_factor(t, 10) for t in (0, 9, 10, 15, 20, 30)] == [0.4, 0.4, 0.4, pytest.approx(0.2), 0.0, 0.0]
    assert warmup_factor(0, 0) == 0.0


def test_a_few_steps_reduce_the_reconstruction_error():
    torch.manual_seed(0)
    config = Config(**TINY)
    net = CellSegmenterNet(1, config)
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.from_numpy(_scenes(4).images[:, None])
    rec = []
    for _ in range(40):
        optimiser.zero_grad()
        loss, terms = sapr_loss(net, x, config)
        loss.backward()
        optimiser.step()
        rec.append(terms["rec"])
    assert np.mean(rec[-5:]) < 0.5 * np.mean(rec[:5])


def test_samples_are_real_draws_and_reproducible(tiny_model):
    image = _scenes(1, seed=3).images[0]
    a = tiny_model.predict_raw(image, 3, seed=7)
    b = tiny_model.predict_raw(image, 3, seed=7)
    c = tiny_model.predict_raw(image, 3, seed=8)
    objects = a.planes[0]["objects"]
    assert objects.shape[0] == 4  # the mode and three samples
    np.testing.assert_array_equal(objects, b.planes[0]["objects"])
    assert not np.array_equal(objects, c.planes[0]["objects"])
    latents = objects[:, :, 8:]
    assert not np.allclose(latents[1], latents[2]) and not np.allclose(latents[0], latents[1])


def test_windows_cover_every_pixel_sixteen_times(tiny_model):
    origins = tiny_model.window_origins((96, 128))
    cover = np.zeros((96, 128), int)
    for y, x in origins:
        cover[y : y + 32, x : x + 32] += 1
    assert cover[24:-24, 24:-24].min() == 16 and cover.min() >= 1


def test_a_large_image_is_fused_from_its_windows_with_features(tiny_model):
    image = np.tile(_scenes(1, seed=4).images[0], (2, 3))
    pred = tiny_model.predict(image, n_samples=2, seed=0)
    assert pred.segmentation.shape == image.shape and pred.samples.shape == (2,) + image.shape
    table = tiny_model.features(pred)
    labels = np.unique(pred.segmentation)
    labels = labels[labels > 0]
    assert list(table)[:3] == ["label", "area", "presence"]
    np.testing.assert_array_equal(table["label"], labels)
    assert all(len(column) == len(labels) for column in table.values())
    assert f"z_{TINY['appearance_dims']}" in table and "v_4" in table


def test_a_stack_of_scenes_trains_and_segments_plane_by_plane(tiny_model):
    scenes = _scenes(3, seed=5)
    pred = tiny_model.predict(scenes.images, n_samples=1)
    assert pred.segmentation.shape == scenes.images.shape
    table = tiny_model.features(pred)
    assert set(np.unique(table["plane"])) <= {0, 1, 2}


@pytest.mark.parametrize("change, message", [
    (dict(object_size_min=30.0, object_size_max=20.0), "object size range is inverted"),
    (dict(crop_size=32, object_size_max=40.0), "smaller than the largest object"),
    (dict(crop_size=40), "multiple of 16"),
    (dict(objects_min=5.0, objects_max=2.0), "objects-per-window range is inverted"),
    (dict(foreground_min=30.0, foreground_max=10.0), "foreground range is inverted"),
    (dict(max_objects=4), "below the most objects expected"),
])
def test_bad_settings_give_one_line(change, message):
    with pytest.raises(InputError, match=message) as info:
        api.train("cellsegmenter", _scenes(2).images, config=change, steps=1, device="cpu")
    assert "\n" not in str(info.value)


def test_cli_trains_on_a_stack_of_scenes_and_writes_the_object_table(tmp_path, capsys):
    import csv

    import tifffile

    from probseg import cli

    scenes = _scenes(4, seed=6)
    tifffile.imwrite(tmp_path / "scenes.tif", scenes.images)
    flags = ["--steps", "2", "--crop-size", "32", "--object-size-min", "6", "--object-size-max", "16", "--objects-min", "0.5",
             "--objects-max", "3", "--max-objects", "3", "--num-fmaps", "4", "--appearance-dims", "4", "--background-dims", "4",
             "--batch-size", "2", "--device", "cpu"]
    assert cli.main(["train", "cellsegmenter", str(tmp_path / "scenes.tif"), "--out", str(tmp_path / "model"), *flags]) == 0
    assert cli.main(["segment", str(tmp_path / "model"), str(tmp_path / "scenes.tif"), "--out", str(tmp_path / "labels.tif"),
                     "--features-out", str(tmp_path / "objects.csv")]) == 0
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == scenes.images.shape
    with open(tmp_path / "objects.csv") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "objects.csv") as f:
        assert f.readline().startswith("plane,label,area,presence,box_y0")
    expected = sum(len(np.unique(plane)) - 1 for plane in labels)
    assert len(rows) == expected
    assert "wrote" in capsys.readouterr().out


def test_features_out_is_refused_for_a_method_without_features(tmp_path, capsys):
    from probseg import cli

    image = _scenes(1).images[0]
    np.save(tmp_path / "image.npy", image)
    assert cli.main(["train", "cellulus", str(tmp_path / "image.npy"), "--out", str(tmp_path / "model"), "--steps", "1",
                     "--crop-size", "48", "--batch-size", "1", "--object-size", "12", "--device", "cpu"]) == 0
    code = cli.main(["segment", str(tmp_path / "model"), str(tmp_path / "image.npy"), "--out", str(tmp_path / "labels.tif"),
                     "--features-out", str(tmp_path / "objects.csv")])
    assert code != 0
    assert "has no object features" in capsys.readouterr().err
    assert not (tmp_path / "objects.csv").exists()
