"""InpaintAff: instance separation from an inpainting network (Wolf, Hamprecht, Funke 2020).

No labels needed to separate objects. A probabilistic inpainting network of
partial convolutions (:mod:`probseg.methods.inpaintaff.inpainting`) learns, on the user's own
images, to predict any hidden pixels from the visible ones as a Gaussian. A
pixel is predictable from its own object and not from its neighbours, so
splitting a patch where each side tells least about the other follows object
boundaries. :mod:`probseg.methods.inpaintaff.split` splits sliding patches recursively and
turns each patch's parts into affinities (1 within a part, 0 across),
averaged over the patches, for the paper's offsets
(:data:`probseg.partition.SPARSE_LONG_RANGE_OFFSETS`).

Separation is not segmentation: the background splits into parts as well.
The mutex watershed (:meth:`InpaintAffModel.partition`, no network)
partitions the affinities inside a **foreground**
(:meth:`InpaintAffModel.plane_context`):

* a mask the user gives (``predict(..., foreground=mask)``, ``--foreground-mask
  mask.tif``, or a layer in the Predict widget), any source: a threshold,
  an ilastik export, another model's output;
* a small foreground network learned from a few labelled objects (the
  paper's FGNET, :mod:`probseg.methods.inpaintaff.foreground`), trained
  with the inpainting network when labels are given;
* or an intensity threshold (Otsu's by default).

Its weights are the paper's (appendix C): short-range affinities attract
with their value, long-range ones repel with ``alpha (1 - a)``; ``alpha``
is the one knob, higher splits more. It re-partitions the kept affinities
without the network.

**Samples.** Each draw (:meth:`InpaintAffModel.draw`) splits patches on a
grid moved by a random shift with other random first cuts, so it is a
different set of hierarchies; its averaged affinities partitioned are one
sample. The segmentation partitions the mean of the draws' affinities (a
single draw when one sample is asked for). Their disagreement is the
uncertainty; the variance of the affinities over the draws is shown as a map.

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

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from probseg.core import bounds
from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.core.errors import InputError
from probseg.engine.model import SegmentationModel
from probseg.engine.registry import MethodInfo
from probseg.methods.inpaintaff.foreground import check_foreground, foreground_loss, foreground_training_set, threshold_foreground
from probseg.methods.inpaintaff.inpainting import gaussian_nll, numpy_generator_to_torch, random_visible
from probseg.methods.inpaintaff.maps import noise_variance, shown_maps, with_mean
from probseg.methods.inpaintaff.net import InpaintAffNet
from probseg.methods.inpaintaff.split import SplitParams, Timer, cpu_seconds, inpaint_affinities
from probseg.nn.trainset import TrainingSet, random_crops
from probseg.partition import SPARSE_LONG_RANGE_OFFSETS as OFFSETS, mutex_watershed, split_and_filter

FOREGROUNDS = ("auto", "mask", "network", "threshold", "none")
# The foreground network needs known background: the label modes of probseg.core.labels that give it.
LABEL_MODES = ("dense", "reviewed")


# -- configs --------------------------------------------------------------------------------
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
    background_id: int = param(65535, "reviewed labels: the id of known background", minimum=1, maximum=bounds.LABEL_ID.high, advanced=True)
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
    min_size: int = param(0, "smallest object kept; 0: a quarter of the median area of the labelled objects, else 20 px", unit="px", minimum=0, maximum=bounds.MIN_SIZE.high)


@dataclass
class _Plane:
    """What the draws of one plane share: the normalised plane, and each draw's seed and patch-grid shift."""

    plane: np.ndarray
    seeds: np.ndarray
    shifts: list


# -- the model ------------------------------------------------------------------------------
class InpaintAffModel(SegmentationModel):
    """Affinities from a self-supervised inpainting network, partitioned inside a foreground."""

    method = "inpaintaff"
    config_class = Config
    settings_class = Settings
    raw_maps = ("affinities", "intensity", "foreground")
    nan_maps = ("affinities",)  # NaN where no patch held the pair
    default_tile_size = 512
    uses_mask = True
    cost_hint = "a larger --patch-stride, fewer --samples or a smaller image"

    # -- network and loss ---------------------------------------------------------------
    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        return InpaintAffNet(in_channels, config.num_fmaps, config.depth)

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        """``loss_fn(net, rng)``: eq. (1) on random split-like masks, plus the foreground network's BCE on labelled planes."""
        fg_set, focus, area = None, None, 0.0
        if any(lab is not None for lab in ts.labels) and config.foreground_weight > 0:
            fg_set, focus, area = foreground_training_set(ts, config.label_mode, config.background_id)

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
                loss = loss + foreground_loss(net.foreground, fg_set, focus, config.crop_size, config.batch_size,
                                              config.foreground_weight, rng, device)
            return loss

        return loss_fn

    def has_foreground(self) -> bool:
        """Whether the foreground network was trained (labels were given)."""
        if self.net is not None:
            return bool(self.net.has_foreground > 0)
        return bool(self.learned_record.get("has_foreground", False))

    def object_area(self) -> float:
        """Median pixel count of the labelled training objects; 0 when none were labelled."""
        if self.net is not None:
            return float(self.net.object_area)
        return float(self.learned_record.get("object_area", 0.0))

    # -- one draw -----------------------------------------------------------------------
    def n_draws(self, n_samples: int) -> int:
        """One draw per sample; draw 0, their mean, is made from them (:meth:`end_plane`)."""
        return 1 if n_samples == 1 else n_samples

    def begin_plane(self, plane: np.ndarray, n_draws: int, rng: np.random.Generator) -> _Plane:
        """Every draw's seed, then every draw's shift of the patch grid (draw 0's none), before any network pass."""
        seeds = rng.integers(0, 2**31, n_draws)
        shifts = [0] + [int(s) for s in rng.integers(0, self.config.patch_stride, n_draws - 1)]
        return _Plane(plane, seeds, shifts)

    def draw(self, state: _Plane, k: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """``"affinities"`` ``(1, K, Y, X)``: patches split on the grid moved by draw ``k``'s shift, with its own first cuts."""
        return {"affinities": self.affinities(state.plane, int(state.seeds[k]), state.shifts[k], callbacks)[None]}

    def end_plane(self, state: _Plane, maps: dict) -> dict:
        """``"affinities"`` ``(draws, K, Y, X)``, ``"intensity"`` ``(Y, X)`` and ``"foreground"`` ``(Y, X)``.

        With several draws, their mean is put first as draw 0, the
        segmentation's. ``"foreground"`` is the foreground network's
        probability (zeros when it was not trained).
        """
        return {"affinities": with_mean(maps["affinities"]),
                "intensity": ndi.gaussian_filter(state.plane[0], 1.0).astype(np.float32),
                "foreground": self.foreground_probability(state.plane)}

    def affinities(self, plane: np.ndarray, seed: int, shift: int, callbacks: Callbacks, timer: Timer | None = None) -> np.ndarray:
        """One draw's averaged affinities ``(K, Y, X)`` of a normalised ``(C, Y, X)`` plane (NaN: no patch held the pair)."""
        c = self.config
        # Measured on 2 CPU cores, 32 images a call ran fastest (larger ones
        # leave the cache); a GPU needs large calls to be busy.
        chunk = c.network_batch if self.device.type == "cpu" else max(c.network_batch, 1024)
        patches = c.patch_batch if self.device.type == "cpu" else max(c.patch_batch, 256)
        params = SplitParams(iterations=c.iterations, max_band=c.max_band, max_depth=c.max_depth, min_part=c.min_part,
                             min_gain=c.min_gain, align=2**c.depth)
        return inpaint_affinities(plane, self.net.inpaint, patch=c.patch_size, stride=c.patch_stride, offsets=OFFSETS,
                                  params=params, seed=seed, shift=shift, patch_batch=patches, chunk=chunk,
                                  noise_var=noise_variance(plane), device=self.device, callbacks=callbacks, timer=timer)

    def foreground_probability(self, plane: np.ndarray) -> np.ndarray:
        """The foreground network's probability ``(Y, X)`` float32 on a normalised ``(C, Y, X)`` plane; zeros when it was not trained."""
        if not self.has_foreground():
            return np.zeros(plane.shape[-2:], np.float32)
        fg = self.net.foreground
        logits = self.apply_network(fg.forward_same, np.ascontiguousarray(plane), 1, net=fg)
        return (1.0 / (1.0 + np.exp(-logits[0]))).astype(np.float32)

    # -- one partition ------------------------------------------------------------------
    def plane_context(self, maps: dict, settings: Settings) -> np.ndarray:
        """The foreground, bool ``(Y, X)``: where objects may be, by ``settings.foreground`` (see :class:`Settings`)."""
        kind = settings.foreground
        if kind == "auto":
            kind = "mask" if "mask" in maps else ("network" if self.has_foreground() else "threshold")
        check_foreground(kind, "mask" in maps, self.has_foreground())
        if kind == "mask":
            return np.asarray(maps["mask"]) > 0.5
        if kind == "network":
            return maps["foreground"] >= settings.probability
        if kind == "threshold":
            return threshold_foreground(maps["intensity"], settings.threshold)
        return np.ones(maps["intensity"].shape, dtype=bool)

    def partition(self, maps: dict, settings: Settings, context: np.ndarray) -> np.ndarray:
        """The mutex watershed of the draw's affinities inside the foreground ``context``, with the paper's weights."""
        labels = mutex_watershed(maps["affinities"][0], OFFSETS, alpha=settings.alpha, mask=context, repulsion="inverted")
        return split_and_filter(labels, self.min_size(settings))

    def min_size(self, settings: Settings) -> int:
        """Smallest object kept, in pixels."""
        if settings.min_size:
            return settings.min_size
        area = self.object_area()
        return max(1, int(0.25 * area)) if area > 0 else 20

    # -- optional hooks -----------------------------------------------------------------
    def check_settings(self, settings: Settings, n_samples: int, has_mask: bool) -> None:
        """Refuse a ``"mask"`` foreground without a mask and a ``"network"`` one without the network, before any work."""
        check_foreground(settings.foreground, has_mask, self.has_foreground())

    def estimate_seconds(self, shape: tuple, n_samples: int) -> float | None:
        """The patches of every draw times one patch's time on a CPU (:func:`~probseg.methods.inpaintaff.split.cpu_seconds`); None elsewhere."""
        c = self.config
        return cpu_seconds(shape, c.patch_size, c.patch_stride, c.iterations, self.n_draws(n_samples)) if self.device.type == "cpu" else None

    def learned(self) -> dict:
        return {"has_foreground": self.has_foreground(), "object_area": self.object_area()}

    def display_maps(self, maps: dict) -> dict:
        """``"boundaries"``: 1 minus the mean short-range affinity; ``"affinity variance"`` over the draws (with several)."""
        return shown_maps(maps["affinities"])

    def tune_grid(self) -> dict:
        return {"alpha": [0.25, 0.5, 1.0, 1.5, 2.0, 3.0]}


METHOD = MethodInfo(
    name="inpaintaff",
    title="InpaintAff",
    summary="affinities from a self-supervised inpainting network, partitioned inside a foreground (mask, small network or threshold)",
    reference="Wolf, Hamprecht, Funke. Instance Separation Emerges from Inpainting. arXiv:2003.00891, 2020",
    labels="optional",
    model_class=InpaintAffModel,
    labels_use="with them a small foreground network learns where objects are (0 is background: label every object "
               "of the image, or of a crop of it)",
)
