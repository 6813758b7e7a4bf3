"""InpaintAff: the inpainting network, the method's raw maps, its foregrounds and the alpha knob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probseg
from probseg.engine import api
from probseg.core.errors import InputError
from probseg.methods.inpaintaff.inpainting import InpaintingNet, PartialConv2d, disk_dilate, gaussian_nll, random_visible
from probseg.methods.inpaintaff.maps import noise_variance
from probseg.methods.inpaintaff.model import InpaintAffModel, Settings
from probseg.partition import SPARSE_LONG_RANGE_OFFSETS
from probseg.evaluation.synthetic import touching_blobs

# Small and quick: the tests check the plumbing, benchmarks/inpaintaff.py the accuracy.
TINY = {"num_fmaps": 4, "depth": 2, "crop_size": 32, "batch_size": 2, "patch_size": 32, "patch_stride": 16,
        "iterations": 2, "max_depth": 2, "min_part": 8, "min_gain": 0.0}


@pytest.fixture(scope="module")
def blobs():
    return touching_blobs((64, 64), object_size=14, density=0.5, seed=3)


@pytest.fixture(scope="module")
def model(blobs):
    image, _ = blobs
    return probseg.train("inpaintaff", image, config=TINY, steps=3, seed=0)


def test_partial_convolution_never_sees_hidden_pixels():
    torch.manual_seed(0)
    net = InpaintingNet(1, 4, 2).eval()
    image = torch.rand(1, 1, 16, 16)
    visible = torch.zeros(1, 1, 16, 16)
    visible[..., :8] = 1
    other = image.clone()
    other[..., 8:] = torch.rand(1, 1, 16, 8) * 100
    with torch.no_grad():
        a, b = net(image, visible), net(other, visible)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_partial_convolution_rescales_by_the_visible_share():
    conv = PartialConv2d(1, 1, 3)
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
        conv.conv.bias.zero_()
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, 2, 2] = 1  # one visible pixel, of value 1 (inputs are 0 where hidden)
    out, new_mask = conv(mask.clone(), mask)
    # Every window that holds the pixel sees it as if the window were full: 9 x 1.
    assert out[0, 0, 1:4, 1:4].tolist() == [[9.0] * 3] * 3
    assert new_mask[0, 0].sum() == 9 and out[0, 0, 0, 0] == 0


def test_unreached_pixels_get_the_learned_prior():
    net = InpaintingNet(1, 4, 1).eval()
    with torch.no_grad():
        net.prior.copy_(torch.tensor([0.25, -1.0]))
        mean, _ = net(torch.rand(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    assert torch.allclose(mean, torch.full_like(mean, 0.25))


def test_gaussian_nll_is_the_negative_log_density():
    x, mean, logvar = torch.tensor([[[[0.3]]]]), torch.tensor([[[[0.1]]]]), torch.tensor([[[[float(np.log(0.04))]]]])
    expected = -torch.distributions.Normal(0.1, 0.2).log_prob(torch.tensor(0.3))
    assert torch.allclose(gaussian_nll(x, mean, logvar)[0, 0, 0], expected)


def test_training_masks_hide_a_band_next_to_the_other_side():
    gen = torch.Generator().manual_seed(0)
    visible = random_visible(16, 32, 4, gen)[:, 0] > 0.5
    assert visible.shape == (16, 32, 32)
    share = visible.float().mean(dim=(1, 2))
    assert (share < 0.9).all() and (share > 0).any()
    # Some mask hides a band: its visible pixels' dilation by 1 reaches hidden pixels it does not cover.
    assert (disk_dilate(visible, 1) & ~visible).any()


def test_noise_variance_measures_added_noise():
    rng = np.random.default_rng(0)
    smooth = np.tile(np.linspace(0, 1, 128, dtype=np.float32), (128, 1))[None]
    noisy = smooth + rng.normal(0, 0.05, smooth.shape).astype(np.float32)
    assert noise_variance(smooth) < 1e-4
    assert noise_variance(noisy) == pytest.approx(0.05**2, rel=0.2)


def test_raw_maps_and_samples(model, blobs):
    image, _ = blobs
    raw = model.predict_raw(image, n_samples=2, seed=1)
    maps = raw.planes[0]
    assert set(maps) == {"affinities", "intensity", "foreground"}
    assert maps["affinities"].shape == (3, len(SPARSE_LONG_RANGE_OFFSETS), 64, 64)  # the mean, then 2 draws
    assert np.allclose(np.nanmean(maps["affinities"][1:], axis=0), maps["affinities"][0], equal_nan=True)
    assert not np.allclose(np.nan_to_num(maps["affinities"][1]), np.nan_to_num(maps["affinities"][2]))
    again = model.predict_raw(image, n_samples=2, seed=1)
    np.testing.assert_array_equal(again.planes[0]["affinities"], maps["affinities"])
    pred = model.postprocess(raw)
    assert pred.samples.shape == (2, 64, 64) and pred.segmentation.max() > 0
    shown = model.shown_maps(pred)
    assert set(shown) == {"boundaries", "affinity variance"} and shown["boundaries"].shape == (64, 64)


def test_objects_stay_inside_the_mask(model, blobs):
    image, truth = blobs
    mask = np.zeros(image.shape, bool)
    mask[:, :32] = True
    pred = model.predict(image, n_samples=1, foreground=mask)
    assert pred.segmentation.max() > 0
    assert not pred.segmentation[:, 32:].any()
    with pytest.raises(InputError, match="empty"):
        model.predict(image, n_samples=1, foreground=np.zeros(image.shape))
    with pytest.raises(InputError, match="shape"):
        model.predict(image, n_samples=1, foreground=np.ones((10, 10)))


def _toy_raw(alpha_sweep_seed: int = 0) -> dict:
    """Affinities of a 40 x 40 image with four quadrant objects, blurred by noise so alpha matters."""
    rng = np.random.default_rng(alpha_sweep_seed)
    quadrant = np.zeros((40, 40), int)
    quadrant[20:, :20], quadrant[:20, 20:], quadrant[20:, 20:] = 1, 2, 3
    aff = np.empty((len(SPARSE_LONG_RANGE_OFFSETS), 40, 40), np.float32)
    for k, (dy, dx) in enumerate(SPARSE_LONG_RANGE_OFFSETS):
        shifted = np.roll(quadrant, (-dy, -dx), axis=(0, 1))
        aff[k] = np.where(shifted == quadrant, 0.7, 0.3) + rng.uniform(-0.25, 0.25, (40, 40))
    return {"affinities": np.clip(aff, 0, 1)[None], "intensity": np.ones((40, 40), np.float32),
            "foreground": np.zeros((40, 40), np.float32)}


def test_alpha_monotonically_raises_the_object_count(model):
    raw = _toy_raw()
    counts = []
    for alpha in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0):
        seg, _ = model.instances(raw, Settings(alpha=alpha, foreground="none", min_size=1), 1)
        counts.append(int(seg.max()))
    assert counts == sorted(counts)
    assert counts[0] == 1 and counts[-1] > 4


def test_foreground_choices(model, blobs):
    raw = _toy_raw()
    with pytest.raises(InputError, match="no foreground network"):
        model.instances(raw, Settings(foreground="network"), 1)
    with pytest.raises(InputError, match="needs a foreground mask"):
        model.instances(raw, Settings(foreground="mask"), 1)
    raw["intensity"] = np.zeros((40, 40), np.float32)
    raw["intensity"][:, 20:] = 1.0
    seg, _ = model.instances(raw, Settings(foreground="threshold", min_size=1), 1)  # Otsu: the right half
    assert seg[:, 20:].all() and not seg[:, :20].any()
    raw["mask"] = np.zeros((40, 40), np.float32)
    raw["mask"][:10] = 1
    seg, _ = model.instances(raw, Settings(foreground="auto", min_size=1), 1)  # a mask wins
    assert seg[:10].all() and not seg[10:].any()


def test_foreground_network_learns_from_labels_and_survives_saving(blobs, tmp_path):
    image, truth = blobs
    m = probseg.train("inpaintaff", image, truth, config=TINY, steps=2, seed=0)
    assert m.has_foreground() and m.object_area() > 0
    raw = m.predict_raw(image, n_samples=1)
    fg = raw.planes[0]["foreground"]
    assert fg.shape == image.shape and 0 <= fg.min() and fg.max() <= 1 and np.ptp(fg) > 0
    m.save(tmp_path / "m")
    back = api.load_model(tmp_path / "m")
    assert back.has_foreground() and back.object_area() == m.object_area()
    seg = back.predict(image, n_samples=1, settings={"foreground": "network", "probability": 0.01}).segmentation
    assert seg.max() > 0


def test_labels_without_objects_are_refused(blobs):
    image, _ = blobs
    with pytest.raises(InputError, match="hold no object"):
        probseg.train("inpaintaff", image, np.zeros(image.shape, int), config=TINY, steps=1)


@pytest.mark.parametrize("change, message", [
    ({"patch_size": 34}, "patch size 34 is not a multiple of 4"),
    ({"patch_stride": 48}, "exceeds the patch size"),
    ({"crop_size": 30}, "crop size 30 is not a multiple"),
])
def test_bad_split_settings_are_refused(change, message):
    with pytest.raises(InputError, match=message):
        probseg.train("inpaintaff", np.random.default_rng(0).random((48, 48)), config={**TINY, **change}, steps=1)


def test_model_is_registered_with_optional_labels():
    info = probseg.methods.get("inpaintaff")
    assert info.labels == "optional" and info.model_class is InpaintAffModel
