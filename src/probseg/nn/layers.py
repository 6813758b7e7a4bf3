"""Network layers shared by methods: Concrete Dropout (Gal, Hron, Kendall, NeurIPS 2017)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from probseg.core.errors import InputError


class ConcreteDropout(nn.Module):
    """A layer whose input passes through spatial dropout with a learned rate.

    Whole feature maps are dropped (one mask value per sample and channel),
    so one draw is a coherent network, and every tile of an image can be
    given the same draw.

    Parameters
    ----------
    layer : nn.Module
        The layer that receives the dropped input, e.g. a convolution; its
        parameters are the ``M`` of the weight regulariser.
    in_features : int
        ``F``, the number of input feature maps, which scales the entropy term.
    init_rate : float
        Dropout rate ``p`` before training, in (0, 1).
    temperature : float
        Temperature of the Concrete relaxation; small values give nearly
        binary masks.

    Attributes
    ----------
    sample : bool or None
        None: dropout is on in ``train()`` mode and off in ``eval()`` mode.
        True or False force it on or off (see :func:`dropout_sampling`).
    generator : torch.Generator or None
        Source of the masks; None uses torch's global generator.
    """

    def __init__(self, layer: nn.Module, in_features: int, init_rate: float = 0.1, temperature: float = 0.1):
        super().__init__()
        if not 0.0 < init_rate < 1.0:
            raise InputError(f"dropout rate must lie in (0, 1), got {init_rate}")
        self.layer = layer
        self.in_features = int(in_features)
        self.temperature = float(temperature)
        self.p_logit = nn.Parameter(torch.tensor(math.log(init_rate) - math.log1p(-init_rate)))
        self.sample: bool | None = None
        self.generator: torch.Generator | None = None

    @property
    def rate(self) -> torch.Tensor:
        """The dropout rate ``p`` (a differentiable scalar)."""
        return torch.sigmoid(self.p_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.training if self.sample is None else self.sample
        return self.layer(self._drop(x) if active else x)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-7
        p = self.rate
        u = torch.rand(x.shape[:2] + (1,) * (x.ndim - 2), generator=self.generator, device=x.device)
        # Concrete relaxation of a Bernoulli(p) "drop" variable (Gal et al., eq. 5).
        logit = torch.log(p + eps) - torch.log1p(-p + eps) + torch.log(u + eps) - torch.log1p(-u + eps)
        keep = 1.0 - torch.sigmoid(logit / self.temperature)
        # Inverted dropout: the expected input is unchanged, so "off" needs no rescaling.
        return x * (keep / (1.0 - p)).to(x.dtype)

    def regularization(self, weight_regularizer: float, dropout_regularizer: float) -> torch.Tensor:
        """The layer's KL term, before division by the dataset size.

        ``iota^2 (1 - p) / 2 |M|^2 - zeta F H(p)`` with ``H(p) = -p log p -
        (1 - p) log(1 - p)``. The stored weights ``W`` act on inputs scaled
        by ``1 / (1 - p)``, so ``M = W / (1 - p)`` and the weight term is
        ``iota^2 |W|^2 / (2 (1 - p))``.
        """
        p = self.rate
        square = sum((w.float() ** 2).sum() for w in self.layer.parameters())
        entropy = -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))
        return weight_regularizer * square / (2.0 * (1.0 - p)) - dropout_regularizer * self.in_features * entropy


@contextlib.contextmanager
def dropout_sampling(net: nn.Module, enabled: bool = True, generator: torch.Generator | None = None):
    """Switch every :class:`ConcreteDropout` layer of ``net`` on or off.

    Parameters
    ----------
    net : nn.Module
    enabled : bool
        True draws masks (Monte Carlo dropout) even in ``eval()`` mode;
        False gives the deterministic network even in ``train()`` mode.
    generator : torch.Generator, optional
        Source of the masks while the context lasts, so a seed reproduces a
        draw; it must live on the network's device.

    Yields
    ------
    nn.Module
        ``net``; the layers' previous settings return on exit.
    """
    layers = [m for m in net.modules() if isinstance(m, ConcreteDropout)]
    saved = [(m.sample, m.generator) for m in layers]
    for m in layers:
        m.sample, m.generator = bool(enabled), generator
    try:
        yield net
    finally:
        for m, (sample, gen) in zip(layers, saved):
            m.sample, m.generator = sample, gen


def dropout_layers(net: nn.Module) -> list:
    """The :class:`ConcreteDropout` layers of ``net``, input to output."""
    return [m for m in net.modules() if isinstance(m, ConcreteDropout)]


def dropout_rates(net: nn.Module) -> list[float]:
    """The current dropout rate of every :class:`ConcreteDropout` layer of ``net``, input to output."""
    return [float(m.rate.detach()) for m in dropout_layers(net)]


def dropout_regularization(net: nn.Module, weight_regularizer: float, dropout_regularizer: float) -> torch.Tensor:
    """Sum of the layers' KL terms (see :meth:`ConcreteDropout.regularization`)."""
    return sum(m.regularization(weight_regularizer, dropout_regularizer) for m in dropout_layers(net))
