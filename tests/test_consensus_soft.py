"""The soft-mask consensus of overlapping windows: exact against the hard consensus and brute force."""

import numpy as np
import pytest

from probseg.core.callbacks import Callbacks
from probseg.consensus import Consensus, Layer, fragments, quality, soft_consensus, soft_pixel_graph
from probseg.consensus.graph import Graph, half_disc
from probseg.core.errors import InputError


def _origins(shape, window, step):
    ys = sorted(set(list(range(0, shape[0] - window[0] + 1, step[0])) + [shape[0] - window[0]]))
    xs = sorted(set(list(range(0, shape[1] - window[1] + 1, step[1])) + [shape[1] - window[1]]))
    return [(y, x) for y in ys for x in xs]


def _soft_windows(seed, shape=(30, 36), window=(14, 16), step=(5, 6), max_draws=3, max_k=4, block=3):
    """Random soft masks of overlapping windows, blobby so that fragments have several pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for origin in _origins(shape, window, step):
        n, k = int(rng.integers(1, max_draws + 1)), int(rng.integers(0, max_k + 1))
        coarse = rng.normal(scale=2.0, size=(n, k + 1, -(-window[0] // block), -(-window[1] // block)))
        logits = np.repeat(np.repeat(coarse, block, 2), block, 3)[:, :, : window[0], : window[1]]
        logits = logits + rng.normal(scale=0.3, size=logits.shape)
        p = np.exp(logits - logits.max(1, keepdims=True))
        out.append((origin, (p / p.sum(1, keepdims=True)).astype(np.float32)))
    return out


def _hard_windows(seed, shape=(40, 44), window=(18, 20), step=(6, 6), max_draws=3):
    """Window labelings of random discs: each draw merges or drops some, and windows renumber."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, dtype=np.int64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, 16):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(3, 7)
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    out = []
    for y0, x0 in _origins(shape, window, step):
        draws = []
        for _ in range(int(rng.integers(1, max_draws + 1))):
            lut = np.arange(16)
            merge = rng.integers(1, 16, size=2)
            lut[merge[0]] = merge[1]
            lut[rng.integers(1, 16)] = 0
            crop = lut[truth[y0 : y0 + window[0], x0 : x0 + window[1]]]
            _, relabelled = np.unique(crop, return_inverse=True)
            draws.append(relabelled.reshape(crop.shape) + (0 if (crop == 0).any() else 1))
        out.append(((y0, x0), np.stack(draws)))
    return out, shape


def _one_hot(labels):
    return np.eye(int(labels.max()) + 1, dtype=np.float32)[labels].transpose(0, 3, 1, 2)


def _brute_force(windows, shape, radius, frag_map):
    """Per fragment pair (and per fragment): summed pixel-pair weight and pair count, straight from the definition."""
    num = {}
    for dy, dx in half_disc(radius):
        top = np.zeros(shape)
        cov = np.zeros(shape)
        for (y0, x0), probs in windows:
            probs = probs if probs.ndim == 4 else probs[None]
            for p in probs.astype(np.float64):
                full = np.zeros((p.shape[0],) + shape)
                inside = np.zeros(shape, dtype=bool)
                full[:, y0 : y0 + p.shape[1], x0 : x0 + p.shape[2]] = p
                inside[y0 : y0 + p.shape[1], x0 : x0 + p.shape[2]] = True
                for y in range(shape[0]):
                    for x in range(shape[1]):
                        yb, xb = y + dy, x + dx
                        if 0 <= yb < shape[0] and 0 <= xb < shape[1] and inside[y, x] and inside[yb, xb]:
                            top[y, x] += float((full[1:, y, x] * full[1:, yb, xb]).sum())
                            cov[y, x] += 1
        for y in range(shape[0]):
            for x in range(shape[1]):
                yb, xb = y + dy, x + dx
                if 0 <= yb < shape[0] and 0 <= xb < shape[1]:
                    a, b = int(frag_map[y, x]), int(frag_map[yb, xb])
                    if a >= 0 and b >= 0:
                        key = (min(a, b), max(a, b))
                        s, c = num.get(key, (0.0, 0))
                        num[key] = (s + (top[y, x] / cov[y, x] if cov[y, x] else 0.0), c + 1)
    return num


def _graph_dict(graph):
    out = {(int(graph.nodes[i]), int(graph.nodes[j])): w for (i, j), w in zip(graph.edges, graph.weights)}
    out.update({(int(f), int(f)): w for f, w in zip(graph.nodes, graph.loops) if w > 0})
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fragments_equal_the_hard_fragments_of_the_argmax(seed):
    windows = _soft_windows(seed)
    c = soft_consensus(windows, (30, 36), device="cpu")
    hard = fragments([Layer(a, origin) for origin, p in windows for a in p.argmax(1)], (30, 36))
    # Same numbering, not only the same partition: Leiden then sees the same node order.
    np.testing.assert_array_equal(c.fragments.map, hard.map)
    np.testing.assert_array_equal(c.fragments.sizes, hard.sizes)
    np.testing.assert_allclose(c.fragments.foreground, hard.foreground)
    assert c.n_layers == sum(p.shape[0] for _, p in windows)


@pytest.mark.parametrize("seed", [0, 3])
def test_one_hot_masks_give_the_hard_consensus(seed):
    windows, shape = _hard_windows(seed)
    hard = Consensus.from_windows(windows, shape, device="cpu")
    soft = soft_consensus([(o, _one_hot(l)) for o, l in windows], shape, device="cpu")
    np.testing.assert_array_equal(soft.fragments.map, hard.fragments.map)
    np.testing.assert_array_equal(soft.graph.edges, hard.graph.edges)
    # Bit for bit: the weight is divided in the order the hard graph divides.
    np.testing.assert_array_equal(soft.graph.weights, hard.graph.weights)
    np.testing.assert_array_equal(soft.graph.loops, hard.graph.loops)
    assert soft.graph.total_weight == hard.graph.total_weight
    assert soft.resolution_range("rb") == hard.resolution_range("rb")
    for resolution in (1e-4, 3e-3, 0.05, 0.5):
        np.testing.assert_array_equal(soft.labels(resolution, min_size=3), hard.labels(resolution, min_size=3))
    rect = (5, 7, 30, 33)
    np.testing.assert_array_equal(soft.region_labels(soft.region(rect), 0.01), hard.region_labels(hard.region(rect), 0.01))
    s, h = soft.sweep(region=rect), hard.sweep(region=rect)
    np.testing.assert_array_equal(s.nmi, h.nmi)
    np.testing.assert_array_equal(s.n_objects, h.n_objects)
    s, h = soft.sweep_windows(window=16, max_windows=3), hard.sweep_windows(window=16, max_windows=3)
    np.testing.assert_array_equal(s.nmi, h.nmi)
    assert s.best == h.best and s.windows == h.windows


@pytest.mark.parametrize("min_weight", [1e-6, 0.2])
def test_soft_windows_match_the_definition(min_weight):
    shape = (14, 15)
    windows = _soft_windows(4, shape=shape, window=(8, 9), step=(3, 3), max_k=3, block=2)
    c = soft_consensus(windows, shape, radius=2, min_weight=min_weight, device="cpu")
    expected = _brute_force(windows, shape, 2, c.fragments.map)
    expected = {k: s for k, (s, n) in expected.items() if s / n >= min_weight}
    got = _graph_dict(c.graph)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5)
    # A region is built the same way, from the pairs inside it.
    rect = (2, 3, 11, 13)
    region = c.region(rect)
    inside = np.full_like(c.fragments.map, -1)
    inside[2:11, 3:13] = c.fragments.map[2:11, 3:13]
    expected = _brute_force(windows, shape, 2, inside)
    expected = {k: s for k, (s, n) in expected.items() if s / n >= min_weight}
    got = _graph_dict(region.graph)
    assert set(got) == set(expected)
    assert sum(got.values()) == pytest.approx(sum(expected.values()), rel=1e-5)


def test_whole_image_layers_match_the_soft_pixel_graph():
    shape = (24, 26)
    ((_, probs),) = _soft_windows(5, shape=shape, window=shape, step=shape, max_draws=3, max_k=4)
    probs = np.concatenate([probs, probs[:1, ::-1, :, :]])  # at least two draws with several channels
    c = soft_consensus([((0, 0), probs)], shape, radius=3, min_weight=1e-30, device="cpu")
    pixel = soft_pixel_graph(probs, radius=3, min_weight=1e-30, device="cpu")
    frag = c.fragments.map.ravel()[pixel.nodes]
    a, b = frag[pixel.edges[:, 0]], frag[pixel.edges[:, 1]]
    both = (a >= 0) & (b >= 0)
    assert c.graph.total_weight == pytest.approx(pixel.weights[both].sum(), rel=1e-5)
    # Per fragment pair, too: the fragment graph is the pixel graph summed.
    summed = {}
    for i, j, w in zip(np.minimum(a, b)[both], np.maximum(a, b)[both], pixel.weights[both]):
        summed[(int(i), int(j))] = summed.get((int(i), int(j)), 0.0) + w
    got = _graph_dict(c.graph)
    assert set(got) == {k for k, v in summed.items() if v > 0}
    for key, value in got.items():
        assert value == pytest.approx(summed[key], rel=1e-5)
    # So CPM's quality of a partition that keeps fragments whole is the
    # pixel graph's (pixels of no fragment left out), up to the constant
    # shift that self-loops cause in leidenalg (see test_consensus.py).
    keep = np.flatnonzero(frag >= 0)
    local = np.full(pixel.n_nodes, -1)
    local[keep] = np.arange(keep.size)
    sub = Graph(np.stack([local[pixel.edges[both, 0]], local[pixel.edges[both, 1]]], 1), pixel.weights[both],
                np.zeros(keep.size), np.ones(keep.size, dtype=np.int64), pixel.nodes[keep])
    for membership in (np.arange(c.graph.n_nodes) % 3, np.zeros(c.graph.n_nodes, dtype=int)):
        q_frag = quality(c.graph, membership, 0.01, "cpm")
        q_pix = quality(sub, membership[frag[keep]], 0.01, "cpm")
        assert q_frag == pytest.approx(q_pix - 2 * 0.01 * keep.size, rel=1e-5)


def test_touching_blobs_are_split_by_the_soft_weight():
    """Draw 1 calls A and B one object, but only 55 % sure on B; draw 2 splits them.

    The hard consensus sees "same object" in one draw of two (0.5 per pair);
    the soft weight is 0.55 * 1 / 2 = 0.275 per pair, so at a resolution
    between the two the soft consensus splits A from B and the hard one merges.
    """
    shape = (20, 20)
    a = np.zeros(shape, dtype=bool)
    a[:, :10] = True
    draw1 = np.zeros((3,) + shape, dtype=np.float32)
    draw1[1][a] = 1.0
    draw1[1][~a], draw1[2][~a] = 0.55, 0.45
    draw2 = np.zeros((3,) + shape, dtype=np.float32)
    draw2[1][a] = 1.0
    draw2[2][~a] = 1.0
    probs = np.stack([draw1, draw2])
    soft = soft_consensus([((0, 0), probs)], shape, device="cpu")
    hard = Consensus.from_windows([((0, 0), probs.argmax(1))], shape, device="cpu")
    assert soft.fragments.count == hard.fragments.count == 2
    pairs = hard.graph.weights[0] / 0.5
    assert soft.graph.weights[0] == pytest.approx(0.275 * pairs)
    # CPM merges two nodes when their link outweighs resolution * size * size.
    resolution = (soft.graph.weights[0] + hard.graph.weights[0]) / 2 / (200 * 200)
    assert hard.labels(resolution).max() == 1
    split = soft.labels(resolution)
    assert split.max() == 2 and len(np.unique(split[a])) == 1 and len(np.unique(split[~a])) == 1


def test_a_generator_is_consumed_once_and_gives_the_same_consensus():
    windows = _soft_windows(6)
    steps = []
    made = []

    def generate():
        for origin, probs in windows:
            made.append(origin)
            yield origin, probs

    from_list = soft_consensus(windows, (30, 36), device="cpu")
    c = soft_consensus(generate(), (30, 36), device="cpu", callbacks=Callbacks(on_progress=lambda s, t, _: steps.append((s, t))))
    assert len(made) == len(windows)
    assert steps[-1] == (len(windows), 0)
    np.testing.assert_array_equal(c.graph.weights, from_list.graph.weights)
    np.testing.assert_array_equal(c.labels(0.01), from_list.labels(0.01))


def test_sweep_uses_a_bounded_sample_of_layers():
    windows = _soft_windows(7)
    c = soft_consensus(windows, (30, 36), device="cpu", reference_layers=4)
    sweep = c.sweep()
    assert np.all(np.isfinite(sweep.nmi)) and sweep.nmi.max() > 0
    none = soft_consensus(windows, (30, 36), device="cpu", reference_layers=0)
    assert none.labels(0.01).shape == (30, 36)
    with pytest.raises(InputError, match="pass a resolution"):
        none.sweep()


def _window(shape=(2, 8, 8)):
    """All background: channel 0 is 1 (a 2-D shape is all ones)."""
    p = np.zeros(shape, dtype=np.float32)
    if p.ndim >= 3:
        p[..., 0, :, :] = 1.0
    else:
        p[:] = 1.0
    return p


@pytest.mark.parametrize("windows, match", [
    ([], "at least one window"),
    (5, "iterable"),
    ([((0, 0),)], "expected \\(origin, probs\\)"),
    ([((0.5, 0), _window())], "whole numbers"),
    ([((0, 0), _window((8, 8)))], "\\(K\\+1, h, w\\)"),
    ([((0, 0), _window((1, 2, 2, 8, 8)))], "\\(K\\+1, h, w\\)"),
    ([((0, 0), np.zeros((0, 8, 8), np.float32))], "empty"),
    ([((0, 0), _window().astype(int))], "floating point"),
    ([((0, 0), np.full((2, 8, 8), np.nan, np.float32))], "NaN"),
    ([((0, 0), _window() * 2)], "sum to 1"),
    ([((0, 0), np.stack([_window()[0] * 2, -_window()[0]]))], "negative"),
    ([((0, 0), _window()), ((28, 0), _window())], "window 1 at \\(28, 0\\) of size 8x8 reaches outside the 32x32 image"),
    ([((-1, 0), _window())], "reaches outside"),
])
def test_bad_input_is_one_clear_line(windows, match):
    with pytest.raises(InputError, match=match) as info:
        soft_consensus(windows, (32, 32), device="cpu")
    assert "\n" not in str(info.value)


def test_bad_settings_are_one_clear_line():
    for kwargs, match in [({"min_weight": 0}, "min_weight"), ({"reference_layers": -1}, "reference_layers"),
                          ({"radius": 0.5}, "radius"), ({"min_foreground": 2}, "min_foreground")]:
        with pytest.raises(InputError, match=match):
            soft_consensus([((0, 0), _window())], (32, 32), device="cpu", **kwargs)
    with pytest.raises(InputError, match="shape"):
        soft_consensus([((0, 0), _window())], (32,), device="cpu")
