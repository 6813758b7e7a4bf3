"""Where a set of segmentation samples disagrees, per pixel, in 0..1."""

from __future__ import annotations

import numpy as np

from probseg.errors import InputError

# Neighbour displacements at which co-membership is compared: the four axis
# directions and the four diagonals, all at the same distance.
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _shifted_pair(a: np.ndarray, b_offset: tuple) -> tuple:
    """Views of ``a[..., p]`` and ``a[..., p + offset]`` over valid pixels."""
    dy, dx = b_offset
    h, w = a.shape[-2:]
    ys = slice(max(0, -dy), h - max(0, dy))
    xs = slice(max(0, -dx), w - max(0, dx))
    ys2 = slice(max(0, dy), h - max(0, -dy) if dy < 0 else h)
    xs2 = slice(max(0, dx), w + min(0, dx) if dx < 0 else w)
    return (ys, xs), (ys2, xs2)


def pixel_disagreement(samples: np.ndarray, distance: int = 2) -> np.ndarray:
    """Per-pixel disagreement between instance segmentation samples.

    Label ids are arbitrary in each sample, so samples are compared through
    two permutation-invariant questions per pixel ``p``:

    * is ``p`` foreground? With ``f`` the fraction of samples saying yes, the
      disagreement is ``4 f (1 - f)``;
    * are ``p`` and its neighbour ``q`` (8 neighbours at ``distance`` px) in
      the same object? With ``m`` the fraction saying yes, ``4 m (1 - m)``,
      averaged over the neighbours of ``p`` (each pair counts for both ends).

    The result is the larger of the two: 0 where all samples agree, 1 where
    they split evenly.

    Parameters
    ----------
    samples : ndarray of int, shape (n, Y, X)
        ``n >= 1`` label images, 0 = background.
    distance : int
        Neighbour distance in pixels.

    Returns
    -------
    ndarray of float32, shape (Y, X)

    Raises
    ------
    InputError
        If ``samples`` is not 3-D with integer values.
    """
    s = np.asarray(samples)
    if s.ndim != 3 or not np.issubdtype(s.dtype, np.integer):
        raise InputError(f"samples must be an integer array of shape (n, Y, X), got {s.dtype} {s.shape}")
    n, h, w = s.shape
    fg = (s > 0).mean(axis=0, dtype=np.float32)
    fg_term = 4.0 * fg * (1.0 - fg)
    pair_sum = np.zeros((h, w), dtype=np.float32)
    pair_count = np.zeros((h, w), dtype=np.float32)
    for dy, dx in _DIRECTIONS:
        dy, dx = dy * distance, dx * distance
        (ya, xa), (yb, xb) = _shifted_pair(s, (dy, dx))
        a = s[:, ya, xa]
        b = s[:, yb, xb]
        m = ((a == b) & (a > 0)).mean(axis=0, dtype=np.float32)
        term = 4.0 * m * (1.0 - m)
        pair_sum[ya, xa] += term
        pair_count[ya, xa] += 1
        pair_sum[yb, xb] += term
        pair_count[yb, xb] += 1
    pair_term = pair_sum / np.maximum(pair_count, 1)
    return np.clip(np.maximum(fg_term, pair_term), 0.0, 1.0).astype(np.float32)
