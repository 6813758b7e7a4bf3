"""The proofreading queue: ranking, suppression, listed objects, borders, bad input."""


import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from probseg.core.errors import InputError
from probseg.proofreading import QueueEntry, proofreading_queue


def _blobs(shape, spots):
    """Uncertainty with square spots ``(y, x, half_side, value)``."""
    u = np.zeros(shape)
    for y, x, r, v in spots:
        u[y - r : y + r + 1, x - r : x + r + 1] = v
    return u


def test_ordered_by_score_and_centred_on_peaks():
    spots = [(20, 20, 1, 0.3), (20, 60, 1, 1.0), (60, 40, 1, 0.6)]
    u = _blobs((80, 80), spots)
    queue = proofreading_queue(u, np.zeros((80, 80), dtype=int), patch=9)
    assert all(isinstance(e, QueueEntry) for e in queue)
    assert [e.center for e in queue] == [(20, 60), (60, 40), (20, 20)]
    # A 9x9 patch holds the whole 3x3 spot: mean = 9 v / 81.
    np.testing.assert_allclose([e.score for e in queue], [1.0 / 9, 0.6 / 9, 0.3 / 9])
    assert queue[0].rect == (16, 56, 25, 65)
    assert proofreading_queue(u, np.zeros((80, 80), dtype=int), patch=9, max_entries=2) == queue[:2]
    assert len(proofreading_queue(u, np.zeros((80, 80), dtype=int), patch=9, min_score=0.07)) == 1


def test_small_spot_gives_one_entry_centred_on_it():
    # Every patch holding the whole spot scores the same; the plateau is one peak.
    u = _blobs((100, 100), [(50, 40, 2, 1.0)])
    queue = proofreading_queue(u, np.zeros((100, 100), dtype=int), patch=32)
    assert len(queue) == 1
    assert queue[0].center == (50, 40)
    assert queue[0].score == pytest.approx(25 / 32**2)


def test_ties_are_broken_by_position():
    u = _blobs((40, 80), [(20, 60, 1, 0.5), (20, 20, 1, 0.5)])
    queue = proofreading_queue(u, np.zeros((40, 80), dtype=int), patch=8)
    assert [e.center[1] for e in queue] == [20, 60]
    assert queue[0].score == queue[1].score


def _row_of_spikes(xs):
    u = np.zeros((64, 100))
    u[32, xs] = 1.0
    return u


def test_peaks_closer_than_half_a_patch_are_suppressed():
    # These spikes give the 16-px box mean two equal maxima 7 columns apart
    # (centres 38 and 45); 16-px patches that far apart overlap by 9/16.
    u = _row_of_spikes([30, 37, 39, 44, 45, 52, 55])
    box = uniform_filter(u, 16, mode="constant")
    assert box[32, 45] == pytest.approx(box[32, 38])
    assert box[32, 45] > max(box[32, 44], box[32, 46])
    queue = proofreading_queue(u, np.zeros(u.shape, dtype=int), patch=16, max_entries=10)
    assert [e.center for e in queue] == [(32, 38)]


def test_peaks_half_a_patch_apart_are_both_kept():
    # Maxima 8 columns apart: the patches overlap by exactly half.
    u = _row_of_spikes([32, 33, 45, 53, 60, 68])
    queue = proofreading_queue(u, np.zeros(u.shape, dtype=int), patch=16, max_entries=10)
    centers = [e.center for e in queue]
    assert (32, 53) in centers and (32, 61) in centers
    for a in queue:
        for b in queue:
            if a is not b:
                dy, dx = abs(a.center[0] - b.center[0]), abs(a.center[1] - b.center[1])
                assert (16 - dy) * (16 - dx) <= 16 * 16 / 2


def test_suppression_rule_on_diagonals():
    from probseg.proofreading.queue import _suppression_mask

    mask = _suppression_mask(16)
    centre = 15
    assert mask[centre, centre + 7] and not mask[centre, centre + 8]
    assert mask[centre + 4, centre + 4]  # 12 * 12 > 128
    assert not mask[centre + 5, centre - 5]  # 11 * 11 <= 128


def test_entries_list_the_objects_in_the_patch():
    labels = np.zeros((60, 60), dtype=np.int32)
    labels[10:20, 10:20] = 7  # under the spot
    labels[20:30, 5:12] = 3  # touches the patch from below-left
    labels[40:50, 40:50] = 9  # far away
    u = _blobs((60, 60), [(15, 15, 2, 1.0)])
    (entry,) = proofreading_queue(u, labels, patch=16)
    y0, x0, y1, x1 = entry.rect
    assert entry.labels == (3, 7)
    assert all(isinstance(i, int) for i in entry.labels)
    assert set(np.unique(labels[y0:y1, x0:x1])) - {0} == {3, 7}


def test_rect_is_clipped_at_the_border():
    u = np.zeros((40, 50))
    u[0, 0] = 1.0
    u[39, 49] = 0.5
    queue = proofreading_queue(u, np.zeros((40, 50), dtype=int), patch=16)
    assert len(queue) == 2
    for e in queue:
        y0, x0, y1, x1 = e.rect
        assert 0 <= y0 < y1 <= 40 and 0 <= x0 < x1 <= 50
        assert y0 <= e.center[0] < y1 and x0 <= e.center[1] < x1
    assert queue[0].rect[:2] == (0, 0)
    assert queue[1].rect[2:] == (40, 50)
    assert queue[0].score == pytest.approx(1.0 / 256)
    # A patch larger than the image is clipped to the whole image.
    (entry,) = proofreading_queue(np.ones((5, 6)), np.ones((5, 6), dtype=int), patch=16)
    assert entry.rect == (0, 0, 5, 6) and entry.labels == (1,)


def test_certain_image_gives_an_empty_queue():
    assert proofreading_queue(np.zeros((32, 32)), np.zeros((32, 32), dtype=int)) == []


def test_large_noisy_image_fills_the_queue_in_order():
    rng = np.random.default_rng(0)
    u = rng.random((2048, 2048)).astype(np.float32)
    labels = rng.integers(0, 50, (2048, 2048)).astype(np.int32)
    queue = proofreading_queue(u, labels, patch=64, max_entries=100)
    assert len(queue) == 100
    scores = [e.score for e in queue]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    "uncertainty, labels, kwargs, message",
    [
        (np.zeros((8, 8)), np.zeros((8, 9), int), {}, "shape"),
        (np.full((8, 8), np.nan), np.zeros((8, 8), int), {}, "NaN"),
        (np.zeros((2, 8, 8)), np.zeros((2, 8, 8), int), {}, "2-D"),
        (np.zeros(8), np.zeros(8, int), {}, "2-D"),
        (np.zeros((8, 8)), np.zeros((8, 8), int), {"patch": 3}, "patch"),
        (np.zeros((8, 8)), np.zeros((8, 8), int), {"patch": 8.5}, "patch"),
        (np.zeros((8, 8)), np.zeros((8, 8), int), {"max_entries": 0}, "max_entries"),
        (np.zeros((8, 8)), np.zeros((8, 8), int), {"min_score": float("nan")}, "min_score"),
        (np.zeros((8, 8)), np.full((8, 8), 0.5), {}, "integer"),
        (np.zeros((8, 8)), np.full((8, 8), -1), {}, "negative"),
        (np.zeros((8, 8), dtype=object), np.zeros((8, 8), int), {}, "numbers"),
    ],
)
def test_bad_input(uncertainty, labels, kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        proofreading_queue(uncertainty, labels, **kwargs)
    assert "\n" not in str(info.value)
