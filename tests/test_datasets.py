"""The shipped sample data."""

import numpy as np
from skimage.measure import regionprops

from probseg.evaluation import datasets


def test_nuclei_loads():
    image, labels = datasets.nuclei()
    assert image.shape == labels.shape == (512, 256)
    assert image.dtype == np.uint16
    assert labels.dtype == np.int32
    ids = np.unique(labels)
    assert ids[0] == 0 and ids.size - 1 == 73


def test_nuclei_constants():
    _, labels = datasets.nuclei()
    median = np.median([r.equivalent_diameter_area for r in regionprops(labels)])
    assert round(median) == datasets.NUCLEI_OBJECT_SIZE
    assert "CC0 1.0" in datasets.NUCLEI_ATTRIBUTION
    assert "BBBC038v1" in datasets.NUCLEI_ATTRIBUTION


def test_nuclei_returns_fresh_arrays():
    first, _ = datasets.nuclei()
    first[:] = 0
    second, _ = datasets.nuclei()
    assert second.max() > 0
