"""Connected components, small-object removal, boundaries and erosion of label images."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as _label
from skimage.segmentation import relabel_sequential

__all__ = ["connected_components", "split_and_filter", "shrink", "label_boundaries"]


def connected_components(labels_or_mask: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Split labels (or a mask) into connected components and drop the small ones.

    Two pixels belong to one component when they are 4-connected (2-D; in
    N-D: share a face) and carry the same non-zero value, so touching
    objects with different ids stay apart, and an id that covers two
    separate places in the image becomes two objects.

    Parameters
    ----------
    labels_or_mask : ndarray of int or bool, shape (Y, X) or any N-D shape
        0 / False is background.
    min_size : int
        Components with fewer pixels are set to 0.

    Returns
    -------
    ndarray of int32, same shape
        0 = background, objects 1..N (sequential, in raster order of first
        appearance).
    """
    array = np.asarray(labels_or_mask)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    parts = _label(array, background=0, connectivity=1)
    if min_size > 0 and parts.max() > 0:
        sizes = np.bincount(parts.ravel())
        small = sizes < min_size
        small[0] = False
        parts[small[parts]] = 0
    return relabel_sequential(parts.astype(np.int32))[0]


def split_and_filter(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Same as :func:`connected_components` (the name other code uses).

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
    return connected_components(labels, min_size)


def shrink(labels: np.ndarray, pixels: int) -> np.ndarray:
    """Erode every object by ``pixels`` (the "halo" between touching objects).

    Objects that would vanish keep their innermost pixels.

    Parameters
    ----------
    labels : ndarray of int, any shape
        0 is background.
    pixels : int
        Erosion depth in pixels (Euclidean distance to the object's
        boundary, including boundaries with touching objects); <= 0 returns
        ``labels`` itself.

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
    """
    if pixels <= 0:
        return labels
    out = labels.copy()
    depth = ndi.distance_transform_edt(~label_boundaries(labels) & (labels > 0))
    peak = ndi.maximum(depth, labels, index=np.arange(labels.max() + 1))
    keep = depth >= np.minimum(pixels, np.asarray(peak)[labels])
    out[~keep] = 0
    return out


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels with a face neighbour of another label, background included.

    Both sides of every change of label are marked: where two objects touch,
    the outer pixels of each; where an object meets background, its outline
    and the background pixels next to it.

    Parameters
    ----------
    labels : ndarray of int, any shape
        0 is background.

    Returns
    -------
    ndarray of bool, same shape
    """
    labels = np.asarray(labels)
    boundary = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        diff = np.diff(labels, axis=axis) != 0
        sl_a = [slice(None)] * labels.ndim
        sl_b = [slice(None)] * labels.ndim
        sl_a[axis] = slice(1, None)
        sl_b[axis] = slice(None, -1)
        boundary[tuple(sl_a)] |= diff
        boundary[tuple(sl_b)] |= diff
    return boundary
