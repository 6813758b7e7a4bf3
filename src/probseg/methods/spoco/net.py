"""SPOCO's network: the embedding U-Net ``f`` with its momentum copy ``g``, and the geometry of its views.

The training views and the test-time draws see the image turned and
mirrored (:func:`dihedral`); what the network outputs is turned back before
it is compared or kept. Spatial embeddings add each pixel's coordinates to
two embedding dimensions (:func:`add_coordinates`), so the network learns
displacements, which turn as vectors with the image.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from probseg.nn.unet import UNet


class SpocoNet(nn.Module):
    """The embedding network ``f`` and its momentum copy ``g``; calls run ``f``.

    ``f`` has ``embedding_dims + 1`` outputs: the embedding, then the logit of
    the foreground head, trained only where background is known.

    ``g`` has no gradient; only :meth:`update_momentum`, called once per
    training step by the loss, changes it. Both are in the state dict, so a
    saved model keeps ``g`` for further training.
    """

    def __init__(self, f: UNet):
        super().__init__()
        self.f = f
        self.g = copy.deepcopy(f)
        for p in self.g.parameters():
            p.requires_grad_(False)
        self.context, self.align = f.context, f.align
        # Facts about the training labels that post-processing needs, as
        # buffers so that they are saved with the weights: the median pixel
        # count of the labelled objects (0: not known yet), and what the
        # foreground head (f's last output channel) learned from: 0 nothing,
        # or a kind of :mod:`probseg.methods.spoco.foreground`.
        self.register_buffer("object_area", torch.zeros(()))
        self.register_buffer("foreground_kind", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)

    def forward_same(self, x: torch.Tensor) -> torch.Tensor:
        # UNet's padding around this module's own forward, so that every
        # network pass goes through forward (where tests count them).
        return UNet.forward_same(self, x)

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``theta_g <- m theta_g + (1 - m) theta_f`` for every parameter and buffer."""
        for pg, pf in zip(self.g.state_dict().values(), self.f.state_dict().values()):
            if pg.is_floating_point():
                pg.mul_(m).add_(pf.detach(), alpha=1.0 - m)
            else:
                pg.copy_(pf)


def dihedral(x, k: int, flip: bool, inverse: bool = False, vectors: bool = False):
    """Turn ``x`` by ``k`` quarter turns then mirror it, or undo that.

    Parameters
    ----------
    x : Tensor or ndarray, shape (..., Y, X)
        The last two axes are spatial.
    k : int
        Quarter turns, as :func:`numpy.rot90` counts them.
    flip : bool
        Whether the last axis is mirrored after the turns.
    inverse : bool
        Undo the transform instead: mirror, then turn back.
    vectors : bool
        Whether channels 0 and 1 of ``x`` (shape (C, Y, X)) are a field of
        (y, x) displacements, which turn and mirror with the image.

    Returns
    -------
    Tensor or ndarray
        Of the type of ``x``; a view where numpy can give one.
    """
    is_tensor = isinstance(x, torch.Tensor)
    rot = (lambda a, n: torch.rot90(a, n, dims=(-2, -1))) if is_tensor else (lambda a, n: np.rot90(a, n, axes=(-2, -1)))
    mirror = (lambda a: torch.flip(a, dims=(-1,))) if is_tensor else (lambda a: a[..., ::-1])
    if inverse:
        x = rot(mirror(x) if flip else x, -k)
    else:
        x = rot(x, k)
        x = mirror(x) if flip else x
    if not vectors:
        return x
    vy, vx = x[0], x[1]
    # A quarter turn maps a displacement (dy, dx) to (-dx, dy); a mirror negates dx.
    if inverse:
        vx = -vx if flip else vx
        for _ in range(k % 4):
            vy, vx = vx, -vy
    else:
        for _ in range(k % 4):
            vy, vx = -vx, vy
        vx = -vx if flip else vx
    stack = torch.stack if is_tensor else np.stack
    return (torch.cat if is_tensor else np.concatenate)([stack([vy, vx]), x[2:]])


def add_coordinates(embeddings, scale: float, origin=(0, 0)):
    """Embeddings with ``scale`` times each pixel's (y, x) added to dimensions 0 and 1.

    Parameters
    ----------
    embeddings : Tensor or ndarray, shape (D, Y, X)
    scale : float
        Embedding units per pixel; 0 returns ``embeddings`` itself.
    origin : tuple of int
        The (y, x) of the first pixel.

    Returns
    -------
    Tensor or ndarray, shape (D, Y, X)
        A new tensor, or a new float32 array.
    """
    if not scale:
        return embeddings
    h, w = embeddings.shape[-2:]
    if isinstance(embeddings, torch.Tensor):
        ys = torch.arange(h, dtype=embeddings.dtype, device=embeddings.device)[:, None] + origin[0]
        xs = torch.arange(w, dtype=embeddings.dtype, device=embeddings.device)[None, :] + origin[1]
        return torch.cat([(embeddings[0] + scale * ys)[None], (embeddings[1] + scale * xs)[None], embeddings[2:]])
    out = np.array(embeddings, dtype=np.float32, copy=True)
    out[0] += np.float32(scale) * (np.arange(h, dtype=np.float32)[:, None] + origin[0])
    out[1] += np.float32(scale) * (np.arange(w, dtype=np.float32)[None, :] + origin[1])
    return out
