"""Concrete-Dropout embeddings: a Bayesian U-Net that learns instances from labels.

A small 2-D U-Net of valid convolutions predicts, for every pixel, an
embedding of ``embedding_dims`` numbers and three class scores: background,
foreground, and overlap (object pixels within ``overlap_width`` px of another
object). Dropout turns it into a probabilistic model, for proposal-free
instance segmentation with uncertainty as in Rumberger, Mais and Kainmueller
(2020):

* **Concrete Dropout** (Gal, Hron, Kendall 2017) in front of every 3x3
  convolution but the first, and of the 1x1 output layer, drops whole
  feature maps with a rate ``p`` that is learned, through the Concrete
  relaxation of the Bernoulli mask, under the variational regulariser
  ``(iota^2 (1 - p) / 2 |M|^2 - zeta F H(p)) / N`` per layer. The entropy
  term pulls ``p`` towards 0.5 and the data pull it down as far as the
  labels justify, so the rates settle where the data leave the model unsure.
* **Discriminative loss** (De Brabandere, Neven, Van Gool 2017): every pixel
  is pulled to its object's mean embedding (plain squared distance, no
  hinge), means closer than ``delta_d`` are pushed apart (hinged), and the
  means' norms are kept small. A weighted cross-entropy trains the classes.
  Pixels labelled ``ignore_id`` take part in no term, so partly annotated
  images can be used.

Inference (:meth:`ConcreteDropoutModel.raw`): one pass with dropout off gives
the segmentation; with more than one sample, every sample is a pass with
dropout on (Monte Carlo dropout). Each pass is partitioned alone
(:meth:`ConcreteDropoutModel.instances`, no network), by one of:

* ``"watershed"`` (default): seeds are the connected cores where the
  foreground class is likely, flooded over the object pixels;
* ``"meanshift"``: mean-shift over the embeddings of pixels classed
  foreground or overlap, then each object is joined with the overlap map and
  keeps the connected component that best matches it, so pixels between
  touching objects go to a neighbour (Rumberger et al.).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from torch import nn

from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.core.errors import InputError
from probseg.nn.layers import ConcreteDropout, dropout_regularization, dropout_sampling
from probseg.nn.losses import discriminative_loss
from probseg.engine.model import SegmentationModel
from probseg.nn.unet import UNet
from probseg.partition import (
    DEFAULT_OFFSETS,
    embedding_affinities,
    meanshift_instances,
    mutex_watershed,
    seeded_watershed,
    split_and_filter,
)
from probseg.nn.tiling import tiled_apply
from probseg.nn.trainset import TrainingSet, random_crops

N_CLASSES = 3  # background, foreground, overlap
CONTEXT = 20  # px the depth-2 U-Net of 3x3 valid convolutions loses on each side
ALIGN = 4  # two 2x poolings: sizes must be multiples of 4


@dataclass
class Config(TrainingConfig):
    """Concrete-Dropout hyperparameters; ``ignore_id`` marks unannotated pixels.

    ``ignore_id``: label id of pixels that are not annotated (partly labelled
    images). They are left out of every loss term and of the overlap class;
    -1 means that every pixel is annotated. Label images cannot hold negative
    ids, so pick an id no object uses, e.g. 65535 in a uint16 image.
    """

    # CPU-friendly defaults; on a GPU raise batch_size, crop_size and num_fmaps.
    batch_size: int = param(4, "crops per iteration", unit="crops", minimum=1, maximum=256, advanced=True)
    # Measured on the nuclei sample (benchmarks/accuracy.py): 1600 steps of 128 px
    # crops at 1e-3 fit in about 4 minutes on two CPU cores.
    steps: int = param(1600, "training iterations", unit="steps", minimum=1, maximum=1_000_000)
    crop_size: int = param(128, "side of the random training crops; the loss sees the centre, 40 px smaller", unit="px", minimum=48, maximum=2048, advanced=True)
    learning_rate: float = param(1e-3, "AdamW learning rate", minimum=1e-7, maximum=1.0, advanced=True)
    intensity_scale: float = param(0.25, "augmentation: each crop is multiplied by a random factor between 1/(1+s) and 1+s", minimum=0.0, maximum=4.0, advanced=True)
    ignore_id: int = param(-1, "label id of unannotated pixels (e.g. 65535), left out of every loss term; -1: none", minimum=-1)
    embedding_dims: int = param(4, "dimensions of the per-pixel embedding", minimum=1, maximum=32, advanced=True)
    delta_d: float = param(1.0, "object mean embeddings closer than this are pushed apart (hinge of the distance term)", minimum=0.1, maximum=100.0, advanced=True)
    center_weight: float = param(0.001, "weight of the norm of the object means in the loss", minimum=0.0, maximum=1.0, advanced=True)
    overlap_width: int = param(2, "object pixels this close to another object form the overlap class", unit="px", minimum=1, maximum=10, advanced=True)
    background_weight: float = param(1.0, "cross-entropy weight of the background class", minimum=0.0, maximum=100.0, advanced=True)
    foreground_weight: float = param(1.0, "cross-entropy weight of the foreground class", minimum=0.0, maximum=100.0, advanced=True)
    overlap_weight: float = param(2.0, "cross-entropy weight of the overlap class (rare, so weighted up)", minimum=0.0, maximum=100.0, advanced=True)
    dropout_rate: float = param(0.05, "initial dropout rate of every layer; training learns each layer's own", minimum=0.01, maximum=0.9, advanced=True)
    temperature: float = param(0.1, "temperature of the Concrete relaxation of the dropout masks", minimum=0.01, maximum=1.0, advanced=True)
    weight_regularizer: float = param(1e-6, "iota^2, prior length-scale squared: weight of (1-p)/2 |M|^2 per layer", minimum=0.0, maximum=1.0, advanced=True)
    dropout_regularizer: float = param(1.0, "zeta, weight of the entropy term -F H(p) per layer that pulls rates to 0.5", minimum=0.0, maximum=1000.0, advanced=True)
    dataset_size: int = param(0, "N dividing both regularisers; 0: the number of annotated training pixels", unit="px", minimum=0, advanced=True)
    num_fmaps: int = param(16, "feature maps of the U-Net's first level", minimum=2, maximum=256, advanced=True)
    fmap_inc_factor: int = param(2, "feature map growth per U-Net level", minimum=1, maximum=8, advanced=True)


@dataclass
class Settings:
    """How the network's output becomes objects; changing them never reruns the network."""

    partition: str = param("watershed", "watershed: flood from seeds at the centres of the foreground-class cores over the object pixels; meanshift: cluster the embeddings (Rumberger et al.); mutex: mutex watershed on affinities from the embeddings", choices=("watershed", "meanshift", "mutex"))
    seed_threshold: float = param(0.5, "watershed: probability of the foreground (core) class above which a pixel is an object's core", minimum=0.01, maximum=0.99)
    mask_threshold: float = param(0.5, "watershed and mutex: probability of background below which a pixel belongs to an object", minimum=0.01, maximum=0.99)
    min_distance: int = param(6, "watershed: smallest distance between two objects' seeds (peaks of the cores' distance transform)", unit="px", minimum=1, maximum=200)
    smoothing: float = param(2.0, "watershed: Gaussian sigma smoothing the cores' distance transform", unit="px", minimum=0.0, maximum=20.0)
    bandwidth: float = param(0.0, "meanshift and mutex: distance scale in embedding units (the loss keeps objects delta_d apart); 0: half of delta_d", unit="embedding units", minimum=0.0, maximum=100.0)
    bias: float = param(0.5, "mutex: affinity below which two pixels repel; higher splits more", minimum=0.0, maximum=1.0)
    min_size: int = param(40, "smallest object kept", unit="px", minimum=0)


def _conv(config: Config):
    def conv(cin: int, cout: int, kernel: int, first: bool) -> nn.Module:
        layer = nn.Conv2d(cin, cout, kernel)
        # Dropping one of the image's own channels would blind the network, so
        # the very first convolution sees the image as it is.
        return layer if first else ConcreteDropout(layer, cin, config.dropout_rate, config.temperature)

    return conv


# -- loss -----------------------------------------------------------------------------------


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


def segmentation_loss(output: torch.Tensor, labels, config: Config) -> torch.Tensor:
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


def _crop_side(config: Config) -> int:
    return -(-max(config.crop_size, 2 * CONTEXT + 8) // ALIGN) * ALIGN



# -- post-processing ------------------------------------------------------------------------


def grow_into_overlap(labels: np.ndarray, overlap: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Join every object with the overlap map and keep its best component.

    As in Rumberger et al.: each object's mask is united with the overlap
    map, and of the connected components of the union the one with the
    highest IoU with the object is kept. Overlap pixels so claimed by
    several objects keep their own object if it is among them, otherwise
    they go to the claimant whose mean embedding is nearest.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Objects, 0 is background.
    overlap : ndarray of bool, shape (Y, X)
        Pixels of the overlap class.
    embeddings : ndarray, shape (D, Y, X)

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    labels = np.asarray(labels, dtype=np.int32)
    n = int(labels.max())
    if n == 0 or not overlap.any():
        return labels.copy()
    parts, n_parts = ndi.label(overlap)
    # Which objects touch (or contain) which overlap component, through 4-neighbours.
    pairs = [np.stack([parts[(parts > 0) & (labels > 0)], labels[(parts > 0) & (labels > 0)]], 1)]
    for axis in (0, 1):
        for a, b in ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))):
            sa, sb = [slice(None)] * 2, [slice(None)] * 2
            sa[axis], sb[axis] = a, b
            pa, lb = parts[tuple(sa)], labels[tuple(sb)]
            hit = (pa > 0) & (lb > 0)
            pairs.append(np.stack([pa[hit], lb[hit]], 1))
    pairs = np.unique(np.concatenate(pairs), axis=0)
    touching = [[] for _ in range(n + 1)]
    for part, obj in pairs:
        touching[obj].append(part)
    part_boxes = ndi.find_objects(parts)
    boxes = ndi.find_objects(labels)
    out = labels.copy()
    claim_pixels, claim_objects = [], []
    for obj in range(1, n + 1):
        if boxes[obj - 1] is None:
            continue
        box = [boxes[obj - 1]] + [part_boxes[p - 1] for p in touching[obj]]
        window = tuple(slice(min(s[i].start for s in box), max(s[i].stop for s in box)) for i in range(2))
        mine = labels[window] == obj
        union = mine | np.isin(parts[window], touching[obj])
        comps, n_comps = ndi.label(union)
        inter = np.bincount(comps[mine], minlength=n_comps + 1)[1:]
        size = np.bincount(comps.ravel(), minlength=n_comps + 1)[1:]
        best = 1 + int(np.argmax(inter / (size + mine.sum() - inter)))
        keep = comps == best
        out[window][mine & ~keep] = 0
        ys, xs = np.nonzero(keep & overlap[window])
        claim_pixels.append((ys + window[0].start) * labels.shape[1] + xs + window[1].start)
        claim_objects.append(np.full(len(ys), obj))
    if not claim_pixels:
        return out
    pixels, objects = np.concatenate(claim_pixels), np.concatenate(claim_objects)
    flat = embeddings.reshape(embeddings.shape[0], -1).astype(np.float64)
    counts = np.maximum(np.bincount(labels.ravel(), minlength=n + 1), 1)
    means = np.stack([np.bincount(labels.ravel(), f, minlength=n + 1) for f in flat], 1) / counts[:, None]
    cost = ((flat[:, pixels].T - means[objects]) ** 2).sum(axis=1)
    cost[labels.ravel()[pixels] == objects] = -1.0  # an overlap pixel's own object wins
    order = np.lexsort((cost, pixels))
    first = np.r_[True, pixels[order][1:] != pixels[order][:-1]]
    out.ravel()[pixels[order][first]] = objects[order][first]
    return out


def meanshift_partition(embeddings: np.ndarray, classes: np.ndarray, bandwidth: float, min_size: int) -> np.ndarray:
    """Rumberger et al.'s partition of one pass: mean-shift, then growth into the overlap class.

    Parameters
    ----------
    embeddings : ndarray, shape (D, Y, X)
    classes : ndarray, shape (3, Y, X)
        Probabilities of background, foreground and overlap.
    bandwidth : float
        Mean-shift bandwidth in embedding units.
    min_size : int

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    kind = classes.argmax(axis=0)
    labels = meanshift_instances(embeddings, kind > 0, bandwidth, min_size=min_size)
    return split_and_filter(grow_into_overlap(labels, kind == 2, embeddings), min_size)


def mutex_partition(embeddings: np.ndarray, classes: np.ndarray, delta: float, bias: float, mask_threshold: float,
                    min_size: int) -> np.ndarray:
    """Mutex watershed of one pass on affinities from the embeddings, over the pixels not likely background.

    Parameters
    ----------
    embeddings : ndarray, shape (D, Y, X)
    classes : ndarray, shape (3, Y, X)
        Probabilities of background, foreground and overlap.
    delta : float
        Embedding distance at which the affinity is 0.5.
    bias : float
        See :func:`probseg.partition.mutex_watershed`.
    mask_threshold : float
        Pixels whose background probability is below this are partitioned.
    min_size : int

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    affinities = embedding_affinities(embeddings, DEFAULT_OFFSETS, delta)
    labels = mutex_watershed(affinities, DEFAULT_OFFSETS, bias=bias, mask=classes[0] < mask_threshold)
    return split_and_filter(labels, min_size)


def watershed_partition(classes: np.ndarray, seed_threshold: float, mask_threshold: float, min_distance: int,
                        smoothing: float, min_size: int) -> np.ndarray:
    """Seeded watershed of one pass: one seed per core of the foreground class, flooded over the object pixels.

    The overlap class marks where touching objects meet, so the cores (pixels
    where the foreground class is likely) come apart there; the peaks of their
    smoothed distance transform (at least ``min_distance`` apart within a
    core) split what the band leaves joined at a neck. The seeds grow over
    every pixel not likely background, deepest first.

    Parameters
    ----------
    classes : ndarray, shape (3, Y, X)
        Probabilities of background, foreground and overlap.
    seed_threshold : float
        Foreground-class probability above which a pixel is core.
    mask_threshold : float
        Pixels whose background probability is below this belong to an object.
    min_distance : int
        Smallest distance between two seeds of one core, in px.
    smoothing : float
        Gaussian sigma of the distance transform, in px (0: none).
    min_size : int

    Returns
    -------
    ndarray of int32, shape (Y, X)
    """
    core = classes[1] > seed_threshold
    depth = ndi.distance_transform_edt(core)
    if smoothing > 0:
        depth = ndi.gaussian_filter(depth, smoothing)
    peaks = peak_local_max(depth, min_distance=int(min_distance), labels=ndi.label(core)[0], exclude_border=False)
    seeds = np.zeros(core.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    markers = ndi.label(seeds, structure=np.ones((3, 3), dtype=bool))[0]  # a plateau's peaks are one seed
    return seeded_watershed(1.0 - classes[0], threshold=1.0 - mask_threshold, seeds=markers, distance=depth, min_size=min_size)


# -- model ----------------------------------------------------------------------------------


def _encode(labels: np.ndarray, ignore_id: int) -> np.ndarray:
    # Shift ids by one so that the zero padding random_crops adds around
    # small planes reads as "not annotated", like ignore_id pixels.
    coded = labels.astype(np.int64) + 1
    coded[labels == ignore_id] = 0
    return coded


class ConcreteDropoutModel(SegmentationModel):
    """A trained Concrete-Dropout U-Net plus its post-processing settings."""

    method = "concrete-dropout"
    config_class = Config
    settings_class = Settings
    raw_maps = ("embeddings", "classes")

    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        # Depth-2 U-Net of two 3x3 valid convolutions a level (41 px field of
        # view), Concrete Dropout in front of every convolution but the first
        # and of the 1x1 output layer.
        conv = _conv(config)
        return UNet(
            in_channels, config.embedding_dims + N_CLASSES, config.num_fmaps, config.fmap_inc_factor, depth=2,
            kernels=(3, 3), conv=conv, head=lambda cin, cout: conv(cin, cout, 1, False),
        )

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        """``loss_fn(net, rng)`` for :func:`probseg.nn.training.train_loop`.

        Raises
        ------
        InputError
            For images without labels, ``ignore_id`` 0, or labels with no
            annotated object.
        """
        if config.ignore_id == 0:
            raise InputError("ignore_id 0 is the background; use -1 for none or an id no object uses, e.g. 65535")
        if any(lab is None for lab in ts.labels):
            raise InputError("Concrete-Dropout embeddings learn from labels; give a labels image for every training image")
        coded = [_encode(lab, config.ignore_id) for lab in ts.labels]
        if not any((c > 1).any() for c in coded):
            raise InputError("the labels hold no annotated object; label at least one object (ids 1, 2, ...)")
        scaled = TrainingSet(ts.planes, coded, ts.in_channels, ts.normalization, ts.notices)
        n = config.dataset_size or int(sum((c > 0).sum() for c in coded))
        size = _crop_side(config)

        low, high = 1.0 / (1.0 + config.intensity_scale), 1.0 + config.intensity_scale

        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, codes = random_crops(scaled, size, config.batch_size, rng, with_labels=True)
            if config.intensity_scale > 0:
                # Nuclei differ in brightness from image to image; flips and turns come from random_crops.
                images = images * torch.from_numpy(rng.uniform(low, high, (len(images), 1, 1, 1)).astype(np.float32))
            data = segmentation_loss(net(images.to(device)), codes - 1, config)
            return data + dropout_regularization(net, config.weight_regularizer, config.dropout_regularizer) / n

        return loss_fn

    # -- network ------------------------------------------------------------------------
    def maps(self, plane: np.ndarray, seed: int | None = None, callbacks: Callbacks | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Network output ``(D + 3, Y, X)`` for a normalised ``(C, Y, X)`` plane: embeddings, then class scores.

        ``seed`` None runs with dropout off; an int draws one dropout mask
        from it (the same for every tile, so tiling leaves no seams). ``out``,
        a float32 ``(D + 3, Y, X)`` array, receives the result when given.
        """
        generator = None if seed is None else torch.Generator(device=self.device)

        def forward(window: torch.Tensor) -> torch.Tensor:
            if generator is not None:
                generator.manual_seed(seed)
            return self.net.forward_same(window)

        context = self.net.context
        with dropout_sampling(self.net, seed is not None, generator):
            return tiled_apply(
                forward, plane, self.config.embedding_dims + N_CLASSES, tile=self.tile_size, overlap=2 * context + 8,
                margin=context, align=self.net.align, device=self.device, callbacks=callbacks, out=out,
            )

    def raw(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """``"embeddings"`` ``(draws, D, Y, X)`` and ``"classes"`` ``(draws, 3, Y, X)`` probabilities.

        Draw 0 has dropout off; with more than one sample, draws 1..n are
        Monte-Carlo dropout passes, one per sample, each from its own seed
        (drawn in order, so the first draws do not depend on ``n_samples``).
        Each pass is written into the preallocated stacks as it finishes.
        """
        passes = 1 if n_samples == 1 else 1 + n_samples
        return self._stack_draws(self.raw_draws(plane, n_samples, rng, callbacks), passes)

    def raw_draws(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks):
        """:meth:`raw` one pass at a time: ``"embeddings"`` ``(1, D, Y, X)`` and ``"classes"`` ``(1, 3, Y, X)``."""
        passes = 1 if n_samples == 1 else 1 + n_samples
        seeds = [None] + [int(rng.integers(2**62)) for _ in range(passes - 1)]

        def part(k: int) -> Callbacks:
            return Callbacks(
                on_progress=lambda done, total, _l: callbacks.progress(k * total + done, passes * total),
                should_stop=callbacks.should_stop, on_message=callbacks.on_message,
            )

        d = self.config.embedding_dims
        shape = plane.shape[1:]
        for k, s in enumerate(seeds):
            # A fresh array per pass (a caller may keep one pass while the
            # next is made); both maps are views of it, the class scores
            # turned into probabilities in place.
            out = self.maps(plane, s, part(k), out=np.empty((d + N_CLASSES,) + shape, dtype=np.float32))
            scores = torch.from_numpy(out[d:])
            scores.copy_(torch.softmax(scores, dim=0))
            yield {"embeddings": out[None, :d], "classes": out[None, d:]}
            del out, scores

    # -- post-processing ----------------------------------------------------------------
    def bandwidth(self, settings: Settings) -> float:
        """Mean-shift bandwidth in embedding units."""
        return settings.bandwidth or 0.5 * self.config.delta_d

    def partition(self, embeddings: np.ndarray, classes: np.ndarray, settings: Settings) -> np.ndarray:
        """Labels ``(Y, X)`` int32 of one pass: ``(D, Y, X)`` embeddings and ``(3, Y, X)`` class probabilities."""
        if settings.partition == "meanshift":
            return meanshift_partition(embeddings, classes, self.bandwidth(settings), settings.min_size)
        if settings.partition == "mutex":
            return mutex_partition(embeddings, classes, self.bandwidth(settings), settings.bias, settings.mask_threshold,
                                   settings.min_size)
        return watershed_partition(classes, settings.seed_threshold, settings.mask_threshold, settings.min_distance,
                                   settings.smoothing, settings.min_size)

    def instances(self, raw: dict, settings: Settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        emb, cls = raw["embeddings"], raw["classes"]
        segmentation = self.partition(emb[0], cls[0], settings)
        if len(emb) == 1:
            return segmentation, segmentation[None]
        # Filled draw by draw: a list of draws and its stack would hold them twice.
        samples = np.empty((min(n_samples, len(emb) - 1),) + segmentation.shape, dtype=np.int32)
        for k in range(len(samples)):
            samples[k] = self.partition(emb[1 + k], cls[1 + k], settings)
        return segmentation, samples

    def draws_independent(self, settings: Settings) -> bool:
        """Every pass is partitioned alone."""
        return True

    def uncertainty(self, samples, agglomeration) -> np.ndarray:
        """The Bernoulli entropy of the agglomerated per-object probabilities, in bits, clipped at 1.

        The draws estimate each object's probability; their entropy is the
        uncertainty the proofreading queue ranks by.
        """
        return np.clip(agglomeration.entropy(), 0.0, 1.0).astype(np.float32)

    def tune_grid(self) -> dict:
        # Each partition reads its own settings; a grid over the others would repeat one result.
        if self.settings.partition == "meanshift":
            return {"bandwidth": [0.25, 0.5, 0.75, 1.0], "min_size": [20, 40]}
        if self.settings.partition == "mutex":
            return {"bias": [0.3, 0.5, 0.7], "mask_threshold": [0.4, 0.5, 0.6], "min_size": [20, 40]}
        return {
            "seed_threshold": [0.3, 0.5, 0.7],
            "mask_threshold": [0.4, 0.5, 0.6],
            "min_distance": [4, 6, 8],
            "smoothing": [1.0, 2.0],
            "min_size": [20, 40],
        }


def _register():
    from probseg.engine.registry import MethodInfo

    return MethodInfo(
        name="concrete-dropout",
        title="Concrete-Dropout embeddings",
        summary="embeddings and overlap classes learned from labels; samples from learned-rate dropout",
        reference=(
            "Gal, Hron, Kendall. Concrete Dropout. NeurIPS 2017; De Brabandere, Neven, Van Gool. Semantic Instance "
            "Segmentation with a Discriminative Loss Function. CVPR Workshops 2017; Rumberger, Mais, Kainmueller. "
            "Probabilistic Deep Learning for Instance Segmentation. ECCV Workshops 2020"
        ),
        labels="required",
        model_class=ConcreteDropoutModel,
    )


METHOD = _register()
