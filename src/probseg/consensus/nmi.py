"""Normalised mutual information from weighted label pairs."""

from __future__ import annotations

import numpy as np


def _entropy(counts: np.ndarray, total: float) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


class Reference:
    """One labeling of weighted items, prepared for many :meth:`nmi` calls.

    A resolution sweep compares many consensus labelings with the same
    samples; the samples' side of the computation is done once here.
    """

    def __init__(self, labels: np.ndarray, weights: np.ndarray):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.total = float(self.weights.sum())
        _, self.index = np.unique(labels, return_inverse=True)
        self.size = int(self.index.max()) + 1 if self.index.size else 0
        self.counts = np.bincount(self.index, weights=self.weights, minlength=self.size)
        self.entropy = _entropy(self.counts, self.total) if self.total > 0 else 0.0

    def nmi(self, other: np.ndarray) -> float:
        """NMI between ``other`` (same items) and this labeling."""
        if self.total <= 0:
            return 1.0
        _, ia = np.unique(other, return_inverse=True)
        ca = np.bincount(ia, weights=self.weights)
        ha = _entropy(ca, self.total)
        if ha + self.entropy == 0:
            return 1.0
        nb = self.size
        joint_codes, joint_index = np.unique(ia.astype(np.int64) * nb + self.index, return_inverse=True)
        pj = np.bincount(joint_index, weights=self.weights) / self.total
        pa = ca[joint_codes // nb] / self.total
        pb = self.counts[joint_codes % nb] / self.total
        mi = float((pj * np.log(pj / (pa * pb))).sum())
        return max(0.0, min(1.0, mi / ((ha + self.entropy) / 2)))


def weighted_nmi(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> float:
    """NMI between two labelings of weighted items (arithmetic normalisation).

    Equals scikit-learn's ``normalized_mutual_info_score`` on the pixels when
    each item is a fragment weighted by its pixel count. Two labelings with a
    single label each agree fully (1.0).
    """
    return Reference(b, weights).nmi(a)
