"""The training loop shared by every method.

A method supplies its network and a ``loss_fn(net, batch_rng)``; this loop
owns the rest: optimiser, mixed precision on GPUs, seeding, progress, cancel
and periodic checkpoints. Keeping it in one place means a fix here (say, an
OOM retry) reaches every method.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from probseg.core.bounds import check_seed
from probseg.core.callbacks import Callbacks, ensure
from probseg.core.errors import ProbsegError


@dataclass
class TrainLog:
    """What happened during training, saved with the model."""

    steps_done: int = 0
    steps_total: int = 0
    losses: list = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict:
        # At most ~1000 losses (every stride-th) keep config.json small for long runs.
        stride = max(1, len(self.losses) // 1000)
        return {
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "cancelled": self.cancelled,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "loss_stride": stride,
            "losses": [round(x, 6) for x in self.losses[::stride]],
        }


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, numpy and random; return a numpy Generator for batches.

    Raises
    ------
    InputError
        Unless ``seed`` is a whole number from 0 to 2**32 - 1.
    """
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed), nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_loop(
    net: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, np.random.Generator], torch.Tensor],
    *,
    steps: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    device: torch.device,
    rng: np.random.Generator,
    callbacks: Callbacks | None = None,
    save: Callable[[TrainLog], object] | None = None,
    checkpoint_every: int = 0,
) -> TrainLog:
    """Optimise ``net`` for ``steps`` steps of AdamW.

    Parameters
    ----------
    net : torch.nn.Module
        Already on ``device``.
    loss_fn : callable
        ``loss_fn(net, rng)`` draws a batch with ``rng`` and returns a scalar
        loss tensor.
    steps : int
    learning_rate, weight_decay : float
    device : torch.device
    rng : numpy.random.Generator
        Source of all batch randomness, so a seed reproduces a run.
    callbacks : Callbacks, optional
        ``on_progress(step, total, loss)`` after each step; ``should_stop``
        before each step. A stop ends the loop after the current step and
        still calls ``save``, so the last weights are kept.
    save : callable, optional
        ``save(log)`` writes a checkpoint; called every ``checkpoint_every``
        steps, on cancel, and at the end.
    checkpoint_every : int
        0 disables periodic checkpoints.

    Returns
    -------
    TrainLog

    Raises
    ------
    ProbsegError
        If the loss becomes NaN or infinite (learning rate too high, or data
        without usable signal).
    """
    cb = ensure(callbacks)
    log = TrainLog(steps_total=steps, device=str(device))
    optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    start = time.perf_counter()
    net.train()
    for step in range(1, steps + 1):
        if cb.stop_requested():
            log.cancelled = True
            break
        optimiser.zero_grad(set_to_none=True)
        with autocast_for(device):
            loss = loss_fn(net, rng)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ProbsegError(f"training diverged at step {step} (loss {value}); lower the learning rate")
        loss.backward()
        optimiser.step()
        log.losses.append(value)
        log.steps_done = step
        log.seconds = time.perf_counter() - start
        cb.progress(step, steps, value)
        if save is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
            cb.checkpoint(save(log))
    net.eval()
    log.seconds = time.perf_counter() - start
    if save is not None:
        cb.checkpoint(save(log))
    return log
