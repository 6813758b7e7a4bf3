"""Same-objectness graphs: how often two nearby pixels share an instance.

The weight of an edge between pixels ``p`` and ``p'`` closer than the cutoff
radius is the mean, over the labelings that cover both, of "same instance":
1 or 0 for hard labels, ``sum_k pi_k(p) pi_k(p')`` for soft masks. Background
contributes nothing, weights below ``min_weight`` are dropped, and each pair
appears once.

:func:`fragment_graph` builds this graph over fragments (see
:mod:`probseg.consensus.fragments`): all pixel pairs between two fragments
have the same weight, so the fragment edge carries that weight times the
number of pairs, and each fragment keeps its internal pairs as a self-loop
and its pixel count as a node size. Leiden's RB and CPM objectives on this
graph equal those of the pixel graph for every partition that keeps
fragments whole (up to a constant), which :func:`pixel_graph` lets tests
check. Pair counting runs in torch, on the GPU when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probseg.consensus.fragments import Fragments, check_labelings
from probseg.core.device import resolve_device
from probseg.core.errors import InputError
from probseg.consensus.uncertainty import shifted_pair

DEFAULT_RADIUS = 4
DEFAULT_MIN_WEIGHT = 0.01


@dataclass
class Graph:
    """A weighted undirected graph with node sizes, ready for Leiden.

    Attributes
    ----------
    edges : ndarray of int64, shape (E, 2)
        Node pairs ``i < j``.
    weights : ndarray of float64, shape (E,)
    loops : ndarray of float64, shape (N,)
        Self-loop weight of each node (pairs inside a fragment).
    sizes : ndarray of int64, shape (N,)
        Pixels per node.
    nodes : ndarray of int64, shape (N,)
        Fragment id (or flat pixel index) of each node.
    """

    edges: np.ndarray
    weights: np.ndarray
    loops: np.ndarray
    sizes: np.ndarray
    nodes: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.sizes.size)

    @property
    def total_weight(self) -> float:
        """Sum of all edge weights, self-loops included (``m`` of modularity)."""
        return float(self.weights.sum() + self.loops.sum())


def half_disc(radius: float) -> list[tuple[int, int]]:
    """Displacements ``(dy, dx)`` with ``0 < |d| <= radius``, one of each ``+-d`` pair."""
    if not radius >= 1:
        raise InputError(f"the cutoff radius must be at least 1 pixel, got {radius}")
    r = int(np.floor(radius))
    out = []
    for dy in range(0, r + 1):
        for dx in range(-r, r + 1):
            if (dy > 0 or dx > 0) and dy * dy + dx * dx <= radius * radius:
                out.append((dy, dx))
    return out


def _pair_views(t: torch.Tensor, dy: int, dx: int):
    """``t[p]`` and ``t[p + (dy, dx)]`` over the pixels where both exist."""
    (ya, xa), (yb, xb) = shifted_pair(t, (dy, dx))
    return t[..., ya, xa], t[..., yb, xb]


def count_pairs(frag_map: np.ndarray, n_fragments: int, radius: float, device="auto"):
    """Count pixel pairs within ``radius`` per pair of fragments.

    Parameters
    ----------
    frag_map : ndarray of int, shape (Y, X)
        Fragment ids ``0..n_fragments-1``, -1 for pixels to ignore.
    n_fragments : int
    radius : float
    device : str or torch.device

    Returns
    -------
    internal : ndarray of int64, shape (n_fragments,)
        Pairs with both pixels in the fragment.
    pairs : ndarray of int64, shape (E, 2)
        Fragment pairs ``a < b`` with at least one pixel pair.
    counts : ndarray of int64, shape (E,)
    """
    dev = resolve_device(device)
    t = torch.as_tensor(np.ascontiguousarray(frag_map), device=dev).long()
    internal = torch.zeros(n_fragments, dtype=torch.int64, device=dev)
    codes = []
    for dy, dx in half_disc(radius):
        a, b = _pair_views(t, dy, dx)
        valid = (a >= 0) & (b >= 0)
        same = valid & (a == b)
        internal += torch.bincount(a[same], minlength=n_fragments)
        cross = valid & ~same
        lo, hi = a[cross], b[cross]
        codes.append(torch.minimum(lo, hi) * n_fragments + torch.maximum(lo, hi))
    codes = torch.cat(codes) if codes else torch.zeros(0, dtype=torch.int64, device=dev)
    uniq, counts = torch.unique(codes, return_counts=True)
    pairs = torch.stack([uniq // n_fragments, uniq % n_fragments], dim=1)
    return internal.cpu().numpy(), pairs.cpu().numpy(), counts.cpu().numpy()


def same_fraction(signatures: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Fraction of the layers covering both fragments that give them one instance.

    Parameters
    ----------
    signatures : ndarray of int, shape (F, J)
        As :attr:`Fragments.signatures`.
    a, b : ndarray of int, shape (E,)
        Fragment ids.

    Returns
    -------
    ndarray of float64, shape (E,)
        0 where no layer covers both.
    """
    out = np.zeros(a.size, dtype=np.float64)
    for start in range(0, a.size, chunk):
        sa = signatures[a[start : start + chunk]]
        sb = signatures[b[start : start + chunk]]
        both = (sa >= 0) & (sb >= 0)
        same = both & (sa == sb) & (sa > 0)
        out[start : start + chunk] = same.sum(1) / np.maximum(both.sum(1), 1)
    return out


def region_fragments(frags: Fragments, region=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fragments inside ``region`` (all by default), renumbered from 0.

    Returns
    -------
    present : ndarray of int64
        Fragment id of each local number.
    local_map : ndarray, shape of the region
        Local numbers, -1 where no fragment is.
    sizes : ndarray of int64
        Pixels of each fragment inside the region.
    """
    if region is None:
        # Every fragment has pixels and ids are already 0..F-1: nothing to renumber.
        return np.arange(frags.count), frags.map, frags.sizes
    fmap = frags.map[region[0] : region[2], region[1] : region[3]]
    present = np.unique(fmap)
    present = present[present >= 0]
    local = np.full(frags.count + 1, -1, dtype=np.int64)  # index -1 stays -1
    local[present] = np.arange(present.size)
    lmap = local[fmap]
    sizes = np.bincount(lmap[lmap >= 0].ravel(), minlength=present.size).astype(np.int64)
    return present, lmap, sizes


def fragment_graph(frags: Fragments, radius: float = DEFAULT_RADIUS, min_weight: float = DEFAULT_MIN_WEIGHT, region=None, device="auto") -> Graph:
    """The same-objectness graph over fragments, optionally inside a rectangle.

    Parameters
    ----------
    frags : Fragments
    radius : float
        Cutoff distance ``d_c`` in pixels: pixels at most this far apart are
        compared.
    min_weight : float
        Pixel-pair weights below this (``E_min``) are dropped.
    region : (y0, x0, y1, x1), optional
        Only the pixels inside this rectangle; fragments cut by its border
        keep the pixels inside.
    device : str or torch.device
        Where pairs are counted; ``"auto"`` uses the GPU when there is one.

    Returns
    -------
    Graph
        ``nodes`` holds the fragment id of each node.
    """
    present, lmap, sizes = region_fragments(frags, region)
    internal, pairs, counts = count_pairs(lmap, present.size, radius, device)
    fg = frags.foreground[present]
    loop_w = np.where(fg >= min_weight, fg, 0.0)
    w = same_fraction(frags.signatures, present[pairs[:, 0]], present[pairs[:, 1]])
    keep = w >= min_weight
    return Graph(pairs[keep], (w * counts)[keep], internal * loop_w, sizes, present.astype(np.int64))


def pixel_graph(samples, radius: float = DEFAULT_RADIUS, min_weight: float = DEFAULT_MIN_WEIGHT, device="auto") -> Graph:
    """The same-objectness graph over pixels of hard samples (the naive graph).

    Parameters
    ----------
    samples : ndarray of int, shape (n, Y, X)
    radius, min_weight, device
        As :func:`fragment_graph`.

    Returns
    -------
    Graph
        One node per pixel that some sample calls foreground; ``nodes`` holds
        flat pixel indices.
    """
    arr = check_labelings(samples)
    dev = resolve_device(device)
    t = torch.as_tensor(arr, device=dev).long()
    return _dense_graph(lambda a, b: ((a == b) & (a > 0)).float().mean(0), (t > 0).any(0), t, radius, min_weight)


def soft_pixel_graph(probabilities, radius: float = DEFAULT_RADIUS, min_weight: float = DEFAULT_MIN_WEIGHT, device="auto") -> Graph:
    """The same-objectness graph over pixels of soft samples.

    Parameters
    ----------
    probabilities : ndarray of float, shape (n, K, Y, X)
        Per sample, the probability of each pixel to belong to instance
        ``k``; channel 0 is background and contributes nothing.
    radius, min_weight, device
        As :func:`fragment_graph`.

    Returns
    -------
    Graph
        As :func:`pixel_graph`; for one-hot probabilities it equals the hard
        graph.
    """
    p = np.asarray(probabilities)
    if p.ndim != 4 or p.shape[1] < 2:
        raise InputError(f"soft masks must be (n, K, Y, X) with K >= 2 (channel 0 = background), got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating) or not np.all(np.isfinite(p)):
        raise InputError("soft masks must be finite floating-point probabilities")
    dev = resolve_device(device)
    t = torch.as_tensor(p[:, 1:], device=dev, dtype=torch.float32)
    return _dense_graph(lambda a, b: (a * b).sum(1).mean(0), (t.sum(1) > 0).any(0), t, radius, min_weight)


def _dense_graph(same, foreground: torch.Tensor, t: torch.Tensor, radius: float, min_weight: float) -> Graph:
    h, w = t.shape[-2:]
    index = torch.arange(h * w, device=t.device).reshape(h, w)
    src, dst, wts = [], [], []
    for dy, dx in half_disc(radius):
        a, b = _pair_views(t, dy, dx)
        ia, ib = _pair_views(index, dy, dx)
        weight = same(a, b)
        keep = weight >= min_weight
        src.append(ia[keep])
        dst.append(ib[keep])
        wts.append(weight[keep].double())
    nodes = torch.nonzero(foreground.reshape(-1)).reshape(-1)
    local = torch.full((h * w,), -1, dtype=torch.int64, device=t.device)
    local[nodes] = torch.arange(nodes.numel(), device=t.device)
    edges = torch.stack([local[torch.cat(src)], local[torch.cat(dst)]], 1)
    n = nodes.numel()
    return Graph(
        edges.cpu().numpy(), torch.cat(wts).cpu().numpy(), np.zeros(n), np.ones(n, dtype=np.int64), nodes.cpu().numpy()
    )
