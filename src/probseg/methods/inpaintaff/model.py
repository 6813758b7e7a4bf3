"""InpaintAff: instance separation from an inpainting network (Wolf, Hamprecht, Funke 2020).

No labels needed to separate objects. A probabilistic inpainting network of
partial convolutions (:mod:`probseg.methods.inpaintaff.inpainting`) learns, on the user's own
images, to predict any hidden pixels from the visible ones as a Gaussian. A
pixel is predictable from its own object and not from its neighbours, so
splitting a patch where each side tells least about the other follows object
boundaries. :mod:`probseg.methods.inpaintaff.split` splits sliding patches recursively and
turns each patch's parts into affinities (1 within a part, 0 across),
averaged over the patches, for the paper's offsets
(:data:`probseg.partition.INPAINTAFF_OFFSETS`).

Separation is not segmentation: the background splits into parts as well.
The mutex watershed partitions the affinities inside a **foreground**:

* a mask the user gives (``predict(..., foreground=mask)``, ``--foreground
  mask.tif``, or a layer in the Predict widget), any source: a threshold,
  an ilastik export, another model's output;
* a small foreground network learned from a few labelled objects (the
  paper's FGNET), trained with the inpainting network when labels are
  given;
* or an intensity threshold (Otsu's by default).

Its weights are the paper's (appendix C): short-range affinities attract
with their value, long-range ones repel with ``alpha (1 - a)``; ``alpha``
is the one knob, higher splits more. It re-partitions the kept affinities
without the network.

**Samples.** Each draw splits patches on a grid moved by a random shift
with other random first cuts, so it is a different set of hierarchies; its
averaged affinities partitioned are one sample. The segmentation
partitions the mean of the draws' affinities (a single draw when one sample
is asked for). Their disagreement is the uncertainty; the variance of the
affinities over the draws is shown as a map.

**Departures from the paper**, each for the 2-core CPU or for a reason
found while building it:

* the network is smaller (16..128 feature maps, depth 3) and trained with
  the Gaussian negative log-likelihood of eq. (1) alone, not Liu et al.'s
  perceptual and style losses (those serve realistic images, not
  calibrated likelihoods);
* ``IG(i|Ω)`` is the KL from ``N(x_i, s²)``, the observed value with the
  image's noise level, a closed form for the Gaussian predictions;
* a split is kept only when its band pixels gain at least ``min_gain`` nats
  on average (see :class:`probseg.methods.inpaintaff.split.SplitParams`), and parts below
  ``min_part`` pixels are final: in a part of uniform texture the paper's
  "until a side is empty" need not happen;
* patches, stride, iterations and depth are settings, their defaults picked
  by ``benchmarks/inpaintaff.py``.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from torch import nn

from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.core.errors import InputError
from probseg.methods.inpaintaff.inpainting import InpaintingNet, gaussian_nll, numpy_generator_to_torch, random_visible
from probseg.engine.model import SegmentationModel
from probseg.nn.unet import UNet
from probseg.partition import INPAINTAFF_OFFSETS, mutex_watershed, split_and_filter
from probseg.methods.inpaintaff.split import SplitParams, Timer, inpaint_affinities
from probseg.nn.tiling import tiled_apply
from probseg.nn.trainset import TrainingSet, random_crops

FOREGROUNDS = ("auto", "mask", "network", "threshold", "none")
LABEL_MODES = ("dense", "reviewed")


@dataclass
class Config(TrainingConfig):
    """InpaintAff hyperparameters: the inpainting network, its training, and the split step.

    The split-step fields are used at prediction; they live here because
    they define what the affinities are, and changing them means running
    the network again.
    """

    steps: int = param(3000, "training iterations", unit="steps", minimum=1, maximum=1_000_000)
    batch_size: int = param(8, "crops per iteration", unit="crops", minimum=1, maximum=512, advanced=True)
    crop_size: int = param(64, "side of the training crops; a multiple of 8", unit="px", minimum=16, maximum=1024, advanced=True)
    learning_rate: float = param(1e-3, "AdamW learning rate", minimum=1e-7, maximum=1.0, advanced=True)
    num_fmaps: int = param(8, "feature maps of the inpainting U-Net's first level (the paper: 64; more is slower)", minimum=2, maximum=256, advanced=True)
    depth: int = param(3, "downsamplings of the inpainting U-Net (the paper: 4)", minimum=1, maximum=5, advanced=True)
    train_band: int = param(8, "training masks hide bands up to this wide next to the visible side, as the split step does", unit="px", minimum=0, maximum=64, advanced=True)
    label_mode: str = param("dense", "labels for the foreground network: dense: 0 is background (label every object of the image, or give a crop); reviewed: 0 is unlabelled and background_id marks background", choices=LABEL_MODES, advanced=True)
    background_id: int = param(65535, "reviewed labels: the id of known background", minimum=1, advanced=True)
    foreground_weight: float = param(1.0, "weight of the foreground network's cross-entropy when labels are given", minimum=0.0, maximum=100.0, advanced=True)
    patch_size: int = param(64, "side of the patches split at prediction; a multiple of 8; at least 32, beyond the longest offset (27 px)", unit="px", minimum=32, maximum=512)
    patch_stride: int = param(32, "step between patches; smaller averages more hierarchies and takes longer (16: four times as long)", unit="px", minimum=4, maximum=512)
    iterations: int = param(8, "T: boundary updates per split", minimum=1, maximum=100, advanced=True)
    max_band: int = param(6, "d of the first half of the updates (then falling to 1, with d = 1 every second update)", unit="px", minimum=1, maximum=32, advanced=True)
    max_depth: int = param(5, "levels of recursion at most", minimum=1, maximum=12, advanced=True)
    min_part: int = param(40, "parts with fewer pixels are not split; about a quarter of an object's area", unit="px", minimum=2, maximum=100_000, advanced=True)
    min_gain: float = param(0.5, "a split whose band pixels gain less information than this (nats per pixel) is no split", minimum=0.0, maximum=100.0, advanced=True)
    patch_batch: int = param(32, "patches split together, every level batched through the network", minimum=1, maximum=4096, advanced=True)
    network_batch: int = param(32, "images per network call on a CPU (small batches stay in cache; a GPU takes at least 1024)", minimum=1, maximum=8192, advanced=True)

    def check(self) -> None:
        for name in ("crop_size", "patch_size"):
            value = getattr(self, name)
            if value % 2**self.depth:
                raise InputError(f"{name.replace('_', ' ')} {value} is not a multiple of {2**self.depth} (2 to the depth {self.depth})")
        if self.patch_stride > self.patch_size:
            raise InputError(f"patch stride {self.patch_stride} px exceeds the patch size {self.patch_size} px: pixels would be missed")


@dataclass
class Settings:
    """How the affinities become objects; changing them never reruns the network."""

    alpha: float = param(1.0, "the paper's single knob: long-range affinities repel with alpha (1 - a); higher splits more", minimum=0.0, maximum=5.0, slider=True)
    foreground: str = param("auto", "where objects are: auto: the mask given, else the foreground network when one was trained, else the threshold; mask; network; threshold (intensity); none (everything)", choices=FOREGROUNDS)
    threshold: float = param(0.0, "threshold foreground: normalised intensity above which a pixel is foreground; 0: Otsu's threshold of the smoothed image", minimum=0.0, maximum=1.0)
    probability: float = param(0.5, "network foreground: probability above which a pixel is foreground", minimum=0.01, maximum=0.99)
    min_size: int = param(0, "smallest object kept; 0: a quarter of the median area of the labelled objects, else 20 px", unit="px", minimum=0)


class InpaintAffNet(nn.Module):
    """The inpainting network, and the optional foreground network (trained only when labels are given)."""

    def __init__(self, config: Config, in_channels: int):
        super().__init__()
        self.inpaint = InpaintingNet(in_channels, config.num_fmaps, config.depth)
        self.foreground = UNet(in_channels, 1, 8, 2, depth=2, kernels=(3, 3))
        # Buffers, so they persist with the weights: whether the foreground
        # network learned anything, and the labelled objects' median area.
        self.register_buffer("has_foreground", torch.zeros(()))
        self.register_buffer("object_area", torch.zeros(()))


def foreground_targets(labels: np.ndarray, mode: str, background_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(target, known)`` float32 maps of one labels image for the foreground network's loss."""
    labels = np.asarray(labels)
    if mode == "reviewed":
        objects = (labels > 0) & (labels != background_id)
        return objects.astype(np.float32), (labels > 0).astype(np.float32)
    return (labels > 0).astype(np.float32), np.ones(labels.shape, np.float32)


class InpaintAffModel(SegmentationModel):
    """Affinities from a self-supervised inpainting network, partitioned inside a foreground."""

    method = "inpaintaff"
    config_class = Config
    settings_class = Settings
    raw_maps = ("affinities", "intensity", "foreground")
    default_tile_size = 512
    uses_mask = True

    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        return InpaintAffNet(config, in_channels)

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        """``loss_fn(net, rng)``: eq. (1) on random split-like masks, plus the foreground network's BCE on labelled planes."""
        labelled = [i for i, lab in enumerate(ts.labels) if lab is not None]
        fg_set, areas = None, []
        if labelled and config.foreground_weight > 0:
            targets = [foreground_targets(ts.labels[i], config.label_mode, config.background_id) for i in labelled]
            if not any(t.any() for t, _ in targets):
                raise InputError("the labels hold no object; label at least one object for the foreground network, or train without labels")
            # Target and known-mask travel as one label image: 0 unknown, 1 background, 2 object.
            coded = [np.where(k > 0, 1 + t, 0).astype(np.int64) for t, k in targets]
            fg_set = TrainingSet([ts.planes[i] for i in labelled], coded, ts.in_channels, ts.normalization, [])
            for i, (target, _) in zip(labelled, targets):
                areas.extend(np.unique(np.asarray(ts.labels[i])[target > 0], return_counts=True)[1].tolist())
            focus = [np.argwhere(c == 2) for c in coded]
        area = float(np.median(areas)) if areas else 0.0

        def loss_fn(net: InpaintAffNet, rng: np.random.Generator) -> torch.Tensor:
            images, _ = random_crops(ts, config.crop_size, config.batch_size, rng)
            images = images.to(device)
            gen = numpy_generator_to_torch(rng)
            visible = random_visible(len(images), config.crop_size, config.train_band, gen, device)
            mean, logvar = net.inpaint(images, visible)
            hidden = 1.0 - visible[:, 0]
            loss = (gaussian_nll(images, mean, logvar) * hidden).sum() / hidden.sum().clamp(min=1.0)
            if fg_set is not None:
                net.has_foreground.fill_(1.0)
                net.object_area.fill_(area)
                crops, codes = random_crops(fg_set, config.crop_size + 2 * net.foreground.context, config.batch_size, rng,
                                            with_labels=True, focus=focus, focus_fraction=0.5, focus_radius=config.crop_size // 2)
                logits = net.foreground(crops.to(device))[:, 0]
                h = logits.shape[-1]
                m = (codes.shape[-1] - h) // 2
                codes = codes[:, m : m + h, m : m + h].to(device)
                known = (codes > 0).float()
                bce = F.binary_cross_entropy_with_logits(logits, (codes == 2).float(), reduction="none")
                loss = loss + config.foreground_weight * (bce * known).sum() / known.sum().clamp(min=1.0)
            return loss

        return loss_fn

    # -- network ------------------------------------------------------------------------
    def has_foreground(self) -> bool:
        """Whether the foreground network was trained (labels were given)."""
        if self.net is not None:
            return bool(self.net.has_foreground > 0)
        return bool(self.learned_record.get("has_foreground", False))

    def object_area(self) -> float:
        if self.net is not None:
            return float(self.net.object_area)
        return float(self.learned_record.get("object_area", 0.0))

    def learned(self) -> dict:
        return {"has_foreground": self.has_foreground(), "object_area": self.object_area()}

    def split_params(self) -> SplitParams:
        c = self.config
        return SplitParams(iterations=c.iterations, max_band=c.max_band, max_depth=c.max_depth, min_part=c.min_part,
                           min_gain=c.min_gain, align=2**c.depth)

    def affinities(self, plane: np.ndarray, seed: int, shift: int, callbacks: Callbacks, timer: Timer | None = None) -> np.ndarray:
        """One draw's averaged affinities ``(K, Y, X)`` of a normalised ``(C, Y, X)`` plane (NaN: no patch held the pair)."""
        c = self.config
        # Measured on 2 CPU cores, 32 images a call ran fastest (larger ones
        # leave the cache); a GPU needs large calls to be busy.
        chunk = c.network_batch if self.device.type == "cpu" else max(c.network_batch, 1024)
        patches = c.patch_batch if self.device.type == "cpu" else max(c.patch_batch, 256)
        return inpaint_affinities(plane, self.net.inpaint, patch=c.patch_size, stride=c.patch_stride,
                                  offsets=INPAINTAFF_OFFSETS, params=self.split_params(), seed=seed, shift=shift,
                                  patch_batch=patches, chunk=chunk, noise_var=noise_variance(plane),
                                  device=self.device, callbacks=callbacks, timer=timer)

    def raw(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """``"affinities"`` ``(draws, K, Y, X)``, ``"intensity"`` ``(Y, X)`` and ``"foreground"`` ``(Y, X)``.

        With one sample there is one draw. Otherwise draws 1..n split on
        patch grids moved by random shifts with their own first cuts, and
        draw 0 is their mean. ``"foreground"`` is the foreground network's
        probability (zeros when it was not trained).
        """
        n_draws = 1 if n_samples == 1 else n_samples
        seeds = rng.integers(0, 2**31, n_draws)
        shifts = [0] + [int(s) for s in rng.integers(0, self.config.patch_stride, n_draws - 1)]
        draws = np.empty((n_draws, len(INPAINTAFF_OFFSETS)) + tuple(plane.shape[-2:]), dtype=np.float32)
        for k in range(n_draws):
            sub = Callbacks(on_progress=lambda done, total, _l=None, k=k: callbacks.progress(k * total + done, n_draws * total),
                            should_stop=callbacks.should_stop, on_message=callbacks.on_message)
            draws[k] = self.affinities(plane, int(seeds[k]), shifts[k], sub)
        if n_draws > 1:
            with _quiet_nan():
                mean = np.nanmean(draws, axis=0)
            draws = np.concatenate([mean[None], draws])
        return {"affinities": draws, "intensity": ndi.gaussian_filter(plane[0], 1.0).astype(np.float32),
                "foreground": self.foreground_probability(plane)}

    def foreground_probability(self, plane: np.ndarray) -> np.ndarray:
        """The foreground network's probability ``(Y, X)`` float32 on a normalised ``(C, Y, X)`` plane; zeros when it was not trained."""
        if not self.has_foreground():
            return np.zeros(plane.shape[-2:], np.float32)
        ctx = self.net.foreground.context
        logits = tiled_apply(self.net.foreground.forward_same, np.ascontiguousarray(plane), 1, tile=self.tile_size,
                             overlap=2 * ctx + 8, margin=ctx, align=self.net.foreground.align, device=self.device)
        return (1.0 / (1.0 + np.exp(-logits[0]))).astype(np.float32)

    # -- post-processing ----------------------------------------------------------------
    def foreground_mask(self, raw: dict, settings: Settings) -> np.ndarray:
        """Bool ``(Y, X)``: where objects may be, by ``settings.foreground`` (see :class:`Settings`)."""
        kind = settings.foreground
        if kind == "auto":
            kind = "mask" if "mask" in raw else ("network" if self.has_foreground() else "threshold")
        if kind == "mask":
            if "mask" not in raw:
                raise InputError("foreground 'mask' needs a foreground mask: give one (--foreground, or a layer in the Predict widget)")
            return np.asarray(raw["mask"]) > 0.5
        if kind == "network":
            if not self.has_foreground():
                raise InputError("this model has no foreground network (it was trained without labels); use foreground 'threshold' or give a mask")
            return raw["foreground"] >= settings.probability
        if kind == "threshold":
            intensity = raw["intensity"]
            cut = settings.threshold if settings.threshold > 0 else (
                float(threshold_otsu(intensity)) if np.ptp(intensity) > 0 else np.inf)
            return intensity > cut
        return np.ones(raw["intensity"].shape, dtype=bool)

    def min_size(self, settings: Settings) -> int:
        if settings.min_size:
            return settings.min_size
        area = self.object_area()
        return max(1, int(0.25 * area)) if area > 0 else 20

    def partition(self, affinities: np.ndarray, mask: np.ndarray, settings: Settings) -> np.ndarray:
        """Labels ``(Y, X)`` int32 of one affinity map ``(K, Y, X)`` inside ``mask``."""
        labels = mutex_watershed(affinities, INPAINTAFF_OFFSETS, alpha=settings.alpha, mask=mask, repulsion="inverted")
        return split_and_filter(labels, self.min_size(settings))

    def instances(self, raw: dict, settings: Settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        aff = raw["affinities"]
        mask = self.foreground_mask(raw, settings)
        segmentation = self.partition(aff[0], mask, settings)
        if len(aff) == 1:
            return segmentation, segmentation[None]
        samples = np.empty((min(n_samples, len(aff) - 1),) + segmentation.shape, dtype=np.int32)
        for k in range(len(samples)):
            samples[k] = self.partition(aff[1 + k], mask, settings)
        return segmentation, samples

    def display_maps(self, raw: dict) -> dict:
        """``"boundaries"``: 1 minus the mean short-range affinity; ``"affinity variance"`` over the draws (with several)."""
        aff = raw["affinities"]
        with _quiet_nan():
            boundaries = 1.0 - np.nanmean(aff[0, :2], axis=0)
        maps = {"boundaries": np.nan_to_num(boundaries, nan=0.0).astype(np.float32)}
        if len(aff) > 2:
            with _quiet_nan():
                var = np.nanmean(np.nanvar(aff[1:], axis=0), axis=0)
            maps["affinity variance"] = np.nan_to_num(var, nan=0.0).astype(np.float32)
        return maps

    def tune_grid(self) -> dict:
        return {"alpha": [0.25, 0.5, 1.0, 1.5, 2.0, 3.0]}


@contextlib.contextmanager
def _quiet_nan():
    """Silence numpy's warnings about all-NaN slices: pairs no patch held stay NaN, as they should."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def noise_variance(plane: np.ndarray) -> float:
    """``s²`` of a normalised ``(C, Y, X)`` plane, from the median absolute difference of horizontal neighbours.

    Neighbour differences of smooth signal are small, so their robust
    spread is the noise's times sqrt(2); averaged over channels.
    """
    diffs = np.diff(np.asarray(plane, dtype=np.float32), axis=-1).reshape(len(plane), -1)
    mad = np.median(np.abs(diffs - np.median(diffs, axis=1, keepdims=True)), axis=1)
    return float(np.mean((1.4826 * mad / np.sqrt(2.0)) ** 2))


def _register():
    from probseg.engine.registry import MethodInfo

    return MethodInfo(
        name="inpaintaff",
        title="InpaintAff",
        summary="affinities from a self-supervised inpainting network, partitioned inside a foreground (mask, small network or threshold)",
        reference="Wolf, Hamprecht, Funke. Instance Separation Emerges from Inpainting. arXiv:2003.00891, 2020",
        labels="optional",
        model_class=InpaintAffModel,
        labels_use="with them a small foreground network learns where objects are (0 is background: label every object "
                   "of the image, or of a crop of it)",
    )


METHOD = _register()
