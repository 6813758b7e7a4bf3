"""The protocol every trained model follows, and the work they all share.

A method implements one thing, :meth:`SegmentationModel._predict_plane`, on a
normalised ``(C, Y, X)`` plane. Input checking, 3-D stacks, normalisation,
saving and loading live here, written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from probseg import checkpoint
from probseg.agglomerate import agglomerate
from probseg.callbacks import Callbacks, ensure
from probseg.config import config_from_dict, config_to_dict
from probseg.device import resolve_device
from probseg.errors import CheckpointError, InputError
from probseg.inputs import Planes, to_planes
from probseg.normalize import DEFAULT_PERCENTILES, normalize_percentile, percentile_range
from probseg.uncertainty import pixel_disagreement


@dataclass
class PlanePrediction:
    """A method's output for one ``(Y, X)`` plane."""

    embeddings: np.ndarray  # (D, Y, X) float32
    samples: np.ndarray  # (n, Y, X) int32
    segmentation: np.ndarray  # (Y, X) int32


@dataclass
class Prediction:
    """Everything :meth:`SegmentationModel.predict` returns.

    For a 3-D stack each array gains a Z axis after the leading one:
    segmentation ``(Z, Y, X)``, samples ``(n, Z, Y, X)``, embeddings
    ``(Z, D, Y, X)``, uncertainty and probability ``(Z, Y, X)``.
    """

    segmentation: np.ndarray  # (Y, X) int32
    samples: np.ndarray  # (n, Y, X) int32
    embeddings: np.ndarray  # (D, Y, X) float32
    uncertainty: np.ndarray  # (Y, X) float32 in 0..1
    notice: str | None = None
    # Agglomerated draws: the probability of the object each pixel belongs to
    # (fraction of draws agreeing on it), (Y, X) float32; 0 on background.
    probability: np.ndarray | None = None


class SegmentationModel:
    """Base class of trained models.

    Subclasses set ``method`` and ``config_class``, build their network in
    ``build_network(config, in_channels)`` and implement ``_predict_plane``.
    """

    method: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    #: How the uncertainty map is made from the samples: "disagreement"
    #: (:func:`probseg.uncertainty.pixel_disagreement`) or "entropy" (the
    #: Bernoulli entropy of the agglomerated per-instance probabilities, in
    #: bits, clipped at 1).
    uncertainty_kind: ClassVar[str] = "disagreement"

    def __init__(self, config, net: torch.nn.Module, in_channels: int, normalization: dict, device="auto", train_log: dict | None = None):
        self.config = config
        self.net = net
        self.in_channels = in_channels
        self.normalization = dict(normalization)
        self.device = resolve_device(device)
        self.net.to(self.device).eval()
        self.train_log = train_log or {}
        # Inference window; the widgets and CLI expose it so large images fit in memory.
        self.tile_size = 512

    # -- what methods implement ---------------------------------------------------------
    @classmethod
    def build_network(cls, config, in_channels: int) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_plane(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, cb: Callbacks) -> PlanePrediction:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def prepare(self, image, channel_axis=None, rgb=False) -> Planes:
        """Check and normalise ``image`` into ``(Z, C, Y, X)`` planes."""
        planes = to_planes(image, channel_axis=channel_axis, rgb=rgb)
        if planes.n_channels != self.in_channels:
            raise InputError(
                f"the model was trained on {self.in_channels}-channel images but this image has {planes.n_channels}"
            )
        lo, hi = self.normalization.get("percentiles", DEFAULT_PERCENTILES)
        for z in range(planes.data.shape[0]):
            plane = planes.data[z]
            low, high = percentile_range(plane, (lo, hi), axis=(1, 2))
            planes.data[z] = normalize_percentile(plane, low[:, None, None], high[:, None, None])
        return planes

    def predict(self, image, n_samples: int = 8, *, seed: int = 0, channel_axis=None, rgb=False, callbacks: Callbacks | None = None) -> Prediction:
        """Segment ``image`` and draw ``n_samples`` segmentations from the model.

        Parameters
        ----------
        image : ndarray
            ``(Y, X)``, a ``(Z, Y, X)`` stack (plane by plane), or channels via
            ``channel_axis`` / ``rgb``.
        n_samples : int
            Number of samples, at least 1.
        seed : int
            Same seed, same samples.
        callbacks : Callbacks, optional
            Progress, cancel and notices.

        Returns
        -------
        Prediction
        """
        if int(n_samples) < 1:
            raise InputError(f"n_samples must be at least 1, got {n_samples}")
        cb = ensure(callbacks)
        planes = self.prepare(image, channel_axis, rgb)
        if planes.notice:
            cb.message(planes.notice)
        rng = np.random.default_rng(seed)
        outs = []
        for z in range(planes.data.shape[0]):
            outs.append(self._predict_plane(planes.data[z], int(n_samples), rng, cb))
        seg = np.stack([o.segmentation for o in outs])
        samples = np.stack([o.samples for o in outs], axis=1)
        emb = np.stack([o.embeddings for o in outs])
        uncs, probs = [], []
        for z in range(samples.shape[1]):
            agg = agglomerate(samples[:, z])
            probs.append(agg.probability)
            if self.uncertainty_kind == "entropy":
                uncs.append(np.clip(agg.entropy(), 0.0, 1.0).astype(np.float32))
            else:
                uncs.append(pixel_disagreement(samples[:, z]))
        unc, prob = np.stack(uncs), np.stack(probs)
        if not planes.is_stack:
            seg, samples, emb, unc, prob = seg[0], samples[:, 0], emb[0], unc[0], prob[0]
        return Prediction(seg, samples, emb, unc, planes.notice, prob)

    def segment(self, image, **kwargs) -> np.ndarray:
        """The model's single best segmentation of ``image`` (int32 labels)."""
        return self.predict(image, n_samples=1, **kwargs).segmentation

    def sample(self, image, n: int, **kwargs) -> np.ndarray:
        """``n`` instance segmentations of ``image``, shape ``(n, Y, X)``."""
        return self.predict(image, n_samples=n, **kwargs).samples

    def embed(self, image, **kwargs) -> np.ndarray:
        """Per-pixel embeddings, shape ``(D, Y, X)``."""
        return self.predict(image, n_samples=1, **kwargs).embeddings

    # -- persistence --------------------------------------------------------------------
    def save(self, folder) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``folder``."""
        extra = {
            "in_channels": self.in_channels,
            "normalization": self.normalization,
            "training": self.train_log,
        }
        return checkpoint.save_checkpoint(folder, self.method, config_to_dict(self.config), self.net.state_dict(), extra)

    @classmethod
    def load(cls, folder, device="auto") -> "SegmentationModel":
        """Load a model folder written by :meth:`save` (no unpickling)."""
        meta, state = checkpoint.load_checkpoint(folder, expected_method=cls.method or None)
        path = Path(folder) / checkpoint.CONFIG_NAME
        try:
            config = config_from_dict(cls.config_class, meta["config"])
            in_channels = int(meta["in_channels"])
            normalization = dict(meta.get("normalization", {}))
        except (InputError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} has invalid settings: {exc}") from None
        net = cls.build_network(config, in_channels)
        checkpoint.load_weights_into(net, state, Path(folder) / checkpoint.WEIGHTS_NAME)
        return cls(config, net, in_channels, normalization, device=device, train_log=meta.get("training"))

    def describe(self) -> str:
        """A short human summary: method, device, key settings, training."""
        steps = self.train_log.get("steps_done", "?")
        return f"{self.method} model, {self.in_channels} channel(s), trained {steps} steps, on {self.device}"
