"""CellSegmenter: a structured generative model of objects on a background (D'Alessio et al.).

No labels. A window of the image is explained as a background plus a few
objects, each a box, an appearance and a soft mask:

- a U-Net reads the window; its bottom features give the background latent
  ``z0`` (decoded into a background image) and, on a coarse grid of one cell
  per 8 px, each cell's presence probability ``p`` and box latent ``v``;
- presence is drawn per cell, overlapping boxes are removed by non-max
  suppression by intersection over minimum (0.3) and at most
  ``max_objects`` are kept;
- each object's appearance latent ``z`` is read from a glimpse of the U-Net's
  last feature map inside its box, and decoded into the object's image and
  mask, which a spatial transformer pastes back into the window;
- the masks mix as ``pi_k = w_k / max(1, sum_j w_j)`` with the background
  taking the rest, and the window's likelihood is Gaussian around the
  mixture.

Training minimises the KL terms (analytic for the Gaussian latents; for the
grid, a DPP prior with learnable ``rho`` and length, whose KL is estimated by
REINFORCE as in the paper's Suppl. S8) subject to the posterior
regularisation of the paper's eq. (14): the reconstruction error, the
objects per window and the foreground fraction are kept in user ranges by
multipliers that grow while a range is missed. A warm-up first favours cells
whose box the background explains badly.

Where this departs from the paper, and why (each is also noted where it is
made):

- sized for a 2-core CPU: a U-Net of three poolings whose glimpse feature
  map is at half resolution, glimpses of 24 px (the paper's 28), 32 windows
  a step (the paper's 128);
- the multipliers move 10x faster than the weights (:data:`LAMBDA_SPEED`),
  so that they cross their range within a run of minutes;
- the user's foreground range constrains the share of the window the masks
  cover; the paper averages mask and box areas, which the user cannot
  know, and boxes are kept tight by a penalty on their excess over the mask;
- the appearance and box KL are divided by ``max_objects`` (a constant),
  not by the objects drawn, so that every object costs its code;
- prediction keeps the training NMS threshold 0.3 (the paper: 0.5);
- no flips or turns of the training windows unless ``flips`` is set.

Inference (:meth:`CellSegmenterModel.raw`) slides the window with a step of a
quarter window, so every pixel is seen 16 times, and draws the latents:
draw 0 is the posterior mode, draws 1..n are samples. What it keeps is
compact: each object's record (window, box, presence, latents) and its mask
glimpse. Post-processing (:meth:`CellSegmenterModel.instances`, no network)
pastes the glimpses back into soft masks and fuses the windows and draws by
the soft same-objectness graph and Leiden (:func:`probseg.consensus.soft_consensus`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.methods.cellsegmenter.dpp import box_iomin, grid_positions, rbf_kernel
from probseg.core.errors import InputError
from probseg.methods.cellsegmenter.glimpse import crop_glimpses_batched, paste_glimpses
from probseg.engine.model import SegmentationModel
from probseg.partition import split_and_filter
from probseg.nn.tiling import window_starts
from probseg.nn.trainset import TrainingSet, random_crops

GRID = 8  # px per cell of the object grid
GLIMPSE = 24  # side of the object glimpses (the paper's 28; 24 costs a quarter less on a CPU)
WINDOWS_PER_PIXEL = 16  # a step of a quarter window, as in the paper
LAMBDA_RANGE = (0.1, 10.0)  # the paper's bounds on the multipliers
# The multipliers are stored divided by this, so that Adam, whose steps are
# about the learning rate whatever the gradient, moves them 10x faster than
# the weights: across their range in about 1000 steps rather than 10000.
LAMBDA_SPEED = 10.0
NMS_TRAIN = 0.3


@dataclass
class Config(TrainingConfig):
    """CellSegmenter hyperparameters; the ranges describe the objects the user expects in one window."""

    steps: int = param(6000, "training iterations", unit="steps", minimum=1, maximum=1_000_000)
    # The CPU default; the paper used 128 windows a step on a GPU.
    batch_size: int = param(32, "windows per iteration", unit="windows", minimum=1, maximum=512, advanced=True)
    crop_size: int = param(80, "window side: the model explains the image one window at a time (a multiple of 16)", unit="px", minimum=32, maximum=512)
    learning_rate: float = param(1e-3, "Adam learning rate (the paper's 1e-3)", minimum=1e-7, maximum=1.0, advanced=True)
    weight_decay: float = param(0.0, "AdamW weight decay", minimum=0.0, maximum=1.0, advanced=True)
    object_size_min: float = param(10.0, "smallest object box side", unit="px", minimum=2.0, maximum=500.0)
    object_size_max: float = param(40.0, "largest object box side", unit="px", minimum=2.0, maximum=500.0)
    objects_min: float = param(1.5, "fewest objects expected per window, on average", unit="objects", minimum=0.0, maximum=1000.0)
    objects_max: float = param(6.5, "most objects expected per window, on average", unit="objects", minimum=0.0, maximum=1000.0)
    foreground_min: float = param(5.0, "smallest expected share of a window covered by objects", unit="%", minimum=0.0, maximum=100.0)
    foreground_max: float = param(15.0, "largest expected share of a window covered by objects", unit="%", minimum=0.0, maximum=100.0)
    max_objects: int = param(10, "top-k: most objects one window may hold (the paper's K_max: 10 for digits, 25 for nuclei)", unit="objects", minimum=1, maximum=100, advanced=True)
    noise_level: float = param(0.05, "sigma of the Gaussian likelihood, in normalised intensity (the paper's 0.05)", minimum=1e-3, maximum=1.0, advanced=True)
    appearance_dims: int = param(20, "size of each object's appearance latent z", minimum=1, maximum=256, advanced=True)
    background_dims: int = param(20, "size of the background latent", minimum=1, maximum=256, advanced=True)
    num_fmaps: int = param(16, "feature maps of the U-Net's first level", minimum=4, maximum=256, advanced=True)
    warmup_steps: int = param(300, "steps of the warm-up (cells the background explains badly are favoured), then as many to fade it out", unit="steps", minimum=0, maximum=100_000, advanced=True)
    overlap_weight: float = param(1.0, "penalty on mask mass beyond the strongest object at each pixel", minimum=0.0, maximum=100.0, advanced=True)
    box_term: float = param(0.01, "share of each object's box added to its mask in the mixing", minimum=0.0, maximum=0.5, advanced=True)
    flips: bool = param(False, "also train on flipped and quarter-turned windows: for images without a preferred orientation, such as nuclei (the paper's digits train without)", advanced=True)
    # The paper predicts with a permissive 0.5 and lets the consensus merge
    # duplicates; a model trained for minutes on a CPU still proposes
    # duplicate boxes that 0.5 lets through (benchmarks/cellsegmenter.py
    # scores both), so the default is the training value.
    nms_threshold: float = param(0.3, "at prediction: boxes overlapping more than this (intersection over the smaller) compete; 0.3 as in training, the paper predicts with 0.5", minimum=0.0, maximum=1.0, advanced=True)

    def check(self) -> None:
        """Rules between fields; raise one clear line."""
        if self.object_size_min > self.object_size_max:
            raise InputError(f"the object size range is inverted: smallest {self.object_size_min:g} px > largest {self.object_size_max:g} px")
        if self.crop_size % 16:
            raise InputError(f"the window side must be a multiple of 16 px, got {self.crop_size}")
        if self.object_size_max > self.crop_size:
            raise InputError(f"the window ({self.crop_size} px) is smaller than the largest object ({self.object_size_max:g} px); enlarge the window or lower the largest object size")
        if self.objects_min > self.objects_max:
            raise InputError(f"the objects-per-window range is inverted: fewest {self.objects_min:g} > most {self.objects_max:g}")
        if self.foreground_min > self.foreground_max:
            raise InputError(f"the foreground range is inverted: {self.foreground_min:g}% > {self.foreground_max:g}%")
        if self.max_objects < self.objects_max:
            raise InputError(f"max objects ({self.max_objects}) is below the most objects expected per window ({self.objects_max:g}); raise it")
        cells = (self.crop_size // GRID) ** 2
        if self.objects_max > cells:
            raise InputError(f"at most {cells} objects fit a {self.crop_size} px window (one per {GRID} px cell), got {self.objects_max:g}")


@dataclass
class Settings:
    """How the drawn windows become objects; changing them never reruns the network."""

    window_resolution: float = param(0.05, "Leiden CPM resolution of the consensus: the same-objectness two pixels need to stay together; higher splits more", minimum=1e-5, maximum=1.0)
    min_size: int = param(0, "smallest object kept; 0 means a quarter of the smallest box area", unit="px", minimum=0)
    window_min_foreground: float = param(0.5, "share of the windows and draws covering a pixel that must call it an object", minimum=0.0, maximum=1.0)


# -- the network ------------------------------------------------------------------------
def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


def _softplus_sigma(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x) + 1e-3


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL of ``N(mu, sigma^2)`` from ``N(0, 1)``, summed over the last axis."""
    return 0.5 * (sigma.pow(2) + mu.pow(2) - 1.0 - 2.0 * torch.log(sigma)).sum(-1)


class CellSegmenterNet(nn.Module):
    """Inference network and generative decoders of one window.

    The U-Net has three poolings, so its bottom is the object grid (one cell
    per 8 px); its last layer is the full-resolution feature map glimpses
    are read from.
    """

    def __init__(self, in_channels: int, config: Config):
        super().__init__()
        c = config.num_fmaps
        self.in_channels = in_channels
        self.window = config.crop_size
        self.size_range = (config.object_size_min, config.object_size_max)
        self.d_fg, self.d_bg = config.appearance_dims, config.background_dims
        # One convolution at full resolution, then blocks at 1/2, 1/4 and 1/8
        # (the grid); the feature map glimpses are read from is at 1/2, which
        # costs a third of a full-resolution one and still resolves 2 px.
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(inplace=True))
        self.enc = nn.ModuleList([_block(c, c), _block(c, 2 * c), _block(2 * c, 4 * c)])
        self.dec = nn.ModuleList([_block(6 * c, 2 * c), _block(3 * c, c)])
        self.grid_head = nn.Sequential(nn.Conv2d(4 * c, 32, 1), nn.ReLU(inplace=True), nn.Conv2d(32, 9, 1))
        side = self.window // 16
        # Pooled to the background decoder's first grid (the paper's 5x5 for
        # 80 px), not further: a structured background's phase and angle
        # live in where things are.
        self.bg_enc = nn.Sequential(nn.Conv2d(4 * c, 32, 1), nn.ReLU(inplace=True))
        self.bg_head = nn.Linear(2 * 32 * side * side, 2 * self.d_bg)
        self.bg_dec = nn.Sequential(
            nn.Linear(self.d_bg, 32 * side * side), nn.ReLU(inplace=True), nn.Unflatten(1, (32, side, side)),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(16, in_channels, 4, 2, 1),
        )
        self.fg_enc = nn.Sequential(nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(32, 32, 4, 2, 1),
                                    nn.ReLU(inplace=True), nn.Flatten())
        self.fg_head = nn.Linear(32 * (GLIMPSE // 4) ** 2, 2 * self.d_fg)
        q = GLIMPSE // 4
        self.fg_dec = nn.Sequential(
            nn.Linear(self.d_fg, 32 * q * q), nn.ReLU(inplace=True), nn.Unflatten(1, (32, q, q)),
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(8, in_channels + 1, 3, padding=1),
        )
        # SAF of the paper's Suppl. S2: box latents -> (0, 1)^4 by an affine map and a sigmoid.
        self.box_weight = nn.Parameter(torch.eye(4))
        self.box_bias = nn.Parameter(torch.zeros(4))
        # DPP kernel, learnable in log space so it stays positive.
        self.log_rho = nn.Parameter(torch.tensor(math.log(0.1)))
        self.log_length = nn.Parameter(torch.tensor(math.log(2.0)))
        # SAPR multipliers of reconstruction, objects per window and foreground.
        self.scaled_multipliers = nn.Parameter(torch.full((3,), 1.0 / LAMBDA_SPEED))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("kl_grid_scale", torch.ones(()))
        self.register_buffer("kl_grid_baseline", torch.zeros(()))

    # -- pieces ---------------------------------------------------------------------
    def features(self, x: torch.Tensor):
        """U-Net pass: the grid-level features ``(B, 4c, W/8, W/8)`` and the feature map ``(B, c, W/2, W/2)``."""
        skips = []
        h = self.stem(x)
        for block in self.enc:
            h = block(F.max_pool2d(h, 2))
            skips.append(h)
        bottom = h
        for block, skip in zip(self.dec, reversed(skips[:-1])):
            h = block(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), skip], 1))
        return bottom, h

    def background(self, bottom: torch.Tensor):
        """Posterior mean and sigma of the background latent: ``(B, D_bg)`` each."""
        h = self.bg_enc(bottom)
        side = self.window // 16
        pooled = torch.cat([F.adaptive_avg_pool2d(h, side), F.adaptive_max_pool2d(h, side)], 1).flatten(1)
        mu, s = self.bg_head(pooled).chunk(2, dim=1)
        return mu, _softplus_sigma(s)

    def grid(self, bottom: torch.Tensor):
        """Per cell: presence logit ``(B, N)``, box latent mean and sigma ``(B, N, 4)``."""
        out = self.grid_head(bottom).flatten(2).transpose(1, 2)  # (B, N, 9)
        return out[..., 0], out[..., 1:5], _softplus_sigma(out[..., 5:9])

    def boxes(self, v: torch.Tensor) -> torch.Tensor:
        """Boxes ``(y0, x0, y1, x1)`` in window px from box latents ``(B, N, 4)``, N the grid cells in raster order."""
        t = torch.sigmoid(self.box_bias + v @ self.box_weight.T)
        cells = self.window // GRID
        idx = torch.arange(cells * cells, device=v.device)
        cy = GRID * ((idx // cells).to(v.dtype) + t[..., 0])
        cx = GRID * ((idx % cells).to(v.dtype) + t[..., 1])
        lo, hi = self.size_range
        h = lo + (hi - lo) * t[..., 2]
        w = lo + (hi - lo) * t[..., 3]
        return torch.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], dim=-1)

    def appearance(self, fmap: torch.Tensor, boxes: torch.Tensor):
        """Posterior mean and sigma ``(B, K, D_fg)`` of each box's appearance latent."""
        b, k = boxes.shape[:2]
        # The feature map is at half resolution: halve the boxes.
        crops = crop_glimpses_batched(fmap, boxes * (fmap.shape[-1] / self.window), (GLIMPSE, GLIMPSE)).reshape(b * k, fmap.shape[1], GLIMPSE, GLIMPSE)
        mu, s = self.fg_head(self.fg_enc(crops)).chunk(2, dim=1)
        return mu.reshape(b, k, -1), _softplus_sigma(s).reshape(b, k, -1)

    def glimpses(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Object image ``(B, K, C, G, G)`` and mask in (0, 1) ``(B, K, G, G)`` from appearance latents."""
        b, k = z.shape[:2]
        out = self.fg_dec(z.reshape(b * k, -1)).reshape(b, k, self.in_channels + 1, GLIMPSE, GLIMPSE)
        return out[:, :, : self.in_channels], torch.sigmoid(out[:, :, self.in_channels])

    def dpp_kernel(self) -> torch.Tensor:
        cells = self.window // GRID
        positions = grid_positions((cells, cells), device=self.log_rho.device)
        return rbf_kernel(positions, self.log_rho.exp(), self.log_length.exp())

    # -- one pass -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *, sample: bool, nms_threshold: float, max_objects: int,
                warmup: float = 0.0, generator: torch.Generator | None = None) -> dict:
        """Explain windows ``x`` ``(B, C, W, W)``: latents, objects and the mixture.

        ``sample`` False takes the posterior mode (presence above 0.5, latent
        means); True draws every latent. Returns tensors keyed by name:
        ``p`` and ``occupied`` (presence after NMS) per grid cell ``(B, N)``,
        the rest per chosen slot ``(B, K, ...)``; boxes are in window px.
        """
        bottom, fmap = self.features(x)
        z0_mu, z0_sigma = self.background(bottom)
        logit, v_mu, v_sigma = self.grid(bottom)
        p = torch.sigmoid(logit)
        if sample:
            z0 = z0_mu + z0_sigma * _randn(z0_mu, generator)
            v = v_mu + v_sigma * _randn(v_mu, generator)
        else:
            z0, v = z0_mu, v_mu
        y0 = self.bg_dec(z0)
        all_boxes = self.boxes(v)
        if warmup > 0:
            rank = _residual_rank(x, y0.detach(), all_boxes.detach())
            p = (1.0 - warmup) * p + warmup * rank
        on = (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p.detach()) if sample else p.detach() > 0.5
        chosen, kept = nms_top_k(all_boxes.detach(), on.to(p.dtype) + p.detach(), nms_threshold, max_objects)
        present = torch.gather(on, 1, chosen) & kept  # (B, K) bool
        occupied = torch.zeros_like(on).scatter(1, chosen, present)  # c_grid after NMS
        def take(t: torch.Tensor) -> torch.Tensor:  # the chosen cells' rows of a (B, N, D) tensor
            return torch.gather(t, 1, chosen[..., None].expand(-1, -1, t.shape[-1]))

        boxes = take(all_boxes)
        p_k = torch.gather(p, 1, chosen)
        # Straight-through: the value is 0/1, the gradient reaches p.
        c_st = present.to(p.dtype) + p_k - p_k.detach()
        z_mu, z_sigma = self.appearance(fmap, boxes)
        z = z_mu + z_sigma * _randn(z_mu, generator) if sample else z_mu
        y_c, w_c = self.glimpses(z)
        return dict(p=p, occupied=occupied, present=present, c_st=c_st, boxes=boxes, p_k=p_k, v=take(v), v_mu=take(v_mu),
                    v_sigma=take(v_sigma), z_mu=z_mu, z_sigma=z_sigma, z=z, z0_mu=z0_mu, z0_sigma=z0_sigma, y0=y0, y_c=y_c,
                    w_c=w_c)


def _randn(like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _residual_rank(x: torch.Tensor, y0: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Rank / N of each cell's box by the mean squared residual of the background inside it (the warm-up)."""
    delta = (x - y0).pow(2).sum(1)  # (B, W, W)
    b, height, width = delta.shape
    integral = F.pad(delta.cumsum(1).cumsum(2), (1, 0, 1, 0))
    y0_, x0_, y1_, x1_ = boxes.round().long().unbind(-1)
    y0_, y1_ = y0_.clamp(0, height), y1_.clamp(0, height)
    x0_, x1_ = x0_.clamp(0, width), x1_.clamp(0, width)
    flat = integral.flatten(1)
    stride = width + 1

    def at(yy, xx):
        return torch.gather(flat, 1, yy * stride + xx)

    total = at(y1_, x1_) - at(y0_, x1_) - at(y1_, x0_) + at(y0_, x0_)
    area = ((y1_ - y0_) * (x1_ - x0_)).clamp(min=1).to(delta.dtype)
    order = (total / area).argsort(1).argsort(1)
    return (order + 1).to(x.dtype) / boxes.shape[1]


def nms_top_k(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched greedy NMS by intersection over minimum, then the ``k`` best survivors.

    Parameters
    ----------
    boxes : Tensor, shape (B, N, 4)
    scores : Tensor, shape (B, N)
    threshold : float
        A box is dropped when it overlaps an already kept, better box by more.
    k : int

    Returns
    -------
    chosen : Tensor of int64, shape (B, k)
        Indices into N: the survivors by descending score, padded with
        dropped boxes where fewer than ``k`` survive (N >= k).
    kept : Tensor of bool, shape (B, k)
        Whether each chosen index survived.
    """
    b, n = scores.shape
    k = min(k, n)
    # Only the best few can be among the k survivors' competitors that matter.
    m = min(n, 4 * k)
    top = scores.topk(m, dim=1).indices  # descending, stable enough: ties broken by index
    cand = torch.gather(boxes, 1, top[..., None].expand(-1, -1, 4))
    overlap = torch.stack([box_iomin(cand[i], cand[i]) for i in range(b)]) if b else cand.new_zeros(0, m, m)
    keep = torch.zeros(b, m, dtype=torch.bool, device=boxes.device)
    count = torch.zeros(b, dtype=torch.long, device=boxes.device)
    for i in range(m):
        clash = (keep[:, :i] & (overlap[:, i, :i] > threshold)).any(1)
        ok = ~clash & (count < k)
        keep[:, i] = ok
        count += ok.long()
    # Survivors first (in score order), then the rest as padding.
    key = keep.to(torch.float32) * 2 * m + (m - torch.arange(m, device=boxes.device, dtype=torch.float32))
    pick = key.topk(k, dim=1).indices
    return torch.gather(top, 1, pick), torch.gather(keep, 1, pick)


def mixing(boxes: torch.Tensor, masks: torch.Tensor, present: torch.Tensor, window: int, box_term: float = 0.0,
           images: torch.Tensor | None = None):
    """Paste object masks into their windows and mix them: the paper's eq. (6).

    Parameters
    ----------
    boxes : Tensor, shape (B, K, 4)
        In window px.
    masks : Tensor, shape (B, K, G, G)
        Mask glimpses in (0, 1).
    present : Tensor, shape (B, K)
        1 for objects, 0 for the unused slots (may carry gradients).
    window : int
    box_term : float
        Share of the box indicator added to each mask.
    images : Tensor, shape (B, K, C, G, G), optional
        Object image glimpses, pasted too.

    Returns
    -------
    pi : Tensor, shape (B, K + 1, W, W)
        Channel 0 the background; the channels sum to 1.
    weights : Tensor, shape (B, K, W, W)
        The pasted, presence-weighted masks ``w_k``.
    pasted_images : Tensor, shape (B, K, C, W, W) or None
    """
    b, k = masks.shape[:2]
    parts = [masks[:, :, None], torch.ones_like(masks[:, :, None])]
    if images is not None:
        parts.append(images)
    glimpse = torch.cat(parts, 2)
    out = paste_glimpses(glimpse.reshape(b * k, glimpse.shape[2], *masks.shape[-2:]), boxes.reshape(b * k, 4), (window, window))
    out = out.reshape(b, k, glimpse.shape[2], window, window)
    w = present[..., None, None] * ((1.0 - box_term) * out[:, :, 0] + box_term * out[:, :, 1])
    fg = w / w.sum(1, keepdim=True).clamp(min=1.0)
    pi = torch.cat([1.0 - fg.sum(1, keepdim=True), fg], 1)
    return pi, w, (out[:, :, 2:] if images is not None else None)


# -- the loss -----------------------------------------------------------------------------
def warmup_factor(step: int, warmup_steps: int) -> float:
    """The paper's f(t): 0.4 for ``warmup_steps``, then linearly to 0 over as many more."""
    if warmup_steps <= 0 or step >= 2 * warmup_steps:
        return 0.0
    return 0.4 if step < warmup_steps else 0.4 * (2 * warmup_steps - step) / warmup_steps


def sapr_loss(net: CellSegmenterNet, x: torch.Tensor, config: Config) -> tuple[torch.Tensor, dict]:
    """The loss of eq. (14) on windows ``x``, and its terms as floats."""
    with torch.no_grad():
        net.scaled_multipliers.clamp_(LAMBDA_RANGE[0] / LAMBDA_SPEED, LAMBDA_RANGE[1] / LAMBDA_SPEED)
    step = int(net.steps_seen)
    net.steps_seen += 1
    out = net(x, sample=True, nms_threshold=NMS_TRAIN, max_objects=config.max_objects,
              warmup=warmup_factor(step, config.warmup_steps))
    window = net.window
    pi, w, y = mixing(out["boxes"], out["w_c"], out["c_st"], window, config.box_term, out["y_c"])
    appearance = torch.cat([out["y0"][:, None], y], 1)  # (B, K+1, C, W, W)
    err = (x[:, None] - appearance).pow(2).sum(2)  # (B, K+1, W, W)
    q_rec = (pi * err).sum(1).mean((1, 2)) / (2 * config.noise_level**2)

    present = out["present"].to(x.dtype)
    # Normalised by the most objects a window may hold (the paper's K~), not
    # by how many it holds: each object then costs its code, and a digit
    # told as two objects costs more than as one.
    n_obj = float(config.max_objects)
    kl_bg = gaussian_kl(out["z0_mu"], out["z0_sigma"]) / net.d_bg
    kl_fg = (gaussian_kl(out["z_mu"], out["z_sigma"]) * present).sum(1) / (net.d_fg * n_obj)
    kl_box = (gaussian_kl(out["v_mu"], out["v_sigma"]) * present).sum(1) / (4 * n_obj)

    # Grid KL by REINFORCE (Suppl. S8): f = log q(c) - log P_DPP(c) for the drawn c.
    p = out["p"].clamp(1e-6, 1 - 1e-6)
    c = out["occupied"].to(x.dtype)
    log_q = (c * p.log() + (1 - c) * (1 - p).log()).sum(1)
    log_prior = batched_dpp_log_prob(out["occupied"], net.dpp_kernel())
    f = (log_q - log_prior).detach()
    with torch.no_grad():
        # The paper's N_grid: a moving average of the estimate's size; it
        # starts from the first batch, whose KL is far from 1.
        rate = 1.0 if step == 0 else 0.01
        net.kl_grid_baseline.mul_(1 - rate).add_(rate * f.mean())
        net.kl_grid_scale.mul_(1 - rate).add_(rate * f.abs().mean().clamp(min=1.0))
    kl_grid = ((f - net.kl_grid_baseline) * log_q - log_prior) / net.kl_grid_scale
    kl = kl_bg + kl_fg + kl_box + kl_grid

    # Posterior regularisation: reconstruction, objects per window, foreground fraction.
    cells = c.shape[1]
    q_density = (c + p - p.detach()).mean(1)
    # The paper's Q_area averages the mask and box areas; the user's range is
    # the share of the window the objects cover, so the constraint is on the
    # masks and the boxes are kept tight by their excess over the masks.
    box_area = (out["boxes"][..., 2] - out["boxes"][..., 0]) * (out["boxes"][..., 3] - out["boxes"][..., 1])
    mask_area = pi[:, 1:].sum((2, 3))
    q_area = (mask_area * out["c_st"]).sum(1) / (window * window)
    box_excess = ((box_area - mask_area).clamp(min=0) * out["c_st"]).sum(1) / (window * window)
    q = torch.stack([q_rec.mean(), q_density.mean(), q_area.mean()])
    lo = x.new_tensor([0.0, config.objects_min / cells, config.foreground_min / 100])
    hi = x.new_tensor([1.0, config.objects_max / cells, config.foreground_max / 100])
    lam = net.scaled_multipliers * LAMBDA_SPEED
    u = q * torch.sign(q - lo).detach()
    v = torch.minimum(q - lo, hi - q).detach()
    sapr = (lam.detach() * u + lam * v).sum() + 0.5 * lam[2].detach() * box_excess.mean()
    overlap = (w.sum(1) - w.max(1).values).mean()
    loss = kl.mean() + sapr + config.overlap_weight * overlap
    terms = {name: float(value.detach()) for name, value in
             dict(rec=q_rec.mean(), objects=present.sum(1).mean(), foreground=q_area.mean(),
                  kl=(kl_bg + kl_fg + kl_box + f / net.kl_grid_scale).mean(),
                  lambda_rec=lam[0], lambda_objects=lam[1], lambda_foreground=lam[2]).items()}
    return loss, terms


def batched_dpp_log_prob(occupied: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``log det(S_omega) - log det(S + I)`` for a batch of sets ``(B, N)`` at once.

    ``det(S_omega)`` is the determinant of ``S`` with every unoccupied row
    and column replaced by the identity's, so one batched ``slogdet`` serves
    all sets; equal to :func:`probseg.methods.cellsegmenter.dpp.dpp_log_prob`.
    """
    n = kernel.shape[0]
    eye = torch.eye(n, dtype=kernel.dtype, device=kernel.device)
    m = occupied.to(kernel.dtype)
    sub = m[:, :, None] * kernel * m[:, None, :] + torch.diag_embed(1.0 - m)
    sign, logdet = torch.linalg.slogdet(sub)
    log_z = torch.linalg.slogdet(kernel + eye)[1]
    return torch.where(sign > 0, logdet, torch.full_like(logdet, -1e4)) - log_z


# -- the model ----------------------------------------------------------------------------
OBJECT_FIELDS = ("window_y", "window_x", "y0", "x0", "y1", "x1", "presence", "present")


class CellSegmenterModel(SegmentationModel):
    """A trained CellSegmenter plus its post-processing settings."""

    method = "cellsegmenter"
    config_class = Config
    settings_class = Settings
    raw_maps = ("foreground", "objects", "glimpses")

    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        return CellSegmenterNet(in_channels, config)

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, _ = random_crops(ts, config.crop_size, config.batch_size, rng, augment=config.flips)
            loss, terms = sapr_loss(net, images.to(device), config)
            loss_fn.terms = terms
            return loss

        loss_fn.terms = {}
        return loss_fn

    # -- network ------------------------------------------------------------------------
    def window_origins(self, shape) -> list[tuple[int, int]]:
        """Top-left corners of the windows over a plane of ``shape`` (padded to a window where smaller)."""
        window = self.config.crop_size
        step = window // int(math.sqrt(WINDOWS_PER_PIXEL))
        ys = window_starts(max(shape[0], window), window, window - step)
        xs = window_starts(max(shape[1], window), window, window - step)
        return [(y, x) for y in ys for x in xs]

    def raw(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """Objects of every window and draw, and the mean foreground probability.

        Returns
        -------
        dict
            ``"foreground"`` ``(Y, X)``: ``1 - pi_0`` averaged over windows and
            draws; ``"objects"`` ``(draws, M, F)``: one row per window and
            object slot (:data:`OBJECT_FIELDS`, then ``z``, then ``v``), in
            plane px, ``present`` 0 for empty slots; ``"glimpses"``
            ``(draws, M, G, G)``: each object's mask glimpse. Draw 0 is the
            posterior mode, draws 1..n samples (none when ``n_samples`` is 1).
        """
        window = self.config.crop_size
        _, height, width = plane.shape
        padded = plane
        if height < window or width < window:
            mode = "reflect" if min(height, width) > 1 else "edge"
            padded = np.pad(plane, ((0, 0), (0, max(0, window - height)), (0, max(0, window - width))), mode=mode)
        origins = self.window_origins((height, width))
        n_draws = 1 if n_samples == 1 else 1 + n_samples
        k = self.config.max_objects
        n_fields = len(OBJECT_FIELDS) + self.config.appearance_dims + 4
        objects = np.zeros((n_draws, len(origins) * k, n_fields), dtype=np.float32)
        glimpses = np.zeros((n_draws, len(origins) * k, GLIMPSE, GLIMPSE), dtype=np.float32)
        fg_sum = np.zeros(padded.shape[1:], dtype=np.float32)
        fg_count = np.zeros(padded.shape[1:], dtype=np.float32)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(rng.integers(2**63 - 1)))
        batch = 32
        total = n_draws * len(origins)
        done = 0
        with torch.no_grad():
            for d in range(n_draws):
                for start in range(0, len(origins), batch):
                    callbacks.raise_if_stopped()
                    part = origins[start : start + batch]
                    x = torch.from_numpy(np.stack([padded[:, y : y + window, x0 : x0 + window] for y, x0 in part])).to(self.device)
                    out = self.net(x, sample=d > 0, nms_threshold=self.config.nms_threshold, max_objects=k,
                                   generator=generator)
                    present = out["present"].float()
                    pi, _, _ = mixing(out["boxes"], out["w_c"], present, window, self.config.box_term)
                    fg = (1.0 - pi[:, 0]).cpu().numpy()
                    rows = slice(start * k, (start + len(part)) * k)
                    table = objects[d, rows].reshape(len(part), k, n_fields)
                    org = torch.tensor(part, dtype=torch.float32, device=self.device)
                    boxes = out["boxes"] + org[:, None, :].repeat(1, 1, 2)
                    table[...] = torch.cat([
                        org[:, None, :].expand(-1, k, -1), boxes, out["p_k"][..., None], present[..., None], out["z"], out["v"],
                    ], dim=2).cpu().numpy()
                    glimpses[d, rows] = out["w_c"].reshape(len(part) * k, GLIMPSE, GLIMPSE).cpu().numpy()
                    for (y, x0), f in zip(part, fg):
                        fg_sum[y : y + window, x0 : x0 + window] += f
                        fg_count[y : y + window, x0 : x0 + window] += 1
                    done += len(part)
                    callbacks.progress(done, total)
        foreground = (fg_sum / np.maximum(fg_count, 1))[:height, :width]
        return {"foreground": np.ascontiguousarray(foreground), "objects": objects, "glimpses": glimpses}

    # -- post-processing ----------------------------------------------------------------
    def window_masks(self, raw: dict, draw: int, shape):
        """``(origin, pi (K + 1, h, w))`` of every window of one draw, cropped to the plane; no network."""
        window, k = self.config.crop_size, self.config.max_objects
        objects, glimpses = raw["objects"][draw], raw["glimpses"][draw]
        n_windows = len(objects) // k
        batch = 64
        for start in range(0, n_windows, batch):
            stop = min(n_windows, start + batch)
            rows = objects[start * k : stop * k].reshape(stop - start, k, -1)
            origin = torch.from_numpy(rows[:, 0, 0:2].copy())
            boxes = torch.from_numpy(rows[:, :, 2:6].copy()) - origin[:, None, :].repeat(1, 1, 2)
            present = torch.from_numpy(rows[:, :, 7].copy())
            masks = torch.from_numpy(glimpses[start * k : stop * k].reshape(stop - start, k, GLIMPSE, GLIMPSE).copy())
            pi, _, _ = mixing(boxes, masks, present, window, self.config.box_term)
            pi = pi.numpy()
            for i in range(stop - start):
                y, x = int(origin[i, 0]), int(origin[i, 1])
                h, w = min(window, shape[0] - y), min(window, shape[1] - x)
                yield (y, x), pi[i, :, :h, :w]

    def _fuse(self, raw: dict, draws, settings: Settings) -> np.ndarray:
        """One labeling from the windows of ``draws``: the argmax where one window covers the plane, else the consensus."""
        from probseg.consensus import soft_consensus

        shape = raw["foreground"].shape
        min_size = self.min_size(settings)
        if len(raw["objects"][0]) == self.config.max_objects and len(draws) == 1:
            (_, pi), = self.window_masks(raw, draws[0], shape)
            return split_and_filter(pi.argmax(0).astype(np.int32), min_size)
        windows = (w for d in draws for w in self.window_masks(raw, d, shape))
        consensus = soft_consensus(windows, shape, min_foreground=settings.window_min_foreground)
        return consensus.labels(settings.window_resolution, "cpm", 0, min_size).astype(np.int32)

    def min_size(self, settings: Settings) -> int:
        """Smallest object kept, in pixels."""
        return settings.min_size or int(0.25 * self.config.object_size_min**2)

    def instances(self, raw: dict, settings: Settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        n_draws = len(raw["objects"])
        segmentation = self._fuse(raw, list(range(n_draws)), settings)
        if n_draws == 1:
            return segmentation, segmentation[None]
        samples = np.empty((min(n_samples, n_draws - 1),) + segmentation.shape, dtype=np.int32)
        for k in range(len(samples)):
            samples[k] = self._fuse(raw, [1 + k], settings)
        return segmentation, samples

    def object_features(self, raw: dict, labels: np.ndarray) -> dict:
        """Each object's latent code, box, presence and size, from the posterior mode (draw 0).

        A labelled object may be seen by several windows; it takes the record
        of the window object whose mask covers most of it, and ``views``
        counts the window objects whose masks fall mostly on it.

        Returns
        -------
        dict of ndarray
            ``label``, ``area`` (px), ``presence`` (the grid probability),
            ``box_y0 box_x0 box_y1 box_x1`` (plane px), ``box_height``,
            ``box_width``, ``views``, then ``z_1..z_D`` (appearance) and
            ``v_1..v_4`` (box latents).
        """
        ids = np.unique(labels)
        ids = ids[ids > 0]
        n_fields = raw["objects"].shape[2]
        best = np.zeros((len(ids), n_fields), dtype=np.float32)
        best_overlap = np.zeros(len(ids), dtype=np.int64)
        views = np.zeros(len(ids), dtype=np.int64)
        index = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int64)
        index[ids] = np.arange(len(ids))
        k = self.config.max_objects
        rows = raw["objects"][0]
        for w, ((y, x), pi) in enumerate(self.window_masks(raw, 0, labels.shape)):
            owner = pi.argmax(0)
            seen = labels[y : y + owner.shape[0], x : x + owner.shape[1]]
            for slot in range(k):
                row = rows[w * k + slot]
                mine = owner == slot + 1
                if row[7] < 0.5 or not mine.any():
                    continue
                hit = np.bincount(seen[mine], minlength=index.size)
                hit[0] = 0
                if hit.max() * 2 < mine.sum():
                    continue
                j = index[int(hit.argmax())]
                views[j] += 1
                if hit.max() > best_overlap[j]:
                    best_overlap[j], best[j] = hit.max(), row
        d = self.config.appearance_dims
        base = len(OBJECT_FIELDS)
        table = {
            "label": ids.astype(np.int64),
            "area": np.bincount(labels.ravel(), minlength=index.size)[ids].astype(np.int64),
            "presence": best[:, 6],
            "box_y0": best[:, 2], "box_x0": best[:, 3], "box_y1": best[:, 4], "box_x1": best[:, 5],
            "box_height": best[:, 4] - best[:, 2], "box_width": best[:, 5] - best[:, 3],
            "views": views,
        }
        table.update({f"z_{i + 1}": best[:, base + i] for i in range(d)})
        table.update({f"v_{i + 1}": best[:, base + d + i] for i in range(4)})
        return table

    def count(self, raw: dict, draw: int = 0) -> int:
        """Objects the model finds in a plane that is one window: present slots of ``draw`` (0 is the posterior mode)."""
        return int(raw["objects"][draw][:, 7].sum())

    def tune_grid(self) -> dict:
        return {"window_resolution": [0.01, 0.03, 0.05, 0.1, 0.2, 0.4]}


def _register():
    from probseg.engine.registry import MethodInfo

    return MethodInfo(
        name="cellsegmenter",
        title="CellSegmenter",
        summary="generative model of objects on a background, trained without labels; posterior samples and counts",
        reference="D'Alessio, Dalca, Shen, Brooks, Lander. CellSegmenter: unsupervised representation learning and instance segmentation of modular images. 2020",
        labels="none",
        model_class=CellSegmenterModel,
    )


METHOD = _register()
