"""What a prediction returns: the raw network maps of an image, and the labels made from them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Raw:
    """A model's network output for a whole image, ready for post-processing.

    Attributes
    ----------
    planes : list of dict of str to ndarray
        One dict of named float32 maps per ``(Y, X)`` plane (one for a 2-D
        image), as returned by :meth:`SegmentationModel.raw`.
    n_samples : int
        Samples the maps were drawn for.
    is_stack : bool
        The image was a ``(Z, Y, X)`` stack; results keep the Z axis.
    notice : str or None
        Something the user was told while reading the image.
    attrs : dict
        JSON-serialisable facts about the run (method, model, seed, ...).
    """

    planes: list
    n_samples: int
    is_stack: bool = False
    notice: str | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        """Spatial shape ``(Y, X)`` or ``(Z, Y, X)``."""
        first = next(iter(self.planes[0].values()))
        yx = tuple(first.shape[-2:])
        return (len(self.planes),) + yx if self.is_stack else yx


@dataclass
class Prediction:
    """Everything :meth:`SegmentationModel.predict` returns.

    For a 3-D stack each array gains a Z axis after the leading one:
    segmentation ``(Z, Y, X)``, samples ``(n, Z, Y, X)``, embeddings
    ``(Z, D, Y, X)``, uncertainty and probability ``(Z, Y, X)``.
    """

    segmentation: np.ndarray  # (Y, X) int32
    samples: np.ndarray  # (n, Y, X) int32
    uncertainty: np.ndarray  # (Y, X) float32 in 0..1
    # The probability of the object each pixel belongs to over the
    # agglomerated samples, (Y, X) float32; 0 on background.
    probability: np.ndarray
    raw: Raw
    settings: object = None
    notice: str | None = None

    @property
    def embeddings(self) -> np.ndarray | None:
        """The first draw's ``"embeddings"`` map ``(D, Y, X)``, or None if the method has none."""
        if "embeddings" not in self.raw.planes[0]:
            return None
        emb = np.stack([plane["embeddings"][0] for plane in self.raw.planes])
        return emb if self.raw.is_stack else emb[0]
