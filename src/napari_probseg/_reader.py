"""Open a raw store written by ``probseg segment --raw-out`` as napari layers.

Every raw map becomes an image layer (the first draw, the one the
segmentation comes from), and the store's segmentation is re-computed from
it with the settings it was made with, so the store opens the way it was
seen. The network does not run; the model's weights are not needed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


def get_reader(path):
    """napari's reader hook: a reader for a probseg raw store, else None (another plugin may read it)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    from probseg.io.rawstore import store_method

    return read_raw if store_method(path) is not None else None


def read_raw(path) -> list[tuple]:
    """Layer data tuples for the raw maps of a store, plus its segmentation."""
    from probseg.engine.rawread import open_raw

    path = Path(path[0] if isinstance(path, list) else path)
    raw, model = open_raw(path)
    name = path.stem
    layers = []
    for key in raw.planes[0]:
        # Maps of three or more axes have the draws first (see probseg.engine.model).
        first = [plane[key][0] if plane[key].ndim >= 3 else plane[key] for plane in raw.planes]
        data = np.stack(first) if raw.is_stack else first[0]
        # A (D, Y, X) map is D channels: shown as a stack with a slider, hidden.
        layers.append((data, {"name": f"{name} {key}", "visible": False}, "image"))
    # Only the segmentation is shown: partitioning every sample would be wasted work.
    prediction = model.postprocess(dataclasses.replace(raw, n_samples=1))
    layers.append((prediction.segmentation, {"name": f"{name} segmentation", "opacity": 0.6}, "labels"))
    return layers
