"""Foregrounds and outlines from image intensity, for fluorescence images.

Plain functions on a smoothed, normalised ``(Y, X)`` image: a foreground by
Otsu's threshold on the log intensity (keeps dim objects beside bright ones),
and each object's outline tightened to its own brightness.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from probseg.partition.components import split_and_filter


def log_otsu_foreground(smooth: np.ndarray, min_size: int, offset: float = 0.05) -> np.ndarray:
    """Foreground of a normalised fluorescence image: Otsu on ``log(smooth + offset)``, holes filled, specks removed.

    The log compresses very bright objects (mitotic nuclei), so dim objects
    beside them stay above the threshold; the outlines are refined later by
    :func:`outline_by_intensity`.

    Parameters
    ----------
    smooth : ndarray, shape (Y, X)
        Smoothed intensities normalised to about 0..1.
    min_size : int
        Components smaller than this many pixels are dropped.
    offset : float
        Added before the log, in normalised units.

    Returns
    -------
    ndarray of bool, shape (Y, X)
    """
    logged = np.log(np.clip(smooth, 0, None) + offset)
    if logged.max() <= logged.min():
        return np.zeros(smooth.shape, dtype=bool)
    mask = ndi.binary_fill_holes(logged > threshold_otsu(logged))
    return split_and_filter(mask.astype(np.int32), min_size) > 0


def outline_by_intensity(labels: np.ndarray, smooth: np.ndarray, foreground: np.ndarray, level: float,
                         object_size: float, min_size: int) -> np.ndarray:
    """Tighten every object to its pixels above ``background + level * (peak - background)``.

    ``peak`` is the 95th percentile of the object's smoothed intensity;
    ``background`` is the median of the non-foreground pixels within
    ``object_size`` px of the object's bounding box (the image's background
    median when fewer than 20 are there). Holes are filled and the largest
    piece kept, so every object stays one region inside its old extent.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
    smooth : ndarray, shape (Y, X)
    foreground : ndarray of bool, shape (Y, X)
    level : float
        0 keeps everything, 0.5 is the half-maximum outline.
    object_size : float
        Typical diameter in px; the radius of the local background.
    min_size : int

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    everywhere = float(np.median(smooth[~foreground])) if (~foreground).any() else float(smooth.min())
    r = int(round(object_size))
    height, width = labels.shape
    out = np.zeros(labels.shape, dtype=np.int32)
    for i, box in enumerate(ndi.find_objects(labels), 1):
        if box is None:
            continue
        mine = labels[box] == i
        peak = np.percentile(smooth[box][mine], 95)
        y0, y1 = max(0, box[0].start - r), min(height, box[0].stop + r)
        x0, x1 = max(0, box[1].start - r), min(width, box[1].stop + r)
        ring = smooth[y0:y1, x0:x1][~foreground[y0:y1, x0:x1]]
        background = float(np.median(ring)) if ring.size >= 20 else everywhere
        keep = mine & (smooth[box] > background + level * (peak - background))
        keep = (ndi.binary_fill_holes(keep) & mine) | keep
        parts, n = ndi.label(keep)
        if n > 1:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            keep = parts == sizes.argmax()
        out[box][keep] = i
    return split_and_filter(out, min_size)
