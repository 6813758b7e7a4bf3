"""Where to look first: the most uncertain patches of an image, in order.

A proofreader cannot inspect every object of a large image. The queue lists
patches centred on peaks of an uncertainty map (any per-pixel map where
higher means less sure, e.g. :func:`probseg.consensus.uncertainty.pixel_disagreement`
or :meth:`probseg.consensus.agglomerate.Agglomeration.entropy`), most uncertain first,
with the objects each patch shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import local_maxima

from probseg.core.bounds import PATCH_SIZE
from probseg.core.errors import InputError
from probseg.core.inputs import check_label_stack

__all__ = ["QueueEntry", "proofreading_queue", "MIN_PATCH"]

MIN_PATCH = int(PATCH_SIZE.low)


@dataclass(frozen=True)
class QueueEntry:
    """One patch to proofread.

    Attributes
    ----------
    rect : (int, int, int, int)
        ``(y0, x0, y1, x1)`` of the patch, clipped to the image; the patch is
        ``image[y0:y1, x0:x1]``.
    score : float
        Mean uncertainty over the (unclipped) patch, counting pixels outside
        the image as 0; see :func:`proofreading_queue`.
    labels : tuple of int
        Ids of the objects of ``labels`` with at least one pixel in the
        patch, ascending.
    center : (int, int)
        ``(y, x)`` of the peak the patch is centred on.
    """

    rect: tuple[int, int, int, int]
    score: float
    labels: tuple[int, ...]
    center: tuple[int, int]


def _check_int(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InputError(f"{name} must be a whole number >= {least}, got {value!r}")
    return int(value)


def _suppression_mask(patch: int) -> np.ndarray:
    """Centre offsets ``(dy, dx)`` at which two patches overlap by more than half.

    Entry ``[dy + patch - 1, dx + patch - 1]`` is True when
    ``(patch - |dy|) * (patch - |dx|) > patch**2 / 2``.
    """
    d = patch - np.abs(np.arange(-patch + 1, patch))
    return 2 * d[:, None] * d[None, :] > patch * patch


def _window_sums(a: np.ndarray, patch: int, axis: int) -> np.ndarray:
    """Sums of ``a`` over windows ``c - patch // 2 .. c - patch // 2 + patch - 1``.

    Zero padding outside the array; integer input gives exact sums.
    """
    half = patch // 2
    pad = [(0, 0), (0, 0)]
    # One extra leading zero so that each window is a difference of two
    # cumulative sums.
    pad[axis] = (half + 1, patch - half)
    c = np.cumsum(np.pad(a, pad), axis=axis)
    n = a.shape[axis]
    hi = [slice(None), slice(None)]
    lo = [slice(None), slice(None)]
    hi[axis] = slice(patch, patch + n)
    lo[axis] = slice(0, n)
    return c[tuple(hi)] - c[tuple(lo)]


def _peaks(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pixel per regional maximum of ``box``: the one nearest its centroid.

    A regional maximum is a connected plateau (8-neighbours) of equal values
    with no higher neighbour; ties for the nearest pixel go to raster order.
    """
    if box.min() == box.max():
        # local_maxima finds nothing in a flat image, which is one plateau.
        mask = np.ones(box.shape, dtype=bool)
    else:
        mask = local_maxima(box, connectivity=2, allow_borders=True)
    plateau, _ = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return ys, xs
    comp = plateau[ys, xs] - 1
    size = np.bincount(comp)
    cy = np.bincount(comp, weights=ys) / size
    cx = np.bincount(comp, weights=xs) / size
    dist = (ys - cy[comp]) ** 2 + (xs - cx[comp]) ** 2
    nearest = np.full(size.size, np.inf)
    np.minimum.at(nearest, comp, dist)
    # nonzero lists pixels in raster order, so the first hit per plateau is
    # the raster-order tie-break.
    hit = np.flatnonzero(dist == nearest[comp])
    _, first = np.unique(comp[hit], return_index=True)
    pick = hit[first]
    return ys[pick], xs[pick]


def proofreading_queue(uncertainty, labels, patch: int = 64, max_entries: int = 100, min_score: float = 0.0) -> list[QueueEntry]:
    """Patches centred on uncertainty peaks, most uncertain first.

    Score
        Every pixel ``c`` is scored by the mean uncertainty of the
        ``patch x patch`` square centred on it (rows ``c_y - patch // 2`` up
        to, not including, ``c_y - patch // 2 + patch``, likewise columns),
        counting pixels outside the image as 0 so that border patches are
        not favoured for holding fewer pixels. The sums are taken exactly on
        the uncertainty rounded to ``2**-32`` of its largest magnitude
        (coarser only when width times patch exceeds about ``5e8``), so
        that equal patches tie exactly rather than by rounding noise.
    Peaks
        Candidates are the regional maxima of the score (plateaus of equal
        score, 8-connected, with no higher neighbour); a plateau, e.g. all
        centres whose patch holds a whole small uncertain object, is one
        candidate at its pixel nearest its centroid (ties in raster order).
        Candidates scoring at or below ``min_score`` are left out.
    Non-maximum suppression
        Candidates are taken greedily by descending score, ties by row then
        column of the centre. A candidate is skipped when its (unclipped)
        square would overlap an already taken one by more than half a
        patch's area: ``(patch - |dy|) * (patch - |dx|) > patch**2 / 2`` for
        the offset ``(dy, dx)`` between the centres. Along one axis this
        means centres closer than ``patch / 2``.

    Parameters
    ----------
    uncertainty : ndarray of float, shape (Y, X)
        Finite per-pixel uncertainty, higher = less sure.
    labels : ndarray of int, shape (Y, X)
        The segmentation being proofread, 0 = background; used to list the
        objects in each patch.
    patch : int
        Side of a patch in pixels, 4 to 4096 (:data:`probseg.core.bounds.PATCH_SIZE`).
    max_entries : int
        Most entries returned, ``>= 1``.
    min_score : float
        Patches scoring at or below this are left out; the default 0 leaves
        out patches where the uncertainty is 0 throughout.

    Returns
    -------
    list of QueueEntry
        Sorted by descending score (ties as above); at most ``max_entries``.

    Raises
    ------
    InputError
        If ``uncertainty`` is not a 2-D array of finite numbers, ``labels``
        has another shape, a non-integer dtype or negative ids, or
        ``patch``, ``max_entries`` or ``min_score`` is out of range.
    """
    u = np.asarray(uncertainty)
    if u.ndim != 2 or u.size == 0:
        raise InputError(f"uncertainty must be a non-empty 2-D image, got shape {u.shape}")
    if u.dtype == bool or not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
        raise InputError(f"uncertainty must hold numbers, got dtype {u.dtype}")
    u = u.astype(np.float64)
    if not np.all(np.isfinite(u)):
        raise InputError("uncertainty contains NaN or infinite values; fill or clip them first")
    lab = np.asarray(labels)
    if lab.shape != u.shape:
        raise InputError(f"labels have shape {lab.shape} but uncertainty has shape {u.shape}; they must be equal")
    lab = check_label_stack(lab, "labels")[0]
    patch = PATCH_SIZE.check("patch", patch)
    max_entries = _check_int(max_entries, "max_entries", 1)
    try:
        min_score = float(min_score)
    except (TypeError, ValueError):
        min_score = float("nan")
    if not np.isfinite(min_score):
        raise InputError(f"min_score must be a finite number, got {min_score!r}")

    height, width = u.shape
    half = patch // 2
    top = float(np.abs(u).max()) or 1.0
    # Integer box sums are exact, so a plateau of equal patches is found as
    # one; the step keeps every partial sum below 2**62.
    reach = max(height + patch, (width + patch) * patch)
    bits = min(32, 61 - int(np.ceil(np.log2(reach))))
    unit = top / 2.0**bits
    fixed = np.rint(u / unit).astype(np.int64)
    box = _window_sums(_window_sums(fixed, patch, 0), patch, 1)
    to_score = unit / float(patch * patch)

    ys, xs = _peaks(box)
    values = box[ys, xs]
    keep = values * to_score > min_score
    ys, xs, values = ys[keep], xs[keep], values[keep]
    order = np.lexsort((xs, ys, -values))
    ys, xs, values = ys[order], xs[order], values[order]

    mask = _suppression_mask(patch)
    taken = np.zeros((height, width), dtype=bool)
    entries = []
    pos, step = 0, 1024
    while pos < values.size and len(entries) < max_entries:
        # Look ahead in blocks: on noisy maps most candidates are already
        # suppressed, and testing them one by one in Python is slow.
        stop = min(values.size, pos + step)
        free = np.flatnonzero(~taken[ys[pos:stop], xs[pos:stop]])
        if free.size == 0:
            pos, step = stop, min(2 * step, 1 << 20)
            continue
        k = pos + int(free[0])
        pos, step = k + 1, 1024
        cy, cx = int(ys[k]), int(xs[k])
        ry0, rx0 = max(0, cy - half), max(0, cx - half)
        ry1, rx1 = min(height, cy - half + patch), min(width, cx - half + patch)
        ids = np.unique(lab[ry0:ry1, rx0:rx1])
        entries.append(QueueEntry(
            rect=(ry0, rx0, ry1, rx1),
            score=float(values[k]) * to_score,
            labels=tuple(ids[ids > 0].tolist()),
            center=(cy, cx),
        ))
        # Mark every centre whose patch would overlap this one too much.
        my0, mx0 = max(0, cy - patch + 1), max(0, cx - patch + 1)
        my1, mx1 = min(height, cy + patch), min(width, cx + patch)
        oy, ox = my0 - (cy - patch + 1), mx0 - (cx - patch + 1)
        taken[my0:my1, mx0:mx1] |= mask[oy : oy + my1 - my0, ox : ox + mx1 - mx0]
    return entries
