"""InpaintAff's split step (probseg.methods.inpaintaff.split) on toy images, with a network-free inpainter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _inpainters import smooth_inpainter
from probseg.methods.inpaintaff import split
from probseg.core.errors import InputError
from probseg.partition import SPARSE_LONG_RANGE_OFFSETS


def two_objects(side: int = 32, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """(1, side, side): a flat object of 0.2 on the left half, 0.8 on the right, with a little noise."""
    img = np.full((1, side, side), 0.2, np.float32)
    img[0, :, side // 2 :] = 0.8
    return img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)


def test_band_holds_the_pixels_within_d_of_both_sides():
    region = torch.ones(1, 9, 9, dtype=torch.bool)
    inside = torch.zeros(1, 9, 9, dtype=torch.bool)
    inside[0, :, :4] = True  # M is columns 0..3, the other side 4..8
    for d, cols in ((1, [3, 4]), (2, [2, 3, 4, 5]), (3, [1, 2, 3, 4, 5, 6])):
        got = split.band(inside, region, d)[0]
        assert got.all(dim=0).tolist() == [c in cols for c in range(9)], d
        assert (got.any(dim=0) == got.all(dim=0)).all()  # whole columns
    # The field of view is a disk: a corner touches the other side only within the radius.
    inside = torch.zeros(1, 9, 9, dtype=torch.bool)
    inside[0, :4, :4] = True
    got = split.band(inside, region, 2)[0]
    assert bool(got[2, 2]) and not bool(got[1, 1])  # (1, 1) is sqrt(18) > 2 from (4, 4)


def test_band_stays_inside_the_region():
    region = torch.zeros(1, 8, 8, dtype=torch.bool)
    region[0, :, :5] = True
    inside = torch.zeros(1, 8, 8, dtype=torch.bool)
    inside[0, :, :2] = True
    got = split.band(inside, region, 4)[0]
    assert not got[:, 5:].any() and got[:, :5].any()


def test_band_width_schedule():
    widths = [split.band_width(t, 8, 6) for t in range(8)]
    assert widths[1::2] == [1, 1, 1, 1]  # d = 1 every second update
    assert widths[0] == widths[2] == 6  # constant in the first half
    assert widths[4] == 6 and widths[6] < widths[4]  # then falling


def test_each_side_predicts_its_own_object_better():
    img = torch.from_numpy(two_objects())[None]
    inside = torch.zeros(1, 32, 32, dtype=torch.bool)
    inside[0, :, :16] = True  # M is exactly the left object
    region = torch.ones_like(inside)
    inband = split.band(inside, region, 3)
    visible = torch.cat([inside & ~inband, region & ~inside & ~inband])[:, None].float()
    mean, logvar = smooth_inpainter()(torch.cat([img, img]), visible)
    rig = split.relative_information_gain(img, mean[:1], logvar[:1], mean[1:], logvar[1:], 4e-4)[0]
    band = inband[0]
    left, right = band.clone(), band.clone()
    left[:, 16:] = False
    right[:, :16] = False
    assert (rig[left] < 0).all()  # M (left) tells more about left pixels
    assert (rig[right] > 0).all()


def test_a_crooked_first_cut_moves_onto_the_object_boundary():
    img = torch.from_numpy(two_objects())[None]
    region = torch.ones(1, 32, 32, dtype=torch.bool)
    inside = torch.zeros_like(region)
    inside[0, :, :12] = True  # 4 px off the boundary at column 16
    final, gain = split.split_level(img, region, inside, smooth_inpainter(), split.SplitParams(iterations=6, max_band=4),
                                    torch.full((1, 1, 1, 1), 4e-4))
    expected = torch.zeros_like(region)
    expected[0, :, :16] = True
    assert (final == expected).float().mean() > 0.98
    assert float(gain[0]) > 1.0


def test_hierarchy_to_affinities_on_a_hand_made_partition():
    leaves = torch.tensor([[[1, 1, 2], [1, 3, 2], [0, 3, 3]]])
    offsets = [[-1, 0], [0, -1], [0, 1]]
    same, known = split.leaves_to_affinities(leaves, offsets)
    # offset (-1, 0): pixel (y, x) with (y - 1, x)
    assert same[0, 0].tolist() == [[0, 0, 0], [1, 0, 1], [0, 1, 0]]
    assert known[0, 0].tolist() == [[0, 0, 0], [1, 1, 1], [0, 1, 1]]  # (2, 0) is off the image (id 0)
    # offset (0, 1): pixel with its right neighbour
    assert same[0, 2].tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert known[0, 2].tolist() == [[1, 1, 0], [1, 1, 0], [0, 1, 0]]


def test_patch_starts_cover_the_image():
    assert split.patch_starts(100, 64, 32) == [0, 32, 36]
    assert split.patch_starts(50, 64, 32) == [0]
    starts = split.patch_starts(200, 64, 32, shift=13)
    assert starts[0] == 0 and starts[-1] == 136 and 13 in starts
    covered = np.zeros(200, bool)
    for s in starts:
        covered[s : s + 64] = True
    assert covered.all()


def _touching_pair(side: int = 48) -> np.ndarray:
    """Two touching discs of different brightness on a dark background."""
    yy, xx = np.mgrid[:side, :side]
    img = np.full((1, side, side), 0.05, np.float32)
    img[0][(yy - 24) ** 2 + (xx - 15) ** 2 < 100] = 0.5
    img[0][(yy - 24) ** 2 + (xx - 33) ** 2 < 100] = 0.95
    return img + np.random.default_rng(1).normal(0, 0.02, img.shape).astype(np.float32)


def test_batched_split_equals_one_patch_at_a_time():
    img = _touching_pair()
    params = split.SplitParams(iterations=4, max_band=3, max_depth=3, min_part=8, min_gain=0.2)
    pred = smooth_inpainter()
    kwargs = dict(patch=32, stride=16, offsets=SPARSE_LONG_RANGE_OFFSETS, params=params, seed=7, noise_var=4e-4)
    batched = split.inpaint_affinities(img, pred, patch_batch=9, chunk=64, **kwargs)
    single = split.inpaint_affinities(img, pred, patch_batch=1, chunk=1, **kwargs)
    np.testing.assert_array_equal(np.isnan(batched), np.isnan(single))
    np.testing.assert_allclose(np.nan_to_num(batched), np.nan_to_num(single), atol=1e-6)
    assert np.nanmin(batched) < 0.5 < np.nanmax(batched)  # something was split, something kept


def test_other_seed_other_hierarchies():
    img = _touching_pair()
    params = split.SplitParams(iterations=4, max_band=3, max_depth=3, min_part=8, min_gain=0.0)
    kwargs = dict(patch=32, stride=16, offsets=SPARSE_LONG_RANGE_OFFSETS, params=params, noise_var=4e-4)
    a = split.inpaint_affinities(img, smooth_inpainter(), seed=1, **kwargs)
    b = split.inpaint_affinities(img, smooth_inpainter(), seed=2, **kwargs)
    assert not np.allclose(np.nan_to_num(a), np.nan_to_num(b))


def test_affinities_separate_the_touching_discs():
    img = _touching_pair()
    params = split.SplitParams(iterations=6, max_band=3, max_depth=3, min_part=8, min_gain=0.2)
    aff = split.inpaint_affinities(img, smooth_inpainter(), patch=32, stride=8, offsets=SPARSE_LONG_RANGE_OFFSETS, params=params,
                                   seed=0, noise_var=4e-4)
    # offset (0, -9): pairs across the discs' contact (x = 24) against pairs within the right disc
    across = aff[3, 20:29, 26:31]
    within = aff[3, 20:29, 36:40]
    assert np.nanmean(across) < np.nanmean(within) - 0.3


def test_inpaint_affinities_refuses_a_plane_without_channels():
    with pytest.raises(InputError, match="expected a \\(C, Y, X\\) image"):
        split.inpaint_affinities(np.zeros((16, 16), np.float32), smooth_inpainter(), patch=16, stride=8,
                                 offsets=SPARSE_LONG_RANGE_OFFSETS, params=split.SplitParams(), seed=0)


def test_each_part_gets_a_window_around_it():
    regions = torch.zeros(3, 64, 64, dtype=torch.bool)
    regions[0, 10:20, 40:50] = True  # small: a 16 px window
    regions[1, 0:30, 0:5] = True  # tall: 32 px
    regions[2] = True  # the whole patch
    params = split.SplitParams(crop_margin=2, align=8)
    windows = split.crop_windows(regions, params)
    assert [w[0] for w in windows] == [16, 40, 64]
    for (side, y0, x0), region in zip(windows, regions):
        assert side % 8 == 0 and 0 <= y0 <= 64 - side and 0 <= x0 <= 64 - side
        inside = torch.zeros_like(region)
        inside[y0 : y0 + side, x0 : x0 + side] = True
        assert not (region & ~inside).any()
    assert split.crop_windows(regions, split.SplitParams(crop_margin=None)) == [(64, 0, 0)] * 3
