"""One segmentation with per-object probabilities from many sampled ones.

A model that draws several instance segmentations of one image (Monte-Carlo
dropout, an ensemble, any sampler) gives label ids that mean nothing from one
draw to the next. :func:`agglomerate` pairs the objects of the draws by
overlap, counts in how many draws each object covers each pixel, and keeps
the pixels that an object covers often enough:

>>> from probseg.consensus.agglomerate import agglomerate
>>> result = agglomerate(samples, threshold=0.75)     # (n, Y, X) labels
>>> result.labels, result.probability, result.entropy()

Per-object count maps are kept sparse (pixel index, count) while draws are
added, and handed out as bounding-box crops, so memory grows with the area
the objects cover rather than with objects times image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from probseg.core.errors import InputError
from probseg.core.inputs import check_label_stack
from probseg.consensus.uncertainty import bernoulli_entropy

__all__ = ["agglomerate", "Agglomeration", "InstanceMap", "DEFAULT_MIN_IOU"]

# Small objects jitter between draws: a 5x5 nucleus moved by two pixels keeps
# an IoU of 15/35 = 0.43, so requiring 0.5 would split it into two objects of
# half the probability each and could drop it altogether. Objects that do not
# correspond rarely overlap by a third, and the one-to-one assignment prefers
# the better partner wherever there is one.
DEFAULT_MIN_IOU = 0.3

# Comparisons of count / n with a threshold typed as a decimal (0.7 for 7/10)
# must not fail on the last bit.
_EPS = 1e-12


class InstanceMap(NamedTuple):
    """Probability map of one agglomerated object, cropped to its bounding box.

    Attributes
    ----------
    slices : (slice, slice)
        Bounding box in the image: ``image[slices]`` has the crop's shape.
    probability : ndarray of float32, shape (h, w)
        Fraction of the draws in which the object covers each pixel of the
        box; 0 where it never does.
    label : int
        The object's id in :attr:`Agglomeration.labels`, or 0 when no pixel
        reached the threshold and it was left out.
    """

    slices: tuple[slice, slice]
    probability: np.ndarray
    label: int


@dataclass
class Agglomeration:
    """What :func:`agglomerate` found.

    Attributes
    ----------
    labels : ndarray of int32, shape (Y, X)
        Objects ``1..K`` (0 = background), numbered in raster order of their
        first pixel.
    probability : ndarray of float32, shape (Y, X)
        At each pixel, the probability of the object it is labelled with in
        ``labels`` (the fraction of draws in which that object covers the
        pixel); 0 on background.
    instances : list of InstanceMap
        Every agglomerated object, also those left out of ``labels``: first
        the kept ones, ``instances[k - 1]`` being label ``k``, then the
        dropped ones in raster order of their first pixel.
    n_draws : int
        Number of draws agglomerated.
    instance_scores : ndarray of float64, shape (K + 1,)
        ``instance_scores[k]`` is the mean of ``probability`` over the pixels
        of label ``k``; entry 0 (background) is 0.
    threshold : float
        The probability a pixel needed to be labelled.
    """

    labels: np.ndarray
    probability: np.ndarray
    instances: list[InstanceMap]
    n_draws: int
    instance_scores: np.ndarray
    threshold: float

    @property
    def n_instances(self) -> int:
        """Number of objects in ``labels``."""
        return int(self.instance_scores.size - 1)

    def entropy(self) -> np.ndarray:
        """Per-pixel uncertainty of the agglomerated objects, in bits.

        The Bernoulli entropy of each object's probability (does the object
        cover this pixel?), summed over all objects that cover the pixel in
        some draw, those left out of ``labels`` included. A single object
        covering a pixel in half of the draws gives 1.0; pixels on which all
        draws agree give 0.

        Returns
        -------
        ndarray of float32, shape (Y, X)
        """
        out = np.zeros(self.labels.shape, dtype=np.float32)
        for inst in self.instances:
            out[inst.slices] += bernoulli_entropy(inst.probability)
        return out


def _check_samples(samples) -> np.ndarray:
    arr = np.asarray(samples)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)  # masks: one object per draw
    return check_label_stack(arr, "samples")


def _check_fraction(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if not 0.0 < out <= 1.0:
        raise InputError(f"{name} must lie in (0, 1], got {value!r}")
    return out


def _compact(draw: np.ndarray) -> tuple[np.ndarray, int]:
    """Flat labels ``0..m`` numbered in raster order of each object's first pixel.

    A canonical numbering makes every later tie-break independent of the
    arbitrary ids of the draw.
    """
    flat = draw.ravel()
    fg = np.flatnonzero(flat)
    if fg.size == 0:
        return np.zeros(flat.size, dtype=np.uint8), 0
    values = flat[fg]
    top = int(values.max())
    if top < 4 * flat.size + 1024:
        # A lookup table is linear time; np.unique would sort every pixel.
        first = np.full(top + 1, flat.size, dtype=np.int64)
        np.minimum.at(first, values, fg)
        ids = np.flatnonzero(first < flat.size)
        m = ids.size
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids[np.argsort(first[ids], kind="stable")]] = np.arange(1, m + 1)
        compact = lut[values]
    else:
        ids, first, inverse = np.unique(values, return_index=True, return_inverse=True)
        m = ids.size
        rank = np.empty(m, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(1, m + 1)
        compact = rank[inverse.ravel()]
    # Every draw is held at once; the narrowest type keeps that to about the
    # size of the input.
    out = np.zeros(flat.size, dtype=np.min_scalar_type(m))
    out[fg] = compact
    return out, int(m)


def _sorted_keys(objects: np.ndarray, pix: np.ndarray, n_objects: int, n_pix: int) -> np.ndarray:
    """``objects * n_pix + pix`` sorted, for ``pix`` ascending."""
    # A stable sort by object keeps pixels ascending within each object, and
    # is a linear-time radix sort for 16-bit keys.
    small = objects.astype(np.uint16) if n_objects <= np.iinfo(np.uint16).max else objects
    order = np.argsort(small, kind="stable")
    return objects[order] * n_pix + pix[order]


def _add_keys(keys: np.ndarray, counts: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge distinct sorted keys ``new`` into sorted ``keys``, counting each once."""
    pos = np.searchsorted(keys, new)
    found = pos < keys.size
    found[found] = keys[pos[found]] == new[found]
    counts[pos[found]] += 1
    # Linear-time merge: both inputs are sorted, so each new key goes right
    # before the old key it was found to precede.
    fresh = np.flatnonzero(~found)
    at = pos[fresh] + np.arange(fresh.size)
    is_new = np.zeros(keys.size + fresh.size, dtype=bool)
    is_new[at] = True
    merged_keys = np.empty(is_new.size, dtype=np.int64)
    merged_counts = np.empty(is_new.size)
    merged_keys[at] = new[fresh]
    merged_keys[~is_new] = keys
    merged_counts[at] = 1.0
    merged_counts[~is_new] = counts
    return merged_keys, merged_counts


def _pair_sums(codes: np.ndarray, weights: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``codes`` and the summed ``weights`` of each."""
    if n_codes <= 2 * codes.size + 4096:
        sums = np.bincount(codes, weights=weights, minlength=n_codes)
        keys = np.flatnonzero(sums)
        return keys, sums[keys]
    # Too many possible pairs for a dense table; sort the entries instead.
    keys, inverse = np.unique(codes, return_inverse=True)
    return keys, np.bincount(inverse.ravel(), weights=weights, minlength=keys.size)


def _assign(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """One-to-one pairing of candidate pairs maximising the total IoU.

    Returns, for each column, the row it is paired with or -1.
    """
    match = np.full(n_cols, -1, dtype=np.int64)
    if rows.size == 0:
        return match
    # Objects only compete within a connected group of candidate pairs;
    # solving each group alone keeps every assignment problem small.
    graph = coo_matrix((np.ones(rows.size), (rows, n_rows + cols)), shape=(n_rows + n_cols,) * 2)
    _, group = connected_components(graph, directed=False)
    group = group[rows]
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    for edges in np.split(order, bounds):
        if edges.size == 1:
            match[cols[edges[0]]] = rows[edges[0]]
            continue
        r_ids, r = np.unique(rows[edges], return_inverse=True)
        c_ids, c = np.unique(cols[edges], return_inverse=True)
        weight = np.zeros((r_ids.size, c_ids.size))
        weight[r, c] = iou[edges]
        chosen_r, chosen_c = linear_sum_assignment(weight, maximize=True)
        paired = weight[chosen_r, chosen_c] > 0
        match[c_ids[chosen_c[paired]]] = r_ids[chosen_r[paired]]
    return match


def agglomerate(samples, threshold: float = 0.75, min_iou: float = DEFAULT_MIN_IOU) -> Agglomeration:
    """Agglomerate sampled instance segmentations into objects with probabilities.

    The draw with the most objects seeds the accumulated objects (the first
    such draw on a tie). Every other draw, in order, is matched to them: the
    IoU of a new object ``B`` with an accumulated object ``A`` seen in
    ``k_A`` draws is the fuzzy Jaccard index of ``B`` with ``A``'s count map
    divided by ``k_A``, i.e. ``I / (|B| + sum(w_A) - I)`` with
    ``w_A = count_A / k_A`` and ``I`` the sum of ``w_A`` over ``B``'s pixels
    (the ordinary IoU when ``A`` looked the same in each of its draws). The
    Hungarian algorithm pairs objects one-to-one maximising the total IoU
    among pairs with ``IoU >= min_iou``; paired objects add their pixels to
    the accumulated object's count map, unpaired ones start new accumulated
    objects. The probability of an object at a pixel is its count divided by
    the number of draws.

    A pixel is labelled with the object of highest probability there among
    those with probability ``>= threshold`` (equal probabilities go to the
    object accumulated first). An object's pixels need not be connected.

    Parameters
    ----------
    samples : ndarray of int, shape (n, Y, X)
        ``n >= 1`` label images, 0 = background; ids are arbitrary in each
        draw. A single ``(Y, X)`` image counts as one draw. Floats are
        accepted when every value is integral, booleans as one object per
        draw.
    threshold : float
        Probability in (0, 1] a pixel needs to be labelled.
    min_iou : float
        Least IoU, in (0, 1], for an object of a draw to be paired with an
        accumulated object; see :data:`DEFAULT_MIN_IOU`.

    Returns
    -------
    Agglomeration

    Raises
    ------
    InputError
        If ``samples`` is not 2-D or 3-D, is empty, has a non-integer dtype
        or negative labels, or ``threshold`` or ``min_iou`` lies outside
        (0, 1].
    """
    arr = _check_samples(samples)
    threshold = _check_fraction(threshold, "threshold")
    min_iou = _check_fraction(min_iou, "min_iou")
    n, height, width = arr.shape
    n_pix = height * width
    draws = [_compact(d) for d in arr]
    sizes = [m for _, m in draws]
    seed = int(np.argmax(sizes))

    # Accumulated objects as sorted keys ``object * n_pix + pixel`` with a
    # count each; ``seen[j]`` is the number of draws object j appeared in.
    flat, m = draws[seed]
    pix = np.flatnonzero(flat)
    keys = _sorted_keys(flat[pix].astype(np.int64) - 1, pix, m, n_pix)
    counts = np.ones(keys.size)
    seen = np.ones(m)
    n_acc = m

    for d in range(n):
        flat, m = draws[d]
        if d == seed or m == 0:
            continue
        acc, acc_pix = np.divmod(keys, n_pix)
        target = np.full(m + 1, -1, dtype=np.int64)
        if n_acc:
            under = flat[acc_pix]
            hit = under > 0
            weight = counts[hit] / seen[acc[hit]]
            pairs, inter = _pair_sums(acc[hit] * (m + 1) + under[hit], weight, n_acc * (m + 1))
            rows, cols = np.divmod(pairs, m + 1)
            acc_area = np.bincount(acc, weights=counts, minlength=n_acc) / seen
            new_area = np.bincount(flat, minlength=m + 1)
            iou = inter / (acc_area[rows] + new_area[cols] - inter)
            ok = iou >= min_iou
            target[1:] = _assign(rows[ok], cols[ok] - 1, iou[ok], n_acc, m)
        fresh = np.flatnonzero(target[1:] < 0) + 1
        target[fresh] = n_acc + np.arange(fresh.size)
        matched = target[1:][target[1:] < n_acc]
        seen[matched] += 1
        seen = np.concatenate([seen, np.ones(fresh.size)])
        n_acc += fresh.size
        pix = np.flatnonzero(flat)
        keys, counts = _add_keys(keys, counts, _sorted_keys(target[flat[pix]], pix, n_acc, n_pix))

    return _result(keys, counts, n_acc, n, (height, width), threshold)


def _result(keys, counts, n_acc: int, n: int, shape, threshold: float) -> Agglomeration:
    """Labels, probabilities and cropped maps from the accumulated counts."""
    height, width = shape
    n_pix = height * width
    acc, pix = np.divmod(keys, n_pix)
    prob = counts / n

    # Each labelled pixel goes to its most probable object above threshold.
    sel = np.flatnonzero(prob >= threshold - _EPS)
    order = sel[np.lexsort((acc[sel], -counts[sel], pix[sel]))]
    first = np.ones(order.size, dtype=bool)
    first[1:] = pix[order[1:]] != pix[order[:-1]]
    win = order[first]  # sorted by pixel
    owners, first_pixel = np.unique(acc[win], return_index=True)
    label_of = np.zeros(n_acc, dtype=np.int64)
    label_of[owners[np.argsort(first_pixel, kind="stable")]] = np.arange(1, owners.size + 1)

    labels = np.zeros(n_pix, dtype=np.int32)
    probability = np.zeros(n_pix, dtype=np.float32)
    labels[pix[win]] = label_of[acc[win]]
    probability[pix[win]] = prob[win]
    n_labels = owners.size
    area = np.bincount(labels, minlength=n_labels + 1)
    total = np.bincount(labels, weights=probability, minlength=n_labels + 1)
    scores = np.zeros(n_labels + 1)
    scores[1:] = total[1:] / np.maximum(area[1:], 1)

    instances = [None] * n_acc
    if n_acc:
        # Keys are sorted, so each object's entries are one run, pixels ascending.
        starts = np.searchsorted(acc, np.arange(n_acc))
        ys, xs = np.divmod(pix, width)
        y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts) + 1
        x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1
        ends = np.append(starts[1:], keys.size)
        for j in range(n_acc):
            run = slice(starts[j], ends[j])
            crop = np.zeros((y1[j] - y0[j], x1[j] - x0[j]), dtype=np.float32)
            crop[ys[run] - y0[j], xs[run] - x0[j]] = prob[run]
            slices = (slice(int(y0[j]), int(y1[j])), slice(int(x0[j]), int(x1[j])))
            instances[j] = InstanceMap(slices, crop, int(label_of[j]))
        dropped = np.flatnonzero(label_of == 0)
        kept = np.empty(n_labels, dtype=np.int64)
        kept[label_of[label_of > 0] - 1] = np.flatnonzero(label_of > 0)
        dropped = dropped[np.argsort(pix[starts[dropped]], kind="stable")]
        instances = [instances[j] for j in np.concatenate([kept, dropped])]

    return Agglomeration(
        labels=labels.reshape(shape),
        probability=probability.reshape(shape),
        instances=instances,
        n_draws=n,
        instance_scores=scores,
        threshold=threshold,
    )
