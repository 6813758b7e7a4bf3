"""probseg: the headless engine behind napari-probseg.

Probabilistic instance segmentation of microscopy images: train a model on
the images to segment, draw several segmentations from it, and measure where
they disagree. This package never imports Qt or napari.

>>> import probseg
>>> image, labels = probseg.evaluation.datasets.nuclei()
>>> model = probseg.train(probseg.list_methods()[0], [image], steps=200)
>>> result = model.predict(image, n_samples=8)
"""

from probseg.core import __version__, errors  # noqa: F401
from probseg.engine.api import list_methods, load_model, train  # noqa: F401
from probseg.engine.tuning import tune  # noqa: F401
from probseg.evaluation import datasets, metrics  # noqa: F401

__all__ = ["train", "load_model", "tune", "list_methods", "datasets", "errors", "__version__"]
