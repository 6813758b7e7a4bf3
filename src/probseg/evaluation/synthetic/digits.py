"""Canvases of several handwritten digits, as in the multi-MNIST experiment of D'Alessio et al."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from probseg.core.bounds import finite_number
from probseg.core.errors import InputError

__all__ = ["digit_scenes", "DigitScenes", "DIGIT_BACKGROUNDS"]

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
    if not 0.0 <= finite_number(max_overlap, "max_overlap") <= 1.0:
        raise InputError(f"max_overlap is an intersection over the smaller box and must lie in [0, 1], got {max_overlap}")
    if not finite_number(noise, "noise") >= 0.0:
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
    """Canvases of several handwritten digits, as in the multi-MNIST experiment of D'Alessio et al.

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
