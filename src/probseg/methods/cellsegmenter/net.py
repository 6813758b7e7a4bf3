"""CellSegmenter's network: a U-Net that reads a window, and the decoders that explain it.

Its bottom features give the background latent (decoded into a background
image) and, per cell of a grid of one cell per :data:`GRID` px, a presence
probability and a box latent; each chosen box's appearance latent is read
from a glimpse of the last feature map and decoded into the object's image
and mask (:meth:`CellSegmenterNet.forward`). It also holds the learnable DPP
kernel, the SAPR multipliers and the running statistics of the loss
(:mod:`probseg.methods.cellsegmenter.loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from probseg.methods.cellsegmenter.dpp import grid_positions, nms_top_k, rbf_kernel
from probseg.methods.cellsegmenter.glimpse import crop_glimpses

GRID = 8  # px per cell of the object grid
GLIMPSE = 24  # side of the object glimpses (the paper's 28; 24 costs a quarter less on a CPU)
# The multipliers are stored divided by this, so that Adam, whose steps are
# about the learning rate whatever the gradient, moves them 10x faster than
# the weights: across their range in about 1000 steps rather than 10000.
LAMBDA_SPEED = 10.0


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
    are read from. ``config`` is the method's
    :class:`~probseg.methods.cellsegmenter.model.Config`.
    """

    def __init__(self, in_channels: int, config):
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
        crops = crop_glimpses(fmap, boxes * (fmap.shape[-1] / self.window), (GLIMPSE, GLIMPSE)).reshape(b * k, fmap.shape[1], GLIMPSE, GLIMPSE)
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
