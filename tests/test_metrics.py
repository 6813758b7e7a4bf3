"""Segmentation scores on cases small enough to compute by hand."""

import json

import numpy as np
import pytest

from probseg.core.errors import InputError
from probseg.evaluation.metrics import (
    DSB_THRESHOLDS,
    ap_dsb,
    average_precision,
    evaluate,
    f1_score,
    match_instances,
    seg_score,
)


def _two_squares():
    """gt: two 2x2 squares. pred: one widened to 2x3 (IoU 4/6), one shifted by a column (IoU 2/6)."""
    gt = np.zeros((10, 10), dtype=np.uint16)
    gt[0:2, 0:2] = 1
    gt[5:7, 5:7] = 2
    pred = np.zeros((10, 10), dtype=np.int32)
    pred[0:2, 0:3] = 7
    pred[5:7, 6:8] = 3
    return pred, gt


def test_match_instances_by_hand():
    pred, gt = _two_squares()
    iou, pred_ids, gt_ids = match_instances(pred, gt)
    np.testing.assert_array_equal(pred_ids, [3, 7])
    np.testing.assert_array_equal(gt_ids, [1, 2])
    np.testing.assert_allclose(iou, [[0.0, 1 / 3], [2 / 3, 0.0]])


def test_scores_by_hand():
    pred, gt = _two_squares()
    # One match (IoU 2/3); the 1/3 pair is a false positive and a false negative.
    assert f1_score(pred, gt) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert average_precision(pred, gt, 0.5) == pytest.approx(1 / 3)
    # IoU 2/3 passes 0.5, 0.55, 0.6, 0.65 but not 0.7 and above.
    assert ap_dsb(pred, gt) == pytest.approx(4 * (1 / 3) / 10)
    # Second square is covered by exactly half (2 of 4 px): not "more than half".
    assert seg_score(pred, gt) == pytest.approx((2 / 3 + 0.0) / 2)
    # A lower threshold admits the 1/3 pair too.
    assert f1_score(pred, gt, iou_threshold=0.3) == pytest.approx(1.0)


def test_iou_of_exactly_half_is_not_a_match():
    gt = np.zeros((8, 8), dtype=np.int32)
    gt[2:5, 2:5] = 1
    pred = np.zeros_like(gt)
    pred[2:5, 3:6] = 1  # shifted one column: intersection 6, union 12
    iou, _, _ = match_instances(pred, gt)
    assert iou[0, 0] == 0.5
    assert f1_score(pred, gt) == 0.0
    assert average_precision(pred, gt, 0.5) == 0.0
    assert f1_score(pred, gt, iou_threshold=0.49) == 1.0


def test_split_object():
    gt = np.zeros((6, 6), dtype=np.int32)
    gt[1:5, 1:5] = 1  # 16 px
    pred = np.zeros_like(gt)
    pred[1:5, 1:4] = 1  # 12 px: IoU 0.75
    pred[1:5, 4:5] = 2  # 4 px: IoU 0.25
    assert f1_score(pred, gt) == pytest.approx(2 / 3)  # TP 1, FP 1, FN 0
    assert seg_score(pred, gt) == pytest.approx(0.75)
    # Split into equal halves, neither piece matches nor covers more than half.
    pred[1:5, 3:5] = 2
    assert f1_score(pred, gt) == 0.0
    assert seg_score(pred, gt) == 0.0


def test_merged_object():
    gt = np.zeros((6, 6), dtype=np.int32)
    gt[1:5, 1:3] = 1
    gt[1:5, 3:5] = 2
    pred = (gt > 0).astype(np.int32)  # one object over both: IoU 0.5 with each
    result = evaluate(pred, gt)
    assert result["f1"] == 0.0
    # SEG forgives the merge partly: the merged object covers each true one fully.
    assert result["seg"] == pytest.approx(0.5)
    assert result["count_error"] == -1


def test_empty_vs_empty():
    empty = np.zeros((5, 5), dtype=np.int32)
    iou, pred_ids, gt_ids = match_instances(empty, empty)
    assert iou.shape == (0, 0) and pred_ids.size == 0 and gt_ids.size == 0
    assert evaluate(empty, empty) == {"f1": 1.0, "seg": 1.0, "ap_dsb": 1.0, "n_pred": 0, "n_gt": 0, "count_error": 0}
    assert average_precision(empty, empty, 0.7) == 1.0


def test_empty_prediction_and_empty_truth():
    gt = np.zeros((5, 5), dtype=np.int32)
    gt[1:3, 1:3] = 4
    gt[3:5, 3:5] = 9
    empty = np.zeros_like(gt)
    assert evaluate(empty, gt) == {"f1": 0.0, "seg": 0.0, "ap_dsb": 0.0, "n_pred": 0, "n_gt": 2, "count_error": -2}
    assert evaluate(gt, empty) == {"f1": 0.0, "seg": 0.0, "ap_dsb": 0.0, "n_pred": 2, "n_gt": 0, "count_error": 2}


def test_perfect_prediction():
    pred, gt = _two_squares()
    iou, _, _ = match_instances(gt, gt)
    np.testing.assert_allclose(iou, np.eye(2))
    assert evaluate(gt, gt) == {"f1": 1.0, "seg": 1.0, "ap_dsb": 1.0, "n_pred": 2, "n_gt": 2, "count_error": 0}


def test_invariant_to_label_permutation():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, size=(40, 40))
    pred = gt.copy()
    pred[:, 15:] = np.roll(pred[:, 15:], 2, axis=0)
    reference = evaluate(pred, gt)
    # Scramble the ids, including huge values that take the np.unique path.
    mapping = np.r_[0, rng.permutation(5) + 1] * 1_000_000_007
    renamed = evaluate(mapping[pred], np.r_[0, 5, 3, 1, 2, 4][gt])
    assert renamed == reference


def test_three_dimensional():
    gt = np.zeros((4, 6, 6), dtype=np.int32)
    gt[0:2, 0:2, 0:2] = 1
    gt[0:2, 3:5, 3:5] = 2
    pred = np.zeros_like(gt)
    pred[0:2, 0:2, 0:2] = 5  # identical cube
    pred[1:3, 3:5, 3:5] = 6  # shifted one plane: intersection 4, union 12
    iou, _, _ = match_instances(pred, gt)
    np.testing.assert_allclose(iou, [[1.0, 0.0], [0.0, 1 / 3]])
    assert f1_score(pred, gt) == pytest.approx(0.5)
    assert seg_score(pred, gt) == pytest.approx(0.5)


def test_evaluate_is_json_serializable():
    pred, gt = _two_squares()
    result = evaluate(pred, gt)
    assert set(result) == {"f1", "seg", "ap_dsb", "n_pred", "n_gt", "count_error"}
    assert all(type(result[k]) is float for k in ("f1", "seg", "ap_dsb"))
    assert all(type(result[k]) is int for k in ("n_pred", "n_gt", "count_error"))
    assert json.loads(json.dumps(result)) == result
    assert result["f1"] == pytest.approx(f1_score(pred, gt))
    assert result["ap_dsb"] == pytest.approx(ap_dsb(pred, gt))


def test_hungarian_prefers_more_matches():
    # Low thresholds can make "highest total IoU" and "most matches" disagree;
    # the count must win. pred 1 fits gt 1 well (IoU 9/11) but also grazes
    # gt 2 (1/12); pred 2 grazes only gt 1 (1/12). Best total IoU pairs just
    # pred 1 with gt 1; crossing the pairs gives two matches.
    gt = np.zeros((1, 20), dtype=np.int32)
    gt[0, 5:15] = 1
    gt[0, 15:18] = 2
    pred = np.zeros_like(gt)
    pred[0, 6:16] = 1
    pred[0, 3:6] = 2
    assert f1_score(pred, gt, iou_threshold=0.05) == 1.0
    assert f1_score(pred, gt, iou_threshold=0.5) == pytest.approx(0.5)


def test_thresholds_are_exact_decimals():
    assert DSB_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_float_labels_with_integral_values_are_accepted():
    pred, gt = _two_squares()
    assert evaluate(pred.astype(np.float32), gt.astype(np.float64)) == evaluate(pred, gt)


@pytest.mark.parametrize(
    "pred, gt, words",
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), ["(4, 4)", "(4, 5)"]),
        (np.full((4, 4), 0.5), np.zeros((4, 4), int), ["pred", "float64"]),
        (np.zeros((4, 4), int), np.zeros((4, 4), complex), ["gt", "complex128"]),
        (np.zeros((4, 4), int), -np.ones((4, 4), int), ["gt", "negative"]),
        (np.zeros((0, 4), int), np.zeros((0, 4), int), ["empty"]),
    ],
)
def test_bad_input_raises(pred, gt, words):
    with pytest.raises(InputError) as info:
        evaluate(pred, gt)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


def test_bad_threshold_raises():
    pred, gt = _two_squares()
    with pytest.raises(InputError, match="iou_threshold"):
        f1_score(pred, gt, iou_threshold=1.5)
