"""SPOCO: instance embeddings learned from a few object masks (positive-unlabelled supervision).

Wolny, Yu, Pape, Kreshuk, "Sparse Object-level Supervision for Instance
Segmentation with Pixel Embeddings", CVPR 2022.

A 2-D U-Net ``f`` maps every pixel to an embedding of ``embedding_dims``
numbers; ``g`` is its momentum copy (``theta_g <- m theta_g + (1 - m)
theta_f`` once per training step, never during prediction), stored with
the weights so that it persists in the model folder
(:mod:`probseg.methods.spoco.net`). Every training crop is seen twice,
through two draws of location- and shape-preserving augmentations: view 1
by ``f``, view 2 by ``g``, each turned back onto the crop. The loss
(:mod:`probseg.methods.spoco.loss`) is the paper's: the discriminative pull
and push over the labelled instances, a Dice term on the soft mask around
one anchor of each instance, a push of the objects away from the unlabelled
pixels, and the consistency of ``f`` and ``g`` on the unlabelled region.

A last output channel is a foreground head
(:mod:`probseg.methods.spoco.foreground`), trained on objects against known
background, or against the unlabelled pixels where no background is known.

**Label modes** (``label_mode``, :mod:`probseg.core.labels`):

* ``"sparse"`` (default): 0 is *unlabelled*, never background. Each id > 0
  is one object, whose mask must be complete.
* ``"dense"``: 0 is background, which becomes one more instance of the
  loss; there is no unlabelled region.
* ``"reviewed"``: sparse labels plus known background: pixels equal to
  ``background_id`` (65535 by default) are background, 0 is unlabelled. The
  proofreading export writes labels and a reviewed mask as two images;
  :func:`probseg.core.labels.reviewed_labels` joins them into this one
  image, which the Train widget and ``probseg train spoco --labels`` take
  like any labels image.

**Inference** (:meth:`SpocoModel.draw`): draw 0 is the plane as it is; each
further draw (one per sample) is a test-time augmentation, one of the eight
flips and turns in turn plus a random intensity scale and shift, whose
embeddings are turned back.

**Post-processing** (:meth:`SpocoModel.partition`, no network) partitions
each draw alone: affinities for the paper's offsets
(:data:`probseg.partition.DEFAULT_OFFSETS`) from the embeddings, then the
mutex watershed (default), mean-shift or HDBSCAN on the embeddings. The
background of a SPOCO embedding is one cluster like an object, so without a
foreground head the largest segment is dropped. The samples therefore show
how much the segmentation depends on the orientation and brightness the
network sees; their disagreement is the uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from probseg.core import bounds
from probseg.core.callbacks import Callbacks
from probseg.core.config import TrainingConfig, param
from probseg.core.errors import InputError
from probseg.core.labels import LABEL_MODES
from probseg.engine.model import SegmentationModel
from probseg.engine.registry import MethodInfo
import probseg.methods.spoco.loss as loss
from probseg.methods.spoco.foreground import drop_background, foreground_cut, keep_foreground
from probseg.methods.spoco.net import SpocoNet, add_coordinates, dihedral
from probseg.nn.trainset import TrainingSet
from probseg.nn.unet import UNet
from probseg.partition import (
    DEFAULT_OFFSETS,
    embedding_affinities,
    hdbscan_instances,
    meanshift_instances,
    mutex_watershed,
    split_and_filter,
)


# -- configs --------------------------------------------------------------------------------
@dataclass
class Config(TrainingConfig):
    """SPOCO hyperparameters.

    ``embedding_dims``, ``delta_v``, ``delta_d``, ``kernel_threshold`` and
    the weight decay are the paper's. The network (16 feature maps, depth
    2), the crops (96 px, 2 a step) and the steps are scaled down so that
    training takes about 4 minutes on one CPU thread; on a GPU raise
    ``num_fmaps``, ``crop_size``, ``batch_size`` and ``steps``.

    Two defaults depart from the paper. ``spatial`` 0.3: with the paper's
    non-spatial embeddings, exploratory runs on the nuclei sample (a quarter
    of the objects labelled) kept touching nuclei at nearly equal means and
    stayed below the classical baseline; the defaults' figures are in
    docs/benchmarks.md (``benchmarks/spoco_sparse.py``). ``momentum`` 0.99:
    the paper's 0.999 moves g too slowly for a few thousand steps
    (``benchmarks/spoco_probe.py`` compares them on touching blobs).
    """

    label_mode: str = param("sparse", "sparse: 0 is unlabelled (never background); dense: 0 is background; reviewed: 0 is unlabelled and background_id marks known background", choices=LABEL_MODES)
    background_id: int = param(65535, "reviewed mode: the label id of known background pixels", minimum=1, maximum=bounds.LABEL_ID.high)
    # Chosen with benchmarks/spoco_probe.py under the earlier non-spatial
    # defaults (touching blobs, a quarter of the objects labelled): the
    # paper's 2e-4 for 1000 steps learned far less than 1e-3 for 4000. The
    # paper trains far longer; a short CPU run needs the larger rate.
    steps: int = param(4000, "training iterations", unit="steps", minimum=1, maximum=1_000_000)
    batch_size: int = param(2, "crops per iteration", unit="crops", minimum=1, maximum=256, advanced=True)
    crop_size: int = param(96, "side of the random training crops; the loss sees the centre, 40 px smaller", unit="px", minimum=48, maximum=2048, advanced=True)
    learning_rate: float = param(1e-3, "AdamW learning rate (the paper: Adam at 2e-4, for much longer training)", minimum=1e-7, maximum=1.0, advanced=True)
    weight_decay: float = param(1e-5, "weight decay", minimum=0.0, maximum=1.0, advanced=True)
    object_crops: float = param(0.5, "fraction of training crops centred near a labelled object (the others anywhere), so that a few labelled objects reach most steps", minimum=0.0, maximum=1.0, advanced=True)
    embedding_dims: int = param(16, "dimensions of the per-pixel embedding", minimum=2, maximum=64, advanced=True)
    delta_v: float = param(0.5, "pull margin: an object's pixels within this embedding distance of its mean are not pulled; the soft mask is 0.5 there", minimum=0.01, maximum=100.0, advanced=True)
    delta_d: float = param(2.0, "push margin: object means 2 delta_d apart are not pushed; unlabelled pixels are pushed delta_d from object means", minimum=0.01, maximum=100.0, advanced=True)
    spatial: float = param(0.3, "embedding units per pixel added to the first two embedding dimensions (spatial embeddings: the network learns offsets towards object centres); 0: the paper's non-spatial embeddings", minimum=0.0, maximum=10.0, advanced=True)
    kernel_threshold: float = param(0.9, "t of the soft masks: their value at embedding distance delta_v (the paper's 0.9; higher gives crisper objects from few labels)", minimum=0.01, maximum=0.99, advanced=True)
    momentum: float = param(0.99, "m of the momentum network g: theta_g <- m theta_g + (1 - m) theta_f each step", minimum=0.0, maximum=1.0, advanced=True)
    instance_weight: float = param(1.0, "weight of the single-object Dice term", minimum=0.0, maximum=100.0, advanced=True)
    unlabelled_push_weight: float = param(1.0, "weight of the push of objects away from unlabelled pixels", minimum=0.0, maximum=100.0, advanced=True)
    consistency_weight: float = param(1.0, "weight of the f/g embedding consistency on the unlabelled region", minimum=0.0, maximum=100.0, advanced=True)
    foreground_weight: float = param(1.0, "weight of the foreground head's cross-entropy (0: no head)", minimum=0.0, maximum=100.0, advanced=True)
    unlabelled_foreground_weight: float = param(0.5, "labels without background: weight of the unlabelled pixels as background for the foreground head, relative to the objects (positive-unlabelled learning)", minimum=0.0, maximum=10.0, advanced=True)
    consistency_anchors: int = param(8, "most anchors per crop covering the unlabelled region in the consistency term", minimum=1, maximum=256, advanced=True)
    intensity_scale: float = param(0.2, "augmentation: intensities multiplied by a factor between 1/(1+s) and 1+s (training views and test-time draws)", minimum=0.0, maximum=4.0, advanced=True)
    intensity_shift: float = param(0.1, "augmentation: a shift between -s and s added to the normalised intensities", minimum=0.0, maximum=4.0, advanced=True)
    noise: float = param(0.03, "augmentation: sigma of Gaussian noise added to each training view", minimum=0.0, maximum=4.0, advanced=True)
    depth: int = param(2, "U-Net levels; each adds a 2x downsampling and widens the field of view (depth 2: 41 px, 3: 93 px)", minimum=1, maximum=5, advanced=True)
    num_fmaps: int = param(16, "feature maps of the U-Net's first level", minimum=2, maximum=256, advanced=True)
    fmap_inc_factor: int = param(2, "feature map growth per U-Net level", minimum=1, maximum=8, advanced=True)


@dataclass
class Settings:
    """How SPOCO's embeddings become objects; changing them never reruns the network."""

    partition: str = param("mutex", "mutex: mutex watershed on affinities of the embeddings for the paper's offsets (fast); meanshift: mean-shift clustering of the embeddings; hdbscan: density clustering of the embeddings (slow; noise becomes background)", choices=("mutex", "meanshift", "hdbscan"))
    bias: float = param(0.5, "mutex: affinity below which two pixels repel; higher splits more", minimum=0.0, maximum=1.0)
    bandwidth: float = param(0.0, "meanshift: kernel radius in embedding units; 0: delta_v", unit="embedding units", minimum=0.0, maximum=100.0)
    background: str = param("auto", "auto: the foreground head where the model learned one (background was labelled), else the largest segment; foreground: the head's probability; largest: the largest segment is the background (one cluster of embeddings); none: keep every segment", choices=("auto", "foreground", "largest", "none"))
    foreground_threshold: float = param(0.0, "with a foreground head: pixels scoring below this are background; 0: automatic (0.5 when background was labelled; else segments whose mean score is below half Otsu's threshold of the image's scores)", minimum=0.0, maximum=1.0)
    hdbscan_points: int = param(20000, "hdbscan: cluster at most this many pixels, the others join their nearest clustered pixel (HDBSCAN's time grows faster than the pixel count)", unit="px", minimum=100, maximum=100_000_000)
    min_size: int = param(0, "smallest object kept; 0: a quarter of the median area of the labelled training objects", unit="px", minimum=0, maximum=bounds.MIN_SIZE.high)


# -- the model ------------------------------------------------------------------------------
class SpocoModel(SegmentationModel):
    """A trained SPOCO embedding network plus its post-processing settings."""

    method = "spoco"
    config_class = Config
    settings_class = Settings
    learns_from_reviewed_objects = True

    # -- network and loss ---------------------------------------------------------------
    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        # Depth 2 of two 3x3 valid convolutions a level (41 px field of view),
        # enough for nuclei of about 30 px; g starts as a copy of f.
        return SpocoNet(UNet(in_channels, config.embedding_dims + 1, config.num_fmaps, config.fmap_inc_factor, depth=config.depth,
                             kernels=(3, 3)))

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        """See :func:`probseg.methods.spoco.loss.training_loss`."""
        return loss.training_loss(config, ts, device)

    # -- one draw -----------------------------------------------------------------------
    def draw(self, plane: np.ndarray, k: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """``"embeddings"`` ``(1, D, Y, X)`` and, with a foreground head, ``"foreground"`` ``(1, Y, X)``.

        Draw 0 is the plane as it is. Draw k >= 1 is dihedral transform
        ``k mod 8`` (quarter turns ``k mod 4``, mirrored when ``(k // 4)``
        is odd) with an intensity scale then shift drawn from ``rng``, so
        the first draws do not depend on the number of samples; its
        embeddings are turned back onto the plane.
        """
        config = self.config
        if k == 0:
            emb = self._embed(plane, callbacks)
        else:
            turns, flip = k % 4, (k // 4) % 2 == 1
            scale = float(rng.uniform(1.0 / (1.0 + config.intensity_scale), 1.0 + config.intensity_scale))
            shift = float(rng.uniform(-config.intensity_shift, config.intensity_shift))
            seen = dihedral(plane * np.float32(scale) + np.float32(shift), turns, flip)
            emb = np.ascontiguousarray(dihedral(self._embed(seen, callbacks), turns, flip, inverse=True,
                                                vectors=config.spatial > 0))
        embeddings = add_coordinates(emb[:config.embedding_dims], config.spatial)[None]
        draw = {"embeddings": embeddings.astype(np.float32, copy=False)}
        if self.has_foreground():
            draw["foreground"] = (1.0 / (1.0 + np.exp(-emb[None, -1]))).astype(np.float32)
        return draw

    def _embed(self, plane: np.ndarray, callbacks: Callbacks) -> np.ndarray:
        """The network's ``embedding_dims + 1`` output channels over ``plane``."""
        return self.apply_network(self.net.forward_same, np.ascontiguousarray(plane), self.config.embedding_dims + 1,
                                  callbacks=callbacks)

    # -- one partition ------------------------------------------------------------------
    def partition(self, maps: dict, settings: Settings, context) -> np.ndarray:
        """Labels ``(Y, X)`` int32 of one draw's embeddings and, if any, its foreground probability."""
        embeddings = maps["embeddings"][0]
        foreground = maps["foreground"][0] if "foreground" in maps else None
        everywhere = np.ones(embeddings.shape[1:], dtype=bool)
        if settings.partition == "meanshift":
            labels = meanshift_instances(embeddings, everywhere, settings.bandwidth or self.config.delta_v)
        elif settings.partition == "hdbscan":
            labels = hdbscan_instances(embeddings, everywhere, max(2, self.min_size(settings)),
                                       max_points=settings.hdbscan_points)
        else:
            # SPOCO's kernel: affinity 0 from 2 delta_d, where the push stops.
            affinities = embedding_affinities(embeddings, DEFAULT_OFFSETS, self.config.delta_d, kernel="hinge")
            labels = mutex_watershed(affinities, DEFAULT_OFFSETS, bias=settings.bias)
        labels = drop_background(labels, settings.background, foreground, self.foreground_kind(),
                                 settings.foreground_threshold)
        return split_and_filter(labels, self.min_size(settings))

    def min_size(self, settings: Settings) -> int:
        """Smallest object kept, in pixels: the setting, or a quarter of the labelled objects' median area.

        Background that the embedding has not yet gathered into one cluster
        breaks into fragments; sizing the filter from the objects the user
        labelled removes them without asking for an object size.
        """
        if settings.min_size:
            return settings.min_size
        area = self.object_area()
        return max(1, int(0.25 * area)) if area > 0 else 20

    def foreground_cut(self, foreground: np.ndarray, settings: Settings) -> float:
        """The score from which a pixel or a segment is foreground.

        See :func:`probseg.methods.spoco.foreground.foreground_cut`.
        """
        return foreground_cut(foreground, self.foreground_kind(), settings.foreground_threshold)

    def keep_foreground(self, labels: np.ndarray, foreground: np.ndarray, settings: Settings) -> np.ndarray:
        """``labels`` with background set to 0 by the head's scores.

        See :func:`probseg.methods.spoco.foreground.keep_foreground`.
        """
        return keep_foreground(labels, foreground, self.foreground_kind(), settings.foreground_threshold)

    # -- optional hooks -----------------------------------------------------------------
    @property
    def raw_maps(self) -> tuple:
        """``"embeddings"``, and ``"foreground"`` for a model with a foreground head (known once trained)."""
        return ("embeddings", "foreground") if self.has_foreground() else ("embeddings",)

    def foreground_kind(self) -> int:
        """0: no foreground head; FROM_UNLABELLED or FROM_BACKGROUND: what it learned from."""
        if self.net is not None:
            return int(self.net.foreground_kind)
        return int(self.learned_record.get("foreground_kind", 0))

    def object_area(self) -> float:
        """Median pixel count of the labelled training objects; 0 when unknown."""
        if self.net is not None:
            return float(self.net.object_area)
        return float(self.learned_record.get("object_area", 0.0))

    def has_foreground(self) -> bool:
        """Whether the model has a trained foreground head."""
        return self.foreground_kind() > 0

    def learned(self) -> dict:
        """The object area and whether there is a foreground head, for post-processing without weights."""
        return {"object_area": self.object_area(), "foreground_kind": self.foreground_kind()}

    def check_settings(self, settings: Settings, n_samples: int, has_mask: bool) -> None:
        """Refuse the ``"foreground"`` background rule on a model without a foreground head, before any work."""
        if settings.background == "foreground" and not self.has_foreground():
            raise InputError("this model has no foreground head (its labels marked no background); "
                             "use background 'largest' or 'none'")

    def draws_independent(self, settings: Settings) -> bool:
        """Every draw is partitioned alone."""
        return True

    def tune_grid(self) -> dict:
        area = self.object_area()
        sizes = sorted({max(1, int(f * area)) for f in (0.1, 0.25, 0.5)}) if area > 0 else [10, 20, 40]
        if self.settings.partition == "meanshift":
            d = self.config.delta_v
            return {"bandwidth": [0.5 * d, d, 1.5 * d], "min_size": sizes}
        return {"bias": [0.3, 0.4, 0.5, 0.6], "min_size": sizes}


METHOD = MethodInfo(
    name="spoco",
    title="SPOCO",
    summary="embeddings learned from a few labelled objects; unlabelled pixels are not background",
    reference="Wolny, Yu, Pape, Kreshuk. Sparse Object-level Supervision for Instance Segmentation with Pixel Embeddings. CVPR 2022",
    labels="required",
    model_class=SpocoModel,
)
