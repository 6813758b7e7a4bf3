"""Layer helpers the widgets share: which layers are ours, which image to offer, the camera."""

from __future__ import annotations

from napari.layers import Image

#: Metadata key marking the layers our widgets made (and may replace).
OUTPUT_META_KEY = "probseg"


def image_arrays(layer) -> tuple[object, bool]:
    """The data of an Image layer as the engine reads it, and whether it is RGB.

    Multiscale layers give their full-resolution level. The array is not
    copied here; the worker thread turns it into numpy (which may read from
    disk for lazy data).
    """
    data = layer.data[0] if layer.multiscale else layer.data
    return data, bool(layer.rgb)


def image_layer_names(viewer) -> list[str]:
    """Image layers a model can learn from or segment: not our own result layers."""
    return [
        layer.name for layer in viewer.layers
        if isinstance(layer, Image) and OUTPUT_META_KEY not in layer.metadata
    ]


def layer_role(layer) -> str | None:
    """The role our widgets gave a layer ("samples", "uncertainty", ...), or None for the user's own layers."""
    meta = layer.metadata.get(OUTPUT_META_KEY)
    return meta.get("role") if isinstance(meta, dict) else None


def layer_run(layer) -> tuple | None:
    """``(image name, model key)`` of the Predict run that made a layer, or None for other layers."""
    meta = layer.metadata.get(OUTPUT_META_KEY)
    if not isinstance(meta, dict) or "model_key" not in meta:
        return None
    return meta.get("source"), meta.get("model_key")


def viewer_camera(viewer):
    """The camera of the 2-D view (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def canvas_size(viewer) -> tuple | None:
    """The canvas size (height, width) in screen pixels, or None where napari does not say (< 0.6)."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    return tuple(size) if size is not None and min(size) > 0 else None


def default_image(viewer) -> str | None:
    """The image layer a user most likely means: the active one, else the newest."""
    names = image_layer_names(viewer)
    active = viewer.layers.selection.active
    if active is not None and active.name in names:
        return active.name
    return names[-1] if names else None
