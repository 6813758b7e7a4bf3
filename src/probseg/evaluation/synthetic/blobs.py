"""Fluorescence-like images of touching blobs on flat, gradient or structured backgrounds."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

from probseg.core.bounds import finite_number
from probseg.core.errors import InputError
from probseg.partition.components import label_boundaries

__all__ = ["touching_blobs", "BACKGROUNDS"]

BACKGROUNDS = ("flat", "gradient", "structured")

_AXIS_JITTER = 0.2  # semi-axes vary by up to +-20 % of object_size / 2
_WOBBLE = 0.04  # amplitude of the 3-fold outline wobble that makes ellipses look less ideal
_MAX_REJECTIONS = 300  # consecutive failed placements before the image counts as full
_MIN_FRACTION = 0.15  # fragments smaller than this share of a typical object are dropped
_RIM_DEPTH = 0.45  # relative darkening at an object's outline
_BATCH = 256  # random proposals drawn per call to the generator
_GAP = 2.0  # px of background kept around each object when touching=False


def _check_args(shape, object_size, density, noise, background) -> tuple[int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be a pair of ints (rows, columns), got {shape!r}") from None
    if len(dims) != 2 or min(dims) < 16:
        raise InputError(f"shape must be two sides of at least 16 px, got {shape!r}")
    if not 4.0 <= finite_number(object_size, "object_size") <= min(dims) / 2:
        raise InputError(f"object_size must lie between 4 px and half the shorter side ({min(dims) / 2:g} px), got {object_size}")
    if not 0.0 < finite_number(density, "density") <= 0.9:
        raise InputError(f"density is the fraction of the area covered by objects and must lie in (0, 0.9], got {density}")
    if not finite_number(noise, "noise") >= 0.0:
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
    depth = ndi.distance_transform_edt(~label_boundaries(labels) & (labels > 0))
    rim_width = max(1.0, 0.08 * object_size)
    objects = brightness[labels] * (1 - _RIM_DEPTH * np.exp(-depth / rim_width))

    image = _background(background, dims, object_size, rng) + objects
    image = ndi.gaussian_filter(image, sigma=1.0)
    if noise > 0:
        image = image + rng.normal(0.0, noise, size=dims)
    return image.astype(np.float32), labels.astype(np.int32)
