"""Pixel-pair affinities from per-pixel embeddings, and offset patterns.

An affinity is the probability that pixel ``p`` and pixel ``p + offset`` belong
to the same object, in [0, 1]. Offsets are (dy, dx) in pixels; channel ``k``
of an affinity array of shape (K, Y, X) holds, at ``[k, y, x]``, the
affinity of ``(y, x)`` and ``(y + dy_k, x + dx_k)``, the convention of
:func:`probseg.partition.mutex_watershed` (and of the ``mwatershed`` package).
"""

from __future__ import annotations

import numpy as np

from probseg.core.errors import InputError

__all__ = ["DEFAULT_OFFSETS", "SPARSE_LONG_RANGE_OFFSETS", "embedding_affinities", "offsets_for_object_size"]

# Wolny et al. (2022, appendix on affinity-based clustering): direct
# neighbours plus "long-range edges between all pixel pairs with distance 3, 9
# and 27 across all dimensions". The first two (short-range) offsets are the
# attractive ones of mutex_watershed's default ``attractive=2``.
DEFAULT_OFFSETS = np.array(
    [[-1, 0], [0, -1], [-3, 0], [0, -3], [-9, 0], [0, -9], [-27, 0], [0, -27]],
    dtype=np.int64,
)
DEFAULT_OFFSETS.flags.writeable = False

# Wolf, Hamprecht, Funke, "Instance Separation Emerges from Inpainting" (2020),
# appendix C: the direct neighbours (attractive) and ten sparse long-range
# offsets (repulsive): two along the axes and two diagonal at 9 px, four
# oblique ones of (9, 4) px, and two along the axes at 27 px.
SPARSE_LONG_RANGE_OFFSETS = np.array(
    [[-1, 0], [0, -1], [-9, 0], [0, -9], [-9, -9], [9, -9], [-9, -4], [-4, -9], [4, -9], [9, -4], [-27, 0], [0, -27]],
    dtype=np.int64,
)
SPARSE_LONG_RANGE_OFFSETS.flags.writeable = False

KERNELS = ("gaussian", "hinge")


def check_offsets(offsets, ndim: int = 2) -> np.ndarray:
    """Offsets as an int64 array of shape (K, ndim); raises InputError otherwise."""
    array = np.asarray(offsets)
    if array.ndim != 2 or array.shape[1] != ndim or len(array) == 0:
        raise InputError(f"expected offsets of shape (K, {ndim}), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise InputError("offsets must be integers")
    array = array.astype(np.int64)
    if (np.abs(array).sum(axis=1) == 0).any():
        raise InputError("an offset of (0, 0) links a pixel to itself")
    return array


def pair_slices(offset, shape) -> tuple:
    """Slices (source, target) such that ``a[target]`` is ``a[source]``'s partner at ``offset``.

    ``source`` selects the pixels p whose partner p + offset lies inside an
    array of ``shape``; ``target`` selects those partners, in the same order.
    """
    source, target = [], []
    for d, n in zip(offset, shape):
        d = int(d)
        if abs(d) >= n:  # no partner inside the image
            source.append(slice(0, 0))
            target.append(slice(0, 0))
        else:
            source.append(slice(max(0, -d), n - max(0, d)))
            target.append(slice(max(0, d), n - max(0, -d)))
    return tuple(source), tuple(target)


def embedding_affinities(
    embeddings: np.ndarray,
    offsets=DEFAULT_OFFSETS,
    delta: float = 1.0,
    kernel: str = "gaussian",
) -> np.ndarray:
    """Affinity of every pixel and its partner at each offset, from embedding distance.

    With ``d = ||e_p - e_{p+offset}||`` (Euclidean, over the D channels):

    - ``kernel="gaussian"``: ``a = exp(-d**2 * ln 2 / delta**2)``; 1 at d = 0,
      0.5 at d = delta, 1/16 at d = 2 delta.
    - ``kernel="hinge"``: ``a = max(1 - d / (2 delta), 0)**2``, one minus the
      boundary weight of eq. 12 of Wolny et al. (2022) with ``delta`` its push hinge
      ``delta_d``; 1 at d = 0, 0.25 at d = delta, exactly 0 from d = 2 delta.

    Parameters
    ----------
    embeddings : ndarray of float, shape (D, Y, X)
    offsets : array-like of int, shape (K, 2)
        (dy, dx) per channel; default :data:`DEFAULT_OFFSETS`.
    delta : float
        Distance scale in embedding units (> 0), see above.
    kernel : {"gaussian", "hinge"}

    Returns
    -------
    ndarray of float32, shape (K, Y, X), values in [0, 1]
        ``[k, y, x]`` is the affinity of (y, x) and (y + dy_k, x + dx_k).
        Pairs whose partner lies outside the image get 0 (no NaN); the mutex
        watershed never reads them.

    Raises
    ------
    InputError
        For embeddings that are not (D, Y, X) or not finite, bad offsets, a
        non-positive delta or an unknown kernel.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 3:
        raise InputError(f"expected (D, Y, X) embeddings, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise InputError("embeddings must be finite")
    if not delta > 0:
        raise InputError(f"delta must be positive, got {delta}")
    if kernel not in KERNELS:
        raise InputError(f"unknown affinity kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    offsets = check_offsets(offsets)
    out = np.zeros((len(offsets),) + emb.shape[1:], dtype=np.float32)
    for k, offset in enumerate(offsets):
        source, target = pair_slices(offset, emb.shape[1:])
        diff = emb[(slice(None),) + source] - emb[(slice(None),) + target]
        dist2 = np.einsum("dyx,dyx->yx", diff, diff)
        if kernel == "gaussian":
            out[(k,) + source] = np.exp(dist2 * np.float32(-np.log(2.0) / delta**2))
        else:
            out[(k,) + source] = np.clip(1 - np.sqrt(dist2) / np.float32(2 * delta), 0, 1) ** 2
    return out


def offsets_for_object_size(size: float) -> np.ndarray:
    """Offsets as in Wolny et al. (2022), scaled to the objects: neighbours plus powers of 3 up to ``size``.

    Parameters
    ----------
    size : float
        Typical object diameter in pixels (>= 1).

    Returns
    -------
    ndarray of int64, shape (2 + 2 m, 2)
        ``[-1, 0], [0, -1]`` then ``[-d, 0], [0, -d]`` for d = 3, 9, 27, ...
        while d <= size (at least d = 3, so m >= 1). ``size=27`` gives
        :data:`DEFAULT_OFFSETS`.
    """
    if not size >= 1:
        raise InputError(f"object size must be at least 1 px, got {size}")
    rows = [[-1, 0], [0, -1]]
    d = 3
    while True:
        rows += [[-d, 0], [0, -d]]
        d *= 3
        if d > size:
            break
    return np.array(rows, dtype=np.int64)
