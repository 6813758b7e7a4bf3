"""A classical, training-free segmentation to compare learned methods with.

Voronoi-Otsu labeling (Haase et al., pyclesperanto) needs no training and
only two parameters, which makes it the usual yardstick for blob-like
objects such as nuclei: a learned method that cannot beat it on an image is
not worth its training time there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from probseg.core.errors import InputError
from probseg.core.inputs import check_finite

__all__ = ["voronoi_otsu_labeling", "default_sigmas"]


def default_sigmas(object_size: float) -> tuple[float, float]:
    """Sensible ``(spot_sigma, outline_sigma)`` for objects of a given size.

    ``spot_sigma`` is a sixth of the diameter: enough smoothing to leave a
    single intensity maximum per object despite texture and a darker rim,
    yet small enough that the valley between two touching objects of that
    size survives (at a quarter touching neighbours start to merge, at an
    eighth single objects start to split). ``outline_sigma`` is a twelfth of
    the diameter, at least 1 px: it only needs to calm pixel noise before
    the threshold, and more blur rounds off outlines and bridges narrow
    gaps between objects. Chosen on :func:`probseg.evaluation.synthetic.touching_blobs`
    images of 10 to 30 px objects.

    Parameters
    ----------
    object_size : float
        Expected object diameter in pixels, > 0.

    Returns
    -------
    spot_sigma, outline_sigma : float
        Gaussian standard deviations in pixels, for
        :func:`voronoi_otsu_labeling`.

    Raises
    ------
    InputError
        If ``object_size`` is not a positive finite number.
    """
    try:
        size = float(object_size)
    except (TypeError, ValueError):
        size = float("nan")
    if not (np.isfinite(size) and size > 0):
        raise InputError(f"object_size must be a positive diameter in pixels, got {object_size}")
    return size / 6.0, max(1.0, size / 12.0)


def voronoi_otsu_labeling(image: np.ndarray, spot_sigma: float = 2.0, outline_sigma: float = 2.0) -> np.ndarray:
    """Label bright blobs by seeded watershed inside an Otsu mask.

    The foreground is the image blurred with ``outline_sigma`` above its
    Otsu threshold. Seeds are the local maxima (3x3 neighbourhood) of the
    image blurred with ``spot_sigma`` that lie in the foreground; a
    watershed of the inverted ``spot_sigma``-blurred image from those seeds,
    restricted to the foreground, splits it into one region per seed.
    Unlike pyclesperanto, which grows seeds by distance alone (a masked
    Voronoi diagram), the watershed follows the intensity valleys between
    touching objects.

    Parameters
    ----------
    image : ndarray
        2-D grayscale image, integer or float, with bright objects on a dark
        background.
    spot_sigma : float
        Gaussian sigma in pixels for seed detection; larger merges nearby
        objects, smaller splits textured ones. See :func:`default_sigmas`.
    outline_sigma : float
        Gaussian sigma in pixels applied before thresholding; larger gives
        smoother, rounder outlines.

    Returns
    -------
    ndarray of int32
        Labels of the same shape as ``image``: 0 for background, 1..n for
        objects.

    Raises
    ------
    InputError
        If ``image`` is not 2-D, not numeric, contains NaN or infinite
        values or is constant, or a sigma is negative or not finite.
    """
    array = check_finite(image)
    if array.ndim != 2:
        raise InputError(f"image must be 2-D (rows, columns), got shape {array.shape}")
    for name, sigma in (("spot_sigma", spot_sigma), ("outline_sigma", outline_sigma)):
        try:
            valid = bool(np.isfinite(float(sigma)) and float(sigma) >= 0)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise InputError(f"{name} must be a finite Gaussian sigma >= 0 in pixels, got {sigma!r}")
    array = array.astype(np.float64, copy=False)

    outline = gaussian(array, sigma=float(outline_sigma), preserve_range=True)
    mask = outline > threshold_otsu(outline)

    spots = gaussian(array, sigma=float(spot_sigma), preserve_range=True)
    peaks = peak_local_max(spots, min_distance=1, labels=mask.astype(np.uint8), exclude_border=False)
    seeds = np.zeros(array.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    # A flat-topped maximum yields several adjacent peak pixels; merging
    # them keeps it one object rather than several.
    markers, _ = ndi.label(seeds, structure=np.ones((3, 3), dtype=bool))
    if markers.max() == 0:
        return np.zeros(array.shape, dtype=np.int32)
    labels = watershed(-spots, markers=markers, mask=mask)
    return labels.astype(np.int32, copy=False)
