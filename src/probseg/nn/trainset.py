"""Training images for every method: checking, normalising, random crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probseg.core.errors import InputError
from probseg.core.inputs import check_labels, to_planes
from probseg.core.normalize import DEFAULT_PERCENTILES, normalize_percentile, percentile_range


@dataclass
class TrainingSet:
    """Normalised ``(C, Y, X)`` planes (and their labels) ready for cropping."""

    planes: list  # of (C, Y, X) float32
    labels: list  # of (Y, X) int64, or None per plane
    in_channels: int
    normalization: dict
    notices: list


def training_set(images, labels=None, *, channel_axis=None, rgb=False) -> TrainingSet:
    """Check and normalise training images.

    Parameters
    ----------
    images : ndarray or sequence of ndarray
        One image or several; each 2-D, a 3-D stack (used plane by plane) or
        with channels as in :func:`probseg.core.inputs.to_planes`.
    labels : ndarray or sequence, optional
        Instance labels matching each image's spatial shape, or None.

    Returns
    -------
    TrainingSet
        ``normalization`` records the percentiles used and the mean low/high
        intensity of the training images (for the model card).
    """
    if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise InputError("no training images given")
    if labels is not None and (isinstance(labels, np.ndarray) or not isinstance(labels, (list, tuple))):
        labels = [labels]
    if labels is not None and len(labels) != len(images):
        raise InputError(f"{len(images)} image(s) but {len(labels)} label image(s)")
    planes, plane_labels, notices, lows, highs = [], [], [], [], []
    channels = None
    for i, image in enumerate(images):
        name = f"training image {i + 1}" if len(images) > 1 else "training image"
        p = to_planes(image, channel_axis=channel_axis, rgb=rgb, name=name)
        if p.notice:
            notices.append(p.notice)
        if channels is None:
            channels = p.n_channels
        elif channels != p.n_channels:
            raise InputError(f"{name} has {p.n_channels} channels but the first image has {channels}")
        lab = None
        if labels is not None and labels[i] is not None:
            lab = check_labels(labels[i], _spatial(p), name=f"labels of {name}")
            lab = lab.reshape((-1,) + p.spatial_shape)
        for z in range(p.data.shape[0]):
            lo, hi = percentile_range(p.data[z], DEFAULT_PERCENTILES, axis=(1, 2))
            planes.append(normalize_percentile(p.data[z], lo[:, None, None], hi[:, None, None]))
            plane_labels.append(None if lab is None else lab[z])
            lows.append(lo)
            highs.append(hi)
    norm = {
        "percentiles": list(DEFAULT_PERCENTILES),
        "mode": "per-image",
        "train_low": np.mean(lows, axis=0).round(4).tolist(),
        "train_high": np.mean(highs, axis=0).round(4).tolist(),
    }
    return TrainingSet(planes, plane_labels, channels, norm, notices)


def _spatial(p) -> tuple:
    shape = p.spatial_shape
    return (p.data.shape[0],) + shape if p.is_stack else shape


def random_crops(
    ts: TrainingSet, size: int, batch: int, rng: np.random.Generator, with_labels: bool = False,
    focus: list | None = None, focus_fraction: float = 0.0, focus_radius: int = 0, augment: bool = True,
) -> tuple:
    """A batch of random ``size`` x ``size`` crops with flips and 90° turns (``augment``, the default).

    Planes smaller than ``size`` are reflect-padded. Returns
    ``(images, labels)`` tensors of shape ``(B, C, size, size)`` and
    ``(B, size, size)`` (labels is None unless ``with_labels``).

    With ``focus`` (one ``(N, 2)`` array of ``(y, x)`` pixels per plane), a
    crop is, with probability ``focus_fraction``, centred within
    ``focus_radius`` pixels of one such pixel of its plane drawn at random
    (clipped to the plane): sparse labels then reach the loss in most
    steps instead of a few.
    """
    imgs, labs = [], []
    for _ in range(batch):
        k = int(rng.integers(len(ts.planes)))
        plane = ts.planes[k]
        lab = ts.labels[k] if with_labels else None
        pad_y = max(0, size - plane.shape[1])
        pad_x = max(0, size - plane.shape[2])
        if pad_y or pad_x:
            plane = np.pad(plane, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
            if lab is not None:
                lab = np.pad(lab, ((0, pad_y), (0, pad_x)), mode="constant")
        points = focus[k] if focus is not None else None
        if points is not None and len(points) and rng.random() < focus_fraction:
            cy, cx = points[int(rng.integers(len(points)))] + rng.integers(-focus_radius, focus_radius + 1, 2)
            y0 = int(np.clip(cy - size // 2, 0, plane.shape[1] - size))
            x0 = int(np.clip(cx - size // 2, 0, plane.shape[2] - size))
        else:
            y0 = int(rng.integers(plane.shape[1] - size + 1))
            x0 = int(rng.integers(plane.shape[2] - size + 1))
        crop = plane[:, y0 : y0 + size, x0 : x0 + size]
        lcrop = None if lab is None else lab[y0 : y0 + size, x0 : x0 + size]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        if not augment:
            # Drawn all the same, so that a seed gives the same crops either way.
            turns, flip = 0, False
        crop = np.rot90(crop, turns, axes=(1, 2))
        if flip:
            crop = crop[:, :, ::-1]
        imgs.append(np.ascontiguousarray(crop))
        if lcrop is not None:
            lcrop = np.rot90(lcrop, turns)
            if flip:
                lcrop = lcrop[:, ::-1]
            labs.append(np.ascontiguousarray(lcrop))
    images = torch.from_numpy(np.stack(imgs))
    labels = torch.from_numpy(np.stack(labs)) if labs else None
    return images, labels
