"""SPOCO: instance embeddings learned from a few object masks (positive-unlabelled supervision).

Wolny, Yu, Pape, Kreshuk, "Sparse Object-level Supervision for Instance
Segmentation with Pixel Embeddings", CVPR 2022.

A 2-D U-Net ``f`` maps every pixel to an embedding of ``embedding_dims``
numbers; ``g`` is its momentum copy (``theta_g <- m theta_g + (1 - m)
theta_f`` once per training step, never during prediction), stored with
the weights so that it persists in the model folder. Every training crop is
seen twice, through two draws of location- and shape-preserving
augmentations (a flip and a 90 degree turn, an intensity scale and shift,
Gaussian noise): view 1 by ``f``, view 2 by ``g``. The geometric part of each
is undone on the network's output, so both embeddings describe the same
pixels. The loss (:mod:`probseg.nn.losses`) is the paper's:

* the hinged pull (margin ``delta_v``) and push (hinge ``2 delta_d``) of the
  discriminative loss over the labelled instances;
* the single-object term: for each labelled instance, one random anchor pixel,
  the soft mask ``exp(-d^2 ln 2 / delta_v^2)`` of embedding distances to it,
  and the Dice loss of that mask against the instance's mask;
* the unlabelled push: labelled objects' means are pushed ``delta_d`` away
  from the embeddings of the unlabelled pixels;
* the embedding consistency between ``f`` and ``g`` on the unlabelled
  region, with anchors drawn until their masks cover it.

**Label modes** (``label_mode``):

* ``"sparse"`` (default): 0 is *unlabelled*, never background. Each id > 0
  is one object, whose mask must be complete.
* ``"dense"``: 0 is background, which becomes one more instance of the
  loss; there is no unlabelled region.
* ``"reviewed"``: sparse labels plus known background: pixels equal to
  ``background_id`` (65535 by default) are background, 0 is unlabelled. The
  proofreading export writes labels and a reviewed mask as two images;
  :func:`reviewed_labels` (or ``probseg.methods.spoco.reviewed_labels``)
  joins them into this one image, which the Train widget and ``probseg
  train spoco --labels`` take like any labels image.

**Prediction** (:meth:`SpocoModel.raw`): draw 0 is the plane as it is; each
further draw (one per sample) is a test-time augmentation, one of the eight
flips and turns in turn plus a random intensity scale and shift, whose
embeddings are turned back. :meth:`SpocoModel.instances` partitions each
draw alone: affinities for the paper's offsets (:data:`DEFAULT_OFFSETS`)
from the embeddings, then the mutex watershed (default) or mean-shift on the
embeddings. The background of a SPOCO embedding is one cluster like an
object, so ``background="largest"`` drops the largest segment. The samples
therefore show how much the segmentation depends on the orientation and
brightness the network sees; their disagreement is the uncertainty.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from skimage.filters import threshold_otsu
from torch import nn

from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.core.errors import InputError
from probseg.nn.losses import (
    consistency_loss,
    hinged_pull,
    instance_means,
    mean_push,
    single_object_loss,
    unlabelled_push,
)
from probseg.engine.model import SegmentationModel
from probseg.nn.unet import UNet
from probseg.partition import (
    DEFAULT_OFFSETS,
    embedding_affinities,
    hdbscan_instances,
    meanshift_instances,
    mutex_watershed,
    split_and_filter,
)
from probseg.core.labels import BACKGROUND, LABEL_MODES, UNLABELLED, encode_labels, reviewed_labels  # noqa: F401
from probseg.nn.tiling import tiled_apply
from probseg.nn.trainset import TrainingSet, random_crops

# What the foreground head learned from: objects against known background
# (its probability means what it says), or, with no background labelled,
# objects against the unlabelled pixels (positive-unlabelled: a score that
# ranks object-like pixels first, thresholded per image).
FROM_UNLABELLED, FROM_BACKGROUND = 1, 2


@dataclass
class Config(TrainingConfig):
    """SPOCO hyperparameters.

    ``embedding_dims``, ``delta_v``, ``delta_d``, ``kernel_threshold`` and
    the weight decay are the paper's. The network (16 feature maps, depth
    2), the crops (96 px, 2 a step) and the steps are scaled down so that
    training takes about 4 minutes on one CPU thread; on a GPU raise
    ``num_fmaps``, ``crop_size``, ``batch_size`` and ``steps``.

    Two defaults depart from the paper. ``spatial`` 0.3: with the paper's
    non-spatial embeddings, exploratory runs on the nuclei sample (a quarter
    of the objects labelled) kept touching nuclei at nearly equal means and
    stayed below the classical baseline; the defaults' figures are in
    docs/benchmarks.md (``benchmarks/spoco_sparse.py``). ``momentum`` 0.99:
    the paper's 0.999 moves g too slowly for a few thousand steps
    (``benchmarks/spoco_probe.py`` compares them on touching blobs).
    """

    label_mode: str = param("sparse", "sparse: 0 is unlabelled (never background); dense: 0 is background; reviewed: 0 is unlabelled and background_id marks known background", choices=LABEL_MODES)
    background_id: int = param(65535, "reviewed mode: the label id of known background pixels", minimum=1)
    # Chosen with benchmarks/spoco_probe.py under the earlier non-spatial
    # defaults (touching blobs, a quarter of the objects labelled): the
    # paper's 2e-4 for 1000 steps learned far less than 1e-3 for 4000. The
    # paper trains far longer; a short CPU run needs the larger rate.
    steps: int = param(4000, "training iterations", unit="steps", minimum=1, maximum=1_000_000)
    batch_size: int = param(2, "crops per iteration", unit="crops", minimum=1, maximum=256, advanced=True)
    crop_size: int = param(96, "side of the random training crops; the loss sees the centre, 40 px smaller", unit="px", minimum=48, maximum=2048, advanced=True)
    learning_rate: float = param(1e-3, "AdamW learning rate (the paper: Adam at 2e-4, for much longer training)", minimum=1e-7, maximum=1.0, advanced=True)
    weight_decay: float = param(1e-5, "weight decay", minimum=0.0, maximum=1.0, advanced=True)
    object_crops: float = param(0.5, "fraction of training crops centred near a labelled object (the others anywhere), so that a few labelled objects reach most steps", minimum=0.0, maximum=1.0, advanced=True)
    embedding_dims: int = param(16, "dimensions of the per-pixel embedding", minimum=2, maximum=64, advanced=True)
    delta_v: float = param(0.5, "pull margin: an object's pixels within this embedding distance of its mean are not pulled; the soft mask is 0.5 there", minimum=0.01, maximum=100.0, advanced=True)
    delta_d: float = param(2.0, "push margin: object means 2 delta_d apart are not pushed; unlabelled pixels are pushed delta_d from object means", minimum=0.01, maximum=100.0, advanced=True)
    spatial: float = param(0.3, "embedding units per pixel added to the first two embedding dimensions (spatial embeddings: the network learns offsets towards object centres); 0: the paper's non-spatial embeddings", minimum=0.0, maximum=10.0, advanced=True)
    kernel_threshold: float = param(0.9, "t of the soft masks: their value at embedding distance delta_v (the paper's 0.9; higher gives crisper objects from few labels)", minimum=0.01, maximum=0.99, advanced=True)
    momentum: float = param(0.99, "m of the momentum network g: theta_g <- m theta_g + (1 - m) theta_f each step", minimum=0.0, maximum=1.0, advanced=True)
    instance_weight: float = param(1.0, "weight of the single-object Dice term", minimum=0.0, maximum=100.0, advanced=True)
    unlabelled_push_weight: float = param(1.0, "weight of the push of objects away from unlabelled pixels", minimum=0.0, maximum=100.0, advanced=True)
    consistency_weight: float = param(1.0, "weight of the f/g embedding consistency on the unlabelled region", minimum=0.0, maximum=100.0, advanced=True)
    foreground_weight: float = param(1.0, "weight of the foreground head's cross-entropy (0: no head)", minimum=0.0, maximum=100.0, advanced=True)
    unlabelled_foreground_weight: float = param(0.5, "labels without background: weight of the unlabelled pixels as background for the foreground head, relative to the objects (positive-unlabelled learning)", minimum=0.0, maximum=10.0, advanced=True)
    consistency_anchors: int = param(8, "most anchors per crop covering the unlabelled region in the consistency term", minimum=1, maximum=256, advanced=True)
    intensity_scale: float = param(0.2, "augmentation: intensities multiplied by a factor between 1/(1+s) and 1+s (training views and test-time draws)", minimum=0.0, maximum=4.0, advanced=True)
    intensity_shift: float = param(0.1, "augmentation: a shift between -s and s added to the normalised intensities", minimum=0.0, maximum=4.0, advanced=True)
    noise: float = param(0.03, "augmentation: sigma of Gaussian noise added to each training view", minimum=0.0, maximum=4.0, advanced=True)
    depth: int = param(2, "U-Net levels; each adds a 2x downsampling and widens the field of view (depth 2: 41 px, 3: 93 px)", minimum=1, maximum=5, advanced=True)
    num_fmaps: int = param(16, "feature maps of the U-Net's first level", minimum=2, maximum=256, advanced=True)
    fmap_inc_factor: int = param(2, "feature map growth per U-Net level", minimum=1, maximum=8, advanced=True)


@dataclass
class Settings:
    """How SPOCO's embeddings become objects; changing them never reruns the network."""

    partition: str = param("mutex", "mutex: mutex watershed on affinities of the embeddings for the paper's offsets (fast); meanshift: mean-shift clustering of the embeddings; hdbscan: density clustering of the embeddings (slow; noise becomes background)", choices=("mutex", "meanshift", "hdbscan"))
    bias: float = param(0.5, "mutex: affinity below which two pixels repel; higher splits more", minimum=0.0, maximum=1.0)
    bandwidth: float = param(0.0, "meanshift: kernel radius in embedding units; 0: delta_v", unit="embedding units", minimum=0.0, maximum=100.0)
    background: str = param("auto", "auto: the foreground head where the model learned one (background was labelled), else the largest segment; foreground: the head's probability; largest: the largest segment is the background (one cluster of embeddings); none: keep every segment", choices=("auto", "foreground", "largest", "none"))
    foreground_threshold: float = param(0.0, "with a foreground head: pixels scoring below this are background; 0: automatic (0.5 when background was labelled; else segments whose mean score is below half Otsu's threshold of the image's scores)", minimum=0.0, maximum=1.0)
    hdbscan_points: int = param(20000, "hdbscan: cluster at most this many pixels, the others join their nearest clustered pixel (HDBSCAN's time grows faster than the pixel count)", unit="px", minimum=100, maximum=100_000_000)
    min_size: int = param(0, "smallest object kept; 0: a quarter of the median area of the labelled training objects", unit="px", minimum=0)


def spoco_terms(f_emb: torch.Tensor, g_emb: torch.Tensor, codes: np.ndarray, config: Config,
                rng: np.random.Generator) -> dict:
    """The loss terms of one crop.

    Parameters
    ----------
    f_emb, g_emb : Tensor, shape (D, Y, X)
        Embeddings of the crop by f and by g, in the crop's own orientation.
    codes : ndarray of int, shape (Y, X)
        From :func:`encode_labels`.
    config : Config
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
        From :func:`encode_labels`.
    unlabelled_weight : float
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


def combine_terms(terms: dict, config: Config) -> torch.Tensor:
    """The weighted sum of :func:`spoco_terms` (pull and push weigh 1, as in the paper)."""
    return (terms["pull"] + terms["push"] + config.instance_weight * terms["instance"]
            + config.unlabelled_push_weight * terms["unlabelled_push"] + config.consistency_weight * terms["consistency"])


# -- network ------------------------------------------------------------------------------


class SpocoNet(nn.Module):
    """The embedding network ``f`` and its momentum copy ``g``; calls run ``f``.

    ``f`` has ``embedding_dims + 1`` outputs: the embedding, then the logit of
    the foreground head, trained only where background is known.

    ``g`` has no gradient; only :meth:`update_momentum`, called once per
    training step by the loss, changes it. Both are in the state dict, so a
    saved model keeps ``g`` for further training.
    """

    def __init__(self, f: UNet):
        super().__init__()
        self.f = f
        self.g = copy.deepcopy(f)
        for p in self.g.parameters():
            p.requires_grad_(False)
        self.context, self.align = f.context, f.align
        # Facts about the training labels that post-processing needs, as
        # buffers so that they are saved with the weights: the median pixel
        # count of the labelled objects (0: not known yet), and what the
        # foreground head (f's last output channel) learned from: 0 nothing,
        # FROM_UNLABELLED or FROM_BACKGROUND.
        self.register_buffer("object_area", torch.zeros(()))
        self.register_buffer("foreground_kind", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)

    def forward_same(self, x: torch.Tensor) -> torch.Tensor:
        # UNet's padding around this module's own forward, so that every
        # network pass goes through forward (where tests count them).
        return UNet.forward_same(self, x)

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``theta_g <- m theta_g + (1 - m) theta_f`` for every parameter and buffer."""
        for pg, pf in zip(self.g.state_dict().values(), self.f.state_dict().values()):
            if pg.is_floating_point():
                pg.mul_(m).add_(pf.detach(), alpha=1.0 - m)
            else:
                pg.copy_(pf)


def _dihedral(x, k: int, flip: bool, inverse: bool = False, vectors: bool = False):
    """Turn ``x`` (tensor or array, last two axes spatial) by ``k`` quarter turns then mirror it, or undo that.

    With ``vectors``, channels 0 and 1 of ``x`` (shape (C, Y, X)) are a
    field of (y, x) displacements, which turn and mirror with the image.
    """
    is_tensor = isinstance(x, torch.Tensor)
    rot = (lambda a, n: torch.rot90(a, n, dims=(-2, -1))) if is_tensor else (lambda a, n: np.rot90(a, n, axes=(-2, -1)))
    mirror = (lambda a: torch.flip(a, dims=(-1,))) if is_tensor else (lambda a: a[..., ::-1])
    if inverse:
        x = rot(mirror(x) if flip else x, -k)
    else:
        x = rot(x, k)
        x = mirror(x) if flip else x
    if not vectors:
        return x
    vy, vx = x[0], x[1]
    # A quarter turn maps a displacement (dy, dx) to (-dx, dy); a mirror negates dx.
    if inverse:
        vx = -vx if flip else vx
        for _ in range(k % 4):
            vy, vx = vx, -vy
    else:
        for _ in range(k % 4):
            vy, vx = -vx, vy
        vx = -vx if flip else vx
    stack = torch.stack if is_tensor else np.stack
    return (torch.cat if is_tensor else np.concatenate)([stack([vy, vx]), x[2:]])


def add_coordinates(embeddings, scale: float, origin=(0, 0)):
    """Embeddings with ``scale`` times each pixel's (y, x) added to dimensions 0 and 1 (tensor or array, (D, Y, X))."""
    if not scale:
        return embeddings
    h, w = embeddings.shape[-2:]
    if isinstance(embeddings, torch.Tensor):
        ys = torch.arange(h, dtype=embeddings.dtype, device=embeddings.device)[:, None] + origin[0]
        xs = torch.arange(w, dtype=embeddings.dtype, device=embeddings.device)[None, :] + origin[1]
        return torch.cat([(embeddings[0] + scale * ys)[None], (embeddings[1] + scale * xs)[None], embeddings[2:]])
    out = np.array(embeddings, dtype=np.float32, copy=True)
    out[0] += np.float32(scale) * (np.arange(h, dtype=np.float32)[:, None] + origin[0])
    out[1] += np.float32(scale) * (np.arange(w, dtype=np.float32)[None, :] + origin[1])
    return out


def _crop_side(config: Config, net: UNet) -> int:
    side = max(config.crop_size, 2 * net.context + 8)
    return -(-side // net.align) * net.align


class SpocoModel(SegmentationModel):
    """A trained SPOCO embedding network plus its post-processing settings."""

    method = "spoco"
    config_class = Config
    settings_class = Settings
    learns_from_reviewed_objects = True

    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        # Depth 2 of two 3x3 valid convolutions a level (41 px field of view),
        # enough for nuclei of about 30 px; g starts as a copy of f.
        return SpocoNet(UNet(in_channels, config.embedding_dims + 1, config.num_fmaps, config.fmap_inc_factor, depth=config.depth,
                             kernels=(3, 3)))

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        """``loss_fn(net, rng)`` for :func:`probseg.nn.training.train_loop`.

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
            return torch.stack([_dihedral(x, k, f) for x, (k, f) in zip(out, geometry)]), geometry

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
                of = _dihedral(out_f[i], *geo_f[i], inverse=True, vectors=spatial)
                eg = add_coordinates(_dihedral(emb_g[i], *geo_g[i], inverse=True, vectors=spatial), config.spatial)
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

    # -- network ------------------------------------------------------------------------
    def _embed(self, plane: np.ndarray, callbacks: Callbacks) -> np.ndarray:
        context = self.net.context
        return tiled_apply(self.net.forward_same, np.ascontiguousarray(plane), self.config.embedding_dims + 1,
                           tile=self.tile_size, overlap=2 * context + 8, margin=context, align=self.net.align,
                           device=self.device, callbacks=callbacks)

    def raw(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """``"embeddings"`` ``(draws, D, Y, X)``: the plane as it is, then one test-time augmentation per sample.

        A model whose foreground head learned from known background adds
        ``"foreground"`` ``(draws, Y, X)``, the head's probability.

        Draw k >= 1 is dihedral transform ``k mod 8`` (quarter turns ``k mod
        4``, mirrored when ``(k // 4)`` is odd) with an intensity scale and
        shift drawn from ``rng`` in order, so the first draws do not depend
        on ``n_samples``; its embeddings are turned back onto the plane.
        """
        n_draws = 1 if n_samples == 1 else 1 + n_samples
        return self._stack_draws(self.raw_draws(plane, n_samples, rng, callbacks), n_draws)

    def raw_draws(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks):
        """:meth:`raw` one draw at a time: ``"embeddings"`` ``(1, D, Y, X)`` (and ``"foreground"`` ``(1, Y, X)``)."""
        n_draws = 1 if n_samples == 1 else 1 + n_samples
        low, high = 1.0 / (1.0 + self.config.intensity_scale), 1.0 + self.config.intensity_scale
        for k in range(n_draws):
            sub = Callbacks(
                on_progress=lambda done, total, _l, k=k: callbacks.progress(k * total + done, n_draws * total),
                should_stop=callbacks.should_stop, on_message=callbacks.on_message,
            )
            spatial = self.config.spatial > 0
            if k == 0:
                emb = self._embed(plane, sub)
            else:
                turns, flip = k % 4, (k // 4) % 2 == 1
                scale = float(rng.uniform(low, high))
                shift = float(rng.uniform(-self.config.intensity_shift, self.config.intensity_shift))
                seen = _dihedral(plane * np.float32(scale) + np.float32(shift), turns, flip)
                emb = np.ascontiguousarray(_dihedral(self._embed(seen, sub), turns, flip, inverse=True, vectors=spatial))
            dims = self.config.embedding_dims
            draw = {"embeddings": add_coordinates(emb[:dims], self.config.spatial)[None].astype(np.float32, copy=False)}
            if self.has_foreground():
                draw["foreground"] = (1.0 / (1.0 + np.exp(-emb[None, -1]))).astype(np.float32)
            yield draw
            del emb, draw

    # -- post-processing ----------------------------------------------------------------
    def min_size(self, settings: Settings) -> int:
        """Smallest object kept, in pixels: the setting, or a quarter of the labelled objects' median area.

        Background that the embedding has not yet gathered into one cluster
        breaks into fragments; sizing the filter from the objects the user
        labelled removes them without asking for an object size.
        """
        if settings.min_size:
            return settings.min_size
        area = self.object_area()
        return max(1, int(0.25 * area)) if area > 0 else 20

    @property
    def raw_maps(self) -> tuple:
        """``"embeddings"``, and ``"foreground"`` for a model with a foreground head (known once trained)."""
        return ("embeddings", "foreground") if self.has_foreground() else ("embeddings",)

    def foreground_kind(self) -> int:
        """0: no foreground head; FROM_UNLABELLED or FROM_BACKGROUND: what it learned from."""
        if self.net is not None:
            return int(self.net.foreground_kind)
        return int(self.learned_record.get("foreground_kind", 0))

    def object_area(self) -> float:
        """Median pixel count of the labelled training objects; 0 when unknown."""
        if self.net is not None:
            return float(self.net.object_area)
        return float(self.learned_record.get("object_area", 0.0))

    def has_foreground(self) -> bool:
        """Whether the model has a trained foreground head."""
        return self.foreground_kind() > 0

    def learned(self) -> dict:
        """The object area and whether there is a foreground head, for post-processing without weights."""
        return {"object_area": self.object_area(), "foreground_kind": self.foreground_kind()}

    def foreground_cut(self, foreground: np.ndarray, settings: Settings) -> float:
        """The foreground score from which a pixel (known background) or a segment (otherwise) is foreground.

        The setting, or by default 0.5 for a head that learned from known
        background, whose probability means what it says, and half Otsu's
        threshold of this image's scores for one that learned from objects
        against unlabelled pixels: its scores rank pixels, but their scale
        depends on the fraction of the objects labelled, and unlabelled
        objects score between background and labelled ones. (On the nuclei
        sample with a quarter of the objects, segments cut at 0.1 to 0.2
        all scored alike; Otsu's threshold was 0.37 to 0.38, and cutting
        there lost dim nuclei.)
        """
        if settings.foreground_threshold > 0:
            return settings.foreground_threshold
        if self.foreground_kind() == FROM_BACKGROUND or np.ptp(foreground) < 1e-3:
            return 0.5
        return 0.5 * float(threshold_otsu(foreground))

    def keep_foreground(self, labels: np.ndarray, foreground: np.ndarray, settings: Settings) -> np.ndarray:
        """``labels`` with background set to 0, by the foreground head's scores.

        A head that learned from known background decides pixel by pixel.
        A positive-unlabelled head decides segment by segment, on each
        segment's mean score: single pixels of such a head are noisy, but
        an object segment averages them, and its outline then comes from
        the embedding rather than from the score.
        """
        cut = self.foreground_cut(foreground, settings)
        if self.foreground_kind() == FROM_BACKGROUND or settings.foreground_threshold > 0:
            return np.where(foreground >= cut, labels, 0)
        counts = np.bincount(labels.ravel())
        sums = np.bincount(labels.ravel(), weights=foreground.ravel(), minlength=len(counts))
        keep = sums >= cut * np.maximum(counts, 1)
        keep[0] = False
        return np.where(keep[labels], labels, 0)

    def partition(self, embeddings: np.ndarray, settings: Settings, foreground: np.ndarray | None = None) -> np.ndarray:
        """Labels ``(Y, X)`` int32 of one draw's ``(D, Y, X)`` embeddings and, if any, its foreground probability."""
        everywhere = np.ones(embeddings.shape[1:], dtype=bool)
        if settings.partition == "meanshift":
            labels = meanshift_instances(embeddings, everywhere, settings.bandwidth or self.config.delta_v)
        elif settings.partition == "hdbscan":
            labels = hdbscan_instances(embeddings, everywhere, max(2, self.min_size(settings)),
                                       max_points=settings.hdbscan_points)
        else:
            # SPOCO's kernel: affinity 0 from 2 delta_d, where the push stops.
            affinities = embedding_affinities(embeddings, DEFAULT_OFFSETS, self.config.delta_d, kernel="spoco")
            labels = mutex_watershed(affinities, DEFAULT_OFFSETS, bias=settings.bias)
        background = settings.background
        if background == "auto":
            background = "foreground" if foreground is not None else "largest"
        if background == "foreground":
            if foreground is None:
                raise InputError("this model has no foreground head (its labels marked no background); "
                                 "use background 'largest' or 'none'")
            labels = self.keep_foreground(labels, foreground, settings)
        elif background == "largest" and labels.max() > 0:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            labels = np.where(labels == sizes.argmax(), 0, labels)
        return split_and_filter(labels, self.min_size(settings))

    def instances(self, raw: dict, settings: Settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        emb = raw["embeddings"]
        fg = raw.get("foreground")
        segmentation = self.partition(emb[0], settings, None if fg is None else fg[0])
        if len(emb) == 1:
            return segmentation, segmentation[None]
        samples = np.empty((min(n_samples, len(emb) - 1),) + segmentation.shape, dtype=np.int32)
        for k in range(len(samples)):
            samples[k] = self.partition(emb[1 + k], settings, None if fg is None else fg[1 + k])
        return segmentation, samples

    def draws_independent(self, settings: Settings) -> bool:
        """Every draw is partitioned alone."""
        return True

    def tune_grid(self) -> dict:
        area = self.object_area()
        sizes = sorted({max(1, int(f * area)) for f in (0.1, 0.25, 0.5)}) if area > 0 else [10, 20, 40]
        if self.settings.partition == "meanshift":
            d = self.config.delta_v
            return {"bandwidth": [0.5 * d, d, 1.5 * d], "min_size": sizes}
        return {"bias": [0.3, 0.4, 0.5, 0.6], "min_size": sizes}


def _register():
    from probseg.engine.registry import MethodInfo

    return MethodInfo(
        name="spoco",
        title="SPOCO",
        summary="embeddings learned from a few labelled objects; unlabelled pixels are not background",
        reference="Wolny, Yu, Pape, Kreshuk. Sparse Object-level Supervision for Instance Segmentation with Pixel Embeddings. CVPR 2022",
        labels="required",
        model_class=SpocoModel,
    )


METHOD = _register()
