"""Loss functions shared by methods: object-centric embeddings and the discriminative loss."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def oce_loss(offsets: torch.Tensor, rng: np.random.Generator, *, kappa: float, temperature: float, density: float,
             regularizer_weight: float) -> torch.Tensor:
    """The object-centric embedding loss on a batch of offset maps.

    Parameters
    ----------
    offsets : Tensor, shape (B, 2, H, W)
        Predicted offsets ``r`` in pixels; embeddings are ``e = x + r``.
    rng : numpy.random.Generator
        Draws anchors and partners, so a seed reproduces the loss.
    kappa : float
        Partners lie within this radius of their anchor (px).
    temperature : float
        ``tau`` of the bounded distance (px^2).
    density : float
        Fraction of pixels used as anchors, and of the disc as partners.
    regularizer_weight : float
        Weight of the offset length ``|r_a|``.

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
    radius = kappa
    kappa = int(math.floor(radius))
    if h <= 2 * kappa or w <= 2 * kappa:
        raise ValueError(f"crop output {h}x{w} is too small for kappa={radius}")
    n_anchor = max(1, int(density * h * w))
    n_ref = max(1, int(round(density * math.pi * radius**2)))
    ay = rng.integers(kappa, h - kappa, size=(b, n_anchor))
    ax = rng.integers(kappa, w - kappa, size=(b, n_anchor))
    # Partners uniformly in the disc of radius kappa, never the anchor itself.
    cand = np.stack(np.meshgrid(np.arange(-kappa, kappa + 1), np.arange(-kappa, kappa + 1), indexing="ij"), -1).reshape(-1, 2)
    dist2 = (cand**2).sum(1)
    cand = cand[(dist2 > 0) & (dist2 <= radius**2)]
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
    attraction = (1.0 - torch.exp(-d2 / temperature)).sum()
    regular = r_a.norm(dim=1).sum()
    return (attraction + regularizer_weight * regular) / b


def discriminative_loss(embeddings: torch.Tensor, instances: torch.Tensor, delta_d: float, center_weight: float = 0.001) -> torch.Tensor:
    """The discriminative loss of one image, without hinge on the variance term.

    Parameters
    ----------
    embeddings : Tensor, shape (D, N)
        Embeddings of the N annotated object pixels.
    instances : Tensor of int, shape (N,)
        Their object ids (any integers).
    delta_d : float
        Means of different objects closer than this are pushed apart.
    center_weight : float
        Weight of the mean norm of the object means.

    Returns
    -------
    Tensor
        ``mean_c mean_{i in c} |x_i - mu_c|^2 + mean_{c != c'} [delta_d -
        |mu_c - mu_c'|]_+^2 + center_weight mean_c |mu_c|``; 0 without
        objects.
    """
    if instances.numel() == 0:
        return embeddings.sum() * 0.0
    _, index = torch.unique(instances, return_inverse=True)
    k = int(index.max()) + 1
    d = embeddings.shape[0]
    counts = torch.bincount(index, minlength=k).to(embeddings.dtype)
    means = torch.zeros(k, d, dtype=embeddings.dtype, device=embeddings.device).index_add_(0, index, embeddings.T) / counts[:, None]
    spread = ((embeddings.T - means[index]) ** 2).sum(dim=1)
    variance = (torch.zeros(k, dtype=embeddings.dtype, device=embeddings.device).index_add_(0, index, spread) / counts).mean()
    distance = embeddings.new_zeros(())
    if k > 1:
        a, b = torch.triu_indices(k, k, 1, device=embeddings.device)
        # The small constant keeps the gradient finite where two means coincide.
        gap = torch.sqrt(((means[a] - means[b]) ** 2).sum(dim=1) + 1e-8)
        distance = (F.relu(delta_d - gap) ** 2).mean()
    center = torch.sqrt((means**2).sum(dim=1) + 1e-8).mean()
    return variance + distance + center_weight * center
