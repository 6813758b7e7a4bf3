"""Tiled inference: any image size, memory bounded by one window.

Windows overlap; each window's output is weighted by zero within ``margin``
pixels of an inner window edge (where the network saw padding instead of
image) and by a linear ramp across the rest of the overlap. When ``margin`` is
at least the network's context, every blended value is a mix of exact values,
so the result equals inference on the whole image: no seams.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from probseg.callbacks import Callbacks, ensure


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of length ``tile`` covering ``size`` pixels.

    Consecutive windows overlap by at least ``overlap``; the last window ends
    exactly at ``size``.
    """
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _ramp(length: int, start: int, stop: int, size: int, overlap: int, margin: int) -> np.ndarray:
    """1-D weights of a window [start, stop) inside an axis of ``size`` pixels."""
    pos = np.arange(length, dtype=np.float32)
    width = max(1.0, overlap - 2 * margin)
    w = np.ones(length, dtype=np.float32)
    if start > 0:  # inner edge on the left
        w = np.minimum(w, np.clip((pos - margin + 1) / width, 0, 1))
    if stop < size:  # inner edge on the right
        w = np.minimum(w, np.clip((length - pos - margin) / width, 0, 1))
    return w


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    out_channels: int,
    *,
    tile: int = 512,
    overlap: int = 48,
    margin: int = 8,
    device: torch.device | str = "cpu",
    callbacks: Callbacks | None = None,
    min_tile: int = 64,
    align: int = 1,
) -> np.ndarray:
    """Apply a fully convolutional ``fn`` window by window and blend.

    Parameters
    ----------
    fn : callable
        Maps a ``(1, C, h, w)`` float tensor on ``device`` to a
        ``(1, out_channels, h, w)`` tensor (same spatial size).
    image : ndarray
        ``(C, Y, X)`` float32.
    out_channels : int
    tile : int
        Window side in pixels (clipped to the image).
    overlap : int
        Minimum overlap between neighbouring windows in pixels; must exceed
        ``2 * margin``.
    margin : int
        Pixels next to an inner window edge that get zero weight; set it to
        the network's context (half its field of view) for exact results.
    device : torch.device or str
    callbacks : Callbacks, optional
        Progress per window; cancel is honoured between windows.
    min_tile : int
        On a CUDA out-of-memory error the tile is halved and the image
        retried, down to this size.
    align : int
        Window starts and sizes are multiples of this (the network's total
        downsampling factor), so pooling grids line up across windows and the
        result matches whole-image inference exactly.

    Returns
    -------
    ndarray
        ``(out_channels, Y, X)`` float32.

    Raises
    ------
    ValueError
        If ``overlap <= 2 * margin``.
    probseg.errors.Cancelled
        If the user cancelled.
    """
    if overlap <= 2 * margin:
        raise ValueError(f"overlap ({overlap}) must exceed twice the margin ({margin})")
    cb = ensure(callbacks)
    device = torch.device(device)
    height, width = image.shape[1:]
    pad_y, pad_x = (-height) % align, (-width) % align
    if pad_y or pad_x:
        image = np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
    overlap = -(-overlap // align) * align
    while True:
        tile = max(align, tile // align * align)
        try:
            out = _tiled_apply_once(fn, image, out_channels, tile, overlap, margin, device, cb)
            return out[:, :height, :width]
        except torch.cuda.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if tile // 2 < max(min_tile, 2 * overlap):
                raise
            tile //= 2
            cb.message(f"GPU out of memory: retrying with {tile}x{tile} px tiles")


def _tiled_apply_once(fn, image, out_channels, tile, overlap, margin, device, cb) -> np.ndarray:
    _, height, width = image.shape
    tile_y, tile_x = min(tile, height), min(tile, width)
    ys = window_starts(height, tile_y, overlap)
    xs = window_starts(width, tile_x, overlap)
    out = np.zeros((out_channels, height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    total = len(ys) * len(xs)
    done = 0
    for y0 in ys:
        wy = _ramp(tile_y, y0, y0 + tile_y, height, overlap, margin)
        for x0 in xs:
            cb.raise_if_stopped()
            wx = _ramp(tile_x, x0, x0 + tile_x, width, overlap, margin)
            window = torch.from_numpy(np.ascontiguousarray(image[:, y0 : y0 + tile_y, x0 : x0 + tile_x]))
            with torch.no_grad():
                pred = fn(window[None].to(device))[0].float().cpu().numpy()
            w2 = wy[:, None] * wx[None, :]
            out[:, y0 : y0 + tile_y, x0 : x0 + tile_x] += pred * w2
            weight[y0 : y0 + tile_y, x0 : x0 + tile_x] += w2
            done += 1
            cb.progress(done, total, None)
    return out / np.maximum(weight, 1e-12)
