"""Consensus of soft masks from many small overlapping windows.

A generative model of the objects in small windows gives, for each window of the image and
each posterior draw, a soft mask ``pi`` of shape ``(K+1, h, w)``: channel 0
is background, channels sum to 1 per pixel. Each draw is one layer. The
weight of a pixel pair ``(p, p')`` at most ``radius`` apart is the mean, over
the layers covering both pixels, of ``sum_{k>=1} pi_k(p) pi_k(p')``; for
one-hot masks this is the hard consensus's "fraction of layers that give
both pixels one instance".

The hard :class:`~probseg.consensus.engine.Consensus` keeps, per fragment,
its label in every layer (``F x J`` signatures), which ten thousand windows
with several draws each make far too large. Here every window is seen once
and dropped; what is kept is

* per displacement ``d`` of :func:`~probseg.consensus.graph.half_disc`, the
  sum over layers of ``sum_k pi_k(p) pi_k(p + d)`` at every anchor ``p``
  (float32, ``D`` values per pixel: 24 at the default radius of 4);
* per pixel, how many layers call it foreground (argmax > 0), and per
  4-neighbour pair whether any layer gives the two pixels different argmax
  labels: enough to cut the image into the same fragments as the hard
  consensus of the argmax labelings, without signatures;
* the rectangle and number of draws of every window, from which the number
  of layers covering a pixel pair is counted when needed;
* the argmax labelings of at most ``reference_layers`` layers (a seeded
  uniform sample), for :meth:`Consensus.sweep`'s NMI.

While the windows stream in, memory is therefore about ``4 D + 6`` bytes per
image pixel plus the sample of labelings, whatever the number of windows
and draws; the consensus keeps the ``4 D`` for :meth:`Consensus.region`.
Building the graph adds temporaries that grow with the number of fragments
(``benchmarks/consensus_soft_scale.py`` measures the peak).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from probseg.core.callbacks import Callbacks, ensure
from probseg.consensus.engine import Consensus
from probseg.consensus.fragments import Fragments
from probseg.consensus.graph import DEFAULT_MIN_WEIGHT, DEFAULT_RADIUS, Graph, half_disc, region_fragments
from probseg.consensus.leiden import DEFAULT_BACKEND, check_backend
from probseg.consensus.nmi import Reference
from probseg.core.device import resolve_device
from probseg.core.errors import InputError
from probseg.consensus.uncertainty import shifted_pair

# Layers kept for the sweep's NMI: 4096 windows of 80x80 px take 26 MB as
# uint8, and a 256 px region of a 2048 px image still meets about 100 of them.
DEFAULT_REFERENCE_LAYERS = 4096
# Channels must sum to 1 up to this, so float16 or rounded masks still pass.
_SUM_TOLERANCE = 1e-3
# Fragment-pair codes collected over displacements are merged (sorted and
# summed) once they hold this many entries, which bounds their memory.
_MERGE_AT = 1 << 23


@dataclass
class SoftFragments(Fragments):
    """Fragments without signatures: the foreground fraction is stored instead.

    Attributes
    ----------
    fraction : ndarray of float64, shape (F,)
        Fraction of the layers covering each fragment whose argmax is
        foreground; ``signatures`` is an empty ``(F, 0)`` array.
    """

    fraction: np.ndarray = None

    @property
    def foreground(self) -> np.ndarray:
        return self.fraction


def soft_consensus(windows, shape, *, radius: float = DEFAULT_RADIUS, min_weight: float = DEFAULT_MIN_WEIGHT,
                   min_foreground: float = 0.5, device="auto", backend: str = DEFAULT_BACKEND,
                   reference_layers: int = DEFAULT_REFERENCE_LAYERS, callbacks: Callbacks | None = None) -> Consensus:
    """The consensus of soft masks of overlapping windows.

    Parameters
    ----------
    windows : iterable of (origin, probs)
        Consumed once, so a generator can make and drop one window at a
        time. ``origin`` is ``(y0, x0)`` of the window in the image; ``probs``
        is float ``(K+1, h, w)`` for one draw or ``(n, K+1, h, w)`` for ``n``
        draws, channel 0 background, channels summing to 1 per pixel. ``K``
        may differ between windows. Each draw is one layer.
    shape : (int, int)
        Image size; every window must lie inside it.
    radius : float
        Cutoff distance in pixels: pixel pairs at most this far apart are
        linked.
    min_weight : float
        Fragment pairs (and fragments' internal pairs) whose mean pixel-pair
        weight is below this are dropped.
    min_foreground : float
        A fragment is background in the result when fewer than this fraction
        of its covering layers have argmax > 0 there.
    device : str
        Where the per-displacement sums are kept and the graph is built;
        ``"auto"`` uses the GPU when there is one.
    backend : {"igraph", "leidenalg"}
        Leiden implementation.
    reference_layers : int
        :meth:`Consensus.sweep` compares the consensus with the argmax
        labelings of at most this many layers: all of them when there are
        no more, otherwise a uniform sample (seeded, so the same input gives
        the same sample). 0 keeps none; sweeping then raises InputError.
    callbacks : Callbacks, optional
        Progress per window (total 0 when ``windows`` has no length); cancel
        between windows.

    Returns
    -------
    Consensus
        Fragments are those of the hard consensus of the argmax labelings
        (:func:`~probseg.consensus.fragments.fragments`, same numbering).
        Between fragments ``i`` and ``j`` the edge weight is the sum, over
        the pixel pairs ``{p, p'}`` with ``p`` in ``i`` and ``p'`` in ``j`` at
        most ``radius`` apart (each pair once), of the mean over the layers
        covering both pixels of ``sum_{k>=1} pi_k(p) pi_k(p')``; a
        fragment's self-loop is the same sum over its internal pairs; node
        sizes are pixel counts.
        Pixels that every covering layer's argmax calls background belong to
        no fragment and take part in no pair. :meth:`~Consensus.labels`,
        :meth:`~Consensus.region`, :meth:`~Consensus.sweep` and the
        resolution ranges work as for the hard consensus; the consensus keeps
        the per-displacement sums (``4 D`` bytes per pixel) for
        :meth:`~Consensus.region`.

    Raises
    ------
    InputError
        For no windows, a window outside the image, or probabilities of the
        wrong shape, not finite, negative or not summing to 1.
    Cancelled
        When ``callbacks`` asks to stop.
    """
    height, width = _check_shape(shape)
    if not (isinstance(reference_layers, (int, np.integer)) and int(reference_layers) >= 0):
        raise InputError(f"reference_layers must be a whole number >= 0, got {reference_layers!r}")
    # Settings are checked before any window is consumed, as a generator cannot be replayed.
    if not 0.0 < float(min_weight) <= 1.0:
        raise InputError(f"min_weight must be in (0, 1], got {min_weight}")
    if not 0.0 <= float(min_foreground) <= 1.0:
        raise InputError(f"min_foreground must be between 0 and 1, got {min_foreground}")
    check_backend(backend)
    cb = ensure(callbacks)
    dev = resolve_device(device)
    offsets = half_disc(radius)
    total = len(windows) if hasattr(windows, "__len__") else 0
    try:
        iterator = iter(windows)
    except TypeError:
        raise InputError(f"windows must be an iterable of (origin, probs), got {type(windows).__name__}") from None

    sums = torch.zeros((len(offsets), height, width), dtype=torch.float32, device=dev)
    fg = torch.zeros((height, width), dtype=torch.int32, device=dev)
    # True where some layer gives the pair (p, p + x) or (p, p + y) different argmax labels.
    split_x = torch.zeros((height, max(width - 1, 0)), dtype=torch.bool, device=dev)
    split_y = torch.zeros((max(height - 1, 0), width), dtype=torch.bool, device=dev)
    rects = []  # (y0, x0, y1, x1, draws)
    kept = []  # (layer index, y0, x0, argmax labels)
    rng = np.random.default_rng(0)
    n_layers = 0
    for index, item in enumerate(iterator):
        cb.raise_if_stopped()
        y0, x0, probs = _check_window(index, item, (height, width))
        n, _, h, w = probs.shape
        p = torch.as_tensor(probs, device=dev)
        # numpy's argmax documents the first channel winning ties, and runs
        # several times faster than torch's over a non-last dimension.
        lab_np = probs.argmax(1)
        lab = torch.as_tensor(lab_np, device=dev)
        fg[y0 : y0 + h, x0 : x0 + w] += (lab > 0).sum(0, dtype=torch.int32)
        split_x[y0 : y0 + h, x0 : x0 + w - 1] |= (lab[:, :, 1:] != lab[:, :, :-1]).any(0)
        split_y[y0 : y0 + h - 1, x0 : x0 + w] |= (lab[:, 1:, :] != lab[:, :-1, :]).any(0)
        _add_pair_sums(sums, p[:, 1:], offsets, y0, x0)
        rects.append((y0, x0, y0 + h, x0 + w, n))
        if reference_layers:
            small = lab_np.astype(np.uint8 if probs.shape[1] <= 256 else np.int32)
            for k in range(n):
                _reservoir(kept, int(reference_layers), n_layers + k, (n_layers + k, y0, x0, small[k].copy()), rng)
        n_layers += n
        del p, lab, lab_np
        cb.progress(index + 1, total)
    if not rects:
        raise InputError("the soft consensus needs at least one window")

    rects = np.asarray(rects, dtype=np.int64)
    cover = _pair_coverage(rects, (0, 0), (0, 0, height, width))
    frags = _fragments(fg.cpu().numpy(), split_x.cpu().numpy(), split_y.cpu().numpy(), cover, rects)
    del fg, split_x, split_y, cover
    kept.sort(key=lambda entry: entry[0])

    def region_graph(rect):
        return soft_fragment_graph(frags, sums, rects, offsets, float(min_weight), region=rect)

    def references(graph):
        return _references(frags.map, kept, graph)

    graph = soft_fragment_graph(frags, sums, rects, offsets, float(min_weight))
    return Consensus.from_graph(
        frags, graph, (height, width), n_layers=n_layers, region_graph=region_graph, references=references,
        radius=radius, min_weight=min_weight, min_foreground=min_foreground, device=device, backend=backend,
    )


def _check_shape(shape) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"the image shape must be two whole numbers (Y, X), got {shape!r}") from None
    if height < 1 or width < 1:
        raise InputError(f"the image shape must be positive, got {shape!r}")
    return height, width


def _check_window(index: int, item, shape) -> tuple[int, int, np.ndarray]:
    """``(y0, x0, probs)`` with ``probs`` float32 ``(n, K+1, h, w)``, or one clear InputError."""
    try:
        origin, probs = item
        y0, x0 = origin
    except (TypeError, ValueError):
        raise InputError(f"window {index}: expected (origin, probs) with origin (y0, x0), got {type(item).__name__}") from None
    try:
        if int(y0) != y0 or int(x0) != x0:
            raise ValueError
        y0, x0 = int(y0), int(x0)
    except (TypeError, ValueError):
        raise InputError(f"window {index}: the origin must be two whole numbers, got {origin!r}") from None
    where = f"window {index} at ({y0}, {x0})"
    arr = np.asarray(probs)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(f"{where}: probabilities must be (K+1, h, w) or (n, K+1, h, w), got shape {np.shape(probs)}")
    if min(arr.shape) < 1:
        raise InputError(f"{where}: probabilities of shape {np.shape(probs)} are empty (need at least 1 draw, 1 channel, 1 pixel)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{where}: probabilities must be floating point, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: probabilities contain NaN or infinity")
    if arr.min() < -_SUM_TOLERANCE:
        raise InputError(f"{where}: probabilities must not be negative (min {float(arr.min()):.3g})")
    deviation = float(np.abs(arr.sum(axis=1) - 1.0).max())
    if deviation > _SUM_TOLERANCE:
        raise InputError(f"{where}: the K+1 channels must sum to 1 per pixel (off by up to {deviation:.3g})")
    h, w = arr.shape[2:]
    if y0 < 0 or x0 < 0 or y0 + h > shape[0] or x0 + w > shape[1]:
        raise InputError(f"{where} of size {h}x{w} reaches outside the {shape[0]}x{shape[1]} image")
    return y0, x0, arr


def _add_pair_sums(sums: torch.Tensor, fgp: torch.Tensor, offsets, y0: int, x0: int) -> None:
    """Add ``sum_n sum_k fgp[n, k, p] fgp[n, k, p + d]`` at every anchor ``p`` of the window, per ``d``."""
    if fgp.shape[1] == 0:
        return
    for i, (dy, dx) in enumerate(offsets):
        (ya, xa), (yb, xb) = shifted_pair(fgp, (dy, dx))
        if ya.stop <= ya.start or xa.stop <= xa.start:
            continue
        prod = (fgp[..., ya, xa] * fgp[..., yb, xb]).sum((0, 1))
        sums[i, y0 + ya.start : y0 + ya.stop, x0 + xa.start : x0 + xa.stop] += prod


def _reservoir(kept: list, size: int, seen: int, entry, rng: np.random.Generator) -> None:
    """Keep a uniform sample of ``size`` entries of a stream (Algorithm R)."""
    if len(kept) < size:
        kept.append(entry)
        return
    slot = int(rng.integers(0, seen + 1))
    if slot < size:
        kept[slot] = entry


def _pair_coverage(rects: np.ndarray, offset, rect) -> np.ndarray:
    """Layers covering both ``p`` and ``p + offset``, for every anchor ``p`` in ``rect``.

    Parameters
    ----------
    rects : ndarray of int64, shape (W, 5)
        ``(y0, x0, y1, x1, draws)`` of every window.
    offset : (int, int)
    rect : (y0, x0, y1, x1)

    Returns
    -------
    ndarray of int64, shape (y1 - y0, x1 - x0)
    """
    dy, dx = offset
    ry0, rx0, ry1, rx1 = rect
    # Anchors p with p and p + d inside a window form a rectangle per window;
    # a 2-D difference array adds them all in one pass.
    y0 = np.clip(np.maximum(rects[:, 0], rects[:, 0] - dy), ry0, ry1) - ry0
    y1 = np.clip(np.minimum(rects[:, 2], rects[:, 2] - dy), ry0, ry1) - ry0
    x0 = np.clip(np.maximum(rects[:, 1], rects[:, 1] - dx), rx0, rx1) - rx0
    x1 = np.clip(np.minimum(rects[:, 3], rects[:, 3] - dx), rx0, rx1) - rx0
    n = rects[:, 4]
    keep = (y1 > y0) & (x1 > x0)
    y0, y1, x0, x1, n = y0[keep], y1[keep], x0[keep], x1[keep], n[keep]
    diff = np.zeros((ry1 - ry0 + 1, rx1 - rx0 + 1), dtype=np.int64)
    np.add.at(diff, (y0, x0), n)
    np.add.at(diff, (y0, x1), -n)
    np.add.at(diff, (y1, x0), -n)
    np.add.at(diff, (y1, x1), n)
    return diff.cumsum(0).cumsum(1)[:-1, :-1]


def _fragments(fg: np.ndarray, split_x: np.ndarray, split_y: np.ndarray, cover: np.ndarray, rects: np.ndarray) -> SoftFragments:
    """The hard consensus's fragments of the argmax labelings, from pair disagreements.

    Two 4-neighbours are joined when both are foreground in some covering
    layer, no layer gives them different labels and no window edge runs
    between them (so both lie in one cell of constant covering set). The
    components are numbered as :func:`~probseg.consensus.fragments.fragments`
    numbers them: cells in raster order, then by first pixel in the cell.
    """
    height, width = fg.shape
    size = height * width
    inside = fg > 0
    cut_y = np.zeros(height + 1, dtype=bool)
    cut_x = np.zeros(width + 1, dtype=bool)
    cut_y[np.concatenate([rects[:, 0], rects[:, 2]])] = True
    cut_x[np.concatenate([rects[:, 1], rects[:, 3]])] = True
    join_x = inside[:, :-1] & inside[:, 1:] & ~split_x & ~cut_x[None, 1:width]
    join_y = inside[:-1, :] & inside[1:, :] & ~split_y & ~cut_y[1:height, None]
    index = np.arange(size, dtype=np.int32).reshape(height, width)
    src = np.concatenate([index[:, :-1][join_x], index[:-1, :][join_y]])
    dst = np.concatenate([index[:, 1:][join_x], index[1:, :][join_y]])
    del join_x, join_y, index
    adjacency = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(size, size)).tocsr()
    del src, dst
    _, component = connected_components(adjacency, directed=False)
    del adjacency
    pixels = np.flatnonzero(inside)
    component = component[pixels]
    present, first = np.unique(component, return_index=True)
    first = pixels[first]
    ys = np.flatnonzero(cut_y)
    xs = np.flatnonzero(cut_x)
    cell_y = np.searchsorted(ys, first // width, side="right") - 1
    cell = cell_y * xs.size + np.searchsorted(xs, first % width, side="right") - 1
    order = np.lexsort((first, cell))
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    lut = np.zeros(int(present.max()) + 1 if present.size else 0, dtype=np.int64)
    lut[present] = rank
    frag_map = np.full(size, -1, dtype=np.int32)
    frag_map[pixels] = lut[component]
    frag_map = frag_map.reshape(height, width)
    sizes = np.bincount(frag_map.ravel()[pixels], minlength=order.size).astype(np.int64)
    rep = first[order]  # a pixel of each fragment, in fragment order
    fraction = fg.ravel()[rep] / np.maximum(cover.ravel()[rep], 1)
    return SoftFragments(frag_map, np.zeros((order.size, 0), dtype=np.int32), sizes, fraction.astype(np.float64))


def soft_fragment_graph(frags: Fragments, sums: torch.Tensor, rects: np.ndarray, offsets, min_weight: float,
                        region=None) -> Graph:
    """The soft same-objectness graph over fragments, optionally inside a rectangle.

    Parameters
    ----------
    frags : Fragments
    sums : Tensor of float32, shape (D, Y, X)
        Per displacement ``offsets[i]``, the sum over layers covering ``p``
        and ``p + d`` of ``sum_{k>=1} pi_k(p) pi_k(p + d)`` at anchor ``p``.
    rects : ndarray of int64, shape (W, 5)
        ``(y0, x0, y1, x1, draws)`` of every window.
    offsets : list of (int, int)
        ``half_disc(radius)``.
    min_weight : float
        Fragment pairs, and fragments' internal pairs, with a mean pixel-pair
        weight below this are dropped.
    region : (y0, x0, y1, x1), optional
        Only pixel pairs inside this rectangle; fragments cut by its border
        keep the pixels inside.

    Returns
    -------
    Graph
        ``nodes`` holds the fragment id of each node.
    """
    # MPS has no float64, which the sums over many pairs need; build there on the CPU.
    dev = sums.device if sums.device.type != "mps" else torch.device("cpu")
    height, width = frags.map.shape
    rect = (0, 0, height, width) if region is None else tuple(int(v) for v in region)
    y0, x0, y1, x1 = rect
    present, lmap, sizes = region_fragments(frags, None if region is None else rect)
    n = int(present.size)
    t = torch.as_tensor(np.ascontiguousarray(lmap), device=dev).long()
    inner = torch.zeros((3, n), dtype=torch.float64, device=dev)  # pair-weight sum, pairs, covering-layer sum
    parts = []  # (codes, (3, E) sums as inner), merged when long
    held = 0
    for i, (dy, dx) in enumerate(offsets):
        (ya, xa), (yb, xb) = shifted_pair(t, (dy, dx))
        a, b = t[ya, xa], t[yb, xb]
        valid = (a >= 0) & (b >= 0)
        if not bool(valid.any()):
            continue
        covering = torch.as_tensor(_pair_coverage(rects, (dy, dx), rect), device=dev)[ya, xa].double()
        values = torch.stack([sums[i, y0:y1, x0:x1][ya, xa].to(dev, torch.float64), torch.ones_like(covering), covering])
        same = valid & (a == b)
        inner.index_add_(1, a[same], values[:, same])
        cross = valid & ~same
        lo, hi = a[cross], b[cross]
        codes, inverse = torch.unique(torch.minimum(lo, hi) * n + torch.maximum(lo, hi), return_inverse=True)
        totals = torch.zeros((3, codes.numel()), dtype=torch.float64, device=dev)
        parts.append((codes, totals.index_add_(1, inverse, values[:, cross])))
        held += codes.numel()
        if held >= _MERGE_AT:
            parts = [_merge(parts)]
            held = parts[0][0].numel()
    if parts:
        codes, totals = _merge(parts)
    else:
        codes, totals = torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros((3, 0), dtype=torch.float64, device=dev)
    weight, keep = _pair_weights(totals, min_weight)
    codes, weight = codes[keep], weight[keep]
    edges = torch.stack([codes // max(n, 1), codes % max(n, 1)], dim=1)
    loops, keep_loop = _pair_weights(inner, min_weight)
    loops = torch.where(keep_loop, loops, torch.zeros_like(loops))
    return Graph(edges.cpu().numpy(), weight.cpu().numpy(), loops.cpu().numpy(), sizes, present.astype(np.int64))


def _pair_weights(totals: torch.Tensor, min_weight: float):
    """Weights of fragment pairs from summed pixel-pair sums, pair counts and covering-layer counts.

    All pixel pairs of one fragment pair are covered by the same layers (a
    fragment has one covering set), so the covering count is a constant
    ``C`` and the weight is ``(S / pairs / C) * pairs``. Dividing in this
    order makes one-hot masks give the hard graph's weights bit for bit:
    ``S / pairs`` is then the whole number of layers agreeing.

    Returns
    -------
    weight : Tensor of float64
    keep : Tensor of bool
        Mean pixel-pair weight at least ``min_weight``.
    """
    total, pairs, covering = totals
    safe_pairs = pairs.clamp(min=1)
    layers = covering / safe_pairs
    mean = torch.where(layers > 0, total / safe_pairs / layers.clamp(min=1e-300), torch.zeros_like(total))
    return mean * pairs, (mean >= min_weight) & (pairs > 0)


def _merge(parts):
    """One ``(codes, sums)`` from several, codes unique and sorted, sums added."""
    if len(parts) == 1:
        return parts[0]
    codes, inverse = torch.unique(torch.cat([p[0] for p in parts]), return_inverse=True)
    totals = torch.zeros((3, codes.numel()), dtype=torch.float64, device=codes.device)
    totals.index_add_(1, inverse, torch.cat([p[1] for p in parts], dim=1))
    return codes, totals


def _references(frag_map: np.ndarray, kept: list, graph: Graph) -> list:
    """Per kept argmax labeling: the nodes of ``graph`` its window covers and its labels of them."""
    if not kept:
        raise InputError("this soft consensus kept no labelings to compare with (reference_layers=0); "
                         "pass a resolution instead of sweeping")
    lookup = np.full(int(frag_map.max()) + 2, -1, dtype=np.int64)  # index -1: pixels of no fragment
    lookup[graph.nodes] = np.arange(graph.n_nodes)
    out = []
    for _, y0, x0, labels in kept:
        h, w = labels.shape
        pos = lookup[frag_map[y0 : y0 + h, x0 : x0 + w].ravel()]
        valid = pos >= 0
        if not valid.any():
            continue
        # Every pixel of a fragment has the same label in a layer covering it.
        covered, first = np.unique(pos[valid], return_index=True)
        out.append((covered, Reference(labels.ravel()[valid][first], graph.sizes[covered])))
    return out
