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

Inference: one pass with dropout off gives the segmentation; every sample is
a pass with dropout on (Monte Carlo dropout). Each pass is clustered alone:
mean-shift over the embeddings of pixels classed foreground or overlap, then
each object is joined with the overlap map and keeps the connected component
that best matches it, so pixels between touching objects go to a neighbour.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from torch import nn

from probseg.callbacks import Callbacks, ensure
from probseg.config import TrainingConfig, param
from probseg.errors import InputError
from probseg.inputs import check_labels
from probseg.metrics import f1_score
from probseg.model import PlanePrediction, SegmentationModel
from probseg.postprocess import split_and_filter
from probseg.tiling import tiled_apply
from probseg.trainset import TrainingSet, random_crops

CONTEXT = 20  # px the valid-convolution U-Net loses on each side
ALIGN = 4  # two 2x poolings: sizes and window starts must be multiples of 4
N_CLASSES = 3  # background, foreground, overlap


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
    crop_size: int = param(96, "side of the random training crops; the loss sees the centre, 40 px smaller", unit="px", minimum=48, maximum=2048, advanced=True)
    ignore_id: int = param(-1, "label id of unannotated pixels (e.g. 65535), left out of every loss term; -1: none", minimum=-1)
    embedding_dims: int = param(4, "dimensions of the per-pixel embedding", minimum=1, maximum=32, advanced=True)
    delta_d: float = param(3.0, "object mean embeddings closer than this are pushed apart (hinge of the distance term)", minimum=0.1, maximum=100.0, advanced=True)
    center_weight: float = param(0.001, "weight of the norm of the object means in the loss", minimum=0.0, maximum=1.0, advanced=True)
    overlap_width: int = param(2, "object pixels this close to another object form the overlap class", unit="px", minimum=1, maximum=10, advanced=True)
    background_weight: float = param(1.0, "cross-entropy weight of the background class", minimum=0.0, maximum=100.0, advanced=True)
    foreground_weight: float = param(1.0, "cross-entropy weight of the foreground class", minimum=0.0, maximum=100.0, advanced=True)
    overlap_weight: float = param(2.0, "cross-entropy weight of the overlap class (rare, so weighted up)", minimum=0.0, maximum=100.0, advanced=True)
    dropout_rate: float = param(0.1, "initial dropout rate of every layer; training learns each layer's own", minimum=0.01, maximum=0.9, advanced=True)
    temperature: float = param(0.1, "temperature of the Concrete relaxation of the dropout masks", minimum=0.01, maximum=1.0, advanced=True)
    weight_regularizer: float = param(1e-6, "iota^2, prior length-scale squared: weight of (1-p)/2 |M|^2 per layer", minimum=0.0, maximum=1.0, advanced=True)
    dropout_regularizer: float = param(1.0, "zeta, weight of the entropy term -F H(p) per layer that pulls rates to 0.5", minimum=0.0, maximum=1000.0, advanced=True)
    dataset_size: int = param(0, "N dividing both regularisers; 0: the number of annotated training pixels", unit="px", minimum=0, advanced=True)
    num_fmaps: int = param(16, "feature maps of the U-Net's first level", minimum=2, maximum=256, advanced=True)
    fmap_inc_factor: int = param(2, "feature map growth per U-Net level", minimum=1, maximum=8, advanced=True)
    bandwidth: float = param(0.0, "mean-shift bandwidth in embedding units; 0: half of delta_d", minimum=0.0, maximum=100.0)
    min_size: int = param(20, "smallest object kept", unit="px", minimum=0)


# -- Concrete Dropout -----------------------------------------------------------------------


class ConcreteDropout(nn.Module):
    """A layer whose input passes through spatial dropout with a learned rate.

    Whole feature maps are dropped (one mask value per sample and channel),
    so one draw is a coherent network, and every tile of an image can be
    given the same draw.

    Parameters
    ----------
    layer : nn.Module
        The layer that receives the dropped input, e.g. a convolution; its
        parameters are the ``M`` of the weight regulariser.
    in_features : int
        ``F``, the number of input feature maps, which scales the entropy term.
    init_rate : float
        Dropout rate ``p`` before training, in (0, 1).
    temperature : float
        Temperature of the Concrete relaxation; small values give nearly
        binary masks.

    Attributes
    ----------
    sample : bool or None
        None: dropout is on in ``train()`` mode and off in ``eval()`` mode.
        True or False force it on or off (see :func:`dropout_sampling`).
    generator : torch.Generator or None
        Source of the masks; None uses torch's global generator.
    """

    def __init__(self, layer: nn.Module, in_features: int, init_rate: float = 0.1, temperature: float = 0.1):
        super().__init__()
        if not 0.0 < init_rate < 1.0:
            raise InputError(f"dropout rate must lie in (0, 1), got {init_rate}")
        self.layer = layer
        self.in_features = int(in_features)
        self.temperature = float(temperature)
        self.p_logit = nn.Parameter(torch.tensor(math.log(init_rate) - math.log1p(-init_rate)))
        self.sample: bool | None = None
        self.generator: torch.Generator | None = None

    @property
    def rate(self) -> torch.Tensor:
        """The dropout rate ``p`` (a differentiable scalar)."""
        return torch.sigmoid(self.p_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.training if self.sample is None else self.sample
        return self.layer(self._drop(x) if active else x)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-7
        p = self.rate
        u = torch.rand(x.shape[:2] + (1,) * (x.ndim - 2), generator=self.generator, device=x.device)
        # Concrete relaxation of a Bernoulli(p) "drop" variable (Gal et al., eq. 5).
        logit = torch.log(p + eps) - torch.log1p(-p + eps) + torch.log(u + eps) - torch.log1p(-u + eps)
        keep = 1.0 - torch.sigmoid(logit / self.temperature)
        # Inverted dropout: the expected input is unchanged, so "off" needs no rescaling.
        return x * (keep / (1.0 - p)).to(x.dtype)

    def regularization(self, weight_regularizer: float, dropout_regularizer: float) -> torch.Tensor:
        """The layer's KL term, before division by the dataset size.

        ``iota^2 (1 - p) / 2 |M|^2 - zeta F H(p)`` with ``H(p) = -p log p -
        (1 - p) log(1 - p)``. The stored weights ``W`` act on inputs scaled
        by ``1 / (1 - p)``, so ``M = W / (1 - p)`` and the weight term is
        ``iota^2 |W|^2 / (2 (1 - p))``.
        """
        p = self.rate
        square = sum((w.float() ** 2).sum() for w in self.layer.parameters())
        entropy = -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))
        return weight_regularizer * square / (2.0 * (1.0 - p)) - dropout_regularizer * self.in_features * entropy


@contextlib.contextmanager
def dropout_sampling(net: nn.Module, enabled: bool = True, generator: torch.Generator | None = None):
    """Switch every :class:`ConcreteDropout` layer of ``net`` on or off.

    Parameters
    ----------
    net : nn.Module
    enabled : bool
        True draws masks (Monte Carlo dropout) even in ``eval()`` mode;
        False gives the deterministic network even in ``train()`` mode.
    generator : torch.Generator, optional
        Source of the masks while the context lasts, so a seed reproduces a
        draw; it must live on the network's device.

    Yields
    ------
    nn.Module
        ``net``; the layers' previous settings return on exit.
    """
    layers = [m for m in net.modules() if isinstance(m, ConcreteDropout)]
    saved = [(m.sample, m.generator) for m in layers]
    for m in layers:
        m.sample, m.generator = bool(enabled), generator
    try:
        yield net
    finally:
        for m, (sample, gen) in zip(layers, saved):
            m.sample, m.generator = sample, gen


# -- network --------------------------------------------------------------------------------


def _block(cin: int, cout: int, rate: float, temperature: float, first: bool = False) -> nn.Sequential:
    # Dropping one of the image's own channels would blind the network, so
    # the very first convolution sees the image as it is.
    conv_in = nn.Conv2d(cin, cout, 3)
    return nn.Sequential(
        conv_in if first else ConcreteDropout(conv_in, cin, rate, temperature), nn.ReLU(inplace=True),
        ConcreteDropout(nn.Conv2d(cout, cout, 3), cout, rate, temperature), nn.ReLU(inplace=True),
    )


def _center_crop(x: torch.Tensor, shape: tuple) -> torch.Tensor:
    dy = (x.shape[-2] - shape[0]) // 2
    dx = (x.shape[-1] - shape[1]) // 2
    return x[..., dy : dy + shape[0], dx : dx + shape[1]]


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    # torch's reflect padding must be smaller than the side; small planes
    # (16 px is allowed) need it in several rounds.
    while pad > 0:
        step = min(pad, x.shape[-1] - 1, x.shape[-2] - 1)
        x = F.pad(x, (step, step, step, step), mode="reflect")
        pad -= step
    return x


class DropoutUNet(nn.Module):
    """Depth-2 U-Net of valid convolutions with Concrete Dropout.

    Every level has two 3x3 convolutions; all convolutions but the first,
    and the 1x1 output layer, see their input through
    :class:`ConcreteDropout`. The field of view is 41 px; the output is the
    input minus :data:`CONTEXT` px per side.

    Parameters
    ----------
    in_channels, out_channels : int
    num_fmaps : int
        Feature maps of the first level.
    fmap_inc_factor : int
        Growth of the feature maps per level.
    init_rate, temperature : float
        See :class:`ConcreteDropout`.
    """

    def __init__(self, in_channels: int, out_channels: int, num_fmaps: int = 16, fmap_inc_factor: int = 2, init_rate: float = 0.1, temperature: float = 0.1):
        super().__init__()
        f0, f1, f2 = num_fmaps, num_fmaps * fmap_inc_factor, num_fmaps * fmap_inc_factor**2
        self.down0 = _block(in_channels, f0, init_rate, temperature, first=True)
        self.down1 = _block(f0, f1, init_rate, temperature)
        self.bottom = _block(f1, f2, init_rate, temperature)
        self.up1 = nn.ConvTranspose2d(f2, f1, 2, stride=2)
        self.out1 = _block(2 * f1, f1, init_rate, temperature)
        self.up0 = nn.ConvTranspose2d(f1, f0, 2, stride=2)
        self.out0 = _block(2 * f0, f0, init_rate, temperature)
        self.head = ConcreteDropout(nn.Conv2d(f0, out_channels, 1), f0, init_rate, temperature)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)``, H and W multiples of 4 and at least 48 -> ``(B, out, H - 40, W - 40)``."""
        s0 = self.down0(x)
        s1 = self.down1(F.max_pool2d(s0, 2))
        low = self.up1(self.bottom(F.max_pool2d(s1, 2)))
        mid = self.up0(self.out1(torch.cat([_center_crop(s1, low.shape[-2:]), low], dim=1)))
        return self.head(self.out0(torch.cat([_center_crop(s0, mid.shape[-2:]), mid], dim=1)))

    def forward_same(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for every input pixel (reflect padding supplies the context)."""
        h, w = x.shape[-2:]
        # Pad to the pooling grid first, then the context, as tiling does, so
        # whole-image and tiled results agree.
        pad_y, pad_x = (-h) % ALIGN, (-w) % ALIGN
        if pad_y or pad_x:
            x = F.pad(x, (0, pad_x, 0, pad_y), mode="reflect")
        return self(_reflect_pad(x, CONTEXT))[..., :h, :w]

    def dropout_layers(self) -> list:
        """The :class:`ConcreteDropout` layers, input to output."""
        return [m for m in self.modules() if isinstance(m, ConcreteDropout)]

    def dropout_rates(self) -> list[float]:
        """The current dropout rate of every layer, input to output."""
        return [float(m.rate.detach()) for m in self.dropout_layers()]

    def regularization(self, weight_regularizer: float, dropout_regularizer: float) -> torch.Tensor:
        """Sum of the layers' KL terms (see :meth:`ConcreteDropout.regularization`)."""
        return sum(m.regularization(weight_regularizer, dropout_regularizer) for m in self.dropout_layers())


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


def discriminative_loss(embeddings: torch.Tensor, instances: torch.Tensor, delta_d: float, center_weight: float = 0.001) -> torch.Tensor:
    """The discriminative loss of one image, without hinge on the variance term.

    Parameters
    ----------
    embeddings : Tensor, shape (D, N)
        Embeddings of the N annotated object pixels.
    instances : Tensor of int, shape (N,)
        Their object ids (any integers).
    delta_d : float
        Means of different objects closer than this are pushed apart.
    center_weight : float
        Weight of the mean norm of the object means.

    Returns
    -------
    Tensor
        ``mean_c mean_{i in c} |x_i - mu_c|^2 + mean_{c != c'} [delta_d -
        |mu_c - mu_c'|]_+^2 + center_weight mean_c |mu_c|``; 0 without
        objects.
    """
    if instances.numel() == 0:
        return embeddings.sum() * 0.0
    _, index = torch.unique(instances, return_inverse=True)
    k = int(index.max()) + 1
    d = embeddings.shape[0]
    counts = torch.bincount(index, minlength=k).to(embeddings.dtype)
    means = torch.zeros(k, d, dtype=embeddings.dtype, device=embeddings.device).index_add_(0, index, embeddings.T) / counts[:, None]
    spread = ((embeddings.T - means[index]) ** 2).sum(dim=1)
    variance = (torch.zeros(k, dtype=embeddings.dtype, device=embeddings.device).index_add_(0, index, spread) / counts).mean()
    distance = embeddings.new_zeros(())
    if k > 1:
        a, b = torch.triu_indices(k, k, 1, device=embeddings.device)
        # The small constant keeps the gradient finite where two means coincide.
        gap = torch.sqrt(((means[a] - means[b]) ** 2).sum(dim=1) + 1e-8)
        distance = (F.relu(delta_d - gap) ** 2).mean()
    center = torch.sqrt((means**2).sum(dim=1) + 1e-8).mean()
    return variance + distance + center_weight * center


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


# -- clustering -----------------------------------------------------------------------------


def _pool(points: np.ndarray, size: float) -> tuple:
    """Points pooled into cubic cells of side ``size``: (cell of each point, cell means, counts)."""
    _, cell, count = np.unique(np.floor(points / size).astype(np.int64), axis=0, return_inverse=True, return_counts=True)
    cell = cell.ravel()
    means = np.stack([np.bincount(cell, points[:, j]) for j in range(points.shape[1])], 1) / count[:, None]
    return cell, means, count.astype(np.float64)


def mean_shift(points: np.ndarray, bandwidth: float, *, max_iter: int = 300, tol: float = 0.01, max_points: int = 10_000) -> np.ndarray:
    """Flat-kernel mean-shift of points in any number of dimensions.

    scikit-learn's algorithm with "bin seeding", vectorised: one seed per
    occupied cell of one bandwidth; all seeds climb at once; modes closer
    than the bandwidth merge, densest first; every point joins its nearest
    mode. Two things bound the cost on large images: the modes are found
    on at most ``max_points`` points, evenly spaced in the input order (so
    the result is deterministic), and those are pooled into cells of a
    quarter bandwidth (each the mean of its points, weighted by their
    number), which moves the kernel's edge by at most an eighth of the
    bandwidth per axis.

    Parameters
    ----------
    points : ndarray, shape (N, D)
    bandwidth : float
        Kernel radius (> 0).
    max_iter : int
        Mean-shift updates at most.
    tol : float
        A seed has settled when it moves less than ``tol * bandwidth``.
    max_points : int
        Points used to find the modes; all points are then assigned.

    Returns
    -------
    ndarray of int64, shape (N,)
        Mode index of every point, 0..K-1, densest mode first.
    """
    if not bandwidth > 0:
        raise InputError(f"mean-shift bandwidth must be positive, got {bandwidth}")
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros(0, np.int64)
    fit = points[:: max(1, -(-len(points) // max_points))]
    _, centres, weight = _pool(fit, bandwidth / 4)
    _, modes, _ = _pool(fit, bandwidth)
    tree = cKDTree(centres)
    density = np.zeros(len(modes))
    active = np.arange(len(modes))
    for _ in range(max_iter):
        near = tree.query_ball_point(modes[active], bandwidth)
        lengths = np.fromiter((len(n) for n in near), np.int64, len(near))
        hits = np.fromiter(itertools.chain.from_iterable(near), np.int64, int(lengths.sum()))
        owner = np.repeat(np.arange(len(active)), lengths)
        mass = np.bincount(owner, weight[hits], minlength=len(active))
        ok = mass > 0
        new = modes[active].copy()
        for j in range(points.shape[1]):
            new[ok, j] = np.bincount(owner, weight[hits] * centres[hits, j], minlength=len(active))[ok] / mass[ok]
        moved = np.abs(new - modes[active]).max(axis=1)
        modes[active] = new
        density[active] = mass
        active = active[ok & (moved >= tol * bandwidth)]
        if len(active) == 0:
            break
    # Keep a mode unless a denser one lies within the bandwidth, as scikit-learn does.
    order = np.argsort(-density, kind="stable")
    mode_tree = cKDTree(modes)
    kept = np.ones(len(modes), dtype=bool)
    for i in order:
        if kept[i]:
            near = np.asarray(mode_tree.query_ball_point(modes[i], bandwidth), dtype=np.int64)
            kept[near[near != i]] = False
    return cKDTree(modes[order[kept[order]]]).query(points)[1].astype(np.int64)


def _cluster(embeddings: np.ndarray, foreground: np.ndarray, bandwidth: float) -> np.ndarray:
    """Mean-shift cluster ids (1..K, 0 = background), not yet split or filtered."""
    labels = np.zeros(foreground.shape, dtype=np.int32)
    labels[foreground] = mean_shift(embeddings[:, foreground].T, bandwidth) + 1
    return labels


def meanshift_embeddings(embeddings: np.ndarray, foreground: np.ndarray, bandwidth: float, *, min_size: int = 0) -> np.ndarray:
    """Cluster the foreground pixels' embeddings into instances.

    Parameters
    ----------
    embeddings : ndarray, shape (D, Y, X)
    foreground : ndarray of bool, shape (Y, X)
    bandwidth : float
        Flat mean-shift kernel radius in embedding units.
    min_size : int
        Objects with fewer pixels are removed.

    Returns
    -------
    ndarray of int32, shape (Y, X)
        0 = background, objects 1..N, each one connected component (a
        cluster found in two places becomes two objects).
    """
    return split_and_filter(_cluster(embeddings, foreground, bandwidth), min_size)


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


def _finish(clusters: np.ndarray, overlap: np.ndarray, embeddings: np.ndarray, min_size: int) -> np.ndarray:
    labels = split_and_filter(clusters, min_size)
    return split_and_filter(grow_into_overlap(labels, overlap, embeddings), min_size)


# -- model ----------------------------------------------------------------------------------


def _encode(labels: np.ndarray, ignore_id: int) -> np.ndarray:
    # Shift ids by one so that the zero padding random_crops adds around
    # small planes reads as "not annotated", like ignore_id pixels.
    coded = labels.astype(np.int64) + 1
    coded[labels == ignore_id] = 0
    return coded


class ConcreteDropoutModel(SegmentationModel):
    """A trained Concrete-Dropout U-Net plus its clustering settings."""

    method = "concrete-dropout"
    config_class = Config
    # The draws estimate each object's probability; their entropy is the
    # uncertainty the proofreading queue ranks by.
    uncertainty_kind = "entropy"

    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        return DropoutUNet(
            in_channels, config.embedding_dims + N_CLASSES, config.num_fmaps, config.fmap_inc_factor,
            config.dropout_rate, config.temperature,
        )

    @staticmethod
    def training_loss(config: Config, ts: TrainingSet, device: torch.device):
        """``loss_fn(net, rng)`` for :func:`probseg.training.train_loop`.

        Raises
        ------
        InputError
            For images without labels, ``ignore_id`` 0, or labels with no
            annotated object.
        """
        if config.ignore_id == 0:
            raise InputError("ignore_id 0 is the background; use -1 for none or an id no object uses, e.g. 65535")
        if any(lab is None for lab in ts.labels):
            raise InputError("Concrete-Dropout embeddings learns from labels; give a labels image for every training image")
        coded = [_encode(lab, config.ignore_id) for lab in ts.labels]
        if not any((c > 1).any() for c in coded):
            raise InputError("the labels hold no annotated object; label at least one object (ids 1, 2, ...)")
        scaled = TrainingSet(ts.planes, coded, ts.in_channels, ts.normalization, ts.notices)
        n = config.dataset_size or int(sum((c > 0).sum() for c in coded))
        size = _crop_side(config)

        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, codes = random_crops(scaled, size, config.batch_size, rng, with_labels=True)
            data = segmentation_loss(net(images.to(device)), codes - 1, config)
            return data + net.regularization(config.weight_regularizer, config.dropout_regularizer) / n

        return loss_fn

    def bandwidth(self) -> float:
        """Mean-shift bandwidth in embedding units."""
        return self.config.bandwidth or 0.5 * self.config.delta_d

    def maps(self, plane: np.ndarray, seed: int | None = None, callbacks: Callbacks | None = None) -> np.ndarray:
        """Network output ``(D + 3, Y, X)`` for a normalised ``(C, Y, X)`` plane.

        ``seed`` None runs with dropout off; an int draws one dropout mask
        from it (the same for every tile, so tiling leaves no seams).
        """
        generator = None if seed is None else torch.Generator(device=self.device)

        def forward(window: torch.Tensor) -> torch.Tensor:
            if generator is not None:
                generator.manual_seed(seed)
            return self.net.forward_same(window)

        with dropout_sampling(self.net, seed is not None, generator):
            return tiled_apply(
                forward, plane, self.config.embedding_dims + N_CLASSES, tile=self.tile_size, overlap=2 * CONTEXT + 8,
                margin=CONTEXT, align=ALIGN, device=self.device, callbacks=callbacks,
            )

    def instances(self, maps: np.ndarray, bandwidth: float | None = None, min_size: int | None = None) -> np.ndarray:
        """Labels ``(Y, X)`` int32 from one output of :meth:`maps`."""
        d = self.config.embedding_dims
        classes = maps[d:].argmax(axis=0)
        clusters = _cluster(maps[:d], classes > 0, bandwidth or self.bandwidth())
        return _finish(clusters, classes == 2, maps[:d], self.config.min_size if min_size is None else min_size)

    def _predict_plane(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, cb: Callbacks) -> PlanePrediction:
        passes = n_samples + 1

        def part(k: int) -> Callbacks:
            return Callbacks(
                on_progress=lambda done, total, _l: cb.progress(k * total + done, passes * total),
                should_stop=cb.should_stop, on_message=cb.on_message,
            )

        # One seed per draw, drawn in order, so the first draws do not depend on n_samples.
        seeds = [int(rng.integers(2**62)) for _ in range(n_samples)]
        deterministic = self.maps(plane, None, part(0))
        samples = np.stack([self.instances(self.maps(plane, s, part(k + 1))) for k, s in enumerate(seeds)])
        return PlanePrediction(
            embeddings=deterministic[: self.config.embedding_dims].astype(np.float32),
            samples=samples.astype(np.int32),
            segmentation=self.instances(deterministic),
        )


def _as_values(values, name: str, kind) -> list:
    values = list(np.atleast_1d(values))
    if not values:
        raise InputError(f"{name} is empty; give at least one value")
    for v in values:
        if not np.isfinite(v) or (kind is float and v <= 0) or (kind is int and (v < 0 or v != int(v))):
            what = "positive numbers" if kind is float else "whole numbers of 0 or more"
            raise InputError(f"{name} must hold {what}, got {v!r}")
    return [kind(v) for v in values]


def grid_search(
    model: ConcreteDropoutModel,
    image,
    labels,
    bandwidths=(0.5, 1.0, 1.5, 2.0, 3.0),
    min_sizes=(0, 10, 20, 40, 80),
    *,
    iou_threshold: float = 0.5,
    channel_axis: int | None = None,
    rgb: bool = False,
    callbacks: Callbacks | None = None,
) -> tuple[dict, list]:
    """Try clustering settings on a labelled image and pick the best.

    The network runs once (dropout off); every combination of bandwidth and
    minimum size then clusters its output and is scored by
    :func:`probseg.metrics.f1_score` against ``labels``. Pixels labelled
    ``model.config.ignore_id`` are left out of the comparison, and predicted
    objects lying mostly inside them are dropped.

    Parameters
    ----------
    model : ConcreteDropoutModel
    image : ndarray
        One 2-D image (channels as in ``model.predict``).
    labels : ndarray of int
        Its instance labels, same spatial shape.
    bandwidths : sequence of float
        Mean-shift bandwidths to try, in embedding units.
    min_sizes : sequence of int
        Smallest object sizes to try, in pixels.
    iou_threshold : float
        IoU a predicted object needs to match a true one.
    channel_axis, rgb
        How to read channels, as in :meth:`SegmentationModel.predict`.
    callbacks : Callbacks, optional
        Progress over the combinations.

    Returns
    -------
    best : dict
        ``{"bandwidth": float, "min_size": int, "f1": float}``, the first
        row with the highest F1. Apply it with
        ``model.config.bandwidth, model.config.min_size = best["bandwidth"], best["min_size"]``.
    table : list of dict
        One such row per combination, in the order tried.

    Raises
    ------
    InputError
        For a model of another method, a 3-D stack, labels of another shape,
        or empty or invalid parameter lists.
    """
    if not isinstance(model, ConcreteDropoutModel):
        raise InputError(f"grid_search needs a concrete-dropout model, got a {getattr(model, 'method', type(model).__name__)} model")
    bandwidths = _as_values(bandwidths, "bandwidths", float)
    min_sizes = _as_values(min_sizes, "min_sizes", int)
    cb = ensure(callbacks)
    planes = model.prepare(image, channel_axis, rgb)
    if planes.is_stack:
        raise InputError("grid_search takes one 2-D image, not a 3-D stack")
    truth = check_labels(labels, planes.spatial_shape, name="labels")
    ignored = truth == model.config.ignore_id
    truth = np.where(ignored, 0, truth)
    maps = model.maps(planes.data[0])
    d = model.config.embedding_dims
    classes = maps[d:].argmax(axis=0)
    table = []
    total = len(bandwidths) * len(min_sizes)
    for bandwidth in bandwidths:
        clusters = _cluster(maps[:d], classes > 0, bandwidth)
        for min_size in min_sizes:
            cb.raise_if_stopped()
            pred = _finish(clusters, classes == 2, maps[:d], min_size)
            if ignored.any():
                inside = np.bincount(pred[ignored], minlength=pred.max() + 1) / np.maximum(np.bincount(pred.ravel()), 1)
                pred = np.where(ignored | (inside[pred] > 0.5), 0, pred)
            table.append({"bandwidth": bandwidth, "min_size": min_size, "f1": f1_score(pred, truth, iou_threshold)})
            cb.progress(len(table), total)
    best = max(table, key=lambda row: row["f1"])  # max keeps the first of equals
    return dict(best), table


def train(images, labels=None, config: Config | dict | None = None, callbacks: Callbacks | None = None, **kwargs) -> ConcreteDropoutModel:
    """Train Concrete-Dropout embeddings on images and their instance labels.

    Parameters and return value as :func:`probseg.api.train` with
    ``method="concrete-dropout"``; ``labels`` are required.
    """
    from probseg.api import train as _train

    return _train("concrete-dropout", images, labels, config, callbacks=callbacks, **kwargs)


def _register():
    from probseg.methods import MethodInfo

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
        config_class=Config,
        model_class=ConcreteDropoutModel,
        train=train,
    )


METHOD = _register()
