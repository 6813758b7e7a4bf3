"""SPOCO's training loss: the paper's terms on two augmented views of each crop, and the foreground head's.

Every crop is seen twice, through two draws of location- and shape-preserving
augmentations (a flip and a quarter turn, an intensity scale and shift,
Gaussian noise): view 1 by ``f``, view 2 by its momentum copy ``g``. The
geometric part of each is undone on the network's output, so both
embeddings describe the same pixels. The terms (:func:`spoco_terms`) are the paper's:

* the hinged pull (margin ``delta_v``) and push (hinge ``2 delta_d``) of the
  discriminative loss over the labelled instances;
* the single-object term: for each labelled instance, one random anchor pixel,
  the soft mask ``exp(-d^2 ln 2 / delta_v^2)`` of embedding distances to it,
  and the Dice loss of that mask against the instance's mask;
* the unlabelled push: labelled objects' means are pushed ``delta_d`` away
  from the embeddings of the unlabelled pixels;
* the embedding consistency between ``f`` and ``g`` on the unlabelled
  region, with anchors drawn until their masks cover it.

The foreground head learns from a balanced cross-entropy
(:func:`foreground_loss`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from probseg.core.errors import InputError
from probseg.core.labels import BACKGROUND, UNLABELLED, encode_labels
from probseg.methods.spoco.foreground import FROM_BACKGROUND, FROM_UNLABELLED
from probseg.methods.spoco.net import SpocoNet, add_coordinates, dihedral
from probseg.nn.losses import (
    consistency_loss,
    hinged_pull,
    instance_means,
    mean_push,
    single_object_loss,
    unlabelled_push,
)
from probseg.nn.trainset import TrainingSet, random_crops
from probseg.nn.unet import UNet


def spoco_terms(f_emb: torch.Tensor, g_emb: torch.Tensor, codes: np.ndarray, config,
                rng: np.random.Generator) -> dict:
    """The loss terms of one crop.

    Parameters
    ----------
    f_emb, g_emb : Tensor, shape (D, Y, X)
        Embeddings of the crop by f and by g, in the crop's own orientation.
    codes : ndarray of int, shape (Y, X)
        From :func:`probseg.core.labels.encode_labels`.
    config : probseg.methods.spoco.model.Config
    rng : numpy.random.Generator
        Draws the anchors.

    Returns
    -------
    dict of str to Tensor
        ``pull``, ``push`` and ``instance`` over the labelled instances
        (objects, and the background where it is known), ``unlabelled_push``
        and ``consistency`` over the unlabelled pixels.
    """
    labelled = codes != UNLABELLED
    codes_t = torch.from_numpy(np.ascontiguousarray(codes)).to(f_emb.device)
    flat = f_emb.reshape(f_emb.shape[0], -1)
    lab_t = torch.from_numpy(labelled.ravel()).to(f_emb.device)
    lab_emb, lab_ids = flat[:, lab_t], codes_t.reshape(-1)[lab_t]
    pull = hinged_pull(lab_emb, lab_ids, config.delta_v)
    zero = f_emb.sum() * 0.0
    push, upush = zero, zero
    if lab_ids.numel():
        means, _ = instance_means(lab_emb, lab_ids)
        push = mean_push(means, config.delta_d)
        ids = torch.unique(lab_ids)
        # The background may hold unlabelled pixels' true class, so only
        # objects push the unlabelled pixels away.
        obj_means = means[ids > BACKGROUND]
        unl_t = torch.from_numpy((~labelled).ravel()).to(f_emb.device)
        upush = unlabelled_push(obj_means, flat[:, unl_t], config.delta_d)
    anchors = []
    for code in np.unique(codes[labelled]):
        ys, xs = np.nonzero(codes == code)
        i = int(rng.integers(len(ys)))
        anchors.append((int(code), int(ys[i]), int(xs[i])))
    instance = single_object_loss(f_emb, codes_t, torch.tensor(anchors, dtype=torch.int64).reshape(-1, 3),
                                  config.delta_v, config.kernel_threshold)
    consistency = consistency_loss(f_emb, g_emb, ~labelled, config.delta_v, rng, config.consistency_anchors,
                                   config.kernel_threshold)
    return {"pull": pull, "push": push, "instance": instance, "unlabelled_push": upush, "consistency": consistency}


def foreground_loss(logits: torch.Tensor, codes: np.ndarray, unlabelled_weight: float = 0.0) -> torch.Tensor:
    """Balanced binary cross-entropy of the foreground head on one crop.

    Objects are foreground and known background is background, each class
    present weighing the same, so that a crop holding one small object
    still teaches the head about it. With ``unlabelled_weight`` > 0 the
    unlabelled pixels count as background too, at that weight relative to
    a class: positive-unlabelled learning, for labels without background,
    where the head can only learn to rank object-like pixels above the rest
    (an unlabelled object looks like a labelled one, so its score stays
    between the two).

    Parameters
    ----------
    logits : Tensor, shape (Y, X)
    codes : ndarray of int, shape (Y, X)
        From :func:`probseg.core.labels.encode_labels`.
    unlabelled_weight : float

    Returns
    -------
    Tensor
        A scalar; 0 (with a gradient) where the crop holds no class to learn.
    """
    terms, weights = [], []
    for part, target, weight in ((codes > BACKGROUND, 1.0, 1.0), (codes == BACKGROUND, 0.0, 1.0),
                                 (codes == UNLABELLED, 0.0, unlabelled_weight)):
        if weight > 0 and part.any():
            x = logits[torch.from_numpy(part).to(logits.device)]
            terms.append(nn.functional.binary_cross_entropy_with_logits(x, torch.full_like(x, target)))
            weights.append(weight)
    if not terms:
        return logits.sum() * 0.0
    return (torch.stack(terms) * torch.tensor(weights, device=logits.device)).sum() / sum(weights)


def combine_terms(terms: dict, config) -> torch.Tensor:
    """The weighted sum of :func:`spoco_terms` (pull and push weigh 1, as in the paper).

    Parameters
    ----------
    terms : dict of str to Tensor
        From :func:`spoco_terms`.
    config : probseg.methods.spoco.model.Config
        The weights of the other terms.

    Returns
    -------
    Tensor
        A scalar.
    """
    return (terms["pull"] + terms["push"] + config.instance_weight * terms["instance"]
            + config.unlabelled_push_weight * terms["unlabelled_push"] + config.consistency_weight * terms["consistency"])


def training_loss(config, ts: TrainingSet, device: torch.device):
    """``loss_fn(net, rng)`` for :func:`probseg.nn.training.train_loop`.

    Each call updates ``g`` from ``f`` (once per step), records the labelled
    objects' median area and the foreground head's kind in the network's
    buffers, and returns the mean over one batch of crops of
    :func:`combine_terms` plus the weighted :func:`foreground_loss`.

    Parameters
    ----------
    config : probseg.methods.spoco.model.Config
    ts : probseg.nn.trainset.TrainingSet
        Normalised planes and a labels image for each, read in ``config.label_mode``.
    device : torch.device

    Returns
    -------
    callable
        ``loss_fn(net, rng) -> Tensor``, with ``notices`` (a list of str)
        for the user.

    Raises
    ------
    InputError
        For images without labels, or labels without any object.
    """
    if any(lab is None for lab in ts.labels):
        raise InputError("SPOCO learns from a few labelled objects; give a labels image for every training image")
    codes = [encode_labels(lab, config.label_mode, config.background_id) for lab in ts.labels]
    if not any((c > BACKGROUND).any() for c in codes):
        what = f" other than the background id {config.background_id}" if config.label_mode == "reviewed" else ""
        raise InputError(f"the labels hold no object{what}; label at least one object (ids 1, 2, ...)")
    coded = TrainingSet(ts.planes, codes, ts.in_channels, ts.normalization, ts.notices)
    area = float(np.median(np.concatenate([np.unique(c[c > BACKGROUND], return_counts=True)[1] for c in codes])))
    n_objects = sum(len(np.unique(c[c > BACKGROUND])) for c in codes)
    low, high = 1.0 / (1.0 + config.intensity_scale), 1.0 + config.intensity_scale
    focus = [np.argwhere(c > BACKGROUND) for c in codes]
    has_background = any((c == BACKGROUND).any() for c in codes)
    kind = FROM_BACKGROUND if has_background else FROM_UNLABELLED
    unlabelled_weight = 0.0 if has_background else config.unlabelled_foreground_weight
    dims = config.embedding_dims

    def view(images: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
        """One augmented view per crop and the geometric transform of each."""
        b = len(images)
        scale = torch.from_numpy(rng.uniform(low, high, (b, 1, 1, 1)).astype(np.float32))
        shift = torch.from_numpy(rng.uniform(-config.intensity_shift, config.intensity_shift, (b, 1, 1, 1)).astype(np.float32))
        noise = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32)) * config.noise
        out = images * scale + shift + noise
        geometry = [(int(rng.integers(4)), bool(rng.integers(2))) for _ in range(b)]
        return torch.stack([dihedral(x, k, f) for x, (k, f) in zip(out, geometry)]), geometry

    def loss_fn(net: SpocoNet, rng: np.random.Generator) -> torch.Tensor:
        # g follows f's weights as the last step left them: once per step, never at prediction.
        net.update_momentum(config.momentum)
        net.object_area.fill_(area)
        net.foreground_kind.fill_(float(kind if config.foreground_weight > 0 else 0))
        size = _crop_side(config, net.f)
        # Near a labelled object: within a quarter of the part of the crop the loss sees.
        seen = size - 2 * net.f.context
        images, labels = random_crops(coded, size, config.batch_size, rng, with_labels=True, focus=focus,
                                      focus_fraction=config.object_crops, focus_radius=seen // 4)
        view_f, geo_f = view(images, rng)
        view_g, geo_g = view(images, rng)
        out_f = net(view_f.to(device)).float()
        with torch.no_grad():
            emb_g = net.g(view_g.to(device))[:, :dims].float()
        h = out_f.shape[-1]
        margin = (size - h) // 2
        labels = labels[:, margin : margin + h, margin : margin + h].numpy()
        total = out_f.sum() * 0.0
        spatial = config.spatial > 0
        for i in range(len(images)):
            of = dihedral(out_f[i], *geo_f[i], inverse=True, vectors=spatial)
            eg = add_coordinates(dihedral(emb_g[i], *geo_g[i], inverse=True, vectors=spatial), config.spatial)
            ef = add_coordinates(of[:dims], config.spatial)
            total = total + combine_terms(spoco_terms(ef, eg, labels[i], config, rng), config)
            if config.foreground_weight > 0:
                total = total + config.foreground_weight * foreground_loss(of[dims], labels[i], unlabelled_weight)
        return total / len(images)

    # What counts is the share of the objects labelled, which only the user
    # knows: benchmarks/spoco_sparse.py beat Voronoi-Otsu with a quarter of
    # them (9 nuclei, 54 blobs) and lost with a tenth (4 nuclei, 22 blobs).
    loss_fn.notices = [] if config.label_mode == "dense" else [
        f"SPOCO learns from {n_objects} labelled object(s); in the benchmarks a quarter of the objects labelled beat "
        "the classical baseline and a tenth did not (docs/benchmarks.md): label more, or proofread and retrain"]
    return loss_fn


def _crop_side(config, net: UNet) -> int:
    # Big enough for the network's context, and a size its poolings divide.
    side = max(config.crop_size, 2 * net.context + 8)
    return -(-side // net.align) * net.align
