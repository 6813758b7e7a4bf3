"""The arrays around InpaintAff's split step: the image noise level it compares predictions with,
the draws' affinities with their mean first, and the maps shown from them.

Affinities are NaN where no patch held the pair; they stay NaN, and the
means here skip them without numpy's warnings about all-NaN slices.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

__all__ = ["noise_variance", "with_mean", "shown_maps"]


def noise_variance(plane: np.ndarray) -> float:
    """``s²`` of a normalised ``(C, Y, X)`` plane, from the median absolute difference of horizontal neighbours.

    Neighbour differences of smooth signal are small, so their robust
    spread is the noise's times sqrt(2); averaged over channels.

    Parameters
    ----------
    plane : ndarray, shape (C, Y, X)
        A normalised plane.

    Returns
    -------
    float
        The noise variance, the ``noise_var`` of
        :func:`probseg.methods.inpaintaff.split.inpaint_affinities`.
    """
    diffs = np.diff(np.asarray(plane, dtype=np.float32), axis=-1).reshape(len(plane), -1)
    mad = np.median(np.abs(diffs - np.median(diffs, axis=1, keepdims=True)), axis=1)
    return float(np.mean((1.4826 * mad / np.sqrt(2.0)) ** 2))


def with_mean(draws: np.ndarray) -> np.ndarray:
    """``draws`` ``(n, K, Y, X)`` with their mean over the draws put first, ``(n + 1, K, Y, X)``; unchanged for one draw.

    The mean skips NaN (a pair no patch of a draw held); it is NaN only
    where every draw is.
    """
    if len(draws) == 1:
        return draws
    with _quiet_nan():
        mean = np.nanmean(draws, axis=0)
    return np.concatenate([mean[None], draws])


def shown_maps(affinities: np.ndarray) -> dict:
    """Maps worth showing of one plane's affinities ``(draws, K, Y, X)``, draw 0 the segmentation's.

    Returns
    -------
    dict of str to ndarray of float32, shape (Y, X)
        ``"boundaries"``: 1 minus draw 0's mean short-range affinity (its
        first two offsets); with two draws or more after draw 0, ``"affinity
        variance"``: their variance, averaged over the offsets. NaN becomes 0.
    """
    with _quiet_nan():
        boundaries = 1.0 - np.nanmean(affinities[0, :2], axis=0)
    maps = {"boundaries": np.nan_to_num(boundaries, nan=0.0).astype(np.float32)}
    if len(affinities) > 2:
        with _quiet_nan():
            var = np.nanmean(np.nanvar(affinities[1:], axis=0), axis=0)
        maps["affinity variance"] = np.nan_to_num(var, nan=0.0).astype(np.float32)
    return maps


@contextlib.contextmanager
def _quiet_nan():
    """Silence numpy's warnings about all-NaN slices: pairs no patch held stay NaN, as they should."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
