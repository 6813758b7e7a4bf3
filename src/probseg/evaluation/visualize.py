"""Turning embeddings into something a person can look at."""

from __future__ import annotations

import numpy as np


def embeddings_to_rgb(embeddings: np.ndarray, percentiles=(1.0, 99.0)) -> np.ndarray:
    """Map a ``(D, Y, X)`` embedding to an RGB image in 0..1.

    D = 1 gives gray, D = 2 the two channels in red and green, D >= 3 the
    first three principal components. Each channel is stretched between the
    given percentiles. A stack ``(Z, D, Y, X)`` is mapped plane by plane.

    Returns
    -------
    ndarray of float32, shape (Y, X, 3), or (Z, Y, X, 3) for a stack
    """
    if np.ndim(embeddings) == 4:
        return np.stack([embeddings_to_rgb(plane, percentiles) for plane in embeddings])
    emb = np.asarray(embeddings, dtype=np.float32)
    d, h, w = emb.shape
    flat = emb.reshape(d, -1).T
    if d >= 3:
        centred = flat - flat.mean(axis=0)
        # Principal axes from the D x D covariance; each axis' sign is fixed
        # (largest loading positive) so colours do not flip between runs.
        _, _, vt = np.linalg.svd(np.cov(centred, rowvar=False))
        axes = vt[:3]
        axes = axes * np.sign(axes[np.arange(3), np.abs(axes).argmax(axis=1)])[:, None]
        comps = centred @ axes.T
    elif d == 2:
        comps = np.concatenate([flat, np.zeros((flat.shape[0], 1), np.float32)], axis=1)
    else:
        comps = np.repeat(flat, 3, axis=1)
    out = np.zeros_like(comps)
    for c in range(3):
        lo, hi = np.percentile(comps[:, c], percentiles)
        if hi > lo:
            out[:, c] = np.clip((comps[:, c] - lo) / (hi - lo), 0, 1)
    if d == 2:
        out[:, 2] = 0.0
    return out.reshape(h, w, 3).astype(np.float32)
