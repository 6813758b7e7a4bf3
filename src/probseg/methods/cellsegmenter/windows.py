"""CellSegmenter's windows: where they lie on a plane, how a window's objects mix, and their records.

A plane is explained one window at a time, the windows a quarter window
apart, so every pixel is seen :data:`WINDOWS_PER_PIXEL` times as in the
paper. Each window's objects are kept compactly, one row per object slot
(:data:`OBJECT_FIELDS` in plane px, then the appearance latent ``z``, then
the box latent ``v``) with its mask glimpse; :func:`window_masks` pastes them
back into each window's mixture without the network.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from probseg.methods.cellsegmenter.glimpse import paste_glimpses
from probseg.nn.tiling import window_starts

WINDOWS_PER_PIXEL = 16  # a step of a quarter window, as in the paper
OBJECT_FIELDS = ("window_y", "window_x", "y0", "x0", "y1", "x1", "presence", "present")
PRESENT = OBJECT_FIELDS.index("present")


def window_origins(shape: tuple[int, int], window: int) -> list[tuple[int, int]]:
    """Top-left corners of the windows of side ``window`` over a plane of ``shape`` (padded to a window where smaller).

    Parameters
    ----------
    shape : tuple of int
        ``(Y, X)`` of the plane.
    window : int
        Window side, a multiple of 4.

    Returns
    -------
    list of (int, int)
        ``(y, x)`` in raster order.
    """
    step = window // int(math.sqrt(WINDOWS_PER_PIXEL))
    ys = window_starts(max(shape[0], window), window, window - step)
    xs = window_starts(max(shape[1], window), window, window - step)
    return [(y, x) for y in ys for x in xs]


def mixing(boxes: torch.Tensor, masks: torch.Tensor, present: torch.Tensor, window: int, box_term: float = 0.0,
           images: torch.Tensor | None = None):
    """Paste object masks into their windows and mix them: the paper's eq. (6).

    Parameters
    ----------
    boxes : Tensor, shape (B, K, 4)
        In window px.
    masks : Tensor, shape (B, K, G, G)
        Mask glimpses in (0, 1).
    present : Tensor, shape (B, K)
        1 for objects, 0 for the unused slots (may carry gradients).
    window : int
    box_term : float
        Share of the box indicator added to each mask.
    images : Tensor, shape (B, K, C, G, G), optional
        Object image glimpses, pasted too.

    Returns
    -------
    pi : Tensor, shape (B, K + 1, W, W)
        Channel 0 the background; the channels sum to 1.
    weights : Tensor, shape (B, K, W, W)
        The pasted, presence-weighted masks ``w_k``.
    pasted_images : Tensor, shape (B, K, C, W, W) or None
    """
    b, k = masks.shape[:2]
    parts = [masks[:, :, None], torch.ones_like(masks[:, :, None])]
    if images is not None:
        parts.append(images)
    glimpse = torch.cat(parts, 2)
    out = paste_glimpses(glimpse.reshape(b * k, glimpse.shape[2], *masks.shape[-2:]), boxes.reshape(b * k, 4), (window, window))
    out = out.reshape(b, k, glimpse.shape[2], window, window)
    w = present[..., None, None] * ((1.0 - box_term) * out[:, :, 0] + box_term * out[:, :, 1])
    fg = w / w.sum(1, keepdim=True).clamp(min=1.0)
    pi = torch.cat([1.0 - fg.sum(1, keepdim=True), fg], 1)
    return pi, w, (out[:, :, 2:] if images is not None else None)


def object_rows(out: dict, origins: torch.Tensor) -> torch.Tensor:
    """The object records of a batch of windows from the network's output.

    Parameters
    ----------
    out : dict of Tensor
        :meth:`~probseg.methods.cellsegmenter.net.CellSegmenterNet.forward`'s
        ``boxes`` (window px), ``present``, ``p_k``, ``z`` and ``v``, per slot ``(B, K, ...)``.
    origins : Tensor, shape (B, 2)
        Each window's top-left corner in plane px.

    Returns
    -------
    Tensor, shape (B, K, F)
        :data:`OBJECT_FIELDS` (boxes in plane px), then ``z``, then ``v``.
    """
    k = out["boxes"].shape[1]
    boxes = out["boxes"] + origins[:, None, :].repeat(1, 1, 2)
    return torch.cat([origins[:, None, :].expand(-1, k, -1), boxes, out["p_k"][..., None],
                      out["present"].float()[..., None], out["z"], out["v"]], dim=2)


def window_masks(objects: np.ndarray, glimpses: np.ndarray, slots: int, window: int, box_term: float, shape):
    """The mixture of every window of one draw, cropped to the plane; no network.

    Parameters
    ----------
    objects : ndarray, shape (M, F)
        One draw's object records (:func:`object_rows`), ``slots`` rows per window.
    glimpses : ndarray, shape (M, G, G)
        Their mask glimpses.
    slots : int
        Object slots per window.
    window : int
        Window side.
    box_term : float
        As in :func:`mixing`.
    shape : tuple of int
        ``(Y, X)`` of the plane.

    Yields
    ------
    origin : (int, int)
        The window's top-left corner.
    pi : ndarray, shape (slots + 1, h, w)
        Its mixture (channel 0 the background), cropped to the plane.
    """
    k, g = slots, glimpses.shape[-1]
    n_windows = len(objects) // k
    batch = 64
    for start in range(0, n_windows, batch):
        stop = min(n_windows, start + batch)
        rows = objects[start * k : stop * k].reshape(stop - start, k, -1)
        origin = torch.from_numpy(rows[:, 0, 0:2].copy())
        boxes = torch.from_numpy(rows[:, :, 2:6].copy()) - origin[:, None, :].repeat(1, 1, 2)
        present = torch.from_numpy(rows[:, :, PRESENT].copy())
        masks = torch.from_numpy(glimpses[start * k : stop * k].reshape(stop - start, k, g, g).copy())
        pi, _, _ = mixing(boxes, masks, present, window, box_term)
        pi = pi.numpy()
        for i in range(stop - start):
            y, x = int(origin[i, 0]), int(origin[i, 1])
            h, w = min(window, shape[0] - y), min(window, shape[1] - x)
            yield (y, x), pi[i, :, :h, :w]
