"""The Consensus widget's layers: which are samples, its consensus layer, and the region.

The region is a rectangle of a Shapes layer (the selected ones, else the
last drawn) or what is on screen (:data:`FIELD_OF_VIEW`), turned into the
samples' pixels by :func:`probseg.consensus.interactive.pixel_rect`.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels, Shapes

from napari_probseg._layers import OUTPUT_META_KEY, canvas_size, layer_role, viewer_camera
from probseg.consensus.interactive import pixel_rect
from probseg.core.errors import InputError

FIELD_OF_VIEW = "field of view"
REGION_LAYER = "consensus region"


def samples_choices(viewer) -> list[str]:
    """Labels layers that may be samples: ``(n, Y, X)``, not a segmentation or consensus of ours."""
    # A 3-D segmentation of a stack is (Z, Y, X) too; Predict marks its layers, so those are left out.
    return [
        layer.name for layer in viewer.layers
        if isinstance(layer, Labels) and layer.data.ndim == 3
        and layer_role(layer) not in ("segmentation", "consensus")
    ]


def default_samples(viewer) -> str | None:
    """The samples layer a user most likely means: the newest Predict made, else the newest candidate."""
    names = samples_choices(viewer)
    preferred = [n for n in names if layer_role(viewer.layers[n]) == "samples"]
    return (preferred or names or [None])[-1]


def region_choices(viewer) -> list[str]:
    return [FIELD_OF_VIEW] + [layer.name for layer in viewer.layers if isinstance(layer, Shapes)]


def consensus_layer(viewer, samples_name: str | None) -> Labels | None:
    """The consensus Labels layer made from the samples layer ``samples_name``, if any."""
    for layer in viewer.layers:
        meta = layer.metadata.get(OUTPUT_META_KEY)
        if isinstance(layer, Labels) and isinstance(meta, dict) and meta.get("role") == "consensus" and meta.get("samples") == samples_name:
            return layer
    return None


def add_consensus_layer(viewer, samples: Labels, labels: np.ndarray) -> Labels:
    """A new consensus layer of ``samples``, named and marked after the run that made them."""
    samples_meta = samples.metadata.get(OUTPUT_META_KEY) or {}
    source = samples_meta.get("source") or samples.name
    # "<image> · <model> consensus": which model's samples it fuses.
    label = samples_meta.get("label") or source
    meta = {OUTPUT_META_KEY: {"role": "consensus", "samples": samples.name, "source": source}}
    if samples_meta.get("model_key") is not None:
        meta[OUTPUT_META_KEY]["model_key"] = samples_meta["model_key"]
    return viewer.add_labels(
        labels, name=f"{label} consensus", scale=samples.scale[-2:], translate=samples.translate[-2:], metadata=meta, opacity=0.7
    )


def region_rect(viewer, samples: Labels, source: str) -> tuple[int, int, int, int]:
    """The region ``source`` (a Shapes layer's name or :data:`FIELD_OF_VIEW`) in ``samples``' pixels ``(y0, x0, y1, x1)``."""
    shape = samples.data.shape[-2:]
    if source == FIELD_OF_VIEW or source not in viewer.layers:
        world = _field_of_view(viewer)
        if world is None:
            return (0, 0) + tuple(shape)
    else:
        shapes = viewer.layers[source]
        if len(shapes.data) == 0:
            raise InputError(f"the Shapes layer {source!r} has no rectangle; draw one around the cells to tune")
        picked = sorted(shapes.selected_data) or [len(shapes.data) - 1]
        vertices = np.concatenate([np.asarray(shapes.data[i])[:, -2:] for i in picked])
        vertices = vertices * np.asarray(shapes.scale[-2:]) + np.asarray(shapes.translate[-2:])
        world = (vertices.min(0), vertices.max(0))
    return pixel_rect(world[0], world[1], samples.scale[-2:], samples.translate[-2:], shape)


def add_region_layer(viewer, samples: Labels | None) -> Shapes:
    """A Shapes layer for the region, in rectangle mode, over ``samples`` (world coordinates without them).

    napari's default white fill would hide the cells being tuned, so the
    rectangles are drawn as outlines only.
    """
    kwargs = {} if samples is None else dict(scale=tuple(samples.scale[-2:]), translate=tuple(samples.translate[-2:]))
    layer = viewer.add_shapes(
        name=REGION_LAYER, face_color="transparent", edge_color="yellow", edge_width=2, ndim=2, **kwargs
    )
    layer.current_face_color = "transparent"
    layer.current_edge_color = "yellow"
    layer.mode = "add_rectangle"
    return layer


def _field_of_view(viewer):
    size = canvas_size(viewer)
    if size is None:
        return None  # the caller then uses the whole image
    camera = viewer_camera(viewer)
    center = np.asarray(camera.center[-2:], dtype=float)
    half = np.asarray(size[-2:], dtype=float) / (2.0 * float(camera.zoom))
    return center - half, center + half
