"""Tiled segmentation fused by the consensus instead of by seams.

Each overlapping window of the image is segmented on its own (with as many
samples as asked); every labeling becomes a layer of one same-objectness
graph, and Leiden on that graph gives one segmentation without seams or
merging rules. A window's labels near its edge see only part of an object;
the overlapping windows that see all of it outvote them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probseg.core.bounds import check_seed
from probseg.core.callbacks import Callbacks, ensure
from probseg.consensus.engine import DEFAULT_OBJECTIVE, Consensus, Sweep
from probseg.core.errors import InputError
from probseg.nn.tiling import window_starts

DEFAULT_WINDOW = 256


@dataclass
class Stitched:
    """What :func:`segment_stitched` returns."""

    labels: np.ndarray  # (Y, X) int32
    resolution: float
    sweep: Sweep | None
    n_windows: int
    consensus: Consensus


def window_origins(shape, window: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners of ``window``-sized windows covering ``shape``.

    Neighbours overlap by at least ``overlap`` pixels; an overlap of three
    quarters of the window covers inner pixels 16 times.
    """
    window, overlap = int(window), int(overlap)
    if window < 16:
        raise InputError(f"the window must be at least 16 px, got {window}")
    if not 0 <= overlap < window:
        raise InputError(f"the window overlap must be at least 0 and below the window ({window} px), got {overlap}")
    ys = window_starts(shape[0], min(window, shape[0]), overlap)
    xs = window_starts(shape[1], min(window, shape[1]), overlap)
    return [(y, x) for y in ys for x in xs]


def segment_windows(model, image, *, window: int = DEFAULT_WINDOW, overlap: int | None = None, n_samples: int = 1, seed: int = 0,
                    channel_axis=None, rgb=False, callbacks: Callbacks | None = None):
    """Segment every window of a 2-D image on its own.

    The image is normalised once as a whole, so every window sees the same
    intensities.

    Returns
    -------
    windows : list of ((y0, x0), ndarray (n_samples, h, w))
    shape : (int, int)
    """
    cb = ensure(callbacks)
    planes = model.prepare(image, channel_axis, rgb)
    if planes.is_stack:
        raise InputError("stitching by consensus works on 2-D images; for a stack, segment it without --stitch")
    if int(n_samples) < 1:
        raise InputError(f"n_samples must be at least 1, got {n_samples}")
    plane = planes.data[0]
    shape = plane.shape[1:]
    overlap = window // 2 if overlap is None else overlap
    origins = window_origins(shape, window, overlap)
    rng = np.random.default_rng(check_seed(seed))
    quiet = Callbacks(should_stop=cb.should_stop, on_message=cb.on_message)
    windows = []
    for i, (y0, x0) in enumerate(origins):
        cb.raise_if_stopped()
        crop = np.ascontiguousarray(plane[:, y0 : y0 + window, x0 : x0 + window])
        _, samples = model.predict_plane(crop, int(n_samples), rng, quiet)
        windows.append(((y0, x0), samples))
        cb.progress(i + 1, len(origins))
    return windows, shape


def segment_stitched(model, image, *, window: int = DEFAULT_WINDOW, overlap: int | None = None, n_samples: int = 1,
                     resolution="auto", objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0, channel_axis=None,
                     rgb=False, callbacks: Callbacks | None = None, **consensus_options) -> Stitched:
    """Segment a 2-D image window by window and fuse the windows by consensus.

    Parameters
    ----------
    model : SegmentationModel
    image : ndarray
    window : int
        Window side in pixels.
    overlap : int, optional
        Overlap of neighbouring windows in pixels; default half a window.
    n_samples : int
        Samples drawn per window.
    resolution : float or "auto"
        Leiden resolution; "auto" maximises the mean NMI with the windows.
    objective : {"cpm", "rb"}
    seed : int
    min_size : int
        Smaller objects become background.
    callbacks : Callbacks, optional
        Progress per window; cancel between windows.
    **consensus_options
        Passed to :class:`Consensus` (radius, min_weight, ...).

    Returns
    -------
    Stitched
    """
    windows, shape = segment_windows(
        model, image, window=window, overlap=overlap, n_samples=n_samples, seed=seed, channel_axis=channel_axis, rgb=rgb,
        callbacks=callbacks,
    )
    consensus = Consensus.from_windows(windows, shape, **consensus_options)
    sweep = None
    if isinstance(resolution, str):
        if resolution.strip().lower() != "auto":
            raise InputError(f"the resolution is a positive number or 'auto', got {resolution!r}")
        sweep = consensus.sweep(objective=objective, seed=seed, min_size=min_size)
        resolution = sweep.best
    labels = consensus.labels(float(resolution), objective, seed, min_size)
    return Stitched(labels, float(resolution), sweep, len(windows), consensus)
