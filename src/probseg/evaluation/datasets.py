"""Sample data shipped with probseg, small enough for tests and demos."""

from __future__ import annotations

from importlib.resources import as_file, files

import numpy as np
import tifffile

__all__ = ["nuclei", "NUCLEI_OBJECT_SIZE", "NUCLEI_ATTRIBUTION"]

# Median equivalent diameter of the 73 labelled nuclei is 23.6 px (computed
# once with skimage.measure.regionprops); hard-coded so that callers can set
# a method's object size without loading or measuring the labels.
NUCLEI_OBJECT_SIZE = 24

NUCLEI_ATTRIBUTION = (
    "Left half of a fluorescence nuclei image from the 2018 Data Science Bowl "
    "(Caicedo et al., Nature Methods 16, 2019; image set BBBC038v1 of the Broad "
    "Bioimage Benchmark Collection, released under CC0 1.0), as shipped in the "
    "stardist package's test data."
)


def _read(name: str) -> np.ndarray:
    # as_file gives a real path even when the package is installed zipped.
    with as_file(files("probseg.evaluation") / "sample_data" / name) as path:
        return tifffile.imread(path)


def nuclei() -> tuple[np.ndarray, np.ndarray]:
    """Fluorescence image of nuclei with its ground-truth labels.

    See :data:`NUCLEI_ATTRIBUTION` for the source and licence (CC0 1.0).
    The nuclei are about :data:`NUCLEI_OBJECT_SIZE` pixels across.

    Returns
    -------
    image : ndarray of uint16, shape (512, 256)
        The raw image.
    labels : ndarray of int32, shape (512, 256)
        0 for background and 1..73 for the nuclei.
    """
    image = _read("dsb2018_nuclei_left.tif")
    labels = _read("dsb2018_nuclei_left_labels.tif").astype(np.int32)
    return image, labels
