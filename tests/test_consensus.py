"""Consensus: fragments, same-objectness graph, Leiden, regions, sweep."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from probseg.consensus import Consensus, Layer, fragment_graph, fragments, leiden, pixel_graph, quality, soft_pixel_graph
from probseg.consensus.nmi import weighted_nmi
from probseg.core.errors import InputError
from probseg.evaluation.metrics import f1_score
from probseg.evaluation.synthetic import perturbed_samples, touching_blobs


def _same_partition(a, b):
    """Equal up to a renaming of ids (background 0 must match exactly)."""
    return np.array_equal(a > 0, b > 0) and adjusted_rand_score(a.ravel(), b.ravel()) == 1.0


@pytest.fixture(scope="module")
def blobs():
    _, truth = touching_blobs((128, 128), object_size=16, density=0.5, seed=3)
    return truth


def _split_rectangle():
    """One 20x40 object: sample 0 sees it whole, sample 1 as two halves."""
    s = np.zeros((2, 30, 60), dtype=np.int32)
    s[0, 5:25, 10:50] = 1
    s[1, 5:25, 10:30] = 1
    s[1, 5:25, 30:50] = 2
    return s


@pytest.mark.parametrize("objective", ["cpm", "rb"])
def test_agreeing_samples_give_themselves(blobs, objective):
    c = Consensus.from_samples(np.stack([blobs] * 4))
    lo, hi = c.resolution_range(objective)
    labels = c.labels(np.sqrt(lo * hi) / 10, objective)
    assert _same_partition(labels, blobs)


def test_low_resolution_merges_high_resolution_splits():
    c = Consensus.from_samples(_split_rectangle())
    assert c.fragments.count == 2
    merged = c.labels(1e-4, "cpm")
    split = c.labels(0.05, "cpm")
    assert np.unique(merged[merged > 0]).size == 1
    assert np.unique(split[split > 0]).size == 2
    assert np.array_equal(merged > 0, split > 0)


@pytest.mark.parametrize("objective,resolution", [("cpm", 1e-3), ("cpm", 0.05), ("rb", 0.05), ("rb", 0.5)])
def test_fragment_graph_has_the_pixel_graphs_objective(objective, resolution):
    samples = _split_rectangle()
    frags = fragments([Layer(s) for s in samples], samples.shape[1:])
    fg = fragment_graph(frags)
    pg = pixel_graph(samples)
    assert fg.total_weight == pytest.approx(pg.total_weight)
    pixel_fragment = frags.map.ravel()[pg.nodes]
    # With self-loops leidenalg's CPM counts a community's possible pairs as
    # n^2 instead of n(n-1): a constant shift of gamma * N in its doubled
    # quality, the same for every partition.
    offset = {"cpm": -2 * resolution * pg.n_nodes, "rb": 0.0}[objective]
    for membership in (np.array([0, 0]), np.array([0, 1])):
        q_frag = quality(fg, membership, resolution, objective)
        q_pix = quality(pg, membership[pixel_fragment], resolution, objective)
        assert q_frag == pytest.approx(q_pix + offset, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("backend", ["igraph", "leidenalg"])
def test_fragment_graph_finds_the_pixel_graphs_partition(blobs, backend):
    samples = perturbed_samples(blobs, 6, split=0.2, merge=0.2, seed=1)[:, :48, :48]
    frags = fragments([Layer(s) for s in samples], samples.shape[1:])
    fg, pg = fragment_graph(frags), pixel_graph(samples)
    for gamma in (3e-3, 1e-2):
        m_frag = leiden(fg, gamma, "cpm", backend=backend, n_iterations=-1)
        m_pix = leiden(pg, gamma, "cpm", backend=backend, n_iterations=-1)
        from_frag = m_frag[frags.map.ravel()[pg.nodes]]
        # Leiden is a heuristic on two different graphs: allow a pixel or two.
        assert adjusted_rand_score(from_frag, m_pix) > 0.98


def test_soft_one_hot_masks_equal_hard_labels():
    samples = _split_rectangle()
    onehot = np.stack([np.eye(3, dtype=np.float32)[s].transpose(2, 0, 1) for s in samples])
    hard, soft = pixel_graph(samples), soft_pixel_graph(onehot)
    np.testing.assert_array_equal(hard.nodes, soft.nodes)
    np.testing.assert_array_equal(hard.edges, soft.edges)
    np.testing.assert_allclose(hard.weights, soft.weights)


def test_soft_masks_weight_is_the_product_of_probabilities():
    p = np.zeros((1, 2, 1, 2), dtype=np.float32)
    p[0, 0] = 0.4  # background
    p[0, 1] = 0.6
    g = soft_pixel_graph(p, radius=1)
    assert g.weights.tolist() == pytest.approx([0.36])


@pytest.mark.parametrize("backend", ["igraph", "leidenalg"])
def test_same_seed_same_result(blobs, backend):
    samples = perturbed_samples(blobs, 8, seed=4)
    a = Consensus.from_samples(samples, backend=backend).labels(2e-3, seed=7)
    b = Consensus.from_samples(samples, backend=backend).labels(2e-3, seed=7)
    np.testing.assert_array_equal(a, b)


def test_consensus_beats_the_samples_it_came_from(blobs):
    samples = perturbed_samples(blobs, 16, split=0.15, merge=0.15, seed=5)
    c = Consensus.from_samples(samples)
    sweep = c.sweep()
    best = c.labels(sweep.best)
    assert f1_score(best, blobs) > 0.95
    assert f1_score(best, blobs) > max(f1_score(s, blobs) for s in samples)
    assert sweep.nmi.shape == sweep.resolutions.shape == sweep.n_objects.shape
    assert sweep.nmi[sweep.best_index] == pytest.approx(sweep.nmi.max(), abs=1e-4)
    # More resolution, never fewer objects at the ends of the grid.
    assert sweep.n_objects[0] < sweep.n_objects[-1]


def test_region_mode_leaves_the_outside_alone(blobs):
    samples = perturbed_samples(blobs, 8, seed=6)
    c = Consensus.from_samples(samples)
    before = c.labels(2e-3)
    rect = (30, 40, 90, 100)
    for gamma in (1e-5, 0.05):
        after = c.update_region(before, rect, gamma)
        outside = np.ones(before.shape, bool)
        outside[30:90, 40:100] = False
        np.testing.assert_array_equal(after[outside], before[outside])
    assert after is not before


def test_region_keeps_ids_of_objects_cut_by_its_border(blobs):
    samples = np.stack([blobs] * 3)
    c = Consensus.from_samples(samples)
    before = c.labels(1e-3)
    rect = (30, 40, 90, 100)
    after = c.update_region(before, rect, 1e-3)
    # Every object keeps its extent, so ids across the border must match.
    assert _same_partition(after, before)
    for obj in np.unique(before[30:90, 40:100]):
        if obj == 0:
            continue
        ids = np.unique(after[before == obj])
        assert ids.size == 1


def test_region_gives_the_whole_image_result_inside(blobs):
    samples = perturbed_samples(blobs, 8, seed=8)
    c = Consensus.from_samples(samples)
    whole = c.labels(2e-3)
    region = c.region((0, 0, 128, 128))
    np.testing.assert_array_equal(c.region_labels(region, 2e-3), whole)


def test_windows_fuse_without_seams(blobs):
    # Windows of 48 px every 16 px: each pixel inside is seen up to 9 times.
    windows = []
    for y in range(0, 128 - 48 + 1, 16):
        for x in range(0, 128 - 48 + 1, 16):
            windows.append(((y, x), blobs[y : y + 48, x : x + 48]))
    c = Consensus.from_windows(windows, blobs.shape)
    labels = c.labels(1e-3)
    assert _same_partition(labels, blobs)
    # A window sees only part of an object at its edge; the others complete it.
    assert c.fragments.signatures.shape[1] == len(windows)


def test_weighted_nmi_matches_scikit_learn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 400)
    b = (a + (rng.random(400) < 0.3) * rng.integers(0, 3, 400)) % 6
    assert weighted_nmi(a, b, np.ones(400)) == pytest.approx(normalized_mutual_info_score(a, b))
    # Items with weights equal repeated items.
    w = rng.integers(1, 4, 400)
    assert weighted_nmi(a, b, w) == pytest.approx(normalized_mutual_info_score(np.repeat(a, w), np.repeat(b, w)))


@pytest.mark.parametrize(
    "samples,match",
    [
        (np.zeros((2, 3, 4, 5), dtype=np.int32), "must be \\(n, Y, X\\)"),
        (np.full((2, 4, 4), 0.5), "integer instance labels"),
        (np.full((2, 4, 4), -1), "negative"),
        (np.zeros((0, 4, 4), dtype=np.int32), "empty"),
    ],
)
def test_bad_samples_get_one_line_messages(samples, match):
    with pytest.raises(InputError, match=match):
        Consensus.from_samples(samples)


def test_bad_settings_get_one_line_messages(blobs):
    c = Consensus.from_samples(np.stack([blobs] * 2))
    with pytest.raises(InputError, match="objective"):
        c.labels(1.0, "louvain")
    with pytest.raises(InputError, match="positive"):
        c.labels(-1.0)
    with pytest.raises(InputError, match="does not overlap"):
        c.region((500, 500, 600, 600))
    with pytest.raises(InputError, match="outside"):
        Consensus.from_windows([((100, 100), blobs)], blobs.shape)


def test_empty_samples_give_an_empty_consensus():
    c = Consensus.from_samples(np.zeros((3, 20, 20), dtype=np.int32))
    assert c.graph.n_nodes == 0
    assert c.labels(1e-3).max() == 0
    assert c.update_region(None, (0, 0, 10, 10), 1e-3).max() == 0


def test_perturbed_samples_make_mistakes_but_not_too_many(blobs):
    samples = perturbed_samples(blobs, 5, split=0.2, merge=0.2, seed=0)
    assert samples.shape == (5,) + blobs.shape and samples.dtype == np.int32
    scores = [f1_score(s, blobs) for s in samples]
    assert all(0.5 < f < 1.0 for f in scores)
    exact = perturbed_samples(blobs, 2, split=0, merge=0, jitter=False)
    assert _same_partition(exact[0], blobs)


def test_sweep_counts_the_objects_labels_gives(blobs):
    # Communities that fall apart or are smaller than min_size used to be
    # counted as they were, so Auto reported another count than it applied.
    samples = perturbed_samples(blobs, 8, split=0.15, merge=0.15, seed=5)
    c = Consensus.from_samples(samples)
    sweep = c.sweep(min_size=20)
    assert sweep.min_size == 20 and sweep.windows == ()
    assert [int(n) for n in sweep.n_objects] == [int(c.labels(r, min_size=20).max()) for r in sweep.resolutions]
    region = c.region((20, 30, 70, 90))
    inside = c.sweep(region=region, min_size=5)
    assert inside.windows == ((20, 30, 70, 90),)
    assert [int(n) for n in inside.n_objects] == [int(c.region_labels(region, r, min_size=5).max()) for r in inside.resolutions]


def test_sweep_windows_samples_windows_over_the_whole_image():
    _, truth = touching_blobs((384, 320), object_size=16, density=0.5, seed=3)
    c = Consensus.from_samples(perturbed_samples(truth, 8, split=0.15, merge=0.15, seed=5))
    sweep = c.sweep_windows(window=96, max_windows=4, min_size=10)
    assert len(sweep.windows) == 4 and len(set(sweep.windows)) == 4
    for y0, x0, y1, x1 in sweep.windows:
        assert 0 <= y0 < y1 <= 384 and 0 <= x0 < x1 <= 320 and (y1 - y0, x1 - x0) == (96, 96)
    # The windows span the image rather than one corner.
    assert min(w[0] for w in sweep.windows) == 0 and max(w[2] for w in sweep.windows) == 384
    expected = sum(int(c.region_labels(c.region(w), sweep.best, min_size=10).max()) for w in sweep.windows)
    assert sweep.n_objects[sweep.best_index] == expected
    assert f1_score(c.labels(sweep.best, min_size=10), truth) > 0.95


def test_sweep_windows_on_a_small_image_is_the_whole_sweep(blobs):
    c = Consensus.from_samples(perturbed_samples(blobs, 8, seed=6))
    small = c.sweep_windows(window=256)
    whole = c.sweep()
    assert small.windows == () and small.best == whole.best
    np.testing.assert_array_equal(small.nmi, whole.nmi)


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=8), "at least 16"), (dict(window=64.5), "whole number"), (dict(max_windows=0), "at least 1 window"),
    (dict(resolutions=[1e-3, -1.0]), "positive"),
])
def test_sweep_windows_bad_settings(blobs, kwargs, match):
    c = Consensus.from_samples(np.stack([blobs] * 2))
    with pytest.raises(InputError, match=match):
        c.sweep_windows(**kwargs)


@pytest.mark.parametrize("extra", [[], ["--region", "10,10,70,80"]])
def test_cli_auto_prints_the_count_it_writes(tmp_path, capsys, extra):
    import re

    import tifffile

    from probseg import cli

    _, truth = touching_blobs((96, 96), object_size=14, seed=2)
    tifffile.imwrite(tmp_path / "samples.tif", perturbed_samples(truth, 8, split=0.2, merge=0.2, seed=1).astype(np.uint16))
    out = tmp_path / "c.tif"
    assert cli.main(["consensus", str(tmp_path / "samples.tif"), "--out", str(out), "--min-size", "30", *extra]) == 0
    text = capsys.readouterr().out
    printed = int(re.search(r"auto resolution .*, (\d+) objects", text).group(1))
    labels = tifffile.imread(out)
    if extra:
        assert "objects in the region" in text
        labels = labels[10:70, 10:80]
    assert printed == np.unique(labels[labels > 0]).size
