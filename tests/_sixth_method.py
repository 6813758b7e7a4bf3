"""A sixth method, built only from probseg's shared packages, in one file.

Proof that "a new method is one file plus one registry line": a U-Net
(:mod:`probseg.nn.unet`) predicts pixel embeddings and a foreground score,
trained with the discriminative loss (:mod:`probseg.nn.losses`) on labels read
through the shared label encodings (:mod:`probseg.core.labels`, so sparse,
dense and proofread "reviewed" labels all work); draws add Gaussian noise to the
input; each draw's labels are the mean-shift clusters (:mod:`probseg.partition`)
of its foreground pixels. It declares ``learns_from_reviewed_objects``, so the
proofreading loop can retrain it. tests/test_sixth_method.py registers it with
one line::

    methods.register("sixth", "_sixth_method")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.core.errors import InputError
from probseg.core.labels import BACKGROUND, LABEL_MODES, encode_labels
from probseg.engine.model import SegmentationModel
from probseg.engine.registry import MethodInfo
from probseg.nn.losses import discriminative_loss
from probseg.nn.trainset import TrainingSet, random_crops
from probseg.nn.unet import UNet
from probseg.partition import meanshift_instances


# -- configs --------------------------------------------------------------------------------
@dataclass
class Config(TrainingConfig):
    """Hyperparameters of a small embedding U-Net."""

    batch_size: int = param(2, "crops per iteration", unit="crops", minimum=1, maximum=64, advanced=True)
    crop_size: int = param(48, "side of the random training crops", unit="px", minimum=32, maximum=512, advanced=True)
    learning_rate: float = param(3e-3, "AdamW learning rate", minimum=1e-7, maximum=1.0, advanced=True)
    embedding_dims: int = param(4, "embedding dimensions", minimum=2, maximum=16, advanced=True)
    delta_d: float = param(2.0, "object means closer than this are pushed apart", minimum=0.1, maximum=20.0, advanced=True)
    label_mode: str = param("dense", "dense: 0 is background; sparse: 0 is unlabelled; reviewed: background_id is background", choices=LABEL_MODES)
    background_id: int = param(65535, "the id of known background in reviewed labels", minimum=1, maximum=2**31 - 1, advanced=True)
    noise: float = param(0.05, "standard deviation of the Gaussian noise of each sample's input", minimum=0.0, maximum=1.0, advanced=True)


@dataclass
class Settings:
    """How embeddings become objects; changing them never reruns the network."""

    threshold: float = param(0.5, "foreground score above which a pixel belongs to an object", minimum=0.0, maximum=1.0)
    bandwidth: float = param(1.0, "mean-shift bandwidth in embedding units", minimum=0.01, maximum=100.0)
    min_size: int = param(10, "smallest object kept", unit="px", minimum=0)


# -- the model ------------------------------------------------------------------------------
class SixthModel(SegmentationModel):
    """Embeddings and a foreground score from one U-Net, clustered by mean shift."""

    method = "sixth"
    config_class = Config
    settings_class = Settings
    raw_maps = ("embeddings", "foreground")
    learns_from_reviewed_objects = True

    # -- network and loss ---------------------------------------------------------------
    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        return UNet(in_channels, config.embedding_dims + 1, num_fmaps=8, depth=1)

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        if any(lab is None for lab in ts.labels):
            raise InputError("the sixth method learns from labels; give a labels image for every training image")
        codes = [encode_labels(lab, config.label_mode, config.background_id) for lab in ts.labels]
        coded = TrainingSet(ts.planes, codes, ts.in_channels, ts.normalization, ts.notices)
        dims = config.embedding_dims

        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, labels = random_crops(coded, config.crop_size, config.batch_size, rng, with_labels=True)
            out = net(images.to(device))
            c = (labels.shape[-1] - out.shape[-1]) // 2
            labels = labels[:, c : c + out.shape[-2], c : c + out.shape[-1]].to(device)
            known = labels > 0
            loss = F.binary_cross_entropy_with_logits(out[:, dims][known], (labels[known] > BACKGROUND).float()) \
                if known.any() else out.sum() * 0.0
            for emb, lab in zip(out[:, :dims], labels):
                objects = lab > BACKGROUND
                loss = loss + discriminative_loss(emb[:, objects], lab[objects], config.delta_d)
            return loss

        return loss_fn

    # -- one draw -----------------------------------------------------------------------
    def draw(self, plane: np.ndarray, k: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """``"embeddings"`` ``(1, D, Y, X)`` and ``"foreground"`` ``(1, Y, X)``; draws after 0 see a noisy input."""
        seen = plane if k == 0 else plane + rng.normal(0.0, self.config.noise, plane.shape).astype(np.float32)
        out = self.apply_network(self.net.forward_same, np.ascontiguousarray(seen), self.config.embedding_dims + 1,
                                 callbacks=callbacks)
        dims = self.config.embedding_dims
        return {"embeddings": out[None, :dims], "foreground": 1.0 / (1.0 + np.exp(-out[None, dims]))}

    # -- one partition ------------------------------------------------------------------
    def partition(self, maps: dict, settings: Settings, context) -> np.ndarray:
        foreground = maps["foreground"][0] > settings.threshold
        return meanshift_instances(maps["embeddings"][0], foreground, settings.bandwidth, min_size=settings.min_size)

    # -- optional hooks -----------------------------------------------------------------
    def draws_independent(self, settings: Settings) -> bool:
        return True

    def tune_grid(self) -> dict:
        return {"threshold": [0.4, 0.5, 0.6], "bandwidth": [0.5, 1.0]}


METHOD = MethodInfo(
    name="sixth",
    title="Sixth (test)",
    summary="embeddings and a foreground score from a small U-Net, clustered by mean shift (a test of the contract)",
    reference="none; see tests/_sixth_method.py",
    labels="required",
    model_class=SixthModel,
)
