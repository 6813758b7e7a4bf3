"""Determinantal point processes over a grid, and non-max suppression by intersection over minimum.

CellSegmenter (D'Alessio et al.) puts a DPP prior on which cells of a coarse
object grid hold an object: with a similarity kernel ``S`` over the cells,

    P(omega) = det(S_omega) / det(S + I)

for the set ``omega`` of occupied cells (``S_omega`` keeps its rows and
columns). The RBF kernel ``S_lm = rho exp(-|r_l - r_m|^2 / (2 l^2))`` makes
nearby cells repel each other; ``rho`` and ``l`` are learnable, and the
log-probability is differentiable in both through the determinants. Its
posterior counterpart is a non-max suppression of overlapping box proposals,
with overlap measured as intersection over the smaller box's area, which
unlike IoU is 1 whenever one box holds the other.
"""

from __future__ import annotations

import math

import torch

__all__ = ["grid_positions", "rbf_kernel", "dpp_log_prob", "box_iomin", "nms_iomin"]


def grid_positions(shape: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """The ``(row, column)`` of every cell of a grid of ``shape``, in raster order: ``(N, 2)``."""
    rows, cols = torch.meshgrid(torch.arange(shape[0], device=device, dtype=dtype),
                                torch.arange(shape[1], device=device, dtype=dtype), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def rbf_kernel(positions: torch.Tensor, rho: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``rho * exp(-|r_l - r_m|^2 / (2 length^2))`` for every pair of ``positions`` ``(N, D)``: ``(N, N)``.

    ``rho`` and ``length`` are positive scalars (tensors, to learn them).
    """
    d2 = torch.cdist(positions, positions).pow(2)
    return rho * torch.exp(-d2 / (2.0 * length**2))


def dpp_log_prob(occupied: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``log det(S_omega) - log det(S + I)`` for each set ``omega`` of occupied cells.

    Parameters
    ----------
    occupied : Tensor of bool, shape (N,) or (B, N)
        Which of the N cells hold an object, per set.
    kernel : Tensor, shape (N, N)
        Symmetric positive semi-definite similarity (e.g. :func:`rbf_kernel`).

    Returns
    -------
    Tensor, shape () or (B,)
        The log-probability of each set under the DPP; the empty set has
        ``-log det(S + I)``, and a set whose sub-kernel is singular (two
        cells with identical rows) has ``-inf``.
    """
    single = occupied.dim() == 1
    sets = occupied.reshape(-1, occupied.shape[-1]).bool()
    n = kernel.shape[0]
    log_z = torch.linalg.slogdet(kernel + torch.eye(n, dtype=kernel.dtype, device=kernel.device))[1]
    out = []
    for chosen in sets:
        idx = torch.nonzero(chosen).reshape(-1)
        if len(idx) == 0:
            out.append(-log_z)
            continue
        sign, logdet = torch.linalg.slogdet(kernel[idx][:, idx])
        out.append(torch.where(sign > 0, logdet, torch.full_like(logdet, -math.inf)) - log_z)
    result = torch.stack(out)
    return result[0] if single else result


def box_iomin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over the smaller area of every pair of boxes ``(y0, x0, y1, x1)``: ``(len(a), len(b))``.

    Boxes of zero area give 0 against everything.
    """
    y0 = torch.maximum(a[:, None, 0], b[None, :, 0])
    x0 = torch.maximum(a[:, None, 1], b[None, :, 1])
    y1 = torch.minimum(a[:, None, 2], b[None, :, 2])
    x1 = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (y1 - y0).clamp(min=0) * (x1 - x0).clamp(min=0)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    smaller = torch.minimum(area_a[:, None], area_b[None, :])
    return torch.where(smaller > 0, inter / smaller.clamp(min=1e-12), torch.zeros_like(inter))


def nms_iomin(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, top_k: int | None = None) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-max suppression by intersection over minimum.

    Boxes are taken by descending score (ties: lower index first); a box is
    dropped when its intersection over the smaller area with an already kept
    box exceeds ``threshold`` (CellSegmenter: 0.3 in training, 0.5 at test).

    Parameters
    ----------
    boxes : Tensor, shape (N, 4)
        ``(y0, x0, y1, x1)``.
    scores : Tensor, shape (N,)
    threshold : float
    top_k : int, optional
        Keep at most this many.

    Returns
    -------
    Tensor of int64
        Kept indices, by descending score.
    """
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    overlap = box_iomin(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if top_k is not None and len(kept) >= top_k:
            break
        if all(float(overlap[i, j]) <= threshold for j in kept):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64)
