"""CellSegmenter's object table: each labelled object's record, taken from the window objects that saw it."""

from __future__ import annotations

import numpy as np

from probseg.methods.cellsegmenter.windows import OBJECT_FIELDS, PRESENT


def object_table(labels: np.ndarray, objects: np.ndarray, windows, slots: int, appearance_dims: int) -> dict:
    """Each object's latent code, box, presence and size from one draw's window objects.

    A labelled object may be seen by several windows; it takes the record
    of the window object whose mask covers most of it, and ``views``
    counts the window objects whose masks fall mostly on it.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
    objects : ndarray, shape (M, F)
        The draw's object records
        (:func:`~probseg.methods.cellsegmenter.windows.object_rows`), ``slots`` per window.
    windows : iterable of ((int, int), ndarray)
        Each window's origin and mixture, in the order of ``objects``
        (:func:`~probseg.methods.cellsegmenter.windows.window_masks`).
    slots : int
        Object slots per window.
    appearance_dims : int
        Size of the appearance latent ``z`` in each record.

    Returns
    -------
    dict of ndarray
        ``label``, ``area`` (px), ``presence`` (the grid probability),
        ``box_y0 box_x0 box_y1 box_x1`` (plane px), ``box_height``,
        ``box_width``, ``views``, then ``z_1..z_D`` (appearance) and
        ``v_1..v_4`` (box latents).
    """
    ids = np.unique(labels)
    ids = ids[ids > 0]
    best = np.zeros((len(ids), objects.shape[1]), dtype=np.float32)
    best_overlap = np.zeros(len(ids), dtype=np.int64)
    views = np.zeros(len(ids), dtype=np.int64)
    index = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int64)
    index[ids] = np.arange(len(ids))
    for w, ((y, x), pi) in enumerate(windows):
        owner = pi.argmax(0)
        seen = labels[y : y + owner.shape[0], x : x + owner.shape[1]]
        for slot in range(slots):
            row = objects[w * slots + slot]
            mine = owner == slot + 1
            if row[PRESENT] < 0.5 or not mine.any():
                continue
            hit = np.bincount(seen[mine], minlength=index.size)
            hit[0] = 0
            if hit.max() * 2 < mine.sum():
                continue
            j = index[int(hit.argmax())]
            views[j] += 1
            if hit.max() > best_overlap[j]:
                best_overlap[j], best[j] = hit.max(), row
    d = appearance_dims
    base = len(OBJECT_FIELDS)
    table = {
        "label": ids.astype(np.int64),
        "area": np.bincount(labels.ravel(), minlength=index.size)[ids].astype(np.int64),
        "presence": best[:, 6],
        "box_y0": best[:, 2], "box_x0": best[:, 3], "box_y1": best[:, 4], "box_x1": best[:, 5],
        "box_height": best[:, 4] - best[:, 2], "box_width": best[:, 5] - best[:, 3],
        "views": views,
    }
    table.update({f"z_{i + 1}": best[:, base + i] for i in range(d)})
    table.update({f"v_{i + 1}": best[:, base + d + i] for i in range(4)})
    return table
