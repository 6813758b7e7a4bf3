"""Mutex watershed (Wolf et al. 2018) on a pixel-pair affinity graph, via ``mwatershed``."""

from __future__ import annotations

import numpy as np

from probseg.core.errors import InputError
from probseg.partition.affinities import check_offsets, pair_slices

__all__ = ["mutex_watershed", "edge_weights"]

REPULSIONS = ("bias", "inverted")


def edge_weights(
    affinities: np.ndarray,
    offsets,
    *,
    attractive: int = 2,
    bias: float = 0.5,
    alpha: float = 1.0,
    repulsion: str = "bias",
) -> np.ndarray:
    """Signed mutex-watershed edge weights (float64, shape (K, Y, X)) from affinities.

    See :func:`mutex_watershed` for the definition. NaN affinities give
    weight 0 (the edge is ignored).
    """
    aff = np.asarray(affinities, dtype=np.float64)
    offsets = check_offsets(offsets)
    if aff.ndim != 3 or len(aff) != len(offsets):
        raise InputError(f"expected affinities of shape ({len(offsets)}, Y, X) for {len(offsets)} offsets, got {aff.shape}")
    if not 1 <= attractive <= len(offsets):
        raise InputError(f"attractive must be between 1 and the number of offsets ({len(offsets)}), got {attractive}")
    if not (np.isfinite(bias) and np.isfinite(alpha) and alpha >= 0):
        raise InputError(f"bias must be finite and alpha finite and >= 0, got bias={bias}, alpha={alpha}")
    if repulsion not in REPULSIONS:
        raise InputError(f"unknown repulsion {repulsion!r}; choose one of {', '.join(REPULSIONS)}")
    weights = np.empty_like(aff)
    if repulsion == "inverted":
        weights[:attractive] = aff[:attractive]
        weights[attractive:] = -alpha * (1.0 - aff[attractive:])
    else:
        weights[:attractive] = aff[:attractive] - bias
        weights[attractive:] = np.minimum(alpha * aff[attractive:] - bias, 0.0)
    # mwatershed panics on NaN; an unknown affinity is no edge.
    weights[np.isnan(weights)] = 0.0
    return weights


def mutex_watershed(
    affinities: np.ndarray,
    offsets,
    *,
    attractive: int = 2,
    bias: float = 0.5,
    alpha: float = 1.0,
    mask: np.ndarray | None = None,
    strides=None,
    randomize: bool = False,
    repulsion: str = "bias",
) -> np.ndarray:
    """Partition pixels by the mutex watershed on short- and long-range affinities.

    Every pixel p and its partner p + offset_k are joined by an edge whose
    affinity ``a = affinities[k, p]`` in [0, 1] is the probability that they
    belong to one object. Edge weights:

    - short-range (the first ``attractive`` offsets): ``w = a - bias``;
    - long-range (the rest): ``w = min(alpha * a - bias, 0)``: long-range
      affinities are multiplied by ``alpha`` as in Wolf et al.
      (2020, "Affinity-Based Segmentation") and long-range edges only ever split (Wolf et al. 2018).

    With ``repulsion="inverted"`` the weights are those of Wolf et al. 2020 (their
    appendix C): ``w = a`` for short-range edges (all attractive) and ``w = -alpha (1
    - a)`` for long-range ones (all repulsive); ``bias`` is unused, and
    raising ``alpha`` gives *more* objects.

    ``w > 0`` is an attractive edge, ``w < 0`` a mutex, ``w = 0`` no edge.
    Edges are processed greedily in descending ``|w|``: an attractive edge
    merges its two objects unless a mutex between them was added before; a
    mutex forbids any later merge of its two objects unless they are
    already one. Objects therefore grow only along short-range edges, and
    the edges most certain either way (affinity furthest from ``bias``) act
    first.

    Knobs, each monotone in the object count (up to the greedy order):
    raising ``bias`` gives more objects (every attraction weaker, every
    repulsion stronger; ``bias <= 0`` has no mutexes at all, so the result
    is the connected components of the short-range graph); raising
    ``alpha`` gives fewer objects (weaker long-range repulsion; ``alpha <
    1`` over-segments, as in Wolf et al. 2020).

    Parameters
    ----------
    affinities : ndarray of float, shape (K, Y, X)
        ``[k, y, x]``: affinity of (y, x) and (y + dy_k, x + dx_k), in [0, 1]
        (:func:`embedding_affinities` makes these). Values whose partner is
        outside the image are ignored; NaN means "no edge".
    offsets : array-like of int, shape (K, 2)
        (dy, dx) per channel, short-range ones first.
    attractive : int
        How many leading offsets are short-range (attractive) edges, >= 1.
    bias : float
        Affinity at which an edge flips from attractive to repulsive; 0.5
        merges exactly the pairs more likely together than apart.
    alpha : float
        Factor on long-range affinities (>= 0): above 1 fewer, below 1 more
        objects.
    mask : ndarray of bool, shape (Y, X), optional
        Pixels to partition; edges touching other pixels are dropped and
        those pixels get label 0.
    strides : None, int or array-like of int, shape (K, 2)
        Use only the edges from pixels on a grid of this step, per offset
        (mwatershed's ``strides``). None: step 1 for the short-range
        offsets and 2 x 2 for the long-range ones (a quarter of the
        long-range edges, as in Wolf et al.; about halves the time). An int
        s: step 1 for short-range, s x s for long-range (1 uses every edge).
    randomize : bool
        Instead of a regular grid, keep each edge with probability
        1 / prod(stride) (mwatershed's ``randomized_strides``; not
        reproducible run to run).
    repulsion : {"bias", "inverted"}
        How affinities become weights, see above.

    Returns
    -------
    ndarray of int32, shape (Y, X)
        0 outside ``mask``; objects 1..N numbered in raster order of their
        first pixel. A pixel that no attractive edge joins to another is an
        object of its own (remove those with
        :func:`connected_components` ``(labels, min_size)``).

    Raises
    ------
    InputError
        For mismatched shapes, bad offsets or strides, ``attractive`` out of
        range, a non-finite bias or a negative alpha.

    Notes
    -----
    Measured on a shared 2-core CPU (``benchmarks/partition_speed.py``,
    512 x 512 pixels, half of them in ``mask``, 8 offsets): 0.36 s with the
    default strides, 0.68 s with ``strides=1``, 0.70 s without a mask.
    """
    import mwatershed

    offsets = check_offsets(offsets)
    weights = edge_weights(affinities, offsets, attractive=attractive, bias=bias, alpha=alpha, repulsion=repulsion)
    shape = weights.shape[1:]
    strides = _strides(strides, len(offsets), attractive)

    labels = np.zeros(shape, dtype=np.int32)
    if mask is None:
        box = (slice(None), slice(None))
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise InputError(f"mask shape {mask.shape} does not match the affinities' {shape}")
        if not mask.any():
            return labels
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        mask = mask[box]
        weights = weights[(slice(None),) + box] * mask
        for k, offset in enumerate(offsets):
            source, target = pair_slices(offset, mask.shape)
            weights[(k,) + source] *= mask[target]
    # Offsets reaching past the (cropped) image have no edges; mwatershed panics on them.
    fits = (np.abs(offsets) < np.array(weights.shape[1:])).all(axis=1)
    if fits.any():
        raw = mwatershed.agglom(
            np.ascontiguousarray(weights[fits]),
            offsets[fits].tolist(),
            strides=strides[fits].tolist(),
            randomized_strides=bool(randomize),
        ).astype(np.int64)
    else:
        raw = np.zeros(weights.shape[1:], dtype=np.int64)
    # mwatershed gives 0 to pixels that were merged with nothing: make each its own object.
    singles = raw == 0
    raw[singles] = raw.max() + 1 + np.flatnonzero(singles.ravel())
    inside = np.ones(raw.shape, bool) if mask is None else mask
    values, first, inverse = np.unique(raw[inside], return_index=True, return_inverse=True)
    rank = np.empty(len(values), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(values) + 1, dtype=np.int32)
    out = np.zeros(raw.shape, dtype=np.int32)
    out[inside] = rank[inverse.ravel()]
    labels[box] = out
    return labels


def _strides(strides, k: int, attractive: int) -> np.ndarray:
    if strides is None:
        strides = 2
    if np.isscalar(strides):
        step = int(strides)
        if step < 1:
            raise InputError(f"strides must be >= 1, got {strides}")
        array = np.ones((k, 2), dtype=np.int64)
        array[attractive:] = step
        return array
    array = np.asarray(strides)
    if array.shape != (k, 2) or not np.issubdtype(array.dtype, np.integer) or (array < 1).any():
        raise InputError(f"strides must be positive integers of shape ({k}, 2), got {array.shape}")
    return array.astype(np.int64)
