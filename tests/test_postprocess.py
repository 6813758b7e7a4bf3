"""Uncertainty, mean-shift clustering, label clean-up and embedding display.

The partition functions come from :mod:`probseg.partition`; the cases here
complement tests/test_partition.py (comparison with scikit-learn, translation
invariance, ideal embedding fields, 4-connectivity, erosion).
"""

import numpy as np
import pytest
from sklearn.cluster import MeanShift
from sklearn.metrics import adjusted_rand_score

from probseg.core.errors import InputError
from probseg.partition import mean_shift, meanshift_instances, shrink, split_and_filter
from probseg.consensus.uncertainty import pixel_disagreement
from probseg.evaluation.visualize import embeddings_to_rgb


def _same_partition(a, b):
    """True when label images a and b hold the same objects up to renumbering (0 stays 0)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _two_objects():
    lab = np.zeros((40, 50), np.int32)
    lab[5:20, 5:20] = 1
    lab[22:35, 25:45] = 2
    return lab


# =============================================================================================
# pixel_disagreement
# =============================================================================================


def test_identical_samples_give_zero():
    lab = _two_objects()
    out = pixel_disagreement(np.stack([lab, lab, lab]))
    assert out.shape == lab.shape and out.dtype == np.float32
    assert np.all(out == 0)


def test_relabelled_identical_samples_give_zero():
    lab = _two_objects()
    permuted = np.select([lab == 1, lab == 2], [7, 3], 0)
    out = pixel_disagreement(np.stack([lab, permuted, lab * 10]))
    assert np.all(out == 0)


def test_single_sample_gives_zero():
    assert np.all(pixel_disagreement(_two_objects()[None]) == 0)


def test_split_object_is_uncertain_along_the_split_only():
    whole = np.zeros((30, 60), np.int32)
    whole[5:25, 10:50] = 1
    split = whole.copy()
    split[5:25, 30:50] = 2  # split between columns 29 and 30
    out = pixel_disagreement(np.stack([whole, split]), distance=2)
    assert out.min() >= 0 and out.max() <= 1
    # high along the disputed line inside the object
    line = out[8:22, 28:32]
    assert line.min() > 0.2
    # a pixel next to the line has 3 of its 8 neighbour pairs crossing it, each split 50:50
    np.testing.assert_allclose(out[8:22, 29:31], 3 / 8)
    # zero far from it: inside the object, and in the background
    assert np.all(out[5:25, 10:26] == 0)
    assert np.all(out[5:25, 34:50] == 0)
    assert np.all(out[0:3] == 0) and np.all(out[27:] == 0)


def test_foreground_disagreement():
    a = np.zeros((20, 20), np.int32)
    a[5:15, 5:15] = 1
    b = np.zeros_like(a)  # second sample sees nothing
    out = pixel_disagreement(np.stack([a, b]))
    assert np.all(out[7:13, 7:13] == 1.0), "half the samples say foreground: maximal disagreement"
    assert np.all(out[0:2] == 0)


def test_disagreement_respects_symmetry():
    """Transposing or flipping all samples transposes or flips the result (checks the neighbour indexing)."""
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 4, size=(3, 17, 23))
    out = pixel_disagreement(samples)
    np.testing.assert_allclose(pixel_disagreement(samples.transpose(0, 2, 1)), out.T, atol=1e-6)
    np.testing.assert_allclose(pixel_disagreement(samples[:, ::-1]), out[::-1], atol=1e-6)
    np.testing.assert_allclose(pixel_disagreement(samples[:, :, ::-1]), out[:, ::-1], atol=1e-6)


def test_disagreement_values_in_unit_interval():
    rng = np.random.default_rng(1)
    for n in (2, 3, 5):
        out = pixel_disagreement(rng.integers(0, 5, size=(n, 25, 25)))
        assert out.min() >= 0 and out.max() <= 1
        assert out.max() > 0


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.int32),  # 2-D
        np.zeros((2, 3, 10, 10), np.int32),  # 4-D
        np.zeros((2, 10, 10), np.float32),  # floats
        np.zeros((2, 10, 10), bool),
    ],
)
def test_disagreement_rejects_bad_input(bad):
    with pytest.raises(InputError):
        pixel_disagreement(bad)


# =============================================================================================
# clustering
# =============================================================================================


def _gaussian_clusters(seed=0, n=80, std=2.0):
    rng = np.random.default_rng(seed)
    centres = np.array([[20.0, 20.0], [20.0, 80.0], [80.0, 50.0], [60.0, 95.0]])
    points = np.concatenate([c + rng.normal(0, std, (n, 2)) for c in centres])
    truth = np.repeat(np.arange(len(centres)), n)
    return points, truth, centres


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_shift_recovers_separated_clusters_like_sklearn(seed):
    points, truth, centres = _gaussian_clusters(seed)
    labels = mean_shift(points, 8.0)
    assert labels.shape == (len(points),) and labels.dtype == np.int64
    np.testing.assert_array_equal(np.unique(labels), np.arange(4))
    modes = np.stack([points[labels == k].mean(axis=0) for k in range(4)])
    assert adjusted_rand_score(truth, labels) > 0.95
    reference = MeanShift(bandwidth=8.0, bin_seeding=True).fit(points)
    assert adjusted_rand_score(reference.labels_, labels) > 0.95
    # each mode lies near one true centre
    dist = np.linalg.norm(modes[:, None] - centres[None], axis=2)
    assert sorted(dist.argmin(axis=1)) == [0, 1, 2, 3]
    assert dist.min(axis=1).max() < 2.0


def test_mean_shift_translation_invariant():
    points, truth, _ = _gaussian_clusters(2)
    a = mean_shift(points, 8.0)
    b = mean_shift(points + np.array([-500.3, 1234.7]), 8.0)
    assert adjusted_rand_score(a, b) == 1.0
    assert adjusted_rand_score(a, mean_shift(points + np.array([-500.3, 1234.7]), 8.0, backend="grid")) == 1.0


def test_mean_shift_merges_with_large_bandwidth():
    points, _, _ = _gaussian_clusters(3)
    labels = mean_shift(points, 200.0)
    assert np.all(labels == 0)


def _ideal_field():
    """Objects, some touching, and embeddings where every pixel of object k sits at its centre."""
    lab = np.zeros((60, 70), np.int32)
    lab[5:17, 5:17] = 1
    lab[5:17, 17:29] = 2  # touches object 1
    yy, xx = np.mgrid[:60, :70]
    lab[(yy - 40) ** 2 + (xx - 20) ** 2 <= 64] = 3
    lab[30:52, 40:50] = 4
    lab[30:52, 50:62] = 5  # touches object 4
    emb = np.zeros((2, 60, 70), np.float64)
    for k in range(1, 6):
        mask = lab == k
        emb[0][mask] = yy[mask].mean()
        emb[1][mask] = xx[mask].mean()
    return lab, emb


def test_meanshift_instances_recovers_an_ideal_field():
    lab, emb = _ideal_field()
    out = meanshift_instances(emb, lab > 0, 4.0)
    assert out.shape == lab.shape and out.dtype == np.int32
    assert _same_partition(out, lab)
    np.testing.assert_array_equal(np.unique(out), np.arange(6))


def test_meanshift_instances_with_noise_and_min_size():
    lab, emb = _ideal_field()
    noisy = emb + np.random.default_rng(0).normal(0, 0.7, emb.shape)
    out = meanshift_instances(noisy, lab > 0, 4.0)
    assert _same_partition(out, lab)
    # objects 1 and 2 (12 x 12 = 144 px) vanish when min_size exceeds their size; 3, 4, 5 stay
    sizes = np.bincount(lab.ravel())[1:]
    assert list(sizes[:2]) == [144, 144] and sizes[2:].min() > 150
    out = meanshift_instances(emb, lab > 0, 4.0, min_size=150)
    assert out.max() == 3
    assert np.all(out[(lab == 1) | (lab == 2)] == 0)
    assert _same_partition(out, np.where(lab > 2, lab, 0))


def test_meanshift_instances_empty_foreground():
    emb = np.random.default_rng(0).random((2, 20, 30))
    out = meanshift_instances(emb, np.zeros((20, 30), bool), 5.0)
    assert out.shape == (20, 30) and out.dtype == np.int32
    assert not out.any()


def test_meanshift_instances_rejects_embeddings_without_an_embedding_axis():
    with pytest.raises(InputError, match="embeddings"):
        meanshift_instances(np.zeros((10, 10)), np.ones((10, 10), bool), 5.0)


# =============================================================================================
# label clean-up (splitting, filtering and renumbering are also in tests/test_partition.py)
# =============================================================================================


def test_split_and_filter_uses_4_connectivity():
    lab = np.zeros((10, 10), np.int32)
    lab[2, 2] = lab[3, 3] = 1  # diagonal neighbours
    out = split_and_filter(lab, 0)
    assert out.max() == 2


def test_split_and_filter_removes_small_objects_and_renumbers():
    lab = np.zeros((40, 40), np.int32)
    lab[1:11, 1:11] = 4  # 100 px
    lab[20:23, 20:23] = 7  # 9 px
    lab[30:38, 30:38] = 12  # 64 px
    lab[15, 30] = 4  # 1 px piece of object 4
    out = split_and_filter(lab, 10)
    np.testing.assert_array_equal(np.unique(out), [0, 1, 2])
    assert np.all(out[20:23, 20:23] == 0)
    assert out[15, 30] == 0
    assert np.all(out[1:11, 1:11] == out[1, 1]) and np.all(out[30:38, 30:38] == out[30, 30])
    # min_size equal to a size keeps it (strictly smaller objects go)
    assert split_and_filter(lab, 9).max() == 3


def test_split_and_filter_empty():
    out = split_and_filter(np.zeros((10, 10), np.int32), 5)
    assert out.dtype == np.int32 and not out.any()


def _touching_squares():
    lab = np.zeros((14, 24), np.int32)
    lab[2:11, 2:11] = 1  # 9x9
    lab[2:11, 11:20] = 2  # touching on the right
    lab[12, 22] = 3  # a single pixel
    lab[0:2, 21:23] = 4  # 2x2 at the image edge
    return lab


@pytest.mark.parametrize("pixels", [1, 2, 3, 10])
def test_shrink_separates_touching_objects_and_keeps_all(pixels):
    lab = _touching_squares()
    out = shrink(lab, pixels)
    assert out.shape == lab.shape and out.dtype == lab.dtype
    # never deletes an object, never invents or moves one
    np.testing.assert_array_equal(np.unique(out), np.unique(lab))
    assert np.all((out == 0) | (out == lab))
    # only removes pixels
    assert (out > 0).sum() < (lab > 0).sum()
    # the touching border is cleared on both sides
    assert np.all(out[:, 10] == 0) and np.all(out[:, 11] == 0)
    # objects 1 and 2 no longer touch
    ones, twos = out == 1, out == 2
    assert not np.any(ones[:, :-1] & twos[:, 1:])


def test_shrink_zero_is_identity():
    lab = _touching_squares()
    np.testing.assert_array_equal(shrink(lab, 0), lab)


def test_shrink_more_removes_more():
    lab = _touching_squares()
    sizes = [(shrink(lab, p) > 0).sum() for p in (0, 1, 2, 3)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[1] > sizes[2] > sizes[3]


@pytest.mark.parametrize("pixels", [1, 2])
def test_shrink_erodes_by_exactly_the_given_pixels(pixels):
    lab = np.zeros((15, 15), np.int32)
    lab[3:12, 3:12] = 1  # a lone 9x9 square
    out = shrink(lab, pixels)
    expected = np.zeros_like(lab)
    expected[3 + pixels : 12 - pixels, 3 + pixels : 12 - pixels] = 1
    np.testing.assert_array_equal(out, expected)


# =============================================================================================
# visualize
# =============================================================================================


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_embeddings_to_rgb(d):
    rng = np.random.default_rng(d)
    emb = rng.normal(0, 10, (d, 20, 30)).astype(np.float32)
    rgb = embeddings_to_rgb(emb)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.float32
    assert np.isfinite(rgb).all()
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert rgb.std() > 0.05, "the percentile stretch should use the range"
    if d == 1:
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    if d == 2:
        assert np.all(rgb[..., 2] == 0)
        # red follows the first channel monotonically
        order = np.argsort(emb[0].ravel())
        assert np.all(np.diff(rgb[..., 0].ravel()[order]) >= 0)


def test_embeddings_to_rgb_constant_channel_is_finite():
    emb = np.zeros((3, 10, 10), np.float32)
    emb[0] = np.arange(10)[None]
    rgb = embeddings_to_rgb(emb)
    assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1


def test_embeddings_to_rgb_pca_sign_is_stable():
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (4, 16, 16))
    a = embeddings_to_rgb(emb)
    b = embeddings_to_rgb(emb + 100.0)  # shifting all channels changes no principal axis
    np.testing.assert_allclose(a, b, atol=1e-4)
