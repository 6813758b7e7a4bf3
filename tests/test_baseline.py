"""Voronoi-Otsu labeling, the classical yardstick."""

import numpy as np
import pytest

from probseg.evaluation.baseline import default_sigmas, voronoi_otsu_labeling
from probseg.core.errors import InputError
from probseg.evaluation.metrics import evaluate
from probseg.evaluation.synthetic import touching_blobs


def test_segments_touching_blobs():
    image, truth = touching_blobs(shape=(192, 192), object_size=20, density=0.5, seed=2)
    labels = voronoi_otsu_labeling(image, *default_sigmas(20))
    assert labels.shape == image.shape and labels.dtype == np.int32
    scores = evaluate(labels, truth)
    assert scores["f1"] > 0.7
    assert abs(scores["count_error"]) <= 0.1 * scores["n_gt"]


def test_integer_image_gives_same_result_as_float():
    image, _ = touching_blobs(shape=(64, 64), object_size=12, seed=1)
    scaled = np.clip((image + 0.2) * 1000, 0, None).astype(np.uint16)
    a = voronoi_otsu_labeling(image, 2.0, 1.0)
    b = voronoi_otsu_labeling(scaled, 2.0, 1.0)
    assert evaluate(a, b)["f1"] > 0.95


def test_default_sigmas():
    assert default_sigmas(24) == (4.0, 2.0)
    assert default_sigmas(6) == (1.0, 1.0)  # outline blur never below 1 px
    with pytest.raises(InputError, match="object_size"):
        default_sigmas(0)
    with pytest.raises(InputError, match="object_size"):
        default_sigmas("big")


@pytest.mark.parametrize(
    "image, words",
    [
        (np.full((32, 32), 7.0), "constant"),
        (np.zeros((4, 32, 32)) + np.arange(32), "2-D"),
        (np.where(np.eye(32) > 0, np.nan, 1.0), "NaN"),
    ],
)
def test_bad_images_raise(image, words):
    with pytest.raises(InputError, match=words):
        voronoi_otsu_labeling(image)


def test_bad_sigma_raises():
    image, _ = touching_blobs(shape=(32, 32), object_size=8)
    with pytest.raises(InputError, match="spot_sigma"):
        voronoi_otsu_labeling(image, spot_sigma=-1)
