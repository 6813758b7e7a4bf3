"""Concrete-Dropout's training targets: pixel classes of instance labels, and the data term of the loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from probseg.core.errors import InputError
from probseg.nn.losses import discriminative_loss

N_CLASSES = 3  # background, foreground, overlap


def class_targets(labels: np.ndarray, overlap_width: int = 2, ignore_id: int = -1) -> np.ndarray:
    """Per-pixel classes of instance label images.

    Parameters
    ----------
    labels : ndarray of int, shape (..., Y, X)
        0 is background, objects are positive; pixels equal to ``ignore_id``
        or negative are not annotated.
    overlap_width : int
        Object pixels with a pixel of another object within this distance
        (a disk) belong to the overlap class.
    ignore_id : int
        Id of unannotated pixels; -1 for none.

    Returns
    -------
    ndarray of int64, same shape
        0 background, 1 foreground, 2 overlap, -1 not annotated.
    """
    labels = np.asarray(labels)
    ignored = (labels < 0) | (labels == ignore_id)
    objects = np.where(ignored, 0, labels).astype(np.int64)
    radius = int(overlap_width)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = (yy**2 + xx**2 <= radius**2).reshape((1,) * (labels.ndim - 2) + yy.shape)
    # Any other object id in the disk is either above or below the pixel's own.
    highest = ndi.grey_dilation(objects, footprint=disk, mode="nearest")
    big = np.iinfo(np.int64).max
    lowest = ndi.grey_erosion(np.where(objects > 0, objects, big), footprint=disk, mode="nearest")
    inside = objects > 0
    classes = inside.astype(np.int64)
    classes[inside & ((highest > objects) | (lowest < objects))] = 2
    classes[ignored] = -1
    return classes


def segmentation_loss(output: torch.Tensor, labels, config) -> torch.Tensor:
    """The data term: weighted cross-entropy plus discriminative loss.

    Parameters
    ----------
    output : Tensor, shape (B, D + 3, h, w)
        Network output: ``D = config.embedding_dims`` embedding channels,
        then background, foreground and overlap scores.
    labels : Tensor or ndarray of int, shape (B, H, W)
        Instance labels with ``H - h`` and ``W - w`` even and non-negative:
        the classes are computed on the whole of them (so the overlap class
        sees neighbours outside the output window) and then cropped to the
        centre. Pixels equal to ``config.ignore_id`` or negative count in no
        term.
    config : Config
        The method's training config (:class:`probseg.methods.concrete_dropout.model.Config`).

    Returns
    -------
    Tensor
        Cross-entropy averaged over annotated pixels, plus the discriminative
        loss averaged over the crops that hold an object.
    """
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    b, channels, h, w = output.shape
    d = config.embedding_dims
    if channels != d + N_CLASSES or labels.ndim != 3 or labels.shape[0] != b:
        raise InputError(f"output {tuple(output.shape)} and labels {labels.shape} do not fit {d} embedding dimensions")
    if (labels.shape[1] - h) % 2 or (labels.shape[2] - w) % 2 or labels.shape[1] < h or labels.shape[2] < w:
        raise InputError(f"labels {labels.shape[1:]} must exceed the output {(h, w)} by an even margin")
    dy, dx = (labels.shape[1] - h) // 2, (labels.shape[2] - w) // 2
    classes = class_targets(labels, config.overlap_width, config.ignore_id)[:, dy : dy + h, dx : dx + w]
    ids = labels[:, dy : dy + h, dx : dx + w]
    output = output.float()
    target = torch.from_numpy(np.ascontiguousarray(classes)).to(output.device)
    weight = torch.tensor([config.background_weight, config.foreground_weight, config.overlap_weight], device=output.device)
    logits = output[:, d:]
    if (target >= 0).any() and weight[target[target >= 0]].sum() > 0:
        ce = F.cross_entropy(logits, target, weight=weight, ignore_index=-1)
    else:
        ce = logits.sum() * 0.0  # nothing annotated: a 0/0 mean would be NaN
    terms = []
    for i in range(b):
        inside = torch.from_numpy(classes[i] > 0).to(output.device)
        if inside.any():
            instances = torch.from_numpy(np.ascontiguousarray(ids[i])).to(output.device)[inside]
            terms.append(discriminative_loss(output[i, :d][:, inside], instances, config.delta_d, config.center_weight))
    embedding = torch.stack(terms).mean() if terms else output[:, :d].sum() * 0.0
    return ce + embedding
