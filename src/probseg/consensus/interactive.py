"""What an interactive consensus needs around :class:`~probseg.consensus.Consensus`.

A resolution knob on a log scale (:func:`fraction_of`, :func:`resolution_at`),
the graph built with the first labels at the knob's place (:func:`build`),
whole-image runs that report progress and stop on request
(:func:`whole_image`, :func:`auto_whole_image`), and region labels that
reuse the region's subgraph while the knob moves (:func:`region_labels`) of a rectangle drawn in world coordinates
(:func:`pixel_rect`).
The Consensus widget drives these from worker threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probseg.consensus.engine import AUTO_WINDOW, AUTO_WINDOWS, CPM_RANGE, DEFAULT_OBJECTIVE, Consensus, Region, Sweep, check_rect
from probseg.consensus.fragments import check_labelings
from probseg.core.callbacks import Callbacks, ensure

__all__ = [
    "DEFAULT_FRACTION", "Built", "WholeAuto", "fraction_of", "resolution_at", "resolution_range", "build", "whole_image",
    "auto_whole_image", "region_labels", "pixel_rect",
]

# How much wider RB's range is drawn before a graph says its real one.
_RB_SPAN = 1e4


def fraction_of(resolution: float, bounds) -> float:
    """Where ``resolution`` lies on the log scale from ``bounds[0]`` (0) to ``bounds[1]`` (1); not clipped."""
    lo, hi = bounds
    return (math.log(resolution) - math.log(lo)) / (math.log(hi) - math.log(lo))


def resolution_at(fraction: float, bounds) -> float:
    """The resolution at ``fraction`` of the log scale from ``bounds[0]`` (0) to ``bounds[1]`` (1)."""
    lo, hi = bounds
    return float(math.exp(math.log(lo) + fraction * (math.log(hi) - math.log(lo))))


#: The middle of the scale (geometrically), where a knob starts.
DEFAULT_FRACTION = fraction_of(math.sqrt(CPM_RANGE[0] * CPM_RANGE[1]), CPM_RANGE)


def resolution_range(consensus: Consensus | None, objective: str = DEFAULT_OBJECTIVE) -> tuple[float, float]:
    """``consensus.resolution_range(objective)``, or a range to show before any graph is built."""
    if consensus is not None:
        return consensus.resolution_range(objective)
    return CPM_RANGE if objective == "cpm" else (CPM_RANGE[0], CPM_RANGE[1] * _RB_SPAN)


@dataclass
class Built:
    """A consensus graph and its labels of the whole image at ``resolution``."""

    consensus: Consensus
    labels: np.ndarray
    resolution: float


def build(samples, fraction: float, objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0, *,
          device: str = "cpu", callbacks: Callbacks | None = None) -> Built:
    """Build the graph of ``samples`` and label the whole image at ``fraction`` of its resolution range.

    Parameters
    ----------
    samples : array_like of int, shape (n, Y, X)
        The labelings; checked here ("the samples layer" in messages).
    fraction : float
        Place on the log scale of :meth:`Consensus.resolution_range`, 0..1.
    objective, seed, min_size
        As :meth:`Consensus.labels`.
    device : str
        Where the graph is built.
    callbacks : Callbacks, optional
        Progress in two steps (graph, labels); a stop request between them
        raises :class:`~probseg.core.errors.Cancelled`.

    Returns
    -------
    Built
    """
    cb = ensure(callbacks)
    cb.progress(0, 2)
    samples = check_labelings(samples, "the samples layer")
    consensus = Consensus.from_samples(samples, device=device)
    cb.progress(1, 2)
    cb.raise_if_stopped()
    resolution = resolution_at(fraction, consensus.resolution_range(objective))
    labels = consensus.labels(resolution, objective, seed, min_size)
    cb.progress(2, 2)
    return Built(consensus, labels, resolution)


def whole_image(consensus: Consensus, resolution: float, objective: str = DEFAULT_OBJECTIVE, seed: int = 0,
                min_size: int = 0, callbacks: Callbacks | None = None) -> np.ndarray:
    """:meth:`Consensus.labels` as one step of progress; a stop request once it is done raises ``Cancelled``."""
    cb = ensure(callbacks)
    cb.progress(0, 1)
    labels = consensus.labels(resolution, objective, seed, min_size)
    cb.raise_if_stopped()
    cb.progress(1, 1)
    return labels


@dataclass
class WholeAuto:
    """A whole-image Auto: the sweep on the sampled windows and the whole image at its pick."""

    sweep: Sweep
    labels: np.ndarray


def auto_whole_image(consensus: Consensus, window: int = AUTO_WINDOW, max_windows: int = AUTO_WINDOWS,
                     objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0,
                     callbacks: Callbacks | None = None) -> WholeAuto:
    """Sweep resolutions on windows spread over the image (:meth:`Consensus.sweep_windows`), then label it all at the pick."""
    cb = ensure(callbacks)
    sweep = consensus.sweep_windows(window, max_windows, objective=objective, seed=seed, min_size=min_size, callbacks=cb)
    cb.raise_if_stopped()
    return WholeAuto(sweep, consensus.labels(sweep.best, objective, seed, min_size))


def region_labels(consensus: Consensus, region: Region | None, rect, resolution: float,
                  objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0) -> tuple[Region, np.ndarray]:
    """Leiden inside ``rect``, reusing ``region``'s subgraph when it is of that rectangle.

    Returns
    -------
    region : Region
        The subgraph used; pass it back while the rectangle stays.
    labels : ndarray of int32, shape (y1 - y0, x1 - x0)
    """
    if region is None or region.rect != rect:
        region = consensus.region(rect)
    return region, consensus.region_labels(region, resolution, objective, seed, min_size)


def pixel_rect(low, high, scale, translate, shape) -> tuple[int, int, int, int]:
    """The pixels ``(y0, x0, y1, x1)`` of an image covering the world box from ``low`` to ``high``.

    Parameters
    ----------
    low, high : array_like of float, (y, x)
        Corners of the box in world coordinates.
    scale, translate : array_like of float, (y, x)
        The image's pixel size and origin in the world.
    shape : (int, int)
        The image's shape; the rectangle is clipped to it.

    Returns
    -------
    tuple of int
        Whole pixels touched by the box (rounded outwards), checked by :func:`check_rect`.
    """
    scale, translate = np.asarray(scale), np.asarray(translate)
    lo = (np.asarray(low) - translate) / scale
    hi = (np.asarray(high) - translate) / scale
    return check_rect((np.floor(lo[0]), np.floor(lo[1]), np.ceil(hi[0]), np.ceil(hi[1])), shape)
