"""Cellulus: self-supervised object-centric embeddings (Wolf et al., ICCV 2023).

No labels. A small U-Net whose field of view (17 px) is about one object
predicts, for every pixel, an offset ``r`` to the centre of "its" object; the
embedding is ``e = x + r``. The object-centric embedding (OCE) loss pulls the
embeddings of pixel pairs closer than ``kappa`` together through the bounded
distance ``1 - exp(-|e_a - e_b|^2 / tau)``, the form of the authors' reference
implementation (the sigmoid form ``1 / (1 + exp(-|d|^2 / tau))`` has the same
shape up to scale and offset; the exponential form is the one we measured
learning on the nuclei sample). Because the network
only sees a local window and is translation equivariant, the only way to agree
within an object is to point at a common place inside it, while pixels of
different objects (seen in different local contexts) cannot collapse.

Inference (:meth:`CellulusModel.draw`): one clean pass gives the offsets of
the segmentation; every further sample is a pass on a salt-and-pepper noise
draw of the input. Post-processing (:meth:`CellulusModel.partition`, no
network) finds the foreground and groups the foreground pixels whose
embeddings point at one place (see :class:`Settings`). Each draw partitioned
alone is one sample, so consensus and uncertainty can use the draws.

Objects are rescaled internally to :data:`INTERNAL_OBJECT_SIZE` pixels, the
size the field of view and ``kappa`` are made for, so the user's one number is
the object diameter in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.filters import threshold_li, threshold_otsu
from skimage.transform import resize
from torch import nn

from probseg.core import bounds
from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.core.errors import InputError
from probseg.engine.model import SegmentationModel
from probseg.engine.registry import MethodInfo
from probseg.nn.losses import oce_loss
from probseg.nn.trainset import TrainingSet, random_crops
from probseg.nn.unet import UNet
from probseg.partition import (
    embedding_affinities,
    meanshift_instances,
    mutex_watershed,
    offsets_for_object_size,
    shrink,
    split_and_filter,
)
from probseg.partition.intensity import log_otsu_foreground, outline_by_intensity

INTERNAL_OBJECT_SIZE = 24.0  # px after rescaling; matches the 17 px field of view and kappa = 10
_SPREAD_NEEDS_SAMPLES = "the 'spread' foreground needs at least 2 samples; draw more or use 'log-otsu'"


# -- configs --------------------------------------------------------------------------------
@dataclass
class Config(TrainingConfig):
    """Cellulus hyperparameters; ``object_size`` is the one to set."""

    # CPU-friendly defaults (about 0.1 s a step on two idle cores); on a GPU raise
    # batch_size, crop_size and num_fmaps towards the paper's 8, 252 and 24.
    batch_size: int = param(4, "crops per iteration", unit="crops", minimum=1, maximum=256, advanced=True)
    crop_size: int = param(96, "side of the random training crops (after rescaling)", unit="px", minimum=48, maximum=2048, advanced=True)
    object_size: float = param(24.0, "typical object diameter in the image", unit="px", minimum=4.0, maximum=2000.0)
    temperature: float = param(10.0, "tau of the bounded distance 1 - exp(-|d|^2/tau)", unit="px^2", minimum=0.01, maximum=1e4, advanced=True)
    kappa: float = param(10.0, "radius within which pixel pairs are compared (after rescaling)", unit="px", minimum=2.0, maximum=64.0, advanced=True)
    regularizer_weight: float = param(1e-5, "lambda_reg, weight of the offset length |r| in the loss", minimum=0.0, maximum=1.0, advanced=True)
    density: float = param(0.2, "fraction of crop pixels used as anchors per step", minimum=0.001, maximum=1.0, advanced=True)
    num_fmaps: int = param(16, "feature maps of the U-Net's first level", minimum=4, maximum=256, advanced=True)
    fmap_inc_factor: int = param(3, "feature map growth at the lower level", minimum=1, maximum=8, advanced=True)
    noise_probability: float = param(0.01, "fraction of pixels set to black or white in each noise draw (the samples)", minimum=0.0, maximum=0.5, advanced=True)

    def check_training_images(self, sides: list[int]) -> None:
        """Refuse an object size no training image can show, before hours of training find nothing."""
        side = min(sides, default=0)
        if sides and self.object_size > side / 2:
            raise InputError(
                f"object_size {self.object_size:g} px is more than half the smallest training image side ({side} px); "
                f"give the typical object diameter, at most {side // 2} px here"
            )


@dataclass
class Settings:
    """How Cellulus' offsets become objects; changing them never reruns the network."""

    foreground: str = param("log-otsu", "how background is found: Otsu on the log of the smoothed image (keeps dim objects next to bright ones), Li's threshold on the smoothed image, or Otsu on the spread of the embeddings over the samples as in the paper (needs 2 samples or more)", choices=("log-otsu", "li", "spread"))
    partition: str = param("meanshift", "meanshift: pixels whose embeddings point at one place form an object; mutex: mutex watershed on affinities from the embeddings", choices=("meanshift", "mutex"))
    bandwidth: float = param(0.0, "mean-shift bandwidth, and the embedding distance at which the mutex affinity is 0.5; 0: 0.3 of the object size", unit="px", minimum=0.0, maximum=1000.0)
    bias: float = param(0.5, "mutex: affinity below which two pixels repel; higher splits more", minimum=0.0, maximum=1.0)
    outline: float = param(0.4, "each object keeps its pixels brighter than its local background plus this fraction of the way to its peak (fluorescence outlines); 0: off", minimum=0.0, maximum=0.95)
    min_size: int = param(0, "smallest object kept; 0 means a tenth of the expected object area", unit="px", minimum=0, maximum=bounds.MIN_SIZE.high)
    halo_shrink: int = param(0, "pixels removed from every object's border after clustering", unit="px", minimum=0, maximum=50)


def _scale(config: Config) -> float:
    s = INTERNAL_OBJECT_SIZE / config.object_size
    return 1.0 if abs(s - 1.0) < 0.05 else s


def _rescale(plane: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return plane
    shape = tuple(max(16, int(round(n * scale))) for n in plane.shape[1:])
    return resize(plane, (plane.shape[0],) + shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)


@dataclass
class _Plane:
    """What the draws of one plane share: the rescaled plane and the intensity of the original."""

    small: np.ndarray
    intensity: np.ndarray
    scale: float


@dataclass
class _Context:
    """What every draw's partition of one plane shares."""

    smooth: np.ndarray
    foreground: np.ndarray
    grid: np.ndarray


# -- the model ------------------------------------------------------------------------------
class CellulusModel(SegmentationModel):
    """A trained Cellulus network plus its post-processing settings."""

    method = "cellulus"
    config_class = Config
    settings_class = Settings
    raw_maps = ("embeddings", "intensity")
    # Measured faster per pixel than 512 px windows on the 2-core CPU: the mini
    # U-Net's wide, shallow activations of a 256 px window fit the caches better.
    default_tile_size = 256

    # -- network and loss ---------------------------------------------------------------
    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        # The paper's mini U-Net: depth 1, blocks of [3x3, 1x1, 1x1, 3x3]
        # valid convolutions, a 17 px field of view, 2 offsets out.
        return UNet(in_channels, 2, config.num_fmaps, config.fmap_inc_factor, depth=1, kernels=(3, 1, 1, 3),
                    up_keeps_channels=True)

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        scale = _scale(config)
        planes = [_rescale(p, scale) for p in ts.planes]
        scaled = TrainingSet(planes, [None] * len(planes), ts.in_channels, ts.normalization, ts.notices)
        size = config.crop_size + (config.crop_size % 2)
        terms = dict(kappa=config.kappa, temperature=config.temperature, density=config.density,
                     regularizer_weight=config.regularizer_weight)

        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, _ = random_crops(scaled, size, config.batch_size, rng)
            return oce_loss(net(images.to(device)), rng, **terms)

        return loss_fn

    # -- one draw -----------------------------------------------------------------------
    def begin_plane(self, plane: np.ndarray, n_draws: int, rng: np.random.Generator) -> _Plane:
        scale = _scale(self.config)
        return _Plane(_rescale(plane, scale), plane.mean(axis=0).astype(np.float32), scale)

    def draw(self, state: _Plane, k: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """Offsets ``"embeddings"`` ``(1, 2, Y, X)`` in image px, and the ``"intensity"`` ``(Y, X)``.

        Draw 0 is the clean image; draws 1..n are salt-and-pepper noise
        draws, one per sample, drawn from ``rng`` in order (so the first
        draws do not depend on the number of samples).
        """
        noisy = state.small
        if k > 0:
            noisy = state.small.copy()
            hit = rng.random(noisy.shape[1:]) < self.config.noise_probability
            salt = rng.random(noisy.shape[1:]) < 0.5
            noisy[:, hit & salt] = 1.0
            noisy[:, hit & ~salt] = 0.0
            del hit, salt
        # A fresh array per draw: a caller may keep one draw while the next is made.
        embedding = np.empty((1, 2) + state.intensity.shape, dtype=np.float32)
        offsets = embedding[0]
        kwargs = dict(overlap=4 * self.net.context, callbacks=callbacks)
        if state.scale == 1.0:
            self.apply_network(self.net.forward_same, noisy, 2, out=offsets, **kwargs)
        else:
            r = self.apply_network(self.net.forward_same, noisy, 2, **kwargs)
            # One channel at a time: the float64 that resize returns is then one (Y, X) plane, not two.
            for c in range(2):
                offsets[c] = resize(r[c], offsets.shape[1:], order=1, preserve_range=True).astype(np.float32) / state.scale
        return {"embeddings": embedding, "intensity": state.intensity}

    # -- one partition ------------------------------------------------------------------
    def plane_context(self, maps: dict, settings: Settings) -> _Context:
        smooth = ndi.gaussian_filter(maps["intensity"], self.smoothing())
        foreground = self.foreground(maps, settings, smooth)
        h, w = foreground.shape
        grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).astype(np.float32)
        return _Context(smooth, foreground, grid)

    def partition(self, maps: dict, settings: Settings, context: _Context) -> np.ndarray:
        """Foreground pixels whose embeddings point at one place, outlined by intensity."""
        embedding = context.grid + maps["embeddings"][0]
        bandwidth, min_size = self.bandwidth(settings), self.min_size(settings)
        if settings.partition == "mutex":
            offsets = offsets_for_object_size(self.config.object_size)
            affinities = embedding_affinities(embedding, offsets, bandwidth)
            labels = split_and_filter(mutex_watershed(affinities, offsets, bias=settings.bias, mask=context.foreground),
                                      min_size)
        else:
            labels = meanshift_instances(embedding, context.foreground, bandwidth, min_size=min_size)
        if settings.outline > 0:
            labels = outline_by_intensity(labels, context.smooth, context.foreground, settings.outline,
                                          self.config.object_size, min_size)
        return shrink(labels, settings.halo_shrink)

    def bandwidth(self, settings: Settings) -> float:
        """Mean-shift bandwidth in image pixels."""
        return settings.bandwidth or 0.3 * self.config.object_size

    def min_size(self, settings: Settings) -> int:
        """Smallest object kept, in pixels."""
        return settings.min_size or int(0.1 * math.pi * (self.config.object_size / 2) ** 2)

    def smoothing(self) -> float:
        """Gaussian sigma (px) applied to the image before thresholds and outlines."""
        return max(1.0, self.config.object_size / 24.0)

    def foreground(self, maps: dict, settings: Settings, smooth: np.ndarray) -> np.ndarray:
        """Foreground mask ``(Y, X)``.

        ``"spread"`` is the paper's rule: background pixels have nothing to
        anchor on, so their embeddings scatter under input noise; Otsu splits
        the spread over the noise draws. ``"log-otsu"`` (the default) and
        ``"li"`` threshold the smoothed image, which suits fluorescence; on
        the nuclei sample log-Otsu keeps the dim nuclei that Li's threshold
        loses (see docs/benchmarks.md).
        """
        if settings.foreground == "spread":
            draws = maps["embeddings"][1:]
            if len(draws) < 2:
                raise InputError(_SPREAD_NEEDS_SAMPLES)
            spread = np.sqrt(draws.var(axis=0).sum(axis=0))
            return spread < threshold_otsu(spread)
        if settings.foreground == "li":
            return smooth > threshold_li(smooth)
        return log_otsu_foreground(smooth, self.min_size(settings))

    # -- optional hooks -----------------------------------------------------------------
    def check_settings(self, settings: Settings, n_samples: int, has_mask: bool) -> None:
        """Refuse the ``"spread"`` foreground for one sample (its noise draws are the samples), before any work."""
        if settings.foreground == "spread" and n_samples < 2:
            raise InputError(_SPREAD_NEEDS_SAMPLES)

    def draws_independent(self, settings: Settings) -> bool:
        """Each draw is partitioned alone, except that the ``"spread"`` foreground comes from all the noise draws."""
        return settings.foreground != "spread"

    def tune_grid(self) -> dict:
        size = self.config.object_size
        area = math.pi * (size / 2) ** 2
        return {
            "bandwidth": [round(f * size, 2) for f in (0.25, 0.3, 0.4)],
            "outline": [0.0, 0.3, 0.4, 0.5],
            "min_size": [int(f * area) for f in (0.05, 0.1, 0.2)],
        }


METHOD = MethodInfo(
    name="cellulus",
    title="Cellulus",
    summary="self-supervised object-centric embeddings; no labels needed",
    reference="Wolf, Lalit, McDole, Funke. Unsupervised Learning of Object-Centric Embeddings for Cell Instance Segmentation in Microscopy Images. ICCV 2023",
    labels="none",
    model_class=CellulusModel,
)
