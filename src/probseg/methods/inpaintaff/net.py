"""InpaintAff's network: the inpainting network and the optional foreground network, with what they learned."""

from __future__ import annotations

import torch
from torch import nn

from probseg.methods.inpaintaff.inpainting import InpaintingNet
from probseg.nn.unet import UNet

__all__ = ["InpaintAffNet"]


class InpaintAffNet(nn.Module):
    """The inpainting network, and the optional foreground network (trained only when labels are given).

    Parameters
    ----------
    in_channels : int
        Channels of the images.
    num_fmaps : int
        Feature maps of the inpainting U-Net's first level.
    depth : int
        Downsamplings of the inpainting U-Net.
    """

    def __init__(self, in_channels: int, num_fmaps: int, depth: int):
        super().__init__()
        self.inpaint = InpaintingNet(in_channels, num_fmaps, depth)
        self.foreground = UNet(in_channels, 1, 8, 2, depth=2, kernels=(3, 3))
        # Buffers, so they persist with the weights: whether the foreground
        # network learned anything, and the labelled objects' median area.
        self.register_buffer("has_foreground", torch.zeros(()))
        self.register_buffer("object_area", torch.zeros(()))
