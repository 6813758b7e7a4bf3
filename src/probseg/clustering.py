"""Embeddings to instances: mean-shift over foreground pixels.

Cellulus-style embeddings are positions in the image plane, so mean-shift can
run on a grid: the flat-kernel mean of all points within the bandwidth of any
location is a ratio of two convolutions of the points' histogram with a disk.
Every point then climbs that field in a few vectorised lookups. This is exact
mean-shift up to 1 px binning (negligible against bandwidths of several
pixels), runs in well under a second on a megapixel image, and - unlike
nearest-centre assignment - gives each point the mode it actually climbs to.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from probseg.errors import InputError
from probseg.postprocess import split_and_filter


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2 <= radius**2).astype(np.float64)


def mean_shift_2d(points: np.ndarray, bandwidth: float, *, max_iter: int = 100, tol: float = 0.01) -> tuple:
    """Flat-kernel mean-shift of 2-D points on a 1 px grid.

    Parameters
    ----------
    points : ndarray, shape (N, 2)
        Coordinates in pixels.
    bandwidth : float
        Kernel radius in pixels (> 0.5).
    max_iter : int
        Iterations of the mean-shift update.
    tol : float
        Stop when no point moves more than ``tol * bandwidth``.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
        Mode index of each point, 0..K-1, modes ordered by density.
    modes : ndarray, shape (K, 2)
    """
    if bandwidth <= 0.5:
        raise InputError(f"mean-shift bandwidth must exceed 0.5 px, got {bandwidth}")
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2))
    pad = int(np.ceil(bandwidth)) + 2
    origin = np.floor(pts.min(axis=0)) - pad
    shape = tuple((np.ceil(pts.max(axis=0)) - origin + pad + 1).astype(int))
    # Histogram with bilinear splatting keeps the first moments exact.
    rel = pts - origin
    base = np.floor(rel).astype(np.int64)
    frac = rel - base
    size = shape[0] * shape[1]
    hist = np.zeros(size)
    moment_y = np.zeros(size)
    moment_x = np.zeros(size)
    for dy in (0, 1):
        for dx in (0, 1):
            w = (frac[:, 0] if dy else 1 - frac[:, 0]) * (frac[:, 1] if dx else 1 - frac[:, 1])
            flat = (base[:, 0] + dy) * shape[1] + base[:, 1] + dx
            hist += np.bincount(flat, w, size)
            moment_y += np.bincount(flat, w * rel[:, 0], size)
            moment_x += np.bincount(flat, w * rel[:, 1], size)
    hist, moment_y, moment_x = (a.reshape(shape) for a in (hist, moment_y, moment_x))
    disk = _disk(bandwidth)
    mass = fftconvolve(hist, disk, mode="same")
    sum_y = fftconvolve(moment_y, disk, mode="same")
    sum_x = fftconvolve(moment_x, disk, mode="same")
    floor = 1e-9
    pos = rel.copy()
    active = np.arange(len(pos))
    for _ in range(max_iter):
        coords = pos[active].T
        m = ndi.map_coordinates(mass, coords, order=1, mode="nearest")
        ok = m > floor
        ny = ndi.map_coordinates(sum_y, coords, order=1, mode="nearest")
        nx = ndi.map_coordinates(sum_x, coords, order=1, mode="nearest")
        new = pos[active].copy()
        new[ok, 0] = ny[ok] / m[ok]
        new[ok, 1] = nx[ok] / m[ok]
        moved = np.abs(new - pos[active]).max(axis=1)
        pos[active] = new
        # Points that have settled stay put; only the rest are updated.
        active = active[moved >= tol * bandwidth]
        if len(active) == 0:
            break
    # Merge converged positions closer than the bandwidth, densest first (as sklearn does).
    density = ndi.map_coordinates(mass, pos.T, order=1, mode="nearest")
    rounded, inverse = np.unique(np.round(pos * 2) / 2, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    best = np.zeros(len(rounded))
    np.maximum.at(best, inverse, density)
    order = np.argsort(-best, kind="stable")
    tree = cKDTree(rounded)
    owner = np.full(len(rounded), -1)
    modes = []
    for i in order:
        if owner[i] >= 0:
            continue
        near = tree.query_ball_point(rounded[i], bandwidth)
        free = [j for j in near if owner[j] < 0]
        owner[free] = len(modes)
        modes.append(rounded[i])
    return owner[inverse].astype(np.int64), np.asarray(modes) + origin


def meanshift_instances(
    embeddings: np.ndarray,
    foreground: np.ndarray,
    bandwidth: float,
    *,
    min_size: int = 0,
) -> np.ndarray:
    """Cluster the foreground pixels' 2-D embeddings into instances.

    Parameters
    ----------
    embeddings : ndarray, shape (2, Y, X)
        One 2-D embedding per pixel, in pixels (Cellulus: ``x + r``).
    foreground : ndarray of bool, shape (Y, X)
    bandwidth : float
        Mean-shift kernel radius in pixels: pixels whose embeddings climb to
        the same mode join one object.
    min_size : int
        Objects smaller than this many pixels are removed.

    Returns
    -------
    ndarray of int32, shape (Y, X)
        0 = background, objects 1..N, each one connected component.
    """
    if embeddings.ndim != 3 or embeddings.shape[0] != 2:
        raise InputError(f"expected (2, Y, X) embeddings, got shape {embeddings.shape}")
    labels = np.zeros(foreground.shape, dtype=np.int32)
    points = embeddings[:, foreground].T
    if len(points) == 0:
        return labels
    ids, _ = mean_shift_2d(points, bandwidth)
    labels[foreground] = ids + 1
    return split_and_filter(labels, min_size)
