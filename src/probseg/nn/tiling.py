"""Tiled inference: any image size, network memory bounded by one window.

Each window's output is added into one preallocated ``(channels, Y, X)``
result (the caller's ``out`` when given) as soon as it is computed, and the
blending weights are divided out in place, so besides the result only one
``(Y, X)`` weight map and one window live in memory.

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

from probseg.core.callbacks import Callbacks, ensure


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
    out: np.ndarray | None = None,
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
    out : ndarray, optional
        A C-contiguous float32 ``(out_channels, Y, X)`` array to write the
        result into (e.g. one draw of a preallocated stack of draws), so no
        second full-size array is made. Its old values are overwritten.

    Returns
    -------
    ndarray
        ``(out_channels, Y, X)`` float32: ``out`` when given.

    Raises
    ------
    ValueError
        If ``overlap <= 2 * margin``, or ``out`` has the wrong shape, dtype
        or layout.
    probseg.core.errors.Cancelled
        If the user cancelled.
    """
    if overlap <= 2 * margin:
        raise ValueError(f"overlap ({overlap}) must exceed twice the margin ({margin})")
    cb = ensure(callbacks)
    device = torch.device(device)
    height, width = image.shape[1:]
    if out is None:
        out = np.empty((out_channels, height, width), dtype=np.float32)
    elif out.shape != (out_channels, height, width) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(out_channels, height, width)}, "
                         f"got {out.dtype} {out.shape}")
    pad_y, pad_x = (-height) % align, (-width) % align
    if pad_y or pad_x:
        image = np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
    overlap = -(-overlap // align) * align
    while True:
        tile = max(align, tile // align * align)
        try:
            _tiled_apply_once(fn, image, out, tile, overlap, margin, device, cb)
            return out
        except torch.cuda.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if tile // 2 < max(min_tile, 2 * overlap):
                raise
            tile //= 2
            cb.message(f"GPU out of memory: retrying with {tile}x{tile} px tiles")


def _tiled_apply_once(fn, image, out, tile, overlap, margin, device, cb) -> None:
    """Blend the windows of the padded ``image`` into ``out``, which covers its unpadded top-left part."""
    _, height, width = image.shape
    out_h, out_w = out.shape[1:]
    tile_y, tile_x = min(tile, height), min(tile, width)
    ys = window_starts(height, tile_y, overlap)
    xs = window_starts(width, tile_x, overlap)
    out.fill(0.0)
    weight = np.zeros((out_h, out_w), dtype=np.float32)
    total = len(ys) * len(xs)
    done = 0
    for y0 in ys:
        wy = _ramp(tile_y, y0, y0 + tile_y, height, overlap, margin)
        # Rows and columns of the window that fall on the unpadded image.
        h = min(tile_y, out_h - y0)
        for x0 in xs:
            cb.raise_if_stopped()
            wx = _ramp(tile_x, x0, x0 + tile_x, width, overlap, margin)
            w = min(tile_x, out_w - x0)
            window = torch.from_numpy(np.ascontiguousarray(image[:, y0 : y0 + tile_y, x0 : x0 + tile_x]))
            with torch.no_grad():
                pred = fn(window[None].to(device))[0].float().cpu().numpy()
            if h > 0 and w > 0:
                w2 = wy[:h, None] * wx[None, :w]
                # Not in place: pred may share memory with the input window.
                out[:, y0 : y0 + h, x0 : x0 + w] += pred[:, :h, :w] * w2
                weight[y0 : y0 + h, x0 : x0 + w] += w2
            done += 1
            cb.progress(done, total, None)
    np.maximum(weight, 1e-12, out=weight)
    out /= weight
