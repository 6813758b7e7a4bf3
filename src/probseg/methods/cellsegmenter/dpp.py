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

import torch

__all__ = ["grid_positions", "rbf_kernel", "dpp_log_prob", "box_iomin", "nms_top_k"]


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

    ``det(S_omega)`` is the determinant of ``S`` with every unoccupied row
    and column replaced by the identity's, so one batched ``slogdet`` serves
    every set.

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
        cells with identical rows) has ``-1e4 - log det(S + I)``, a floor
        that keeps a loss on it finite.
    """
    single = occupied.dim() == 1
    m = occupied.reshape(-1, occupied.shape[-1]).to(kernel.dtype)
    n = kernel.shape[0]
    eye = torch.eye(n, dtype=kernel.dtype, device=kernel.device)
    sub = m[:, :, None] * kernel * m[:, None, :] + torch.diag_embed(1.0 - m)
    sign, logdet = torch.linalg.slogdet(sub)
    log_z = torch.linalg.slogdet(kernel + eye)[1]
    result = torch.where(sign > 0, logdet, torch.full_like(logdet, -1e4)) - log_z
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


def nms_top_k(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched greedy non-max suppression by intersection over minimum, then the ``k`` best survivors.

    Boxes are taken by descending score; a box is dropped when its
    intersection over the smaller area with an already kept box exceeds
    ``threshold`` (CellSegmenter: 0.3 in training, 0.5 in the paper at test).

    Parameters
    ----------
    boxes : Tensor, shape (B, N, 4)
        ``(y0, x0, y1, x1)``.
    scores : Tensor, shape (B, N)
    threshold : float
    k : int

    Returns
    -------
    chosen : Tensor of int64, shape (B, min(k, N))
        Indices into N: the survivors by descending score, padded with
        dropped boxes where fewer than ``k`` survive.
    kept : Tensor of bool, shape (B, min(k, N))
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
