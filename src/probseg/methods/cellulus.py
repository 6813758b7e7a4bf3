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

Inference: several salt-and-pepper noise draws of the input, each giving
embeddings; their spread (std) is high on background (nothing to anchor on)
and low inside objects, so Otsu on it gives the foreground; mean-shift on the
foreground embeddings gives instances. Each draw clustered alone is one
sample, so consensus and uncertainty can use the draws.

Objects are rescaled internally to :data:`INTERNAL_OBJECT_SIZE` pixels, the
size the field of view and ``kappa`` are made for, so the user's one number is
the object diameter in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.filters import gaussian, threshold_li, threshold_otsu
from skimage.transform import resize
from torch import nn

from probseg.callbacks import Callbacks
from probseg.clustering import meanshift_instances
from probseg.config import TrainingConfig, param
from probseg.model import PlanePrediction, SegmentationModel
from probseg.postprocess import shrink
from probseg.tiling import tiled_apply
from probseg.trainset import TrainingSet, random_crops

INTERNAL_OBJECT_SIZE = 24.0  # px after rescaling; matches the 17 px field of view and kappa = 10
CONTEXT = 8  # px the valid-convolution network loses on each side


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
    noise_draws: int = param(8, "salt-and-pepper noise draws at inference (more if more samples are asked)", minimum=2, maximum=256)
    noise_probability: float = param(0.01, "fraction of pixels set to black or white in each noise draw", minimum=0.0, maximum=0.5, advanced=True)
    foreground: str = param("intensity", "how background is found: Li threshold on the smoothed image (bright objects), or Otsu on the noise spread of the embeddings as in the paper", choices=("intensity", "spread"))
    bandwidth: float = param(0.0, "mean-shift bandwidth; 0 derives it from the object size", unit="px", minimum=0.0, maximum=1000.0)
    min_size: int = param(0, "smallest object kept; 0 means a tenth of the expected object area", unit="px", minimum=0)
    halo_shrink: int = param(0, "pixels removed from every object's border after clustering", unit="px", minimum=0, maximum=50, advanced=True)


def _block(cin: int, cout: int) -> nn.Sequential:
    # [3x3, 1x1, 1x1, 3x3] valid convolutions, as in the paper's mini U-Net
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 1), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 1), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3), nn.ReLU(inplace=True),
    )


class MiniUNet(nn.Module):
    """Depth-1 U-Net of valid convolutions; output is the input minus 8 px per side."""

    def __init__(self, in_channels: int, num_fmaps: int = 24, fmap_inc_factor: int = 3, out_channels: int = 2):
        super().__init__()
        lower = num_fmaps * fmap_inc_factor
        self.down = _block(in_channels, num_fmaps)
        self.bottom = _block(num_fmaps, lower)
        self.up = nn.ConvTranspose2d(lower, lower, 2, stride=2)
        self.out_block = _block(num_fmaps + lower, num_fmaps)
        self.head = nn.Conv2d(num_fmaps, out_channels, 1)
        # He initialisation, as the reference implementation does: with
        # PyTorch's default the signal shrinks through the 17 layers, the
        # offsets start out constant, and constant offsets are a stationary
        # point of the OCE loss that training escapes only very slowly.
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` with H, W even -> ``(B, 2, H - 16, W - 16)`` offsets in px."""
        skip = self.down(x)
        low = self.up(self.bottom(F.max_pool2d(skip, 2)))
        crop = (skip.shape[-1] - low.shape[-1]) // 2
        crop_y = (skip.shape[-2] - low.shape[-2]) // 2
        skip = skip[..., crop_y : crop_y + low.shape[-2], crop : crop + low.shape[-1]]
        return self.head(self.out_block(torch.cat([skip, low], dim=1)))

    def forward_same(self, x: torch.Tensor) -> torch.Tensor:
        """Offsets for every input pixel (reflect padding supplies the context)."""
        h, w = x.shape[-2:]
        # Pooling needs even sizes: make the image even first (as tiling does),
        # then add the context, so whole-image and tiled results agree.
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
        x = F.pad(x, (CONTEXT, CONTEXT, CONTEXT, CONTEXT), mode="reflect")
        return self(x)[..., :h, :w]


def oce_loss(offsets: torch.Tensor, config: Config, rng: np.random.Generator) -> torch.Tensor:
    """The object-centric embedding loss on a batch of offset maps.

    Parameters
    ----------
    offsets : Tensor, shape (B, 2, H, W)
        Predicted offsets ``r`` in pixels; embeddings are ``e = x + r``.
    config : Config
        Uses ``kappa``, ``temperature``, ``density``, ``regularizer_weight``.
    rng : numpy.random.Generator
        Draws anchors and partners, so a seed reproduces the loss.

    Returns
    -------
    Tensor
        Sum over pairs of ``1 - exp(-|e_a - e_b|^2 / tau)`` plus
        ``regularizer_weight`` times the sum of ``|r_a|``, divided by the
        batch size (a per-crop sum, as the reference implementation sums).
        Partners ``b`` lie within ``kappa`` of anchor ``a`` and their
        embedding is held fixed (no gradient), as in the reference.
        Summing rather than averaging matters: per-pair gradients are tiny,
        and averaged over ~10^5 pairs they fall to the size of Adam's epsilon.
    """
    b, _, h, w = offsets.shape
    kappa = int(math.floor(config.kappa))
    if h <= 2 * kappa or w <= 2 * kappa:
        raise ValueError(f"crop output {h}x{w} is too small for kappa={config.kappa}")
    n_anchor = max(1, int(config.density * h * w))
    n_ref = max(1, int(round(config.density * math.pi * config.kappa**2)))
    ay = rng.integers(kappa, h - kappa, size=(b, n_anchor))
    ax = rng.integers(kappa, w - kappa, size=(b, n_anchor))
    # Partners uniformly in the disc of radius kappa, never the anchor itself.
    cand = np.stack(np.meshgrid(np.arange(-kappa, kappa + 1), np.arange(-kappa, kappa + 1), indexing="ij"), -1).reshape(-1, 2)
    dist2 = (cand**2).sum(1)
    cand = cand[(dist2 > 0) & (dist2 <= config.kappa**2)]
    pick = cand[rng.integers(len(cand), size=(b, n_anchor, n_ref))]
    ry = ay[..., None] + pick[..., 0]
    rx = ax[..., None] + pick[..., 1]
    device = offsets.device
    flat = offsets.float().reshape(b, 2, h * w)
    a_idx = torch.from_numpy(ay * w + ax).to(device)
    r_idx = torch.from_numpy((ry * w + rx).reshape(b, -1)).to(device)
    r_a = torch.gather(flat, 2, a_idx[:, None, :].expand(b, 2, n_anchor))  # (B, 2, A)
    r_b = torch.gather(flat, 2, r_idx[:, None, :].expand(b, 2, r_idx.shape[1])).detach()
    pos_a = torch.from_numpy(np.stack([ay, ax], 1)).to(device, torch.float32)  # (B, 2, A)
    pos_b = torch.from_numpy(np.stack([ry.reshape(b, -1), rx.reshape(b, -1)], 1)).to(device, torch.float32)
    e_a = (r_a + pos_a).repeat_interleave(n_ref, dim=2)
    e_b = r_b + pos_b
    d2 = ((e_a - e_b) ** 2).sum(1)
    attraction = (1.0 - torch.exp(-d2 / config.temperature)).sum()
    regular = r_a.norm(dim=1).sum()
    return (attraction + config.regularizer_weight * regular) / b


def _scale(config: Config) -> float:
    s = INTERNAL_OBJECT_SIZE / config.object_size
    return 1.0 if abs(s - 1.0) < 0.05 else s


def _rescale(plane: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return plane
    shape = tuple(max(16, int(round(n * scale))) for n in plane.shape[1:])
    return resize(plane, (plane.shape[0],) + shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)


class CellulusModel(SegmentationModel):
    """A trained Cellulus network plus its inference settings."""

    method = "cellulus"
    config_class = Config

    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        return MiniUNet(in_channels, config.num_fmaps, config.fmap_inc_factor)

    @staticmethod
    def training_loss(config: Config, ts: TrainingSet, device: torch.device):
        """``loss_fn(net, rng)`` for :func:`probseg.training.train_loop`."""
        scale = _scale(config)
        planes = [_rescale(p, scale) for p in ts.planes]
        scaled = TrainingSet(planes, [None] * len(planes), ts.in_channels, ts.normalization, ts.notices)
        size = config.crop_size + (config.crop_size % 2)

        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, _ = random_crops(scaled, size, config.batch_size, rng)
            return oce_loss(net(images.to(device)), config, rng)

        return loss_fn

    def bandwidth(self) -> float:
        """Mean-shift bandwidth in image pixels."""
        return self.config.bandwidth or 0.3 * self.config.object_size

    def min_size(self) -> int:
        """Smallest object kept, in pixels."""
        return self.config.min_size or int(0.1 * math.pi * (self.config.object_size / 2) ** 2)

    def offsets(self, plane: np.ndarray, n_draws: int, rng: np.random.Generator, cb: Callbacks) -> np.ndarray:
        """Offsets ``(n_draws, 2, Y, X)`` in image pixels under salt-and-pepper noise."""
        scale = _scale(self.config)
        small = _rescale(plane, scale)
        draws = []
        for k in range(n_draws):
            noisy = small.copy()
            hit = rng.random(small.shape[1:]) < self.config.noise_probability
            salt = rng.random(small.shape[1:]) < 0.5
            noisy[:, hit & salt] = 1.0
            noisy[:, hit & ~salt] = 0.0
            sub = Callbacks(
                on_progress=lambda done, total, _l, k=k: cb.progress(k * total + done, n_draws * total),
                should_stop=cb.should_stop,
                on_message=cb.on_message,
            )
            r = tiled_apply(
                self.net.forward_same, noisy, 2, tile=self.tile_size, overlap=4 * CONTEXT, margin=CONTEXT,
                align=2, device=self.device, callbacks=sub,
            )
            if scale != 1.0:
                r = resize(r, (2,) + plane.shape[1:], order=1, preserve_range=True).astype(np.float32) / scale
            draws.append(r)
        return np.stack(draws)

    def foreground(self, plane: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Foreground mask ``(Y, X)`` of a normalised plane.

        ``"spread"`` is the paper's rule: background pixels have nothing to
        anchor on, so their embeddings scatter under input noise; Otsu splits
        the spread. After a few thousand CPU steps that spread still fails to
        separate many nuclei from the background in our trials, so the
        default is Li's threshold on the lightly smoothed image, which suits
        fluorescence (see docs/benchmarks.md).
        """
        if self.config.foreground == "spread":
            spread = np.sqrt(offsets.var(axis=0).sum(axis=0))
            return spread < threshold_otsu(spread)
        smooth = gaussian(plane.mean(axis=0), sigma=1.0)
        return smooth > threshold_li(smooth)

    def _predict_plane(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, cb: Callbacks) -> PlanePrediction:
        n_draws = max(n_samples, self.config.noise_draws)
        # For a 2-D image the first noise_draws come out of the rng the same
        # whatever n_samples is, and so does the segmentation built from them.
        offsets = self.offsets(plane, n_draws, rng, cb)
        h, w = plane.shape[1:]
        grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).astype(np.float32)
        base = offsets[: self.config.noise_draws]
        mean = base.mean(axis=0)
        foreground = self.foreground(plane, base)
        cluster = dict(bandwidth=self.bandwidth(), min_size=self.min_size())

        def finish(embedding: np.ndarray) -> np.ndarray:
            labels = meanshift_instances(grid + embedding, foreground, **cluster)
            return shrink(labels, self.config.halo_shrink)

        segmentation = finish(mean)
        samples = np.stack([finish(offsets[k]) for k in range(n_samples)])
        return PlanePrediction(embeddings=mean.astype(np.float32), samples=samples, segmentation=segmentation)


def train(images, labels=None, config: Config | dict | None = None, callbacks: Callbacks | None = None, **kwargs) -> CellulusModel:
    """Train Cellulus on the images to segment (labels are not used).

    Parameters and return value as :func:`probseg.api.train` with
    ``method="cellulus"``.
    """
    from probseg.api import train as _train

    return _train("cellulus", images, labels, config, callbacks=callbacks, **kwargs)


def _register():
    from probseg.methods import MethodInfo

    return MethodInfo(
        name="cellulus",
        title="Cellulus",
        summary="self-supervised object-centric embeddings; no labels needed",
        reference="Wolf, Lalit, McDole, Funke. Unsupervised Learning of Object-Centric Embeddings for Cell Instance Segmentation in Microscopy Images. ICCV 2023",
        labels="none",
        config_class=Config,
        model_class=CellulusModel,
        train=train,
    )


METHOD = _register()
