"""Multi-digit scenes from scikit-learn's 8x8 digits, with exact instance labels."""

import numpy as np
import pytest

from probseg.core.errors import InputError
from probseg.evaluation.synthetic import DigitScenes, digit_scenes


@pytest.fixture(scope="module")
def scenes():
    return digit_scenes(200, seed=1)


def _iomin(a, b):
    dy = min(a[2], b[2]) - max(a[0], b[0])
    dx = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(dy, 0) * max(dx, 0)
    return inter / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def test_shapes_and_dtypes(scenes):
    assert isinstance(scenes, DigitScenes) and len(scenes) == 200
    assert scenes.images.shape == scenes.labels.shape == (200, 80, 80)
    assert scenes.images.dtype == np.float32 and scenes.labels.dtype == np.int32
    assert 0.0 <= scenes.images.min() and scenes.images.max() <= 1.0
    assert scenes.counts.shape == (200,) and np.issubdtype(scenes.counts.dtype, np.integer)
    assert len(scenes.digits) == len(scenes.boxes) == 200
    for k, classes, boxes in zip(scenes.counts, scenes.digits, scenes.boxes):
        assert classes.shape == (k,) and np.all((0 <= classes) & (classes <= 9))
        assert boxes.shape == (k, 4)


def test_counts_match_labels(scenes):
    for k, labels in zip(scenes.counts, scenes.labels):
        np.testing.assert_array_equal(np.unique(labels), np.arange(k + 1))
        assert np.bincount(labels.ravel())[1:].min() >= 20


def test_count_distribution_covers_the_range(scenes):
    freq = np.bincount(scenes.counts, minlength=7)
    assert freq[:2].sum() == 0
    assert np.all(freq[2:] >= 20)  # ~40 each for uniform proportions


def test_boxes_sizes_overlap_and_contain_their_labels(scenes):
    for labels, boxes in zip(scenes.labels, scenes.boxes):
        sides = boxes[:, 2] - boxes[:, 0]
        np.testing.assert_array_equal(sides, boxes[:, 3] - boxes[:, 1])
        assert np.all((20 <= sides) & (sides <= 35))
        assert boxes.min() >= 0 and boxes[:, 2:].max() <= 80
        for j, (y0, x0, y1, x1) in enumerate(boxes, start=1):
            yy, xx = np.nonzero(labels == j)
            assert yy.min() >= y0 and yy.max() < y1 and xx.min() >= x0 and xx.max() < x1
            for other in boxes[j:]:
                assert _iomin(boxes[j - 1], other) <= 0.15 + 1e-12


def test_max_overlap_zero_keeps_boxes_apart():
    scenes = digit_scenes(20, n_digits=(3, 4), max_overlap=0.0, seed=2)
    for boxes in scenes.boxes:
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                assert _iomin(boxes[a], boxes[b]) == 0.0


def test_black_background_is_zero_off_the_digits():
    scenes = digit_scenes(30, noise=0.0, seed=3)
    for image, labels, boxes in zip(scenes.images, scenes.labels, scenes.boxes):
        inside = np.zeros(image.shape, dtype=bool)
        for y0, x0, y1, x1 in boxes:
            inside[y0:y1, x0:x1] = True
        assert np.all(image[~inside] == 0)
        # Labelled pixels are the bright ones.
        assert np.all(image[labels > 0] > 0.25)
        assert np.all(image[labels == 0] <= 0.25)


def test_grid_background_has_lines_that_digits_hide():
    scenes = digit_scenes(30, background="grid", noise=0.0, seed=4)
    for image, labels, boxes in zip(scenes.images, scenes.labels, scenes.boxes):
        inside = np.zeros(image.shape, dtype=bool)
        for y0, x0, y1, x1 in boxes:
            inside[y0:y1, x0:x1] = True
        off = image[~inside]
        assert 0.05 < np.mean(off > 0) < 0.6
        assert 0.35 < off.max() <= 0.6
        assert np.all(image[labels > 0] > 0.25)


def test_noise_is_added_and_clipped():
    clean = digit_scenes(5, noise=0.0, seed=5)
    noisy = digit_scenes(5, noise=0.1, seed=5)
    np.testing.assert_array_equal(clean.labels, noisy.labels)
    diff = noisy.images - clean.images
    assert 0.03 < diff.std() < 0.1
    assert 0.0 <= noisy.images.min() and noisy.images.max() <= 1.0


def test_reproducible_for_a_seed():
    first = digit_scenes(10, background="grid", seed=7)
    second = digit_scenes(10, background="grid", seed=7)
    other = digit_scenes(10, background="grid", seed=8)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.counts, second.counts)
    for a, b in zip(first.boxes, second.boxes):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first.digits, second.digits):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.labels, other.labels)


def test_fixed_count_and_size():
    scenes = digit_scenes(5, size=40, n_digits=1, digit_size=(25, 25), seed=0)
    assert scenes.images.shape == (5, 40, 40)
    assert np.all(scenes.counts == 1)
    assert all(np.all(b[:, 2] - b[:, 0] == 25) for b in scenes.boxes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n is the number"),
        ({"n": 1, "size": 30}, "size"),
        ({"n": 1, "n_digits": (5, 2)}, "min must not exceed max"),
        ({"n": 1, "n_digits": (0, 2)}, "n_digits must be at least 1"),
        ({"n": 1, "digit_size": (30, 20)}, "min must not exceed max"),
        ({"n": 1, "digit_size": (4, 20)}, "digit_size must be at least"),
        ({"n": 1, "digit_size": "big"}, "digit_size"),
        ({"n": 1, "background": "white"}, "background must be one of"),
        ({"n": 1, "max_overlap": 1.5}, "max_overlap"),
        ({"n": 1, "max_overlap": -0.1}, "max_overlap"),
        ({"n": 1, "noise": -1}, "noise"),
        ({"n": 1, "size": 40, "n_digits": (9, 9), "digit_size": 35, "max_overlap": 0.0}, "could not fit"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        digit_scenes(**kwargs)
    assert "\n" not in str(info.value)


def test_background_and_noise_leave_the_digits_unchanged():
    black = digit_scenes(8, noise=0.0, seed=6)
    grid = digit_scenes(8, background="grid", noise=0.05, seed=6)
    np.testing.assert_array_equal(black.labels, grid.labels)
    np.testing.assert_array_equal(black.counts, grid.counts)
