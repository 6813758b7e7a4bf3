"""Percentile normalisation, the same for training and inference."""

from __future__ import annotations

import numpy as np

from probseg.core.errors import InputError

DEFAULT_PERCENTILES = (1.0, 99.8)


def percentile_range(image: np.ndarray, percentiles=DEFAULT_PERCENTILES, axis=None) -> tuple:
    """Low and high percentiles of ``image``, per channel when ``axis`` is given.

    Parameters
    ----------
    image : ndarray
        Finite values of any real dtype.
    percentiles : (float, float)
        Lower and upper percentile, in percent.
    axis : int or tuple of int, optional
        Axes to reduce over; the others are kept (e.g. the channel axis).

    Returns
    -------
    low, high : float or ndarray
    """
    lo, hi = np.percentile(image.astype(np.float32, copy=False), percentiles, axis=axis)
    return lo, hi


def normalize_percentile(image: np.ndarray, low, high, eps: float = 1e-6) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (values outside are not clipped).

    Not clipping keeps bright objects distinguishable from each other, as
    cellpose and stardist do; ``low``/``high`` may be arrays broadcasting
    against ``image`` (per-channel statistics).

    Raises
    ------
    InputError
        If ``high`` is not above ``low``: the image carries no contrast.
    """
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    if np.any(high - low <= eps):
        raise InputError(
            "the image has no contrast between its 1st and 99.8th percentiles "
            "(nearly constant, or almost all pixels equal); nothing to segment"
        )
    return (image.astype(np.float32, copy=False) - low) / (high - low)
