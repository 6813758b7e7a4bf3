"""Synthetic touching blobs with exact ground truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

from probseg.core.errors import InputError
from probseg.evaluation.synthetic import BACKGROUNDS, touching_blobs


def _touching_pixels(labels):
    """Pairs of 4-neighbours that belong to two different objects."""
    count = 0
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        count += int(np.count_nonzero((a != b) & (a > 0) & (b > 0)))
    return count


def test_deterministic_for_a_seed():
    first = touching_blobs(shape=(96, 96), object_size=12, seed=5)
    second = touching_blobs(shape=(96, 96), object_size=12, seed=5)
    other = touching_blobs(shape=(96, 96), object_size=12, seed=6)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


def test_shapes_dtypes_and_ranges():
    image, labels = touching_blobs(shape=(100, 120), object_size=14, seed=0)
    assert image.shape == labels.shape == (100, 120)
    assert image.dtype == np.float32 and labels.dtype == np.int32
    assert -0.5 < image.min() and image.max() < 1.5
    # Labels are 1..n without gaps.
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))
    # Objects are brighter than the background.
    assert image[labels > 0].mean() > image[labels == 0].mean() + 0.3


@pytest.mark.parametrize("density", [0.2, 0.4])
def test_density_sets_coverage_and_count(density):
    size = 16.0
    _, labels = touching_blobs(shape=(192, 192), object_size=size, density=density, seed=1)
    assert abs((labels > 0).mean() - density) < 0.05
    expected = density * 192 * 192 / (np.pi * size**2 / 4)
    assert 0.7 * expected < labels.max() < 1.3 * expected


@pytest.mark.parametrize("touching", [True, False])
def test_each_label_is_one_connected_region(touching):
    _, labels = touching_blobs(shape=(128, 128), object_size=14, density=0.6, touching=touching, seed=3)
    pieces = connected_components(labels, background=0, connectivity=1)
    assert pieces.max() == labels.max()


def test_touching_controls_contact():
    _, touching = touching_blobs(shape=(128, 128), object_size=14, density=0.5, touching=True, seed=4)
    _, apart = touching_blobs(shape=(128, 128), object_size=14, density=0.3, touching=False, seed=4)
    assert _touching_pixels(touching) > 20
    assert _touching_pixels(apart) == 0


def test_background_options_differ():
    images = {}
    for background in BACKGROUNDS:
        image, labels = touching_blobs(shape=(96, 96), object_size=12, noise=0.0, background=background, seed=2)
        # Stay clear of the objects, whose blurred edges spill a few pixels.
        far = ndi.binary_erosion(labels == 0, iterations=4)
        images[background] = image[far]
    for a in BACKGROUNDS:
        for b in BACKGROUNDS:
            if a < b:
                assert np.abs(images[a] - images[b]).mean() > 0.02
    np.testing.assert_allclose(images["flat"], 0.1, atol=0.005)
    assert np.ptp(np.percentile(images["gradient"], [5, 95])) > 0.1


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"shape": (8, 8)}, "shape"),
        ({"shape": (64, 64, 64)}, "shape"),
        ({"object_size": 2}, "object_size"),
        ({"object_size": "big"}, "object_size"),
        ({"density": 0.0}, "density"),
        ({"noise": -0.1}, "noise"),
        ({"background": "checkerboard"}, "background"),
    ],
)
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(InputError, match=word):
        touching_blobs(**kwargs)
