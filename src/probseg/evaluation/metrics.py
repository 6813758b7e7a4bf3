"""Scores that compare an instance segmentation with a ground truth.

All functions take two label images of the same shape (2-D or 3-D; any
dimensionality works) where 0 is background and every other value is one
object. Label values need not be consecutive and the two images need not
use the same numbers: only which pixels share a label matters, so every
score is invariant to permuting the labels.

Overlaps come from a single joint histogram of (predicted, true) label
pairs that is kept sparse: the cost is one pass over the pixels plus work
proportional to the number of *overlapping* pairs, so images with thousands
of objects score quickly. Only :func:`match_instances`, which returns the
full IoU matrix, needs memory for every pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from probseg.core.errors import InputError

__all__ = [
    "match_instances",
    "f1_score",
    "seg_score",
    "average_precision",
    "ap_dsb",
    "evaluate",
    "DSB_THRESHOLDS",
]

# Rounded so that each threshold is the double nearest to its decimal value;
# np.arange(0.5, 1.0, 0.05) accumulates error (0.6000000000000001), which
# would silently change what counts as a match at exact ratios such as 3/5.
DSB_THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.5, 0.95, 10), 2))


def _as_labels(array, name: str) -> np.ndarray:
    """Return ``array`` as an int64 label image, or raise InputError."""
    labels = np.asarray(array)
    if labels.size == 0:
        raise InputError(f"{name} is empty (shape {labels.shape})")
    if labels.dtype == bool:
        return labels.astype(np.int64)  # a mask: one object
    if np.issubdtype(labels.dtype, np.floating):
        # Label images often round-trip through float (napari, some readers);
        # accept them as long as no value would change on conversion.
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(f"{name} has dtype {labels.dtype} with non-integral values; expected a label image of integers")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{name} has dtype {labels.dtype}; expected a label image of integers")
    if labels.dtype == np.uint64 and labels.max() > np.iinfo(np.int64).max:
        raise InputError(f"{name} has labels above {np.iinfo(np.int64).max}; relabel it (e.g. skimage.segmentation.relabel_sequential)")
    if labels.min() < 0:
        raise InputError(f"{name} contains negative labels (min {labels.min()}); labels must be >= 0 with 0 as background")
    return labels.astype(np.int64, copy=False)


def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred_arr, gt_arr = np.asarray(pred), np.asarray(gt)
    if pred_arr.shape != gt_arr.shape:
        raise InputError(f"pred has shape {pred_arr.shape} but gt has shape {gt_arr.shape}; they must be equal")
    return _as_labels(pred_arr, "pred"), _as_labels(gt_arr, "gt")


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to 0..n (0 stays background); return (ids, compact image)."""
    flat = labels.ravel()
    top = int(flat.max())
    if top < 4 * flat.size + 1024:
        # A lookup table is linear time; np.unique would sort every pixel.
        present = np.bincount(flat, minlength=top + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids, lut[flat]
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] == 0:
        return ids[1:], inverse.ravel()
    # No background in the image: shift so that index 0 stays reserved for it.
    return ids, inverse.ravel() + 1


@dataclass
class _Overlaps:
    """Sparse joint histogram of two label images.

    ``pred_index``/``gt_index`` are 0-based object indices of every pair of
    objects sharing at least one pixel, with its intersection and IoU.
    """

    pred_ids: np.ndarray
    gt_ids: np.ndarray
    pred_area: np.ndarray
    gt_area: np.ndarray
    pred_index: np.ndarray
    gt_index: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def n_gt(self) -> int:
        return int(self.gt_ids.size)


def _overlaps(pred: np.ndarray, gt: np.ndarray) -> _Overlaps:
    """Overlaps of two validated label images of equal shape."""
    pred_ids, p = _compact(pred)
    gt_ids, g = _compact(gt)
    n_cols = gt_ids.size + 1
    key = p * n_cols + g
    n_keys = (pred_ids.size + 1) * n_cols
    if n_keys <= 2 * key.size + 4096:
        counts = np.bincount(key, minlength=n_keys)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        # Too many possible pairs for a dense histogram; sort the pixels instead.
        keys, counts = np.unique(key, return_counts=True)
    rows, cols = np.divmod(keys, n_cols)
    # Areas include the overlap with the other image's background.
    pred_area = np.bincount(rows, weights=counts, minlength=pred_ids.size + 1)[1:].astype(np.int64)
    gt_area = np.bincount(cols, weights=counts, minlength=n_cols)[1:].astype(np.int64)
    both = (rows > 0) & (cols > 0)
    pi, gi, inter = rows[both] - 1, cols[both] - 1, counts[both].astype(np.int64)
    iou = inter / (pred_area[pi] + gt_area[gi] - inter).astype(np.float64)
    return _Overlaps(pred_ids, gt_ids, pred_area, gt_area, pi, gi, inter, iou)


def match_instances(pred, gt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection over union between every predicted and true object.

    Parameters
    ----------
    pred : ndarray of int
        Predicted label image; 0 is background.
    gt : ndarray of int
        Ground-truth label image of the same shape; 0 is background.

    Returns
    -------
    iou_matrix : ndarray of float64, shape (n_pred, n_gt)
        ``iou_matrix[i, j]`` is the IoU of object ``pred_ids[i]`` with object
        ``gt_ids[j]`` (0 where they do not overlap). Dense: for many
        thousands of objects prefer the scores, which never build it.
    pred_ids : ndarray of int64, shape (n_pred,)
        Sorted label values present in ``pred``, background excluded.
    gt_ids : ndarray of int64, shape (n_gt,)
        Sorted label values present in ``gt``, background excluded.

    Raises
    ------
    InputError
        If the shapes differ, a dtype is not integer (floats are accepted
        when every value is integral), an array is empty or has negative
        labels.
    """
    pred, gt = _check_pair(pred, gt)
    ov = _overlaps(pred, gt)
    iou = np.zeros((ov.n_pred, ov.n_gt))
    iou[ov.pred_index, ov.gt_index] = ov.iou
    return iou, ov.pred_ids, ov.gt_ids


def _n_matches(ov: _Overlaps, iou_threshold: float) -> int:
    """Size of the one-to-one matching of pairs with IoU above the threshold."""
    candidate = ov.iou > iou_threshold
    if iou_threshold >= 0.5:
        # IoU > 0.5 means sharing more than half of each object's pixels, so
        # no object has two such partners: the matching is the candidate set.
        return int(np.count_nonzero(candidate))
    pi, gi, iou = ov.pred_index[candidate], ov.gt_index[candidate], ov.iou[candidate]
    if pi.size == 0:
        return 0
    # Objects only compete for partners within a connected group of
    # candidate pairs; solving each group alone keeps the assignment small.
    graph = coo_matrix((np.ones(pi.size), (pi, ov.n_pred + gi)), shape=(ov.n_pred + ov.n_gt,) * 2)
    _, group = connected_components(graph, directed=False)
    group = group[pi]
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    matches = 0
    for edges in np.split(order, bounds):
        if edges.size == 1:
            matches += 1
            continue
        rows, r = np.unique(pi[edges], return_inverse=True)
        cols, c = np.unique(gi[edges], return_inverse=True)
        # Maximise the number of pairs first and total IoU second: each pair
        # is worth 1 plus a tie-break that sums to at most 0.5 over any
        # matching, as maximising IoU alone could trade two matches for one.
        weight = np.zeros((rows.size, cols.size))
        weight[r, c] = 1.0 + iou[edges] / (2.0 * min(weight.shape))
        chosen_r, chosen_c = linear_sum_assignment(weight, maximize=True)
        matches += int(np.count_nonzero(weight[chosen_r, chosen_c]))
    return matches


def _check_threshold(iou_threshold: float) -> float:
    try:
        threshold = float(iou_threshold)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"iou_threshold must lie in [0, 1), got {iou_threshold}")
    return threshold


def _counts(pred, gt, iou_threshold: float) -> tuple[int, int, int]:
    threshold = _check_threshold(iou_threshold)
    ov = _overlaps(*_check_pair(pred, gt))
    tp = _n_matches(ov, threshold)
    return tp, ov.n_pred - tp, ov.n_gt - tp


def f1_score(pred, gt, iou_threshold: float = 0.5) -> float:
    """F1 score of object detection with one-to-one matching.

    Predicted and true objects are paired one-to-one by the Hungarian
    algorithm (most pairs first, highest total IoU second), and a pair
    counts as a true positive only when its IoU is *strictly greater* than
    ``iou_threshold``. From 0.5 up this makes the matching unique (IoU above
    0.5 means sharing more than half of both objects, which no object can do
    with two others), and an IoU of exactly 0.5 is not a match: a 2-pixel
    object predicted as the same 2 pixels plus 2 more scores 0. This follows
    the Data Science Bowl 2018 wording ("IoU above the threshold"); the
    StarDist and Cellpose evaluation code uses ``>=`` and so can count one
    more match than this function at exact ties.

    Parameters
    ----------
    pred : ndarray of int
        Predicted label image; 0 is background.
    gt : ndarray of int
        Ground-truth label image of the same shape; 0 is background.
    iou_threshold : float
        Minimum IoU (exclusive) for a matched pair, in [0, 1).

    Returns
    -------
    float
        ``2 TP / (2 TP + FP + FN)`` in [0, 1]; 1.0 when both images are empty.

    Raises
    ------
    InputError
        For invalid label images (see :func:`match_instances`) or a
        threshold outside [0, 1).
    """
    tp, fp, fn = _counts(pred, gt, iou_threshold)
    if tp + fp + fn == 0:
        return 1.0
    return 2.0 * tp / (2.0 * tp + fp + fn)


def average_precision(pred, gt, iou_threshold: float = 0.5) -> float:
    """Detection "average precision" as defined by the 2018 Data Science Bowl.

    Despite its name this is ``TP / (TP + FP + FN)`` at one IoU threshold,
    with the same Hungarian matching and strict ``IoU > iou_threshold`` rule
    as :func:`f1_score`.

    Parameters
    ----------
    pred : ndarray of int
        Predicted label image; 0 is background.
    gt : ndarray of int
        Ground-truth label image of the same shape; 0 is background.
    iou_threshold : float
        Minimum IoU (exclusive) for a matched pair, in [0, 1).

    Returns
    -------
    float
        Value in [0, 1]; 1.0 when both images are empty.

    Raises
    ------
    InputError
        For invalid label images (see :func:`match_instances`) or a
        threshold outside [0, 1).
    """
    tp, fp, fn = _counts(pred, gt, iou_threshold)
    if tp + fp + fn == 0:
        return 1.0
    return tp / float(tp + fp + fn)


def _ap_dsb(ov: _Overlaps) -> float:
    if ov.n_pred == 0 and ov.n_gt == 0:
        return 1.0
    scores = []
    for threshold in DSB_THRESHOLDS:
        tp = _n_matches(ov, threshold)
        scores.append(tp / float(ov.n_pred + ov.n_gt - tp))
    return float(np.mean(scores))


def ap_dsb(pred, gt) -> float:
    """Mean of :func:`average_precision` over IoU thresholds 0.5, 0.55, ..., 0.95.

    This is the score of the 2018 Data Science Bowl (Caicedo et al., Nature
    Methods 16, 2019) for one image.

    Parameters
    ----------
    pred : ndarray of int
        Predicted label image; 0 is background.
    gt : ndarray of int
        Ground-truth label image of the same shape; 0 is background.

    Returns
    -------
    float
        Value in [0, 1]; 1.0 when both images are empty.

    Raises
    ------
    InputError
        For invalid label images (see :func:`match_instances`).
    """
    return _ap_dsb(_overlaps(*_check_pair(pred, gt)))


def _seg(ov: _Overlaps) -> float:
    if ov.n_gt == 0:
        return 1.0 if ov.n_pred == 0 else 0.0
    # At most one predicted object can cover more than half of a true one,
    # so summing over covering pairs adds at most one Jaccard per object.
    covers = 2 * ov.intersection > ov.gt_area[ov.gt_index]
    return float(ov.iou[covers].sum() / ov.n_gt)


def seg_score(pred, gt) -> float:
    """SEG score of the Cell Tracking Challenge.

    For each ground-truth object, the Jaccard index (IoU) with the predicted
    object that covers strictly more than half of its pixels, or 0 if no
    predicted object does; the mean over ground-truth objects. False
    positives are not penalised, by design of the measure.

    Parameters
    ----------
    pred : ndarray of int
        Predicted label image; 0 is background.
    gt : ndarray of int
        Ground-truth label image of the same shape; 0 is background.

    Returns
    -------
    float
        Value in [0, 1]. Without ground-truth objects the measure is
        undefined; we return 1.0 if ``pred`` is empty too and 0.0 otherwise,
        so that an image with only spurious detections never scores as
        perfect and results stay JSON-serialisable (no NaN).

    Raises
    ------
    InputError
        For invalid label images (see :func:`match_instances`).
    """
    return _seg(_overlaps(*_check_pair(pred, gt)))


def evaluate(pred, gt) -> dict:
    """All scores of one prediction against its ground truth.

    Parameters
    ----------
    pred : ndarray of int
        Predicted label image; 0 is background.
    gt : ndarray of int
        Ground-truth label image of the same shape; 0 is background.

    Returns
    -------
    dict
        ``f1`` (:func:`f1_score` at IoU > 0.5), ``seg`` (:func:`seg_score`),
        ``ap_dsb`` (:func:`ap_dsb`) as Python floats; ``n_pred``, ``n_gt``
        (object counts) and ``count_error`` (``n_pred - n_gt``) as Python
        ints. Every value is JSON-serialisable.

    Raises
    ------
    InputError
        For invalid label images (see :func:`match_instances`).
    """
    # One histogram serves every score; the images are read only once.
    ov = _overlaps(*_check_pair(pred, gt))
    tp = _n_matches(ov, 0.5)
    f1 = 1.0 if ov.n_pred + ov.n_gt == 0 else 2.0 * tp / (ov.n_pred + ov.n_gt)
    return {
        "f1": float(f1),
        "seg": _seg(ov),
        "ap_dsb": _ap_dsb(ov),
        "n_pred": ov.n_pred,
        "n_gt": ov.n_gt,
        "count_error": ov.n_pred - ov.n_gt,
    }
