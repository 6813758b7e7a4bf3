"""Where a set of segmentation samples disagrees, per pixel, in 0..1.

Also the Bernoulli entropy used for per-object probabilities and the
patch-wise checks of whether an uncertainty map points at the errors
(Mukhoti & Gal, 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import xlogy

from probseg.core.errors import InputError
from probseg.evaluation.metrics import match_instances

# Neighbour displacements at which co-membership is compared: the four axis
# directions and the four diagonals, all at the same distance.
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def shifted_pair(a, b_offset: tuple) -> tuple:
    """Slices selecting ``a[..., p]`` and ``a[..., p + offset]`` over the pixels where both exist.

    Works for anything sliceable with a ``shape`` (numpy arrays, torch tensors).
    """
    dy, dx = b_offset
    h, w = a.shape[-2:]
    # Lengths are clamped at 0: an offset as long as the image leaves no pair
    # (negative stops would wrap around and give slices of unequal length).
    ny, nx = max(0, h - abs(dy)), max(0, w - abs(dx))
    ya, xa, yb, xb = max(0, -dy), max(0, -dx), max(0, dy), max(0, dx)
    return (slice(ya, ya + ny), slice(xa, xa + nx)), (slice(yb, yb + ny), slice(xb, xb + nx))


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
        (ya, xa), (yb, xb) = shifted_pair(s, (dy, dx))
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


def bernoulli_entropy(p) -> np.ndarray:
    """Entropy in bits of a yes/no event of probability ``p``.

    ``H(p) = -p log2 p - (1 - p) log2 (1 - p)``: 0 at ``p`` = 0 or 1 (taking
    ``0 log 0 = 0``), 1 at ``p = 0.5``.

    Parameters
    ----------
    p : float or array_like of float
        Probabilities; values outside [0, 1] (rounding error) are clipped.
        NaN stays NaN.

    Returns
    -------
    float or ndarray
        Same shape as ``p``; float32 when ``p`` is float32 (or float16),
        float64 otherwise; a Python float for a scalar ``p``.
    """
    arr = np.asarray(p)
    dtype = np.float32 if arr.dtype in (np.float16, np.float32) else np.float64
    q = np.clip(arr.astype(np.float64), 0.0, 1.0)
    # Subtracting from +0.0 keeps certain pixels at 0.0 rather than -0.0.
    h = (0.0 - (xlogy(q, q) + xlogy(1.0 - q, 1.0 - q))) / np.log(2.0)
    # Rounding can leave h a hair below 0 or above 1 near the ends and middle.
    h = np.clip(h, 0.0, 1.0).astype(dtype)
    return float(h) if h.ndim == 0 else h


@dataclass
class PatchMetrics:
    """Patch-wise calibration of an uncertainty map; see :func:`patch_uncertainty_metrics`.

    Attributes
    ----------
    thresholds : ndarray of float64, shape (T,)
        Uncertainty thresholds: a patch is certain when its mean uncertainty
        is at most the threshold.
    p_accurate_given_certain : ndarray of float64, shape (T,)
        ``n_ac / (n_ac + n_ic)``; NaN where no patch is certain.
    p_uncertain_given_inaccurate : ndarray of float64, shape (T,)
        ``n_iu / (n_ic + n_iu)``; NaN where no patch is inaccurate.
    pavpu : ndarray of float64, shape (T,)
        ``(n_ac + n_iu) / (n_ac + n_au + n_ic + n_iu)``.
    n_ac, n_au, n_ic, n_iu : ndarray of int64, shape (T,)
        Patches accurate and certain, accurate and uncertain, inaccurate
        and certain, inaccurate and uncertain.
    patch : int
        Patch side in pixels.
    """

    thresholds: np.ndarray
    p_accurate_given_certain: np.ndarray
    p_uncertain_given_inaccurate: np.ndarray
    pavpu: np.ndarray
    n_ac: np.ndarray
    n_au: np.ndarray
    n_ic: np.ndarray
    n_iu: np.ndarray
    patch: int


def correct_pixels(prediction, truth) -> np.ndarray:
    """Which pixels an instance segmentation gets right.

    Predicted and true objects are matched one-to-one at IoU > 0.5 (see
    :func:`probseg.evaluation.metrics.match_instances`; above 0.5 the matching is
    unique). A pixel is correct when it is background in both images, or
    when its predicted object is matched to the true object at that pixel.

    Parameters
    ----------
    prediction : ndarray of int, shape (Y, X)
    truth : ndarray of int, shape (Y, X)
        0 is background in both; ids need not correspond.

    Returns
    -------
    ndarray of bool, shape (Y, X)

    Raises
    ------
    InputError
        For invalid label images (see :func:`probseg.evaluation.metrics.match_instances`).
    """
    iou, pred_ids, gt_ids = match_instances(prediction, truth)
    pred = np.asarray(prediction).astype(np.int64)
    gt = np.asarray(truth).astype(np.int64)
    partner = np.full(pred_ids.size, -1, dtype=np.int64)
    rows, cols = np.nonzero(iou > 0.5)
    partner[rows] = gt_ids[cols]
    fg = pred > 0
    index = np.searchsorted(pred_ids, pred[fg])
    correct = ~fg & (gt == 0)
    correct[fg] = partner[index] == gt[fg]
    return correct


def patch_uncertainty_metrics(uncertainty, prediction, truth, patch: int = 4, thresholds=None) -> PatchMetrics:
    """Patch accuracy versus patch uncertainty, for instance segmentations.

    The metrics of Mukhoti & Gal (2018), "Evaluating Bayesian deep learning
    methods for semantic segmentation", with pixel accuracy defined for
    instances:

    * a pixel is correct as in :func:`correct_pixels` (background in both
      images, or its predicted object is matched at IoU > 0.5 to the true
      object there);
    * the image is cut into non-overlapping ``patch x patch`` tiles from the
      top-left corner; tiles at the bottom and right borders may be smaller
      and count like the others;
    * a tile is *accurate* when the fraction of its pixels that are correct
      is ``>= 0.5``, and *certain* at threshold ``t`` when the mean of
      ``uncertainty`` over its pixels is ``<= t``;
    * with ``n_ac``, ``n_au``, ``n_ic``, ``n_iu`` the numbers of tiles
      accurate-certain, accurate-uncertain, inaccurate-certain and
      inaccurate-uncertain at ``t``:
      ``p(accurate | certain) = n_ac / (n_ac + n_ic)``,
      ``p(uncertain | inaccurate) = n_iu / (n_ic + n_iu)`` and
      ``PAvPU = (n_ac + n_iu) / (n_ac + n_au + n_ic + n_iu)``. A ratio with
      a zero denominator is NaN.

    Parameters
    ----------
    uncertainty : ndarray of float, shape (Y, X)
        Finite per-pixel uncertainty, higher = less sure.
    prediction : ndarray of int, shape (Y, X)
        Predicted labels, 0 = background.
    truth : ndarray of int, shape (Y, X)
        True labels, 0 = background.
    patch : int
        Tile side in pixels, ``>= 1``.
    thresholds : array_like of float, optional
        Uncertainty thresholds. Default: 21 evenly spaced values from the
        lowest to the highest tile mean uncertainty.

    Returns
    -------
    PatchMetrics

    Raises
    ------
    InputError
        If the arrays are not 2-D of one shape, ``uncertainty`` is not
        finite, the labels are invalid, ``patch < 1`` or a threshold is not
        finite.
    """
    u = np.asarray(uncertainty)
    if u.ndim != 2:
        raise InputError(f"uncertainty must be a 2-D image, got shape {u.shape}")
    for name, other in (("prediction", prediction), ("truth", truth)):
        if np.shape(other) != u.shape:
            raise InputError(f"{name} has shape {np.shape(other)} but uncertainty has shape {u.shape}; they must be equal")
    if u.size == 0:
        raise InputError(f"uncertainty is empty (shape {u.shape})")
    if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)) or u.dtype == bool:
        raise InputError(f"uncertainty must hold numbers, got dtype {u.dtype}")
    u = u.astype(np.float64)
    if not np.all(np.isfinite(u)):
        raise InputError("uncertainty contains NaN or infinite values")
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise InputError(f"patch must be a whole number of pixels >= 1, got {patch!r}")
    patch = int(patch)
    correct = correct_pixels(prediction, truth)

    height, width = u.shape
    rows = np.arange(height) // patch
    cols = np.arange(width) // patch
    tile = (rows[:, None] * (cols[-1] + 1) + cols[None, :]).ravel()
    n_tiles = int(tile[-1]) + 1
    size = np.bincount(tile, minlength=n_tiles)
    mean_u = np.bincount(tile, weights=u.ravel(), minlength=n_tiles) / size
    accurate = np.bincount(tile, weights=correct.ravel(), minlength=n_tiles) / size >= 0.5

    if thresholds is None:
        t = np.linspace(mean_u.min(), mean_u.max(), 21)
    else:
        try:
            t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
        except (TypeError, ValueError):
            raise InputError(f"thresholds must be numbers, got {thresholds!r}") from None
        if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
            raise InputError("thresholds must be a non-empty list of finite numbers")
    certain = mean_u[None, :] <= t[:, None]
    n_ac = np.count_nonzero(certain & accurate, axis=1)
    n_au = np.count_nonzero(~certain & accurate, axis=1)
    n_ic = np.count_nonzero(certain & ~accurate, axis=1)
    n_iu = np.count_nonzero(~certain & ~accurate, axis=1)
    p_ac = np.where(n_ac + n_ic > 0, n_ac / np.maximum(n_ac + n_ic, 1), np.nan)
    p_ui = np.where(n_ic + n_iu > 0, n_iu / np.maximum(n_ic + n_iu, 1), np.nan)
    pavpu = (n_ac + n_iu) / float(n_tiles)
    return PatchMetrics(t, p_ac, p_ui, pavpu, n_ac.astype(np.int64), n_au.astype(np.int64),
                        n_ic.astype(np.int64), n_iu.astype(np.int64), patch)
