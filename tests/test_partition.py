"""The partition toolbox: components, mean-shift, affinities, mutex and seeded watershed."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from probseg.core.errors import InputError
from probseg.partition import (
    DEFAULT_OFFSETS,
    connected_components,
    embedding_affinities,
    mean_shift,
    meanshift_instances,
    mutex_watershed,
    offsets_for_object_size,
    seeded_watershed,
    split_and_filter,
)


def _same_partition(a, b):
    """True when label images a and b hold the same objects up to renumbering (0 stays 0)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _touching_squares():
    """Two 20 x 20 squares sharing a vertical edge, inside a 30 x 50 image."""
    truth = np.zeros((30, 50), np.int32)
    truth[5:25, 5:25] = 1
    truth[5:25, 25:45] = 2
    return truth


def _blob_embeddings(truth, noise, seed=0):
    """2-D embedding per pixel: its object's centre (in px) plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    emb = np.zeros((2,) + truth.shape, np.float32)
    fg = truth > 0
    ys, xs = np.nonzero(fg)
    ids = truth[fg]
    centres = np.array([[ys[ids == i].mean(), xs[ids == i].mean()] for i in range(1, truth.max() + 1)])
    emb[:, fg] = (centres[ids - 1] + rng.normal(0, noise, (fg.sum(), 2))).T
    return emb


# -- connected components -----------------------------------------------------------------------


def test_connected_components_splits_separates_and_filters():
    lab = np.zeros((20, 20), np.int32)
    lab[1:4, 1:4] = 5  # 9 px, one place
    lab[10:12, 1:2] = 5  # 2 px, same id elsewhere
    lab[1:4, 4:8] = 7  # 12 px, touching id 5
    out = connected_components(lab)
    assert out.dtype == np.int32 and out.max() == 3
    assert len(np.unique(out[1:4, 1:4])) == 1 and out[1, 1] != out[1, 4] != out[10, 1]
    filtered = connected_components(lab, min_size=5)
    assert filtered.max() == 2 and (filtered[10:12, 1] == 0).all()
    assert sorted(np.bincount(filtered.ravel())[1:]) == [9, 12]
    # A boolean mask works too, and the old name is the same function.
    assert connected_components(lab > 0, min_size=10).max() == 1
    np.testing.assert_array_equal(split_and_filter(lab, 5), filtered)


# -- embedding affinities -----------------------------------------------------------------------


def test_embedding_affinities_values_and_borders():
    emb = np.zeros((3, 6, 40), np.float32)
    emb[0, :, 20:] = 100.0  # far from the left half
    emb[1, :, 10] = 2.0  # column 10 at distance delta=2 from its neighbours
    offsets = np.array([[0, -1], [-1, 0], [0, -27], [0, 3]])
    aff = embedding_affinities(emb, offsets, delta=2.0)
    assert aff.shape == (4, 6, 40) and aff.dtype == np.float32 and np.isfinite(aff).all()
    assert aff[0, :, 1:10].min() == pytest.approx(1.0)  # same embedding
    assert aff[0, :, 20] == pytest.approx(0.0, abs=1e-6)  # far: 100 / 2 = 50 deltas
    np.testing.assert_allclose(aff[0, :, 10], 0.5, rtol=1e-5)  # d = delta gives 0.5
    np.testing.assert_allclose(aff[0, :, 11], 0.5, rtol=1e-5)
    # Partners outside the image give 0: left column for [0,-1], top row for [-1,0], ...
    assert (aff[0, :, 0] == 0).all() and (aff[1, 0, :] == 0).all()
    flat = embedding_affinities(np.zeros((2, 6, 40)), offsets + [[0, 0], [0, 0], [0, 0], [-30, 0]])
    assert (flat[2, :, :27] == 0).all() and (flat[2, :, 27:] == 1).all()
    assert (flat[0, :, 0] == 0).all() and (flat[0, :, 1:] == 1).all()
    assert (flat[3] == 0).all()  # [-30, 3] leaves a 6-row image
    spoco = embedding_affinities(emb, offsets, delta=2.0, kernel="hinge")
    np.testing.assert_allclose(spoco[0, :, 10], 0.25, rtol=1e-5)  # (1 - 2 / 4)**2
    assert spoco[0, :, 20].max() == 0.0


def test_offsets():
    assert DEFAULT_OFFSETS.shape == (8, 2)
    np.testing.assert_array_equal(offsets_for_object_size(27), DEFAULT_OFFSETS)
    assert len(offsets_for_object_size(5)) == 4
    with pytest.raises(InputError):
        embedding_affinities(np.zeros((2, 5, 5)), [[0, 0]])


# -- mutex watershed ----------------------------------------------------------------------------


def test_mutex_watershed_splits_touching_squares():
    truth = _touching_squares()
    emb = _blob_embeddings(truth, noise=0.5)
    aff = embedding_affinities(emb, DEFAULT_OFFSETS, delta=4.0)
    # The boundary between the squares has low affinity, the inside high.
    assert aff[1, 5:25, 25].max() < 0.01 and aff[1, 5:25, 6:25].mean() > 0.9
    labels = mutex_watershed(aff, DEFAULT_OFFSETS, mask=truth > 0)
    assert labels.dtype == np.int32
    assert _same_partition(labels, truth)
    np.testing.assert_array_equal(labels[truth > 0].min(), 1)
    # Without the low boundary affinities the two squares are one object.
    assert mutex_watershed(np.ones_like(aff), DEFAULT_OFFSETS, mask=truth > 0).max() == 1
    # NaN affinities are no edges, never a crash; no mask: all pixels labelled.
    aff[:, 0, 0] = np.nan
    full = mutex_watershed(aff, DEFAULT_OFFSETS, strides=1)
    assert (full > 0).all() and (full.max() >= 3)


def test_mutex_watershed_knobs_change_object_count_monotonically():
    rng = np.random.default_rng(3)
    from scipy import ndimage as ndi

    # Random-ish affinities: smooth random embeddings, so there is structure at all scales.
    emb = np.stack([ndi.gaussian_filter(rng.normal(size=(96, 96)), 3) * 30 for _ in range(3)])
    aff = embedding_affinities(emb, DEFAULT_OFFSETS, delta=2.0)
    biases = np.linspace(0.05, 0.95, 10)
    counts = [mutex_watershed(aff, DEFAULT_OFFSETS, bias=b).max() for b in biases]
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert counts[-1] > 5 * counts[0], counts
    alphas = [0.25, 0.5, 1.0, 2.0, 4.0]
    counts = [mutex_watershed(aff, DEFAULT_OFFSETS, alpha=a).max() for a in alphas]
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts
    assert counts[0] > counts[-1], counts


# -- mean-shift ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 5])
def test_mean_shift_recovers_gaussian_clusters(dims):
    rng = np.random.default_rng(dims)
    sizes = [400, 250, 150, 60]
    centres = rng.uniform(-20, 20, (len(sizes), dims))
    centres[1] = centres[0] + 6 / np.sqrt(dims)  # 6 apart: separate at bandwidth 2, not at 8
    truth = np.repeat(np.arange(len(sizes)), sizes)
    points = centres[truth] + rng.normal(0, 0.4, (len(truth), dims))
    labels = mean_shift(points, 2.0)
    assert labels.dtype == np.int64 and labels.shape == truth.shape
    assert adjusted_rand_score(truth, labels) == 1.0
    # Densest mode first: the biggest cluster is 0, the smallest the last.
    assert (labels[truth == 0] == 0).all() and (labels[truth == 3] == 3).all()
    # The torch code (on the CPU here) gives the same clusters, as does the 2-D grid.
    np.testing.assert_array_equal(mean_shift(points, 2.0, backend="torch", device="cpu"), labels)
    if dims == 2:
        np.testing.assert_array_equal(mean_shift(points, 2.0, backend="grid"), labels)
    # Too large a bandwidth merges the two close clusters.
    merged = mean_shift(points, 8.0)
    assert (merged[truth == 0] == merged[truth == 1][0]).all()
    # Nearest-mode assignment finds the same well-separated clusters.
    assert adjusted_rand_score(truth, mean_shift(points, 2.0, assign="nearest")) == 1.0


def test_mean_shift_rejects_bad_input():
    with pytest.raises(InputError):
        mean_shift(np.zeros((5, 2)), 0.0)
    with pytest.raises(InputError):
        mean_shift(np.zeros((5, 3)), 1.0, backend="grid")
    with pytest.raises(InputError):
        mean_shift(np.zeros((5, 2)), 1.0, assign="farthest")
    assert mean_shift(np.zeros((0, 4)), 1.0).shape == (0,)


def test_meanshift_instances_any_dimension():
    truth = _touching_squares()
    emb2 = _blob_embeddings(truth, noise=0.5)
    emb3 = np.concatenate([emb2, np.where(truth > 0, truth * 0.1, 0)[None]]).astype(np.float32)
    for emb in (emb2, emb3):
        labels = meanshift_instances(emb, truth > 0, bandwidth=3.0, min_size=5)
        assert labels.dtype == np.int32 and _same_partition(labels, truth)
    with pytest.raises(InputError):
        meanshift_instances(emb2[:, :10], truth > 0, 3.0)


# -- seeded watershed ---------------------------------------------------------------------------


def test_seeded_watershed_splits_touching_disks():
    yy, xx = np.mgrid[:50, :70]
    disks = [(25, 22), (25, 44)]  # radius 12, centres 22 apart: they overlap
    truth = np.zeros((50, 70), np.int32)
    for i, (cy, cx) in enumerate(disks, 1):
        truth[((yy - cy) ** 2 + (xx - cx) ** 2 <= 144) & (truth == 0)] = i
    prob = (truth > 0) * 0.9 + 0.05
    assert connected_components(truth > 0).max() == 1  # one blob to split
    for kwargs in ({}, {"h": 1.0}, {"seeds": np.isin(np.arange(70), [22, 44])[None, :] * (yy == 25)}):
        labels = seeded_watershed(prob, min_distance=5, **kwargs)
        assert labels.dtype == np.int32 and labels.max() == 2, kwargs
        assert adjusted_rand_score(truth.ravel(), labels.ravel()) > 0.9, kwargs
    # One seed in the middle of the blob: one object; min_size drops everything.
    one = np.zeros((50, 70), bool)
    one[25, 33] = True
    assert seeded_watershed(prob, seeds=one).max() == 1
    assert seeded_watershed(prob, seeds=one, min_size=10_000).max() == 0
