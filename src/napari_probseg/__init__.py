"""napari-probseg: train probabilistic instance segmentation models in napari.

The widgets are thin: they gather inputs, run :mod:`probseg` engine calls in
worker threads and show the results as layers. Importing this package is
cheap; Qt, torch and the engine are imported only when a widget is opened.
"""

from probseg import __version__

__all__ = ["__version__"]
