"""Concrete-Dropout's partitions of one pass: a watershed of the class maps, mean-shift or mutex of the embeddings.

Mean-shift's objects then grow into the overlap class (:func:`grow_into_overlap`), as in Rumberger et al.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max

from probseg.partition import (
    DEFAULT_OFFSETS,
    embedding_affinities,
    meanshift_instances,
    mutex_watershed,
    seeded_watershed,
    split_and_filter,
)


def grow_into_overlap(labels: np.ndarray, overlap: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Join every object with the overlap map and keep its best component.

    As in Rumberger et al.: each object's mask is united with the overlap
    map, and of the connected components of the union the one with the
    highest IoU with the object is kept. Overlap pixels so claimed by
    several objects keep their own object if it is among them, otherwise
    they go to the claimant whose mean embedding is nearest.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Objects, 0 is background.
    overlap : ndarray of bool, shape (Y, X)
        Pixels of the overlap class.
    embeddings : ndarray, shape (D, Y, X)

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    labels = np.asarray(labels, dtype=np.int32)
    n = int(labels.max())
    if n == 0 or not overlap.any():
        return labels.copy()
    parts, n_parts = ndi.label(overlap)
    # Which objects touch (or contain) which overlap component, through 4-neighbours.
    pairs = [np.stack([parts[(parts > 0) & (labels > 0)], labels[(parts > 0) & (labels > 0)]], 1)]
    for axis in (0, 1):
        for a, b in ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))):
            sa, sb = [slice(None)] * 2, [slice(None)] * 2
            sa[axis], sb[axis] = a, b
            pa, lb = parts[tuple(sa)], labels[tuple(sb)]
            hit = (pa > 0) & (lb > 0)
            pairs.append(np.stack([pa[hit], lb[hit]], 1))
    pairs = np.unique(np.concatenate(pairs), axis=0)
    touching = [[] for _ in range(n + 1)]
    for part, obj in pairs:
        touching[obj].append(part)
    part_boxes = ndi.find_objects(parts)
    boxes = ndi.find_objects(labels)
    out = labels.copy()
    claim_pixels, claim_objects = [], []
    for obj in range(1, n + 1):
        if boxes[obj - 1] is None:
            continue
        box = [boxes[obj - 1]] + [part_boxes[p - 1] for p in touching[obj]]
        window = tuple(slice(min(s[i].start for s in box), max(s[i].stop for s in box)) for i in range(2))
        mine = labels[window] == obj
        union = mine | np.isin(parts[window], touching[obj])
        comps, n_comps = ndi.label(union)
        inter = np.bincount(comps[mine], minlength=n_comps + 1)[1:]
        size = np.bincount(comps.ravel(), minlength=n_comps + 1)[1:]
        best = 1 + int(np.argmax(inter / (size + mine.sum() - inter)))
        keep = comps == best
        out[window][mine & ~keep] = 0
        ys, xs = np.nonzero(keep & overlap[window])
        claim_pixels.append((ys + window[0].start) * labels.shape[1] + xs + window[1].start)
        claim_objects.append(np.full(len(ys), obj))
    if not claim_pixels:
        return out
    pixels, objects = np.concatenate(claim_pixels), np.concatenate(claim_objects)
    flat = embeddings.reshape(embeddings.shape[0], -1).astype(np.float64)
    counts = np.maximum(np.bincount(labels.ravel(), minlength=n + 1), 1)
    means = np.stack([np.bincount(labels.ravel(), f, minlength=n + 1) for f in flat], 1) / counts[:, None]
    cost = ((flat[:, pixels].T - means[objects]) ** 2).sum(axis=1)
    cost[labels.ravel()[pixels] == objects] = -1.0  # an overlap pixel's own object wins
    order = np.lexsort((cost, pixels))
    first = np.r_[True, pixels[order][1:] != pixels[order][:-1]]
    out.ravel()[pixels[order][first]] = objects[order][first]
    return out


def meanshift_partition(embeddings: np.ndarray, classes: np.ndarray, bandwidth: float, min_size: int) -> np.ndarray:
    """Rumberger et al.'s partition of one pass: mean-shift, then growth into the overlap class.

    Parameters
    ----------
    embeddings : ndarray, shape (D, Y, X)
    classes : ndarray, shape (3, Y, X)
        Probabilities of background, foreground and overlap.
    bandwidth : float
        Mean-shift bandwidth in embedding units.
    min_size : int

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    kind = classes.argmax(axis=0)
    labels = meanshift_instances(embeddings, kind > 0, bandwidth, min_size=min_size)
    return split_and_filter(grow_into_overlap(labels, kind == 2, embeddings), min_size)


def mutex_partition(embeddings: np.ndarray, classes: np.ndarray, delta: float, bias: float, mask_threshold: float,
                    min_size: int) -> np.ndarray:
    """Mutex watershed of one pass on affinities from the embeddings, over the pixels not likely background.

    Parameters
    ----------
    embeddings : ndarray, shape (D, Y, X)
    classes : ndarray, shape (3, Y, X)
        Probabilities of background, foreground and overlap.
    delta : float
        Embedding distance at which the affinity is 0.5.
    bias : float
        See :func:`probseg.partition.mutex_watershed`.
    mask_threshold : float
        Pixels whose background probability is below this are partitioned.
    min_size : int

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    affinities = embedding_affinities(embeddings, DEFAULT_OFFSETS, delta)
    labels = mutex_watershed(affinities, DEFAULT_OFFSETS, bias=bias, mask=classes[0] < mask_threshold)
    return split_and_filter(labels, min_size)


def watershed_partition(classes: np.ndarray, seed_threshold: float, mask_threshold: float, min_distance: int,
                        smoothing: float, min_size: int) -> np.ndarray:
    """Seeded watershed of one pass: one seed per core of the foreground class, flooded over the object pixels.

    The overlap class marks where touching objects meet, so the cores (pixels
    where the foreground class is likely) come apart there; the peaks of their
    smoothed distance transform (at least ``min_distance`` apart within a
    core) split what the band leaves joined at a neck. The seeds grow over
    every pixel not likely background, deepest first.

    Parameters
    ----------
    classes : ndarray, shape (3, Y, X)
        Probabilities of background, foreground and overlap.
    seed_threshold : float
        Foreground-class probability above which a pixel is core.
    mask_threshold : float
        Pixels whose background probability is below this belong to an object.
    min_distance : int
        Smallest distance between two seeds of one core, in px.
    smoothing : float
        Gaussian sigma of the distance transform, in px (0: none).
    min_size : int

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    core = classes[1] > seed_threshold
    depth = ndi.distance_transform_edt(core)
    if smoothing > 0:
        depth = ndi.gaussian_filter(depth, smoothing)
    peaks = peak_local_max(depth, min_distance=int(min_distance), labels=ndi.label(core)[0], exclude_border=False)
    seeds = np.zeros(core.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    markers = ndi.label(seeds, structure=np.ones((3, 3), dtype=bool))[0]  # a plateau's peaks are one seed
    return seeded_watershed(1.0 - classes[0], threshold=1.0 - mask_threshold, seeds=markers, distance=depth, min_size=min_size)
