"""InpaintAff's optional foreground network (the paper's FGNET): what it trains on, and its loss; and the
rules of the other foregrounds.

It learns from a few labelled objects where objects are, as a probability
per pixel; the mutex watershed then partitions the affinities inside it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probseg.core.errors import InputError
from probseg.core.labels import BACKGROUND, UNLABELLED, encode_labels
from probseg.nn.trainset import TrainingSet, random_crops

__all__ = ["OBJECT", "foreground_training_set", "foreground_loss", "check_foreground", "threshold_foreground"]

#: The code of every object in the foreground network's labels: 0 unlabelled, 1 background, 2 object.
OBJECT = BACKGROUND + 1


def foreground_training_set(ts: TrainingSet, mode: str, background_id: int) -> tuple[TrainingSet, list, float]:
    """The labelled planes of ``ts`` coded for the foreground network, where its objects are, and their median area.

    Parameters
    ----------
    ts : TrainingSet
        Normalised planes; planes whose labels are None are left out.
    mode : {"dense", "reviewed"}
        The label encoding (:func:`probseg.core.labels.encode_labels`):
        ``"dense"``, 0 is background; ``"reviewed"``, 0 is unlabelled and
        ``background_id`` marks background.
    background_id : int
        The id of known background in ``"reviewed"`` labels.

    Returns
    -------
    fg_set : TrainingSet
        The labelled planes, their labels ``int64`` codes 0 (unlabelled),
        1 (background) and :data:`OBJECT`.
    focus : list of ndarray of shape (N, 2)
        The ``(y, x)`` object pixels of each plane of ``fg_set``.
    area : float
        Median pixel count of the labelled objects.

    Raises
    ------
    InputError
        If the labels hold no object.
    """
    labelled = [i for i, lab in enumerate(ts.labels) if lab is not None]
    codes = [encode_labels(ts.labels[i], mode, background_id) for i in labelled]
    if not any((c > BACKGROUND).any() for c in codes):
        raise InputError("the labels hold no object; label at least one object for the foreground network, or train without labels")
    areas = []
    for c in codes:
        areas.extend(np.unique(c[c > BACKGROUND], return_counts=True)[1].tolist())
    coded = [np.minimum(c, OBJECT) for c in codes]
    fg_set = TrainingSet([ts.planes[i] for i in labelled], coded, ts.in_channels, ts.normalization, [])
    return fg_set, [np.argwhere(c == OBJECT) for c in coded], float(np.median(areas))


def foreground_loss(net: nn.Module, fg_set: TrainingSet, focus: list, crop_size: int, batch_size: int, weight: float,
                    rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """``weight`` times the foreground network's binary cross-entropy on random crops, over the pixels of known class.

    Parameters
    ----------
    net : UNet
        The foreground network (valid convolutions, one logit out).
    fg_set, focus
        From :func:`foreground_training_set`; half the crops are centred
        near an object pixel.
    crop_size : int
        Side of the logits of each crop (the crops are larger by the
        network's context).
    batch_size : int
        Crops per call.
    weight : float
        Factor of the loss.
    rng : numpy.random.Generator
        Draws the crops.
    device : torch.device
        Where ``net`` is.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    crops, codes = random_crops(fg_set, crop_size + 2 * net.context, batch_size, rng, with_labels=True, focus=focus,
                                focus_fraction=0.5, focus_radius=crop_size // 2)
    logits = net(crops.to(device))[:, 0]
    h = logits.shape[-1]
    m = (codes.shape[-1] - h) // 2
    codes = codes[:, m : m + h, m : m + h].to(device)
    known = (codes != UNLABELLED).float()
    bce = F.binary_cross_entropy_with_logits(logits, (codes == OBJECT).float(), reduction="none")
    return weight * (bce * known).sum() / known.sum().clamp(min=1.0)


def check_foreground(kind: str, has_mask: bool, has_network: bool) -> None:
    """Refuse the foreground ``kind`` where its source is missing: ``"mask"`` without a mask given,
    ``"network"`` on a model trained without labels; one line each (InputError)."""
    if kind == "mask" and not has_mask:
        raise InputError("foreground 'mask' needs a foreground mask: give one (--foreground-mask, or a layer in the Predict widget)")
    if kind == "network" and not has_network:
        raise InputError("this model has no foreground network (it was trained without labels); use foreground 'threshold' "
                         "or give a mask")


def threshold_foreground(intensity: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels of the smoothed ``intensity`` ``(Y, X)`` above ``threshold``, or above Otsu's threshold when it is 0."""
    from skimage.filters import threshold_otsu

    cut = threshold if threshold > 0 else (float(threshold_otsu(intensity)) if np.ptp(intensity) > 0 else np.inf)
    return intensity > cut
