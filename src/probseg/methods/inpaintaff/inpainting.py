"""A probabilistic inpainting network of partial convolutions, and what it trains on.

InpaintAff (Wolf, Hamprecht, Funke 2020) measures how much one region of an
image tells about another with a network that inpaints any set of pixels.
Partial convolutions (Liu et al. 2018) make that possible: each layer sees
only the pixels marked visible, rescaled by how many of its window are
visible, and passes on which outputs saw anything. The network predicts,
for every pixel, a Gaussian (a mean and a log-variance per channel), so the
information gain between two conditionings is a closed-form KL
(:func:`probseg.methods.inpaintaff.split.relative_information_gain`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PartialConv2d", "InpaintingNet", "gaussian_nll", "disk_dilate", "random_visible"]

# Log-variances are squashed into this range: an unbounded one lets a single
# well-predicted pixel drive the loss to minus infinity.
LOGVAR_RANGE = (-9.0, 4.0)


class PartialConv2d(nn.Module):
    """A convolution over the visible pixels only (Liu et al. 2018, eq. 1-2).

    ``out = W^T (x * m) * window / sum(m) + b`` where the window saw a
    visible pixel, else 0; the new mask marks the outputs that saw one.
    ``same`` padding, so outputs keep the input's size (halved for stride 2).
    ``x`` must already be 0 where ``mask`` is (so ``x * m`` is ``x``).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.register_buffer("ones", torch.ones(1, 1, kernel, kernel), persistent=False)
        self.window = float(kernel * kernel)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv = self.conv
        with torch.no_grad():
            seen = F.conv2d(mask, self.ones.to(mask.dtype), stride=conv.stride, padding=conv.padding)
            new_mask = (seen > 0.5).to(x.dtype)
            ratio = self.window / seen.clamp(min=1.0) * new_mask
        # No ``x * mask`` here: every input is already 0 where its mask is
        # (InpaintingNet masks the image, and each layer zeroes what it did
        # not see), which saves a pass over the largest tensors.
        out = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
        return torch.addcmul(conv.bias.view(1, -1, 1, 1) * new_mask, out, ratio), new_mask


class _Block(nn.Module):
    """Two partial convolutions, each followed by a ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.a = PartialConv2d(cin, cout)
        self.b = PartialConv2d(cout, cout)

    def forward(self, x, m):
        x, m = self.a(x, m)
        x, m = self.b(F.relu(x), m)
        return F.relu(x), m


def _masked_pool(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x downsampling that averages the visible pixels only (a partial average pool)."""
    total = F.avg_pool2d(x * m, 2)
    seen = F.avg_pool2d(m, 2)
    new_mask = (seen > 0).to(x.dtype)
    return total / seen.clamp(min=1e-6) * new_mask, new_mask


class InpaintingNet(nn.Module):
    """A U-Net of partial convolutions that predicts a Gaussian for every pixel.

    A downscaled version of Liu et al.'s architecture, as in the paper (which
    uses depth 4 with 64..512 feature maps; the defaults here are sized for
    a CPU). Pixels no visible pixel reaches get a learned constant prior, the
    paper's "constant prior" far from the conditioning set.

    Parameters
    ----------
    in_channels : int
    num_fmaps : int
        Feature maps of the first level, doubled at every level.
    depth : int
        Number of 2x downsamplings; inputs must be multiples of ``2**depth``.

    Notes
    -----
    ``forward(image, visible)`` takes ``image`` (B, C, Y, X) and ``visible``
    (B, 1, Y, X) in {0, 1} and returns ``(mean, logvar)``, each (B, C, Y, X).
    The image is multiplied by ``visible`` first, so hidden pixels never leak.
    """

    def __init__(self, in_channels: int = 1, num_fmaps: int = 16, depth: int = 3):
        super().__init__()
        self.in_channels, self.depth = int(in_channels), int(depth)
        fmaps = [num_fmaps * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([_Block(in_channels if level == 0 else fmaps[level - 1], fmaps[level])
                                   for level in range(depth + 1)])
        self.up = nn.ModuleList([_Block(fmaps[level + 1] + fmaps[level], fmaps[level]) for level in range(depth)])
        self.head = nn.Conv2d(fmaps[0], 2 * in_channels, 1)
        self.prior = nn.Parameter(torch.zeros(2 * in_channels))

    @property
    def align(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.depth

    def forward(self, image: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, m = image * visible, visible
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x, m = _masked_pool(x, m)
            x, m = block(x, m)
            skips.append((x, m))
        for level in reversed(range(self.depth)):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            m = F.interpolate(m, scale_factor=2.0, mode="nearest")
            skip_x, skip_m = skips[level]
            x, m = self.up[level](torch.cat([x, skip_x], dim=1), torch.maximum(m, skip_m))
        out = self.head(x)
        out = out * m + self.prior.view(1, -1, 1, 1) * (1 - m)
        c = self.in_channels
        low, high = LOGVAR_RANGE
        logvar = low + (high - low) * torch.sigmoid(out[:, c:])
        return out[:, :c], logvar


def gaussian_nll(target: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-pixel negative log-likelihood of ``target`` under N(mean, exp(logvar)), summed over channels.

    Returns a (B, Y, X) tensor; the constant ``log(2 pi) / 2`` per channel is included.
    """
    nll = 0.5 * (logvar + (target - mean) ** 2 * torch.exp(-logvar) + math.log(2 * math.pi))
    return nll.sum(dim=1)


def disk(radius: int) -> torch.Tensor:
    """A (2r+1, 2r+1) float kernel of the pixels at Euclidean distance <= ``radius`` from the centre."""
    r = int(radius)
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    return ((yy**2 + xx**2) <= r * r).float()


def disk_dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Bool (B, Y, X): the pixels within Euclidean distance ``radius`` of a True pixel of ``mask`` (B, Y, X)."""
    if radius <= 0:
        return mask.bool()
    kernel = disk(radius).to(mask.device)[None, None]
    hit = F.conv2d(mask[:, None].float(), kernel, padding=int(radius))
    return hit[:, 0] > 0.5


def _blobs(b: int, side: int, gen: torch.Generator, device) -> torch.Tensor:
    """Random wiggly regions (B, Y, X) bool: smoothed noise at a random scale, cut at a random level."""
    out = torch.empty(b, side, side, dtype=torch.bool)
    for i in range(b):
        cells = int(torch.randint(2, 9, (1,), generator=gen))
        noise = torch.randn(1, 1, cells, cells, generator=gen)
        field = F.interpolate(noise, size=(side, side), mode="bicubic", align_corners=False)[0, 0]
        level = torch.quantile(field.flatten(), float(torch.rand(1, generator=gen)) * 0.6 + 0.2)
        out[i] = field > level
    return out.to(device)


def _half_planes(b: int, side: int, gen: torch.Generator, device) -> torch.Tensor:
    """Random straight splits (B, Y, X) bool: one side of a line through a random point at a random angle."""
    yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij")
    angle = torch.rand(b, generator=gen) * 2 * math.pi
    centre = torch.rand(b, 2, generator=gen) * side * 0.6 + side * 0.2
    dist = (yy[None] - centre[:, 0, None, None]) * torch.cos(angle)[:, None, None] + \
        (xx[None] - centre[:, 1, None, None]) * torch.sin(angle)[:, None, None]
    return (dist > 0).to(device)


def random_visible(b: int, side: int, max_band: int, gen: torch.Generator, device="cpu") -> torch.Tensor:
    """Visible-pixel masks (B, 1, Y, X) float like those the split step conditions on.

    Each mask is one side ``M`` of a random split of a random region ``R``,
    less the band of pixels within ``d`` (0..``max_band``) of the other side:
    the conditioning ``M \\ N`` of :func:`probseg.methods.inpaintaff.split.split_level`. Half
    the splits are straight lines (the split step's start), half wiggly
    regions (its later iterations); half the masks are cut to a region, as
    when a part of a patch is split again.
    """
    side_m = torch.where(torch.rand(b, 1, 1, generator=gen) < 0.5, _half_planes(b, side, gen, "cpu"),
                         _blobs(b, side, gen, "cpu"))
    region = torch.where(torch.rand(b, 1, 1, generator=gen) < 0.5, _blobs(b, side, gen, "cpu"),
                         torch.ones(b, side, side, dtype=torch.bool))
    visible = torch.empty(b, side, side, dtype=torch.bool)
    bands = torch.randint(0, max_band + 1, (b,), generator=gen)
    for i in range(b):
        m, r = side_m[i] & region[i], region[i]
        other = r & ~m
        visible[i] = m & ~disk_dilate(other[None], int(bands[i]))[0]
    return visible[:, None].float().to(device)


def numpy_generator_to_torch(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from ``rng`` (consumes one draw), for reproducible masks."""
    gen = torch.Generator()
    gen.manual_seed(int(rng.integers(0, 2**62)))
    return gen
