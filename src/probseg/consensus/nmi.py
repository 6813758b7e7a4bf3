"""Normalised mutual information from weighted label pairs."""

from __future__ import annotations

import numpy as np


def _entropy(counts: np.ndarray, total: float) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def weighted_nmi(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> float:
    """NMI between two labelings of weighted items (arithmetic normalisation).

    Equals scikit-learn's ``normalized_mutual_info_score`` on the pixels when
    each item is a fragment weighted by its pixel count. Two labelings with a
    single label each agree fully (1.0).
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        return 1.0
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    nb = int(ib.max()) + 1
    joint_codes, joint_index = np.unique(ia.astype(np.int64) * nb + ib, return_inverse=True)
    joint = np.bincount(joint_index, weights=weights)
    ca = np.bincount(ia, weights=weights)
    cb = np.bincount(ib, weights=weights)
    ha, hb = _entropy(ca, total), _entropy(cb, total)
    if ha + hb == 0:
        return 1.0
    pa = ca[joint_codes // nb] / total
    pb = cb[joint_codes % nb] / total
    pj = joint / total
    mi = float((pj * np.log(pj / (pa * pb))).sum())
    return max(0.0, min(1.0, mi / ((ha + hb) / 2)))
