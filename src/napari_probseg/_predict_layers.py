"""The Predict widget's layers: the result layers of a run, and which layers an input may be.

A run's layers are marked in their metadata with the image they were made
from (``source``) and the model (``model_key``, see :func:`model_key`), so
running the same model on the same image again updates them in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Labels

from napari_probseg._layers import OUTPUT_META_KEY, layer_run
from probseg.core.errors import InputError
from probseg.partition.foreground import as_mask

ROLES = ("segmentation", "samples", "embeddings", "uncertainty", "probability")
#: Roles of the layers of a method's display maps start with this, then the map's name.
MAP_ROLE = "map:"
SEPARATOR = " · "  # between the image and the model in layer names


def model_key(folder, model_name: str) -> str:
    """What tells two models' layers apart: the model folder, else the name in the store.

    The same folder loaded twice is one model, whatever its store names.
    """
    return str(folder) if folder is not None else model_name


def layer_prefix(image_name: str, folder, model_name: str) -> str:
    """``<image> · <model folder's name>`` (``nuclei · my-model``): the start of every result layer's name."""
    return f"{image_name}{SEPARATOR}{Path(folder).name if folder is not None else model_name}"


def run_layers(viewer, source: str, key: str | None) -> dict:
    """Our layers made from image ``source`` by the model ``key``, by role (display maps' roles start with MAP_ROLE)."""
    found = {}
    for layer in viewer.layers:
        meta = layer.metadata.get(OUTPUT_META_KEY)
        if isinstance(meta, dict) and meta.get("source") == source and meta.get("model_key") == key:
            found.setdefault(meta.get("role"), layer)
    return found


def show_layers(viewer, image, result, shown) -> None:
    """Show ``result`` (a PredictResult of the run ``shown``) of ``image`` in its layers, made or updated."""
    pred = result.prediction
    # RGB layers leave the colour axis out of scale, so this fits every output.
    scale, translate = tuple(image.scale), tuple(image.translate)
    key = model_key(shown.folder, shown.model_name)
    prefix = layer_prefix(image.name, shown.folder, shown.model_name)
    extra = {"model": shown.model_name, "model_key": key, "label": prefix, "n_samples": int(pred.samples.shape[0])}
    # Added bottom to top: the segmentation ends up above the hidden extras.
    specs = {MAP_ROLE + name: (Image, data, dict(colormap="gray", visible=False)) for name, data in result.maps.items()}
    specs |= {
        "embeddings": (Image, result.embeddings_rgb, dict(rgb=True, visible=False)),
        "probability": (Image, pred.probability, dict(colormap="viridis", contrast_limits=(0.0, 1.0), visible=False)),
        "uncertainty": (Image, pred.uncertainty, dict(colormap="magma", contrast_limits=(0.0, 1.0), visible=False)),
        "samples": (Labels, pred.samples, dict(visible=False, opacity=0.6)),
        "segmentation": (Labels, pred.segmentation, dict(opacity=0.6)),
    }
    if result.embeddings_rgb is None:
        del specs["embeddings"]
    for role, (kind, data, style) in specs.items():
        lead = data.ndim - len(scale) - (1 if role == "embeddings" else 0)
        layer_scale = (1.0,) * lead + scale
        layer_translate = (0.0,) * lead + translate
        meta = {"role": role, "source": image.name, **extra}
        layer = run_layers(viewer, image.name, key).get(role)
        if layer is not None and isinstance(layer, kind) and layer.data.ndim == data.ndim:
            layer.data = data
            layer.scale, layer.translate = layer_scale, layer_translate
            layer.metadata[OUTPUT_META_KEY] = meta
            if role == "embeddings":
                layer.metadata["embeddings"] = pred.embeddings
            if role in ("uncertainty", "probability"):
                layer.contrast_limits = (0.0, 1.0)
            continue
        if layer is not None:
            # Ours (marked in metadata) but of another dimensionality:
            # replacing it is the only way to show the new result.
            viewer.layers.remove(layer)
        metadata = {OUTPUT_META_KEY: meta}
        if role == "embeddings":
            metadata["embeddings"] = pred.embeddings
        add = viewer.add_labels if kind is Labels else viewer.add_image
        title = role[len(MAP_ROLE):] if role.startswith(MAP_ROLE) else role
        add(data, name=f"{prefix} {title}", scale=layer_scale, translate=layer_translate, metadata=metadata, **style)
    for role, layer in run_layers(viewer, image.name, key).items():
        if role.startswith(MAP_ROLE) and role not in specs:
            viewer.layers.remove(layer)  # a map the method no longer offers would show an old result


def image_shape(layer) -> tuple:
    """The shape of an image layer without its colour axis."""
    return tuple(layer.data.shape[:-1] if layer.rgb else layer.data.shape)


def labels_choices(viewer, image_name: str | None) -> list[str]:
    """Labels layers of the image's own shape that are not ours: what a segmentation can be compared with."""
    if image_name is None or image_name not in viewer.layers:
        return []
    image = viewer.layers[image_name]
    shape = tuple(image.data.shape[:2] if image.rgb else image.data.shape)
    return [layer.name for layer in viewer.layers
            if isinstance(layer, Labels) and OUTPUT_META_KEY not in layer.metadata and tuple(layer.data.shape) == shape]


def foreground_choices(viewer, image_name: str | None, own_key: str | None) -> list[str]:
    """Layers that may be a foreground mask of the image: of its shape (a plane's, for a stack).

    Not the image itself, and not what the model ``own_key`` made of this
    image, which the mask would then change.
    """
    if image_name is None or image_name not in viewer.layers:
        return []
    shape = image_shape(viewer.layers[image_name])
    fits = (shape, shape[1:]) if len(shape) == 3 else (shape,)
    own = (image_name, own_key)
    return [layer.name for layer in viewer.layers
            if isinstance(layer, (Labels, Image)) and layer.name != image_name
            and not (isinstance(layer, Image) and (layer.rgb or layer.multiscale))
            and tuple(layer.data.shape) in fits and layer_run(layer) != own]


def foreground_mask(viewer, name: str | None, shape: tuple) -> np.ndarray | None:
    """The layer ``name`` as a foreground mask checked against ``shape`` (:func:`probseg.partition.foreground.as_mask`); None for None."""
    if name is None:
        return None
    if name not in viewer.layers:
        raise InputError(f"foreground mask layer {name!r} no longer exists")
    try:
        return as_mask(np.asarray(viewer.layers[name].data), shape)
    except InputError as exc:
        raise InputError(f"foreground mask layer {name!r}: {exc}") from None
