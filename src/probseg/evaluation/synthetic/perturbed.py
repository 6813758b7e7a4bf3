"""Samples of a known segmentation with known mistakes: splits, merges and shifted outlines."""

from __future__ import annotations

import numpy as np
from skimage.measure import label as connected_components

from probseg.core.errors import InputError
from probseg.partition.components import label_boundaries

__all__ = ["perturbed_samples"]


def _touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs ``(a, b)``, ``a < b``, of objects that share an edge."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], 1))
    both = np.concatenate(pairs)
    return np.unique(both, axis=0) if both.size else both.reshape(0, 2)


def perturbed_samples(labels, n: int = 16, split: float = 0.1, merge: float = 0.1, jitter: bool = True, seed: int | None = 0) -> np.ndarray:
    """``n`` plausible segmentations of ``labels`` that each make a few mistakes.

    Stands in for a model's samples when the truth must be known. In each
    sample, independently: every object is cut in two along a random line
    through its centre with probability ``split``; every pair of touching
    objects is merged with probability ``merge``; and, with ``jitter``, all
    outlines grow or shrink by one pixel (one of the three at random).

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        The truth; 0 is background.
    n : int
        Number of samples.
    split, merge : float
        Error rates in [0, 1].
    jitter : bool
    seed : int or None

    Returns
    -------
    ndarray of int32, shape (n, Y, X)
    """
    from skimage.segmentation import expand_labels

    truth = np.asarray(labels)
    if truth.ndim != 2 or not np.issubdtype(truth.dtype, np.integer):
        raise InputError(f"labels must be a 2-D integer image, got {truth.dtype} of shape {truth.shape}")
    if int(n) < 1:
        raise InputError(f"n must be at least 1, got {n}")
    for name, rate in (("split", split), ("merge", merge)):
        if not 0.0 <= float(rate) <= 1.0:
            raise InputError(f"{name} must be between 0 and 1, got {rate}")
    rng = np.random.default_rng(seed)
    truth = truth.astype(np.int64)
    top = int(truth.max())
    yy, xx = np.indices(truth.shape)
    area = np.bincount(truth.ravel(), minlength=top + 1).astype(np.float64)
    cy = np.bincount(truth.ravel(), yy.ravel(), minlength=top + 1) / np.maximum(area, 1)
    cx = np.bincount(truth.ravel(), xx.ravel(), minlength=top + 1) / np.maximum(area, 1)
    pairs = _touching_pairs(truth)
    out = np.zeros((int(n),) + truth.shape, dtype=np.int32)
    for k in range(int(n)):
        sample = truth.copy()
        if merge > 0 and len(pairs):
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components as graph_components

            chosen = pairs[rng.random(len(pairs)) < merge]
            adj = coo_matrix((np.ones(len(chosen)), (chosen[:, 0], chosen[:, 1])), shape=(top + 1, top + 1))
            _, root = graph_components(adj, directed=False)
            root[0] = -1
            lut = np.where(root >= 0, root + 1, 0)
            sample = lut[sample]
        if split > 0:
            angle = rng.uniform(0, np.pi, top + 1)
            cut = rng.random(top + 1) < split
            side = (yy - cy[truth]) * np.cos(angle[truth]) + (xx - cx[truth]) * np.sin(angle[truth]) > 0
            sample = np.where((truth > 0) & cut[truth] & side, sample + top + 1, sample)
        if jitter:
            move = rng.integers(3)
            if move == 1:
                sample = expand_labels(sample, 1)
            elif move == 2:
                sample = np.where(label_boundaries(sample), 0, sample)
        out[k] = connected_components(sample, background=0, connectivity=1)
    return out
