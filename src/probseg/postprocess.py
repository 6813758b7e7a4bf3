"""Label clean-up shared by all methods."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential


def split_and_filter(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Split labels into connected components and drop the small ones.

    A cluster in embedding space can cover two separate places in the image
    (two similar objects far apart); each place becomes its own object.

    Parameters
    ----------
    labels : ndarray of int
        0 is background.
    min_size : int
        Objects with fewer pixels are set to 0.

    Returns
    -------
    ndarray of int32
        Sequential ids 1..N.
    """
    # skimage's label() keeps neighbouring pixels together only when their
    # values match, so touching objects stay apart.
    parts = connected_components(labels, background=0, connectivity=1)
    if min_size > 0 and parts.max() > 0:
        sizes = np.bincount(parts.ravel())
        small = sizes < min_size
        small[0] = False
        parts[small[parts]] = 0
    return relabel_sequential(parts.astype(np.int32))[0]


def shrink(labels: np.ndarray, pixels: int) -> np.ndarray:
    """Erode every object by ``pixels`` (the "halo" between touching objects).

    Objects that would vanish keep their innermost pixels.
    """
    if pixels <= 0:
        return labels
    out = labels.copy()
    boundary = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        diff = np.diff(labels, axis=axis) != 0
        sl_a = [slice(None)] * labels.ndim
        sl_b = [slice(None)] * labels.ndim
        sl_a[axis] = slice(1, None)
        sl_b[axis] = slice(None, -1)
        boundary[tuple(sl_a)] |= diff
        boundary[tuple(sl_b)] |= diff
    depth = ndi.distance_transform_edt(~boundary & (labels > 0))
    peak = ndi.maximum(depth, labels, index=np.arange(labels.max() + 1))
    keep = depth >= np.minimum(pixels, np.asarray(peak)[labels])
    out[~keep] = 0
    return out
