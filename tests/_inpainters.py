"""A network-free inpainter for tests: Gaussian-weighted mean and spread of the visible pixels.

It predicts each pixel from its visible neighbourhood, so a side of a split
predicts its own flat object exactly and the other object badly: enough to
test the split logic without training a network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_inpainter(sigma: float = 3.0, floor: float = 1e-3):
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)

    def blur(x):
        kk = k.to(x.dtype)
        c = x.shape[1]
        out = F.conv2d(x, kk.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, radius), groups=c)
        return F.conv2d(out, kk.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(radius, 0), groups=c)

    def predict(images, visible):
        w = blur(visible)
        seen = w > 1e-6
        mean = blur(images * visible) / w.clamp(min=1e-6)
        var = (blur(images**2 * visible) / w.clamp(min=1e-6) - mean**2).clamp(min=0) + floor
        mean = torch.where(seen, mean, torch.zeros_like(mean))
        var = torch.where(seen, var, torch.ones_like(var))
        return mean, torch.log(var)

    return predict
