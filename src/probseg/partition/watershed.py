"""Seeded watershed of a foreground probability map."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from probseg.core.errors import InputError
from probseg.partition.components import connected_components

__all__ = ["seeded_watershed"]


def seeded_watershed(
    foreground_probability: np.ndarray,
    *,
    threshold: float = 0.5,
    seeds: np.ndarray | None = None,
    distance: np.ndarray | None = None,
    min_distance: int = 3,
    h: float | None = None,
    smooth: float = 1.0,
    min_size: int = 0,
) -> np.ndarray:
    """Split the foreground into objects by flooding from one seed per object.

    1. foreground = ``foreground_probability > threshold``.
    2. centre map ``c``: ``distance`` if given (e.g. a predicted interior
       probability or distance map; larger = deeper inside an object), else
       the Euclidean distance transform of the foreground (distance in
       pixels to the nearest background pixel) smoothed by a Gaussian of
       ``smooth`` px.
    3. seeds: ``seeds`` if given (int: its non-zero pixels inside the
       foreground, each value one seed; bool: each 4-connected blob of True
       pixels one seed); else the regional maxima of ``c`` inside the
       foreground, either those of height at least ``h`` (``h`` given:
       h-maxima, plateaus count as one seed) or the peaks
       (:func:`skimage.feature.peak_local_max`) at least ``min_distance`` px
       apart (``h=None``). Foreground components without any seed get the
       seed at their maximum of ``c``, so no object is lost.
    4. flood ``-c`` from the seeds with :func:`skimage.segmentation.watershed`
       restricted to the foreground (touching objects meet where ``c`` is
       lowest between their seeds).
    5. objects are split into 4-connected components and those smaller than
       ``min_size`` pixels are dropped.

    Parameters
    ----------
    foreground_probability : ndarray of float, shape (Y, X)
    threshold : float
        Foreground is strictly above this.
    seeds : ndarray of int or bool, shape (Y, X), optional
    distance : ndarray of float, shape (Y, X), optional
    min_distance : int
        Minimum peak separation in px (used when ``seeds`` and ``h`` are None).
    h : float, optional
        Minimum height of a maximum of ``c`` to seed an object, in the units
        of ``c`` (px for the default distance transform).
    smooth : float
        Gaussian sigma (px) applied to the default distance transform; 0 for none.
    min_size : int
        Objects with fewer pixels are removed.

    Returns
    -------
    ndarray of int32, shape (Y, X)
        0 = background, objects 1..N in raster order of their first pixel.

    Raises
    ------
    InputError
        For arrays that are not 2-D or do not match in shape.
    """
    prob = np.asarray(foreground_probability, dtype=np.float64)
    if prob.ndim != 2:
        raise InputError(f"expected a (Y, X) foreground probability, got shape {prob.shape}")
    foreground = prob > threshold
    if not foreground.any():
        return np.zeros(prob.shape, dtype=np.int32)
    if distance is None:
        centre = ndi.distance_transform_edt(foreground)
        if smooth > 0:
            centre = ndi.gaussian_filter(centre, smooth)
    else:
        centre = np.asarray(distance, dtype=np.float64)
        if centre.shape != prob.shape:
            raise InputError(f"distance shape {centre.shape} does not match {prob.shape}")
    centre = np.where(foreground, centre, centre[foreground].min() - 1)

    if seeds is not None:
        seeds = np.asarray(seeds)
        if seeds.shape != prob.shape:
            raise InputError(f"seeds shape {seeds.shape} does not match {prob.shape}")
        # A boolean seed mask: each connected blob of it is one seed.
        markers = ndi.label(seeds)[0] if seeds.dtype == bool else seeds.astype(np.int64)
        markers = np.where(foreground, markers, 0)
    elif h is not None:
        markers = ndi.label(h_maxima(centre, h) & foreground)[0]
    else:
        peaks = peak_local_max(centre, min_distance=max(1, int(min_distance)), labels=foreground.astype(np.int32), exclude_border=False)
        markers = np.zeros(prob.shape, dtype=np.int64)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)

    # Every foreground component gets at least one seed (at its deepest pixel).
    parts, n = ndi.label(foreground)
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[parts[markers > 0]] = True
    missing = np.flatnonzero(~seeded[1:]) + 1
    if len(missing):
        where = ndi.maximum_position(centre, parts, missing)
        start = int(markers.max()) + 1
        for i, pos in enumerate(where):
            markers[pos] = start + i
    labels = watershed(-centre, markers=markers, mask=foreground)
    return connected_components(labels, min_size)
