"""A minimal method defined outside probseg, to show the method contract is all a method needs.

A one-layer convolution scores each pixel as foreground (it learns to call
pixels brighter than their crop's mean foreground); post-processing is a
threshold on that score and connected components. It has no embeddings and
no samples of its own: every sample is the segmentation.

tests/test_contract.py registers it with one line::

    methods.register("toy", "_toy_method")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.engine.registry import MethodInfo
from probseg.engine.model import SegmentationModel
from probseg.partition import connected_components
from probseg.nn.trainset import TrainingSet, random_crops


@dataclass
class Config(TrainingConfig):
    """Toy hyperparameters: small crops, small batches."""

    batch_size: int = param(2, "crops per iteration", unit="crops", minimum=1, maximum=64, advanced=True)
    crop_size: int = param(32, "side of the random training crops", unit="px", minimum=16, maximum=512, advanced=True)
    learning_rate: float = param(1e-2, "AdamW learning rate", minimum=1e-7, maximum=1.0, advanced=True)


@dataclass
class Settings:
    """Threshold and minimum size; changing them never reruns the network."""

    threshold: float = param(0.5, "foreground score above which a pixel belongs to an object", minimum=0.0, maximum=1.0)
    min_size: int = param(0, "smallest object kept", unit="px", minimum=0)


class ToyModel(SegmentationModel):
    """Threshold plus connected components on a learned foreground score."""

    method = "toy"
    config_class = Config
    settings_class = Settings
    raw_maps = ("foreground",)

    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        return nn.Conv2d(in_channels, 1, 3, padding=1)

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, _ = random_crops(ts, config.crop_size, config.batch_size, rng)
            images = images.to(device)
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            target = (images.mean(dim=1, keepdim=True) > mean).float()
            return F.binary_cross_entropy_with_logits(net(images), target)

        return loss_fn

    def n_draws(self, n_samples: int) -> int:
        return 1  # no sampling: every sample is the segmentation

    def draw(self, plane: np.ndarray, k: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        callbacks.raise_if_stopped()
        with torch.no_grad():
            score = torch.sigmoid(self.net(torch.from_numpy(plane)[None].to(self.device)))[0, 0]
        callbacks.progress(1, 1)
        return {"foreground": score.cpu().numpy().astype(np.float32)}

    def partition(self, maps: dict, settings: Settings, context) -> np.ndarray:
        return connected_components(maps["foreground"] > settings.threshold, settings.min_size)

    def tune_grid(self) -> dict:
        return {"threshold": [0.3, 0.5, 0.7], "min_size": [0, 10]}


METHOD = MethodInfo(
    name="toy",
    title="Toy threshold",
    summary="a learned foreground score, thresholded (a test of the method contract)",
    reference="none; see tests/_toy_method.py",
    labels="none",
    model_class=ToyModel,
)
