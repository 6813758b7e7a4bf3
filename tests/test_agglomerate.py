"""Agglomeration of sampled segmentations, entropy and patch metrics on hand-made cases."""

import re

import numpy as np
import pytest

from probseg.consensus.agglomerate import Agglomeration, agglomerate
from probseg.core.errors import InputError
from probseg.evaluation.metrics import f1_score
from probseg.consensus.uncertainty import bernoulli_entropy, correct_pixels, patch_uncertainty_metrics

H75 = float(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))  # 0.811 bits


def _squares(*boxes, shape=(32, 32)):
    """Label image with object ``i + 1`` on ``boxes[i] = (y0, x0, y1, x1)``."""
    out = np.zeros(shape, dtype=np.int32)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        out[y0:y1, x0:x1] = i + 1
    return out


def _full_map(inst, shape):
    out = np.zeros(shape, dtype=np.float32)
    out[inst.slices] = inst.probability
    return out


def test_identical_draws_are_certain():
    labels = _squares((2, 2, 8, 8), (10, 3, 15, 20), (20, 20, 30, 30))
    result = agglomerate(np.stack([labels] * 5))
    assert isinstance(result, Agglomeration)
    np.testing.assert_array_equal(result.labels, labels)
    assert result.labels.dtype == np.int32 and result.probability.dtype == np.float32
    np.testing.assert_array_equal(result.probability, (labels > 0).astype(np.float32))
    np.testing.assert_array_equal(result.entropy(), 0.0)
    assert result.entropy().dtype == np.float32
    assert result.n_draws == 5 and result.n_instances == 3
    np.testing.assert_array_equal(result.instance_scores, [0.0, 1.0, 1.0, 1.0])
    assert [inst.label for inst in result.instances] == [1, 2, 3]
    for inst in result.instances:
        np.testing.assert_array_equal(_full_map(inst, labels.shape), labels == inst.label)
        # Crops stay as small as the object.
        assert inst.probability.shape == labels[inst.slices].shape
        assert np.all(labels[inst.slices] == inst.label)


def test_shifted_instance_is_matched_not_duplicated():
    base = _squares((10, 10, 20, 20))
    shifted = _squares((10, 12, 20, 22))  # IoU 80 / 120 with base
    result = agglomerate(np.stack([base, base, shifted, base]))
    assert len(result.instances) == 1
    inst = result.instances[0]
    prob = _full_map(inst, base.shape)
    assert prob[15, 10] == pytest.approx(0.75)  # only in the unshifted draws
    assert prob[15, 15] == pytest.approx(1.0)
    assert prob[15, 21] == pytest.approx(0.25)  # only in the shifted draw
    np.testing.assert_array_equal(result.labels, base)
    assert result.instance_scores[1] == pytest.approx((80 * 1.0 + 20 * 0.75) / 100)
    entropy = result.entropy()
    assert entropy[15, 10] == pytest.approx(H75, rel=1e-6)
    assert entropy[15, 21] == pytest.approx(H75, rel=1e-6)
    assert entropy[15, 15] == 0.0


def test_split_in_one_draw_stays_one_instance():
    whole = _squares((8, 8, 20, 24))
    split = _squares((8, 8, 20, 16), (8, 16, 20, 24))
    # The split draw has the most objects, so it seeds the agglomeration.
    for position in (0, 2):
        draws = [whole, whole, whole]
        draws.insert(position, split)
        result = agglomerate(np.stack(draws))
        np.testing.assert_array_equal(result.labels, whole)
        assert result.n_instances == 1
        # The unpaired half remains as an object of probability 1/4.
        dropped = [inst for inst in result.instances if inst.label == 0]
        assert len(dropped) == 1
        assert dropped[0].probability.max() == pytest.approx(0.25)


def test_missing_instance_has_fraction_and_is_dropped_below_threshold():
    both = _squares((2, 2, 10, 10), (15, 15, 25, 25))
    only_a = _squares((2, 2, 10, 10))
    samples = np.stack([both, only_a, both, only_a])
    result = agglomerate(samples, threshold=0.75)
    np.testing.assert_array_equal(result.labels, only_a)
    assert [inst.label for inst in result.instances] == [1, 0]
    b = result.instances[1]
    assert b.slices == (slice(15, 25), slice(15, 25))
    np.testing.assert_allclose(b.probability, 0.5)
    assert result.entropy()[20, 20] == pytest.approx(1.0)
    assert result.probability[20, 20] == 0.0

    kept = agglomerate(samples, threshold=0.5)
    np.testing.assert_array_equal(kept.labels, both)
    assert kept.probability[20, 20] == pytest.approx(0.5)
    np.testing.assert_allclose(kept.instance_scores, [0.0, 1.0, 0.5])


def test_label_ids_are_arbitrary_in_each_draw():
    rng = np.random.default_rng(3)
    base = _squares((1, 1, 7, 7), (1, 9, 7, 15), (9, 1, 15, 7), (9, 9, 15, 15), shape=(16, 16))
    draws = []
    for d in range(6):
        draw = base.copy()
        if d % 2:
            draw[9:15, 9:15] = 0  # object 4 is in half of the draws
        if d == 3:
            draw[1:7, 1], draw[1:7, 7] = 0, 1  # object 1 shifted right
        draws.append(draw)
    reference = agglomerate(np.stack(draws), threshold=0.5)
    permuted = []
    for draw in draws:
        lut = np.zeros(5, dtype=np.int64)
        lut[1:] = rng.permutation(4) * 1000 + 17
        permuted.append(lut[draw])
    result = agglomerate(np.stack(permuted), threshold=0.5)
    np.testing.assert_array_equal(result.labels, reference.labels)
    np.testing.assert_array_equal(result.probability, reference.probability)
    np.testing.assert_array_equal(result.entropy(), reference.entropy())
    np.testing.assert_array_equal(result.labels, base)


def test_overlap_goes_to_the_most_probable_instance():
    a = _squares((0, 0, 10, 10), (0, 10, 10, 20))
    b = _squares((0, 0, 10, 8), (0, 8, 10, 20))  # the border moved by two columns
    result = agglomerate(np.stack([a, a, a, b]), threshold=0.25)
    np.testing.assert_array_equal(result.labels, a)
    np.testing.assert_allclose(result.probability[0, 8:10], 0.75)
    # Two objects each uncertain at the disputed columns: entropies add up.
    np.testing.assert_allclose(result.entropy()[0, 8:10], 2 * H75, rtol=1e-6)
    np.testing.assert_array_equal(result.entropy()[0, :8], 0.0)


def test_a_single_image_and_empty_draws():
    labels = _squares((3, 3, 9, 9))
    np.testing.assert_array_equal(agglomerate(labels).labels, labels)
    empty = agglomerate(np.zeros((3, 8, 8), dtype=np.uint8))
    assert empty.n_instances == 0 and empty.instances == []
    np.testing.assert_array_equal(empty.instance_scores, [0.0])
    np.testing.assert_array_equal(empty.entropy(), 0.0)
    # Empty draws still count: an object in 3 of 4 draws has probability 0.75.
    some = agglomerate(np.stack([labels, labels, labels, np.zeros_like(labels)]))
    np.testing.assert_allclose(some.probability[labels > 0], 0.75)


@pytest.mark.parametrize(
    "samples, kwargs, message",
    [
        (np.zeros((2, 2, 4, 4), dtype=int), {}, "(n, Y, X)"),
        (np.full((2, 4, 4), 0.5), {}, "integer"),
        (np.full((2, 4, 4), -1), {}, "negative"),
        (np.zeros((0, 4, 4), dtype=int), {}, "empty"),
        (np.zeros((2, 4, 4), dtype=int), {"threshold": 0.0}, "threshold"),
        (np.zeros((2, 4, 4), dtype=int), {"threshold": 1.5}, "threshold"),
        (np.zeros((2, 4, 4), dtype=int), {"min_iou": 0}, "min_iou"),
        (np.zeros((2, 4, 4), dtype=int), {"threshold": "high"}, "threshold"),
    ],
)
def test_bad_input(samples, kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)) as info:
        agglomerate(samples, **kwargs)
    assert "\n" not in str(info.value)


def test_jittered_draws_recover_the_objects():
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    shape = (512, 512)
    centres = [(14 + 28 * i + rng.integers(-3, 4), 14 + 28 * j + rng.integers(-3, 4)) for i in range(18) for j in range(18)]
    truth = np.zeros(shape, dtype=np.int32)
    for k, c in enumerate(centres):
        truth[disk(c, 9, shape=shape)] = k + 1
    samples = np.zeros((16,) + shape, dtype=np.int32)
    for d in range(16):
        ids = rng.permutation(len(centres)) + 1
        for k, (y, x) in enumerate(centres):
            if rng.random() < 0.05:
                continue
            samples[d][disk((y + rng.integers(-2, 3), x + rng.integers(-2, 3)), 9 + rng.integers(-1, 2), shape=shape)] = ids[k]
    # How long this takes is benchmarks' business (timed tests fail on a busy machine).
    result = agglomerate(samples, threshold=0.5)
    assert f1_score(result.labels, truth) == 1.0
    assert result.n_instances == len(centres)
    assert np.all(result.instance_scores[1:] > 0.5)


def test_bernoulli_entropy():
    assert bernoulli_entropy(0.5) == 1.0
    assert isinstance(bernoulli_entropy(0.5), float)
    h = bernoulli_entropy(np.array([0.0, 1.0, 0.25, 0.75, -1e-9, 1 + 1e-9]))
    np.testing.assert_allclose(h, [0.0, 0.0, H75, H75, 0.0, 0.0])
    assert not np.any(np.signbit(h))
    assert bernoulli_entropy(np.full((2, 3), 0.5, dtype=np.float32)).dtype == np.float32
    assert bernoulli_entropy([0.1, 0.5]).dtype == np.float64


def _patch_case():
    """8x8 image, four 4x4 tiles: accurate+certain, inaccurate+uncertain,
    inaccurate+certain and accurate (exactly half correct)+uncertain at t=0.5."""
    truth = np.zeros((8, 8), dtype=np.int32)
    truth[0:4, 0:4] = 1  # tile 0: predicted exactly
    truth[4:8, 0:4] = 2  # tile 2: missed
    pred = np.zeros((8, 8), dtype=np.int32)
    pred[0:4, 0:4] = 5
    pred[0:4, 4:8] = 6  # tile 1: spurious object
    pred[4:6, 4:8] = 7  # tile 3: spurious, 8 of 16 pixels wrong
    u = np.zeros((8, 8))
    u[0:4, 0:4] = 0.1
    u[0:4, 4:8] = 0.9
    u[4:8, 0:4] = [[0.0, 0.4, 0.0, 0.4]] * 4  # mean 0.2
    u[4:8, 4:8] = 0.6
    return u, pred, truth


def test_patch_metrics_by_hand():
    u, pred, truth = _patch_case()
    m = patch_uncertainty_metrics(u, pred, truth, patch=4, thresholds=[0.05, 0.15, 0.5, 1.0])
    np.testing.assert_array_equal(m.n_ac, [0, 1, 1, 2])
    np.testing.assert_array_equal(m.n_au, [2, 1, 1, 0])
    np.testing.assert_array_equal(m.n_ic, [0, 0, 1, 2])
    np.testing.assert_array_equal(m.n_iu, [2, 2, 1, 0])
    np.testing.assert_allclose(m.p_accurate_given_certain, [np.nan, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(m.p_uncertain_given_inaccurate, [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(m.pavpu, [0.5, 0.75, 0.5, 0.5])
    np.testing.assert_allclose(m.thresholds, [0.05, 0.15, 0.5, 1.0])
    assert m.patch == 4


def test_patch_metrics_default_thresholds_and_border_tiles():
    u, pred, truth = _patch_case()
    m = patch_uncertainty_metrics(u, pred, truth)
    assert m.thresholds.size == 21
    # From the lowest tile mean (0.1) to the highest (0.9): all tiles certain at the end.
    assert m.thresholds[0] == pytest.approx(0.1) and m.thresholds[-1] == pytest.approx(0.9)
    assert m.n_ic[-1] + m.n_ac[-1] == 4
    # 6x6 with patch 4: tiles of 16, 8, 8 and 4 pixels, each counted once.
    small = patch_uncertainty_metrics(u[:6, :6], pred[:6, :6], truth[:6, :6], patch=4, thresholds=[1.0])
    assert int(small.n_ac[0] + small.n_au[0] + small.n_ic[0] + small.n_iu[0]) == 4


def test_correct_pixels_uses_matched_instances():
    truth = np.zeros((6, 10), dtype=np.int32)
    truth[1:5, 1:5] = 3
    pred = np.zeros_like(truth)
    pred[1:5, 2:6] = 9  # shifted by a column: IoU 12 / 20, matched
    correct = correct_pixels(pred, truth)
    assert correct[2, 3] and correct[0, 0]
    assert not correct[2, 5]  # predicted beyond the true object
    assert not correct[2, 1]  # true pixel left out
    far = np.zeros_like(truth)
    far[1:5, 4:8] = 9  # IoU 4 / 28: not matched, so every object pixel is wrong
    assert not correct_pixels(far, truth)[2, 4]


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((4, 4, 1)), np.zeros((4, 4, 1), int), np.zeros((4, 4, 1), int)), "2-D"),
        ((np.zeros((4, 4)), np.zeros((4, 5), int), np.zeros((4, 4), int)), "shape"),
        ((np.full((4, 4), np.nan), np.zeros((4, 4), int), np.zeros((4, 4), int)), "NaN"),
    ],
)
def test_patch_metrics_bad_input(args, message):
    with pytest.raises(InputError, match=message):
        patch_uncertainty_metrics(*args)
    with pytest.raises(InputError, match="patch"):
        patch_uncertainty_metrics(np.zeros((4, 4)), np.zeros((4, 4), int), np.zeros((4, 4), int), patch=0)
    with pytest.raises(InputError, match="thresholds"):
        patch_uncertainty_metrics(np.zeros((4, 4)), np.zeros((4, 4), int), np.zeros((4, 4), int), thresholds=[np.inf])
