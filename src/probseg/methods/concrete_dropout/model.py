"""Concrete-Dropout embeddings: a Bayesian U-Net that learns instances from labels.

A small 2-D U-Net of valid convolutions predicts, for every pixel, an
embedding of ``embedding_dims`` numbers and three class scores: background,
foreground, and overlap (object pixels within ``overlap_width`` px of another
object). Dropout turns it into a probabilistic model, for proposal-free
instance segmentation with uncertainty as in Rumberger, Mais and Kainmueller
(2020):

* **Concrete Dropout** (Gal, Hron, Kendall 2017) in front of every 3x3
  convolution but the first, and of the 1x1 output layer, drops whole
  feature maps with a rate ``p`` that is learned, through the Concrete
  relaxation of the Bernoulli mask, under the variational regulariser
  ``(iota^2 (1 - p) / 2 |M|^2 - zeta F H(p)) / N`` per layer. The entropy
  term pulls ``p`` towards 0.5 and the data pull it down as far as the
  labels justify, so the rates settle where the data leave the model unsure.
* **Discriminative loss** (De Brabandere, Neven, Van Gool 2017): every pixel
  is pulled to its object's mean embedding (plain squared distance, no
  hinge), means closer than ``delta_d`` are pushed apart (hinged), and the
  means' norms are kept small. A weighted cross-entropy trains the classes
  (:mod:`.loss`). Pixels labelled ``ignore_id`` take part in no term, so
  partly annotated images can be used.

Inference (:meth:`ConcreteDropoutModel.draw`): draw 0 is a pass with dropout
off, the segmentation's; every further draw, one per sample, is a pass with
dropout on (Monte Carlo dropout). Each pass is partitioned alone
(:meth:`ConcreteDropoutModel.partition`, no network; :mod:`.partitions`), by
one of:

* ``"watershed"`` (default): seeds are the connected cores where the
  foreground class is likely, flooded over the object pixels;
* ``"meanshift"``: mean-shift over the embeddings of pixels classed
  foreground or overlap, then each object is joined with the overlap map and
  keeps the connected component that best matches it, so pixels between
  touching objects go to a neighbour (Rumberger et al.);
* ``"mutex"``: a mutex watershed on affinities from the embeddings, over the
  pixels not likely background.
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
from probseg.core.labels import encode_labels
from probseg.engine.model import SegmentationModel
from probseg.engine.registry import MethodInfo
from probseg.methods.concrete_dropout.loss import N_CLASSES, segmentation_loss
from probseg.methods.concrete_dropout.partitions import meanshift_partition, mutex_partition, watershed_partition
from probseg.nn.layers import ConcreteDropout, dropout_regularization, dropout_sampling
from probseg.nn.trainset import TrainingSet, random_crops
from probseg.nn.unet import UNet

CONTEXT = 20  # px the depth-2 U-Net of 3x3 valid convolutions loses on each side
ALIGN = 4  # two 2x poolings: sizes must be multiples of 4


# -- configs --------------------------------------------------------------------------------
@dataclass
class Config(TrainingConfig):
    """Concrete-Dropout hyperparameters; ``ignore_id`` marks unannotated pixels.

    ``ignore_id``: label id of pixels that are not annotated (partly labelled
    images). They are left out of every loss term and of the overlap class;
    -1 means that every pixel is annotated. Label images cannot hold negative
    ids, so pick an id no object uses, e.g. 65535 in a uint16 image.
    """

    # CPU-friendly defaults; on a GPU raise batch_size, crop_size and num_fmaps.
    batch_size: int = param(4, "crops per iteration", unit="crops", minimum=1, maximum=256, advanced=True)
    # Measured on the nuclei sample (benchmarks/accuracy.py): 1600 steps of 128 px
    # crops at 1e-3 fit in about 4 minutes on two CPU cores.
    steps: int = param(1600, "training iterations", unit="steps", minimum=1, maximum=1_000_000)
    crop_size: int = param(128, "side of the random training crops; the loss sees the centre, 40 px smaller", unit="px", minimum=48, maximum=2048, advanced=True)
    learning_rate: float = param(1e-3, "AdamW learning rate", minimum=1e-7, maximum=1.0, advanced=True)
    intensity_scale: float = param(0.25, "augmentation: each crop is multiplied by a random factor between 1/(1+s) and 1+s", minimum=0.0, maximum=4.0, advanced=True)
    ignore_id: int = param(-1, "label id of unannotated pixels (e.g. 65535), left out of every loss term; -1: none", minimum=-1, maximum=bounds.LABEL_ID.high)
    embedding_dims: int = param(4, "dimensions of the per-pixel embedding", minimum=1, maximum=32, advanced=True)
    delta_d: float = param(1.0, "object mean embeddings closer than this are pushed apart (hinge of the distance term)", minimum=0.1, maximum=100.0, advanced=True)
    center_weight: float = param(0.001, "weight of the norm of the object means in the loss", minimum=0.0, maximum=1.0, advanced=True)
    overlap_width: int = param(2, "object pixels this close to another object form the overlap class", unit="px", minimum=1, maximum=10, advanced=True)
    background_weight: float = param(1.0, "cross-entropy weight of the background class", minimum=0.0, maximum=100.0, advanced=True)
    foreground_weight: float = param(1.0, "cross-entropy weight of the foreground class", minimum=0.0, maximum=100.0, advanced=True)
    overlap_weight: float = param(2.0, "cross-entropy weight of the overlap class (rare, so weighted up)", minimum=0.0, maximum=100.0, advanced=True)
    dropout_rate: float = param(0.05, "initial dropout rate of every layer; training learns each layer's own", minimum=0.01, maximum=0.9, advanced=True)
    temperature: float = param(0.1, "temperature of the Concrete relaxation of the dropout masks", minimum=0.01, maximum=1.0, advanced=True)
    weight_regularizer: float = param(1e-6, "iota^2, prior length-scale squared: weight of (1-p)/2 |M|^2 per layer", minimum=0.0, maximum=1.0, advanced=True)
    dropout_regularizer: float = param(1.0, "zeta, weight of the entropy term -F H(p) per layer that pulls rates to 0.5", minimum=0.0, maximum=1000.0, advanced=True)
    dataset_size: int = param(0, "N dividing both regularisers; 0: the number of annotated training pixels", unit="px", minimum=0, advanced=True)
    num_fmaps: int = param(16, "feature maps of the U-Net's first level", minimum=2, maximum=256, advanced=True)
    fmap_inc_factor: int = param(2, "feature map growth per U-Net level", minimum=1, maximum=8, advanced=True)

    def check(self) -> None:
        """Rules the fields' bounds cannot say; raise one clear line."""
        if self.ignore_id == 0:
            raise InputError("ignore_id 0 is the background; use -1 for none or an id no object uses, e.g. 65535")


@dataclass
class Settings:
    """How the network's output becomes objects; changing them never reruns the network."""

    partition: str = param("watershed", "watershed: flood from seeds at the centres of the foreground-class cores over the object pixels; meanshift: cluster the embeddings (Rumberger et al.); mutex: mutex watershed on affinities from the embeddings", choices=("watershed", "meanshift", "mutex"))
    seed_threshold: float = param(0.5, "watershed: probability of the foreground (core) class above which a pixel is an object's core", minimum=0.01, maximum=0.99)
    mask_threshold: float = param(0.5, "watershed and mutex: probability of background below which a pixel belongs to an object", minimum=0.01, maximum=0.99)
    min_distance: int = param(6, "watershed: smallest distance between two objects' seeds (peaks of the cores' distance transform)", unit="px", minimum=1, maximum=200)
    smoothing: float = param(2.0, "watershed: Gaussian sigma smoothing the cores' distance transform", unit="px", minimum=0.0, maximum=20.0)
    bandwidth: float = param(0.0, "meanshift and mutex: distance scale in embedding units (the loss keeps objects delta_d apart); 0: half of delta_d", unit="embedding units", minimum=0.0, maximum=100.0)
    bias: float = param(0.5, "mutex: affinity below which two pixels repel; higher splits more", minimum=0.0, maximum=1.0)
    min_size: int = param(40, "smallest object kept", unit="px", minimum=0, maximum=bounds.MIN_SIZE.high)


def _crop_side(config: Config) -> int:
    return -(-max(config.crop_size, 2 * CONTEXT + 8) // ALIGN) * ALIGN


# -- the model ------------------------------------------------------------------------------
class ConcreteDropoutModel(SegmentationModel):
    """A trained Concrete-Dropout U-Net plus its post-processing settings."""

    method = "concrete-dropout"
    config_class = Config
    settings_class = Settings
    raw_maps = ("embeddings", "classes")

    # -- network and loss ---------------------------------------------------------------
    @classmethod
    def build_network(cls, config: Config, in_channels: int) -> nn.Module:
        # Depth-2 U-Net of two 3x3 valid convolutions a level (41 px field of
        # view), Concrete Dropout in front of every convolution but the first
        # and of the 1x1 output layer.
        def conv(cin: int, cout: int, kernel: int, first: bool) -> nn.Module:
            layer = nn.Conv2d(cin, cout, kernel)
            # Dropping one of the image's own channels would blind the network, so
            # the very first convolution sees the image as it is.
            return layer if first else ConcreteDropout(layer, cin, config.dropout_rate, config.temperature)

        return UNet(
            in_channels, config.embedding_dims + N_CLASSES, config.num_fmaps, config.fmap_inc_factor, depth=2,
            kernels=(3, 3), conv=conv, head=lambda cin, cout: conv(cin, cout, 1, False),
        )

    @classmethod
    def training_loss(cls, config: Config, ts: TrainingSet, device: torch.device):
        """``loss_fn(net, rng)`` for :func:`probseg.nn.training.train_loop`.

        Raises
        ------
        InputError
            For images without labels, or labels with no annotated object.
        """
        if any(lab is None for lab in ts.labels):
            raise InputError("Concrete-Dropout embeddings learn from labels; give a labels image for every training image")
        # Codes: ids shifted by one, so that the zero padding random_crops adds
        # around small planes reads as "not annotated", like ignore_id pixels.
        coded = [encode_labels(lab, "dense", ignore_id=config.ignore_id) for lab in ts.labels]
        if not any((c > 1).any() for c in coded):
            raise InputError("the labels hold no annotated object; label at least one object (ids 1, 2, ...)")
        scaled = TrainingSet(ts.planes, coded, ts.in_channels, ts.normalization, ts.notices)
        n = config.dataset_size or int(sum((c > 0).sum() for c in coded))
        size = _crop_side(config)
        low, high = 1.0 / (1.0 + config.intensity_scale), 1.0 + config.intensity_scale

        def loss_fn(net: nn.Module, rng: np.random.Generator) -> torch.Tensor:
            images, codes = random_crops(scaled, size, config.batch_size, rng, with_labels=True)
            if config.intensity_scale > 0:
                # Nuclei differ in brightness from image to image; flips and turns come from random_crops.
                images = images * torch.from_numpy(rng.uniform(low, high, (len(images), 1, 1, 1)).astype(np.float32))
            data = segmentation_loss(net(images.to(device)), codes - 1, config)
            return data + dropout_regularization(net, config.weight_regularizer, config.dropout_regularizer) / n

        return loss_fn

    # -- one draw -----------------------------------------------------------------------
    def draw(self, state: np.ndarray, k: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """``"embeddings"`` ``(1, D, Y, X)`` and ``"classes"`` ``(1, 3, Y, X)`` probabilities of one pass.

        Draw 0 has dropout off; draws 1..n are Monte-Carlo dropout passes,
        one per sample, each from its own seed drawn from ``rng`` in order
        (so the first draws do not depend on the number of samples).
        """
        seed = None if k == 0 else int(rng.integers(2**62))
        d = self.config.embedding_dims
        # A fresh array per pass (a caller may keep one pass while the next is
        # made); both maps are views of it, the class scores turned into
        # probabilities in place.
        out = self.maps(state, seed, callbacks, out=np.empty((d + N_CLASSES,) + state.shape[1:], dtype=np.float32))
        scores = torch.from_numpy(out[d:])
        scores.copy_(torch.softmax(scores, dim=0))
        return {"embeddings": out[None, :d], "classes": out[None, d:]}

    def maps(self, plane: np.ndarray, seed: int | None = None, callbacks: Callbacks | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Network output ``(D + 3, Y, X)`` for a normalised ``(C, Y, X)`` plane: embeddings, then class scores.

        ``seed`` None runs with dropout off; an int draws one dropout mask
        from it (the same for every tile, so tiling leaves no seams). ``out``,
        a float32 ``(D + 3, Y, X)`` array, receives the result when given.
        """
        generator = None if seed is None else torch.Generator(device=self.device)

        def forward(window: torch.Tensor) -> torch.Tensor:
            if generator is not None:
                generator.manual_seed(seed)
            return self.net.forward_same(window)

        with dropout_sampling(self.net, seed is not None, generator):
            return self.apply_network(forward, plane, self.config.embedding_dims + N_CLASSES, callbacks=callbacks,
                                      out=out)

    # -- one partition ------------------------------------------------------------------
    def partition(self, maps: dict, settings: Settings, context) -> np.ndarray:
        """Labels ``(Y, X)`` int32 of one pass, from its embeddings and class probabilities."""
        embeddings, classes = maps["embeddings"][0], maps["classes"][0]
        if settings.partition == "meanshift":
            return meanshift_partition(embeddings, classes, self.bandwidth(settings), settings.min_size)
        if settings.partition == "mutex":
            return mutex_partition(embeddings, classes, self.bandwidth(settings), settings.bias, settings.mask_threshold,
                                   settings.min_size)
        return watershed_partition(classes, settings.seed_threshold, settings.mask_threshold, settings.min_distance,
                                   settings.smoothing, settings.min_size)

    def bandwidth(self, settings: Settings) -> float:
        """Mean-shift bandwidth in embedding units."""
        return settings.bandwidth or 0.5 * self.config.delta_d

    # -- optional hooks -----------------------------------------------------------------
    def draws_independent(self, settings: Settings) -> bool:
        """Every pass is partitioned alone."""
        return True

    def uncertainty(self, samples, agglomeration) -> np.ndarray:
        """The Bernoulli entropy of the agglomerated per-object probabilities, in bits, clipped at 1.

        The draws estimate each object's probability; their entropy is the
        uncertainty the proofreading queue ranks by.
        """
        return np.clip(agglomeration.entropy(), 0.0, 1.0).astype(np.float32)

    def tune_grid(self) -> dict:
        # Each partition reads its own settings; a grid over the others would repeat one result.
        if self.settings.partition == "meanshift":
            return {"bandwidth": [0.25, 0.5, 0.75, 1.0], "min_size": [20, 40]}
        if self.settings.partition == "mutex":
            return {"bias": [0.3, 0.5, 0.7], "mask_threshold": [0.4, 0.5, 0.6], "min_size": [20, 40]}
        return {
            "seed_threshold": [0.3, 0.5, 0.7],
            "mask_threshold": [0.4, 0.5, 0.6],
            "min_distance": [4, 6, 8],
            "smoothing": [1.0, 2.0],
            "min_size": [20, 40],
        }


METHOD = MethodInfo(
    name="concrete-dropout",
    title="Concrete-Dropout embeddings",
    summary="embeddings and overlap classes learned from labels; samples from learned-rate dropout",
    reference=(
        "Gal, Hron, Kendall. Concrete Dropout. NeurIPS 2017; De Brabandere, Neven, Van Gool. Semantic Instance "
        "Segmentation with a Discriminative Loss Function. CVPR Workshops 2017; Rumberger, Mais, Kainmueller. "
        "Probabilistic Deep Learning for Instance Segmentation. ECCV Workshops 2020"
    ),
    labels="required",
    model_class=ConcreteDropoutModel,
)
