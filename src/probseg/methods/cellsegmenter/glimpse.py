"""Glimpses: crop boxes out of a feature map and paste them back, differentiably (a spatial transformer).

CellSegmenter encodes each object from a fixed-size glimpse of the U-Net's
last feature map inside the object's box, and decodes each object's image
and mask in glimpse coordinates, to be pasted back into the full frame.
Both directions are one ``affine_grid`` + ``grid_sample`` with the affine
map between the box and the glimpse, so gradients reach the box
coordinates too.

Boxes are ``(y0, x0, y1, x1)`` in pixel-edge coordinates: pixel ``i`` spans
``[i, i + 1)``, so a box ``(0, 0, H, W)`` is the whole image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["crop_glimpses", "paste_glimpses"]


def _box_affine(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``theta`` (K, 2, 3) mapping glimpse coordinates in [-1, 1] to image coordinates in [-1, 1] (align_corners=False)."""
    y0, x0, y1, x1 = boxes.unbind(dim=1)
    theta = boxes.new_zeros(len(boxes), 2, 3)
    theta[:, 0, 0] = (x1 - x0) / width
    theta[:, 0, 2] = (x0 + x1) / width - 1.0
    theta[:, 1, 1] = (y1 - y0) / height
    theta[:, 1, 2] = (y0 + y1) / height - 1.0
    return theta


def crop_glimpses(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample each box of each image to a ``size`` = ``(h, w)`` glimpse.

    Bilinear; outside the image reads 0. A glimpse as large as its box (in
    pixels) and aligned with the pixel grid copies the pixels exactly. The K
    glimpses of an image are read as one tall sampling grid, so the image
    is never copied K times.

    Parameters
    ----------
    images : Tensor, shape (B, C, H, W) or (C, H, W)
    boxes : Tensor, shape (B, K, 4) or (K, 4)
        ``(y0, x0, y1, x1)`` of each image's boxes.
    size : tuple of int

    Returns
    -------
    Tensor, shape (B, K, C, h, w) or (K, C, h, w)
    """
    if images.dim() == 3:
        return crop_glimpses(images[None], boxes[None], size)[0]
    b, c, height, width = images.shape
    k = boxes.shape[1]
    h, w = size
    theta = _box_affine(boxes.reshape(b * k, 4).to(images.dtype), height, width)
    grid = F.affine_grid(theta, (b * k, c, h, w), align_corners=False).reshape(b, k * h, w, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, c, k, h, w).transpose(1, 2)


def paste_glimpses(glimpses: torch.Tensor, boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Put each glimpse ``(K, C, h, w)`` back into its box of a ``shape`` = ``(H, W)`` frame: ``(K, C, H, W)``.

    The inverse of :func:`crop_glimpses` of one image; 0 outside each box.
    """
    k, c = glimpses.shape[:2]
    height, width = shape
    theta = _box_affine(boxes.to(glimpses.dtype), height, width)
    scale_x, scale_y = theta[:, 0, 0], theta[:, 1, 1]
    inverse = torch.zeros_like(theta)
    inverse[:, 0, 0] = 1.0 / scale_x
    inverse[:, 0, 2] = -theta[:, 0, 2] / scale_x
    inverse[:, 1, 1] = 1.0 / scale_y
    inverse[:, 1, 2] = -theta[:, 1, 2] / scale_y
    grid = F.affine_grid(inverse, (k, c, height, width), align_corners=False)
    return F.grid_sample(glimpses, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
