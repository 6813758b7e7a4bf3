"""Synthetic microscopy-like images with known instance labels.

Meant for tests, benchmarks and demos: the truth is exact, the difficulty
(density, touching, noise, uneven background) is set by parameters, and the
same seed gives the same image (for a given numpy version: NEP 19 lets
random streams change between releases).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

from probseg.core.errors import InputError

__all__ = ["touching_blobs", "perturbed_samples", "digit_scenes", "DigitScenes", "BACKGROUNDS", "DIGIT_BACKGROUNDS"]

BACKGROUNDS = ("flat", "gradient", "structured")

_AXIS_JITTER = 0.2  # semi-axes vary by up to +-20 % of object_size / 2
_WOBBLE = 0.04  # amplitude of the 3-fold outline wobble that makes ellipses look less ideal
_MAX_REJECTIONS = 300  # consecutive failed placements before the image counts as full
_MIN_FRACTION = 0.15  # fragments smaller than this share of a typical object are dropped
_RIM_DEPTH = 0.45  # relative darkening at an object's outline
_BATCH = 256  # random proposals drawn per call to the generator
_GAP = 2.0  # px of background kept around each object when touching=False


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return number


def _check_args(shape, object_size, density, noise, background) -> tuple[int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be a pair of ints (rows, columns), got {shape!r}") from None
    if len(dims) != 2 or min(dims) < 16:
        raise InputError(f"shape must be two sides of at least 16 px, got {shape!r}")
    if not 4.0 <= _number(object_size, "object_size") <= min(dims) / 2:
        raise InputError(f"object_size must lie between 4 px and half the shorter side ({min(dims) / 2:g} px), got {object_size}")
    if not 0.0 < _number(density, "density") <= 0.9:
        raise InputError(f"density is the fraction of the area covered by objects and must lie in (0, 0.9], got {density}")
    if not _number(noise, "noise") >= 0.0:
        raise InputError(f"noise is a standard deviation and must be >= 0, got {noise}")
    if background not in BACKGROUNDS:
        raise InputError(f"background must be one of {', '.join(BACKGROUNDS)}; got {background!r}")
    return dims


def _place_and_render(dims, object_size, density, touching, rng) -> np.ndarray:
    """Drop random ellipses until ``density`` of the area is covered.

    Each pixel goes to the object in whose normalised elliptical coordinate
    it lies deepest (smallest ``q``, with ``q <= 1`` inside the outline), so
    overlapping ellipses meet along a curved shared boundary instead of one
    covering the other: labels never overlap, and touching neighbours keep
    their own shapes.
    """
    rows, cols = dims
    radius = object_size / 2.0
    reach = radius * (1 + _AXIS_JITTER) * (1 + _WOBBLE)  # largest possible extent from a centre
    best_q = np.full(dims, np.inf)
    labels = np.zeros(dims, dtype=np.int32)
    target = density * rows * cols
    covered = 0
    # Objects by grid cell, so that each proposal is checked against its few
    # neighbours rather than against every object placed so far. A cell is
    # as wide as the largest distance at which two centres can conflict.
    cell = 2 * reach
    grid: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
    placed = 0
    rejections = 0
    proposals = iter(())
    while covered < target and rejections < _MAX_REJECTIONS:
        try:
            cy, cx, a, b, angle, phase = next(proposals)
        except StopIteration:
            # Drawn in batches and used as Python floats: per-proposal numpy
            # calls would dominate the run time on large images.
            batch = np.column_stack(
                [
                    rng.uniform(0, rows, _BATCH),
                    rng.uniform(0, cols, _BATCH),
                    radius * (1 + rng.uniform(-_AXIS_JITTER, _AXIS_JITTER, (_BATCH, 2))),
                    rng.uniform(0, 2 * np.pi, (_BATCH, 2)),
                ]
            )
            proposals = iter(batch.tolist())
            continue
        extent = max(a, b) * (1 + _WOBBLE)  # radius of the circumscribed circle
        inner = min(a, b) * (1 - _WOBBLE)  # radius of the inscribed circle
        key = (int(cy // cell), int(cx // cell))
        crowded = False
        for other_r, other_c, other_extent, other_inner in (
            item for dr in (-1, 0, 1) for dc in (-1, 0, 1) for item in grid.get((key[0] + dr, key[1] + dc), ())
        ):
            dist = math.hypot(other_r - cy, other_c - cx)
            if touching:
                # Overlap by at most ~20 % of the summed extents: outlines
                # meet along a shared edge, yet none is swallowed by another.
                crowded = dist < 0.8 * (other_extent + extent)
            else:
                # Inscribed circles overlap: certainly too close, and cheaper
                # to tell than the pixel test below.
                crowded = dist < other_inner + inner
            if crowded:
                break
        if crowded:
            rejections += 1
            continue

        r0, c0 = max(math.floor(cy - reach), 0), max(math.floor(cx - reach), 0)
        r1, c1 = min(math.ceil(cy + reach) + 1, rows), min(math.ceil(cx + reach) + 1, cols)
        dy = np.arange(r0, r1)[:, None] - cy
        dx = np.arange(c0, c1)[None, :] - cx
        cos, sin = math.cos(angle), math.sin(angle)
        u = dx * cos + dy * sin
        v = -dx * sin + dy * cos
        theta = np.arctan2(v, u)
        q = np.hypot(u / a, v / b) / (1 + _WOBBLE * np.cos(3 * theta + phase))
        if not touching and np.any(labels[r0:r1, c0:c1][q <= 1 + _GAP / min(a, b)]):
            # Test the pixels rather than centre distances: bounding circles
            # of elongated ellipses would leave the image half empty.
            rejections += 1
            continue
        rejections = 0
        placed += 1
        grid.setdefault(key, []).append((cy, cx, extent, inner))

        window_q = best_q[r0:r1, c0:c1]
        window_labels = labels[r0:r1, c0:c1]
        wins = (q <= 1) & (q < window_q)
        covered += int(np.count_nonzero(wins & (window_labels == 0)))
        window_q[wins] = q[wins]
        window_labels[wins] = placed
    return labels


def _clean(labels: np.ndarray, min_size: float) -> np.ndarray:
    """Keep each label's largest 4-connected piece, drop slivers, relabel 1..n.

    Nearest-centre assignment can cut a thin piece off an object, and
    objects clipped by the image border can shrink to a few pixels; neither
    looks like a real object nor belongs in a ground truth.
    """
    pieces = connected_components(labels, background=0, connectivity=1)
    if pieces.max() == 0:
        return labels
    sizes = np.bincount(pieces.ravel())
    owner = np.zeros(sizes.size, dtype=np.int64)
    owner[pieces.ravel()] = labels.ravel()
    keep = np.zeros(sizes.size, dtype=bool)
    # Sort pieces by (owner, size); the last piece of each owner is its largest.
    order = np.lexsort((sizes[1:], owner[1:])) + 1
    last = np.r_[owner[order][1:] != owner[order][:-1], True]
    largest = order[last]
    keep[largest[sizes[largest] >= min_size]] = True
    kept = np.flatnonzero(keep)
    new_ids = np.zeros(sizes.size, dtype=np.int32)
    new_ids[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return new_ids[pieces]


def _background(kind: str, dims, object_size, rng) -> np.ndarray:
    rows, cols = dims
    if kind == "flat":
        return np.full(dims, 0.1)
    if kind == "gradient":
        # Uneven illumination: a linear ramp across the field in a random
        # direction, as from a misaligned lamp.
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:rows, 0:cols]
        ramp = np.cos(angle) * yy / rows + np.sin(angle) * xx / cols
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        return 0.05 + 0.25 * ramp
    # "structured": smooth texture on the scale of a few objects, like
    # out-of-focus debris or autofluorescence, which a global threshold
    # cannot remove.
    texture = ndi.gaussian_filter(rng.standard_normal(dims), sigma=1.5 * object_size, mode="wrap")
    texture = (texture - texture.min()) / max(texture.max() - texture.min(), 1e-12)
    return 0.05 + 0.25 * texture


def touching_blobs(
    shape: tuple[int, int] = (256, 256),
    object_size: float = 20.0,
    density: float = 0.5,
    noise: float = 0.05,
    background: str = "flat",
    touching: bool = True,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fluorescence-like image of roughly elliptical, possibly touching blobs.

    Objects are ellipses with a slight three-fold wobble, each semi-axis
    drawn within +-20 % of ``object_size / 2`` and at a random orientation.
    Where two ellipses overlap each pixel goes to the object it lies deeper
    inside, so touching objects share a boundary and labels never overlap.
    Each object is uniformly bright with a small per-object variation and a
    darker rim, so touching neighbours stay separable by eye; the image is
    blurred by a Gaussian of 1 px, put on the chosen background, and
    Gaussian noise is added.

    Parameters
    ----------
    shape : (int, int)
        Image size in pixels (rows, columns), each at least 16.
    object_size : float
        Typical object diameter in pixels; between 4 and half the shorter
        side.
    density : float
        Fraction of the image area to cover with objects, in (0, 0.9].
        Approximate: placement stops when random positions no longer fit
        (around 0.4 with ``touching=False``, 0.55 with touching), and
        fragments clipped by the border are removed.
    noise : float
        Standard deviation of the additive Gaussian noise, in the units of
        the image (objects are about 0.6 above the background).
    background : {"flat", "gradient", "structured"}
        "flat": constant 0.1. "gradient": linear illumination ramp from 0.05
        to 0.3 in a random direction. "structured": smooth random texture
        between 0.05 and 0.3 varying over about 1.5 ``object_size``.
    touching : bool
        Let neighbouring objects meet along shared boundaries; if False,
        objects are kept about 2 px apart.
    seed : int or None
        Seed of :func:`numpy.random.default_rng`; the same seed gives the
        same image and labels. None draws fresh randomness.

    Returns
    -------
    image : ndarray of float32, shape ``shape``
        Intensities roughly in [0, 1]; the noise can push a few pixels
        slightly outside.
    labels : ndarray of int32, shape ``shape``
        0 for background and 1..n for the objects, each a single
        4-connected region.

    Raises
    ------
    InputError
        For a shape that is not two sides of at least 16 px, or a parameter
        outside the ranges above.
    """
    dims = _check_args(shape, object_size, density, noise, background)
    object_size, noise = float(object_size), float(noise)
    rng = np.random.default_rng(seed)

    labels = _place_and_render(dims, object_size, float(density), bool(touching), rng)
    labels = _clean(labels, _MIN_FRACTION * np.pi * object_size**2 / 4)

    n = int(labels.max())
    brightness = np.r_[0.0, np.clip(rng.normal(0.6, 0.06, size=n), 0.4, 0.75)]
    # Distance to the nearest pixel of another label or background, so the
    # rim also darkens where two objects touch, not only at the outer edge.
    edges = np.zeros(dims, dtype=bool)
    for axis in (0, 1):
        differs = np.diff(labels, axis=axis) != 0
        lead = [slice(None)] * 2
        trail = [slice(None)] * 2
        lead[axis], trail[axis] = slice(None, -1), slice(1, None)
        edges[tuple(lead)] |= differs
        edges[tuple(trail)] |= differs
    depth = ndi.distance_transform_edt(~edges & (labels > 0))
    rim_width = max(1.0, 0.08 * object_size)
    objects = brightness[labels] * (1 - _RIM_DEPTH * np.exp(-depth / rim_width))

    image = _background(background, dims, object_size, rng) + objects
    image = ndi.gaussian_filter(image, sigma=1.0)
    if noise > 0:
        image = image + rng.normal(0.0, noise, size=dims)
    return image.astype(np.float32), labels.astype(np.int32)


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
                edge = np.zeros(sample.shape, dtype=bool)
                edge[:, 1:] |= sample[:, 1:] != sample[:, :-1]
                edge[:, :-1] |= sample[:, 1:] != sample[:, :-1]
                edge[1:, :] |= sample[1:, :] != sample[:-1, :]
                edge[:-1, :] |= sample[1:, :] != sample[:-1, :]
                sample = np.where(edge, 0, sample)
        out[k] = connected_components(sample, background=0, connectivity=1)
    return out


# --- Multi-digit scenes (CellSegmenter's multi-MNIST experiment) -------------

DIGIT_BACKGROUNDS = ("black", "grid")

_DIGIT_THRESHOLD = 0.25  # rendered intensity above which a pixel belongs to its digit
_DIGIT_MIN_PIXELS = 20  # labelled pixels every digit keeps, at the least
_DIGIT_KEEP = 0.5  # share of its own pixels a digit keeps where others cover it
_DIGIT_MIN_SIDE = 12  # smallest side at which every sklearn digit has >= 20 labelled pixels
_POSITION_TRIES = 200  # random positions tried per digit before the canvas is started again
_POSITION_BATCH = 32  # positions drawn per call to the generator
_CANVAS_TRIES = 100  # fresh starts of one canvas before the arguments count as impossible
_GRID_SPACINGS = (10, 15, 20)
# The paper's "four different orientation angles", spread over 0-45 degrees.
_GRID_ANGLES = (0.0, 15.0, 30.0, 45.0)


@dataclass(frozen=True)
class DigitScenes:
    """Canvases of handwritten digits with their instance labels.

    Attributes
    ----------
    images : ndarray of float32, shape (n, size, size)
        Intensities in [0, 1].
    labels : ndarray of int32, shape (n, size, size)
        0 for background, 1..k for the digits of each canvas; label ``j``
        is the digit ``digits[i][j - 1]`` in box ``boxes[i][j - 1]``.
    counts : ndarray of int64, shape (n,)
        Number of digits in each canvas.
    digits : list of ndarray of int64
        Classes (0-9) of the digits of each canvas, in label order.
    boxes : list of ndarray of int64, shape (k, 4)
        Square box ``y0, x0, y1, x1`` of each digit, in pixel-edge
        coordinates (``y1 - y0`` is the digit's side).
    """

    images: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    digits: list
    boxes: list

    def __len__(self) -> int:
        return len(self.images)


@functools.lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 digits bundled with scikit-learn, as intensities in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float64), bunch.target.astype(np.int64)


def _int_range(value, name: str, low: int) -> tuple[int, int]:
    """``(lo, hi)`` from a pair of ints or a single int, with ``low <= lo <= hi``."""
    pair = (value, value) if np.ndim(value) == 0 else value
    try:
        lo, hi = (int(v) for v in pair)
        exact = all(float(v) == int(v) for v in pair)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be an int or a pair of ints (min, max), got {value!r}") from None
    if not exact:
        raise InputError(f"{name} must hold whole numbers, got {value!r}")
    if lo > hi:
        raise InputError(f"{name} is a range (min, max) and min must not exceed max, got {value!r}")
    if lo < low:
        raise InputError(f"{name} must be at least {low}, got {value!r}")
    return lo, hi


def _check_digit_args(n, size, n_digits, digit_size, background, max_overlap, noise):
    try:
        count, side = int(n), int(size)
    except (TypeError, ValueError):
        raise InputError(f"n and size must be ints, got n={n!r} and size={size!r}") from None
    if count < 1:
        raise InputError(f"n is the number of canvases and must be at least 1, got {n}")
    digits_range = _int_range(n_digits, "n_digits", 1)
    size_range = _int_range(digit_size, "digit_size", _DIGIT_MIN_SIDE)
    if side < size_range[1]:
        raise InputError(f"size ({side} px) must be at least the largest digit side, digit_size max = {size_range[1]} px")
    if background not in DIGIT_BACKGROUNDS:
        raise InputError(f"background must be one of {', '.join(DIGIT_BACKGROUNDS)}; got {background!r}")
    if not 0.0 <= _number(max_overlap, "max_overlap") <= 1.0:
        raise InputError(f"max_overlap is an intersection over the smaller box and must lie in [0, 1], got {max_overlap}")
    if not _number(noise, "noise") >= 0.0:
        raise InputError(f"noise is a standard deviation and must be >= 0, got {noise}")
    return count, side, digits_range, size_range


def _grid_lines(size: int, rng) -> np.ndarray:
    """Two perpendicular families of thin, anti-aliased lines at a random angle."""
    spacing = float(rng.choice(_GRID_SPACINGS))
    angle = np.deg2rad(rng.choice(_GRID_ANGLES))
    width = rng.uniform(1.0, 2.0)
    level = rng.uniform(0.4, 0.6)
    phase = rng.uniform(0.0, spacing, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cos, sin = np.cos(angle), np.sin(angle)
    out = np.zeros((size, size), dtype=np.float32)
    for u, shift in ((xx * cos + yy * sin, phase[0]), (-xx * sin + yy * cos, phase[1])):
        offset = np.mod(u - shift, spacing)
        dist = np.minimum(offset, spacing - offset)  # to the nearest line of this family
        # Coverage of a pixel by a line of the given width, as a 1-px ramp.
        np.maximum(out, np.clip(width / 2 + 0.5 - dist, 0.0, 1.0), out=out)
    return level * out


def _place_digits(count, size, size_range, max_overlap, rng):
    """Render one canvas of ``count`` digits, or None where they did not fit."""
    from skimage.transform import resize

    pictures, classes = _sklearn_digits()
    intensity = np.zeros((size, size), dtype=np.float32)
    labels = np.zeros((size, size), dtype=np.int32)
    kept = np.zeros(count + 1, dtype=np.int64)  # labelled pixels per digit, index = label
    needed = np.zeros(count + 1, dtype=np.int64)
    boxes = np.zeros((count, 4), dtype=np.int64)
    chosen = rng.integers(0, len(pictures), count)
    # Largest first: small digits fill the gaps that large ones leave, so
    # fewer canvases are started again and crowded canvases keep nearly the
    # same size distribution as sparse ones.
    sides = np.sort(rng.integers(size_range[0], size_range[1] + 1, count))[::-1]
    for k in range(count):
        side = int(sides[k])
        digit = resize(pictures[chosen[k]], (side, side), order=1, anti_aliasing=True).astype(np.float32)
        mask = digit > _DIGIT_THRESHOLD
        own = int(np.count_nonzero(mask))
        needed[k + 1] = max(_DIGIT_MIN_PIXELS, math.ceil(_DIGIT_KEEP * own))
        placed = False
        for start in range(0, _POSITION_TRIES, _POSITION_BATCH):
            corners = rng.integers(0, size - side + 1, (_POSITION_BATCH, 2))
            if k:
                # Intersection over the smaller box, all proposals against all
                # digits placed so far at once.
                prev = boxes[:k]
                dy = np.minimum(corners[:, None, 0] + side, prev[None, :, 2]) - np.maximum(corners[:, None, 0], prev[None, :, 0])
                dx = np.minimum(corners[:, None, 1] + side, prev[None, :, 3]) - np.maximum(corners[:, None, 1], prev[None, :, 1])
                inter = np.clip(dy, 0, None) * np.clip(dx, 0, None)
                smaller = np.minimum(side, prev[:, 2] - prev[:, 0]) ** 2
                free = np.all(inter <= max_overlap * smaller[None, :], axis=1)
                corners = corners[free]
            for y0, x0 in corners[: _POSITION_TRIES - start].tolist():
                window = intensity[y0 : y0 + side, x0 : x0 + side]
                window_labels = labels[y0 : y0 + side, x0 : x0 + side]
                wins = mask & (digit > window)  # the brighter digit owns a shared pixel
                if np.count_nonzero(wins) < needed[k + 1]:
                    continue
                lost = np.bincount(window_labels[wins], minlength=count + 1)
                lost[0] = 0
                if np.any(kept[: k + 1] - lost[: k + 1] < needed[: k + 1]):
                    continue  # would leave an earlier digit with too few pixels
                kept -= lost
                kept[k + 1] = np.count_nonzero(wins)
                window_labels[wins] = k + 1
                np.maximum(window, digit, out=window)
                boxes[k] = (y0, x0, y0 + side, x0 + side)
                placed = True
                break
            if placed:
                break
        if not placed:
            return None
    # Number the digits in random order, so that label 1 is not always the
    # largest.
    order = rng.permutation(count)
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[order + 1] = np.arange(1, count + 1, dtype=np.int32)
    return intensity, relabel[labels], classes[chosen][order], boxes[order]


def digit_scenes(
    n: int,
    *,
    size: int = 80,
    n_digits: tuple[int, int] = (2, 6),
    digit_size: tuple[int, int] = (20, 35),
    background: str = "black",
    max_overlap: float = 0.15,
    noise: float = 0.02,
    seed: int | None = 0,
) -> DigitScenes:
    """Canvases of several handwritten digits, as in CellSegmenter's multi-MNIST.

    Each canvas holds a number of digits drawn uniformly from ``n_digits``.
    Every digit is a random image of the 8x8 digits bundled with
    scikit-learn (no download), upscaled with
    :func:`skimage.transform.resize` (bilinear, anti-aliased) to a square of
    side drawn uniformly from ``digit_size`` and put fully inside the canvas
    at a random position. Positions are rejection-sampled so that the boxes
    of any two digits overlap by at most ``max_overlap`` of the smaller box
    (intersection over minimum), and so that every digit keeps at least 20
    labelled pixels and half of its own; a canvas whose digits do not fit is
    started again with the same number of digits. Where digits overlap the
    image shows the brighter one. Digits are placed largest first; even so,
    crowded canvases come out with slightly smaller digits than sparse
    ones (with the defaults, a mean side of about 26.3 px for six digits
    against 27.5 px for two), as large draws that do not fit are redrawn.

    Parameters
    ----------
    n : int
        Number of canvases, at least 1.
    size : int
        Side of the square canvases in pixels, at least ``digit_size`` max.
    n_digits : (int, int) or int
        Smallest and largest number of digits per canvas (inclusive, >= 1).
    digit_size : (int, int) or int
        Smallest and largest side of a digit in pixels (inclusive, >= 12).
    background : {"black", "grid"}
        "black": zeros. "grid": two perpendicular families of lines 1-2 px
        wide at intensity 0.4-0.6, spaced 10, 15 or 20 px, at one of the
        angles 0, 15, 30 or 45 degrees (the paper's four orientations) and a random phase; digits hide the
        lines they cover (the image is the maximum of both).
    max_overlap : float
        Largest intersection over the smaller box of two digits, in [0, 1].
    noise : float
        Standard deviation of the additive Gaussian noise, >= 0; the image
        is clipped to [0, 1] afterwards.
    seed : int or None
        Seed of the random streams; the same seed gives the same canvases,
        and the same digits at the same places whatever ``background`` and
        ``noise``. None draws fresh randomness.

    Returns
    -------
    DigitScenes
        ``images`` (n, size, size) float32, ``labels`` (n, size, size)
        int32 with digit ``j`` of canvas ``i`` the pixels where it is
        rendered above 0.25 and brighter than any other digit, ``counts``
        (n,), and per canvas the digit classes and their boxes.

    Raises
    ------
    InputError
        For arguments outside the ranges above, or digits that do not fit
        the canvas however often it is started again.
    """
    count_n, side, digits_range, size_range = _check_digit_args(n, size, n_digits, digit_size, background, max_overlap, noise)
    max_overlap, noise = float(max_overlap), float(noise)
    # Separate streams for the digits, the grid and the noise, so that the
    # same seed gives the same digits whatever the background and noise.
    rng, grid_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    images = np.zeros((count_n, side, side), dtype=np.float32)
    labels = np.zeros((count_n, side, side), dtype=np.int32)
    counts = rng.integers(digits_range[0], digits_range[1] + 1, count_n)
    digits, boxes = [], []
    for i in range(count_n):
        for _ in range(_CANVAS_TRIES):
            scene = _place_digits(int(counts[i]), side, size_range, max_overlap, rng)
            if scene is not None:
                break
        else:
            raise InputError(
                f"could not fit {counts[i]} digits of {size_range[0]}-{size_range[1]} px into a {side} px canvas "
                f"with max_overlap {max_overlap:g}; use a larger size, fewer or smaller digits, or a larger max_overlap"
            )
        intensity, labels[i], classes, box = scene
        digits.append(classes)
        boxes.append(box)
        if background == "grid":
            intensity = np.maximum(_grid_lines(side, grid_rng), intensity)
        if noise > 0:
            intensity = intensity + noise * noise_rng.standard_normal((side, side), dtype=np.float32)
        images[i] = np.clip(intensity, 0.0, 1.0)
    return DigitScenes(images=images, labels=labels, counts=counts.astype(np.int64), digits=digits, boxes=boxes)
