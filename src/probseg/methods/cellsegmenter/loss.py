"""CellSegmenter's training loss: eq. (14) of the paper, KL terms under posterior regularisation."""

from __future__ import annotations

import torch

from probseg.methods.cellsegmenter.dpp import dpp_log_prob
from probseg.methods.cellsegmenter.net import LAMBDA_SPEED, CellSegmenterNet, gaussian_kl
from probseg.methods.cellsegmenter.windows import mixing

LAMBDA_RANGE = (0.1, 10.0)  # the paper's bounds on the multipliers
NMS_TRAIN = 0.3


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The paper's f(t): 0.4 for ``warmup_steps``, then linearly to 0 over as many more."""
    if warmup_steps <= 0 or step >= 2 * warmup_steps:
        return 0.0
    return 0.4 if step < warmup_steps else 0.4 * (2 * warmup_steps - step) / warmup_steps


def sapr_loss(net: CellSegmenterNet, x: torch.Tensor, config) -> tuple[torch.Tensor, dict]:
    """The loss of eq. (14) on windows ``x``, and its terms as floats.

    Parameters
    ----------
    net : CellSegmenterNet
        Its step count, multipliers and grid-KL statistics move with each call.
    x : Tensor, shape (B, C, W, W)
        Training windows, W the network's window.
    config : Config
        The method's :class:`~probseg.methods.cellsegmenter.model.Config`.

    Returns
    -------
    loss : Tensor, shape ()
    terms : dict of float
        ``rec``, ``objects``, ``foreground``, ``kl`` and the three multipliers
        ``lambda_rec``, ``lambda_objects``, ``lambda_foreground``.
    """
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
    log_prior = dpp_log_prob(out["occupied"], net.dpp_kernel())
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

