"""The valid-convolution U-Net every method builds its network from.

Valid convolutions make each output pixel depend on a fixed window of the
input, so an image can be processed in tiles with no seams: a tile only
needs :attr:`UNet.context` extra pixels on each side. ``forward_same``
supplies that context by reflection, for outputs the size of the input.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def plain_conv(cin: int, cout: int, kernel: int, first: bool) -> nn.Module:
    """A plain valid convolution (the default ``conv`` of :class:`UNet`)."""
    return nn.Conv2d(cin, cout, kernel)


def center_crop(x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """The centre ``shape`` (h, w) of ``x``'s last two axes."""
    dy = (x.shape[-2] - shape[0]) // 2
    dx = (x.shape[-1] - shape[1]) // 2
    return x[..., dy : dy + shape[0], dx : dx + shape[1]]


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad the last two axes by ``pad`` px, in rounds where the image is smaller than the pad."""
    while pad > 0:
        step = min(pad, x.shape[-1] - 1, x.shape[-2] - 1)
        x = F.pad(x, (step, step, step, step), mode="reflect")
        pad -= step
    return x


class UNet(nn.Module):
    """A 2-D U-Net of valid convolutions.

    Parameters
    ----------
    in_channels, out_channels : int
    num_fmaps : int
        Feature maps of the first level; level ``l`` has
        ``num_fmaps * fmap_inc_factor ** l``.
    fmap_inc_factor : int
    depth : int
        Number of 2x poolings (1 or more).
    kernels : tuple of int
        Kernel sizes of the convolutions in every block, each followed by a
        ReLU; e.g. ``(3, 3)``, or ``(3, 1, 1, 3)`` for the mini U-Net of Wolf et al. (ICCV 2023).
    conv : callable, optional
        ``conv(cin, cout, kernel, first) -> Module`` makes each convolution;
        ``first`` is True for the very first one. Wrap it to add layers such
        as :class:`probseg.nn.layers.ConcreteDropout`. Plain ``Conv2d`` by default.
    head : callable, optional
        ``head(cin, cout) -> Module``, the final 1x1 layer; a 1x1 ``Conv2d``
        by default.
    up_keeps_channels : bool
        True: the transposed convolution keeps the lower level's feature maps
        (Wolf et al. 2023); False: it reduces them to the upper level's.

    Notes
    -----
    Sizes fed to ``forward`` must be multiples of :attr:`align` once the
    context is removed; ``forward_same`` takes any size.
    """

    def __init__(self, in_channels: int, out_channels: int, num_fmaps: int = 16, fmap_inc_factor: int = 2, depth: int = 2,
                 kernels: tuple = (3, 3), conv: Callable = plain_conv, head: Callable | None = None,
                 up_keeps_channels: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth, self.kernels = int(depth), tuple(kernels)
        fmaps = [num_fmaps * fmap_inc_factor**level for level in range(depth + 1)]

        def block(cin: int, cout: int, first: bool = False) -> nn.Sequential:
            layers = []
            for i, k in enumerate(self.kernels):
                layers += [conv(cin if i == 0 else cout, cout, k, first and i == 0), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.down = nn.ModuleList([block(in_channels if level == 0 else fmaps[level - 1], fmaps[level], first=level == 0)
                                   for level in range(depth)])
        self.bottom = block(fmaps[depth - 1], fmaps[depth])
        ups, outs = [], []
        below = fmaps[depth]
        for level in reversed(range(depth)):
            up_out = below if up_keeps_channels else fmaps[level]
            ups.append(nn.ConvTranspose2d(below, up_out, 2, stride=2))
            outs.append(block(fmaps[level] + up_out, fmaps[level]))
            below = fmaps[level]
        self.up, self.out = nn.ModuleList(ups), nn.ModuleList(outs)
        self.head = head(fmaps[0], out_channels) if head is not None else nn.Conv2d(fmaps[0], out_channels, 1)
        # He initialisation: with PyTorch's default the signal shrinks through
        # the layers and the outputs start out nearly constant, a stationary
        # point that embedding losses escape only very slowly.
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.align = 2**self.depth
        big = 64 * self.align * 8
        self.context = (big - self._output_size(big)) // 2

    def _output_size(self, size: int) -> int:
        shrink = sum(k - 1 for k in self.kernels)
        sizes = []
        for _ in range(self.depth):
            size -= shrink
            sizes.append(size)
            size //= 2
        size -= shrink
        for _ in range(self.depth):
            size = 2 * size - shrink
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, out, H - 2 context, W - 2 context)``."""
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.bottom(F.max_pool2d(x, 2))
        for up, block, skip in zip(self.up, self.out, reversed(skips)):
            x = up(x)
            x = block(torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1))
        return self.head(x)

    def forward_same(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for every input pixel (reflect padding supplies the context)."""
        h, w = x.shape[-2:]
        # Pad to the pooling grid first, then the context, as tiling does, so
        # whole-image and tiled results agree.
        pad_y, pad_x = (-h) % self.align, (-w) % self.align
        if pad_y or pad_x:
            x = F.pad(x, (0, pad_x, 0, pad_y), mode="reflect")
        return self(reflect_pad(x, self.context))[..., :h, :w]
