"""A raw store read back for post-processing: the store's checks, then what its method needs.

:func:`probseg.io.rawstore.load_raw` checks what every store must hold; the
method that wrote it decides the rest (the maps it needs, which of them are
images), so this is where the store meets its model class. ``probseg
instances`` and the napari reader open stores through :func:`open_raw`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probseg.core.errors import InputError
from probseg.core.results import Raw
from probseg.engine import registry
from probseg.io.rawcheck import spatial_shape
from probseg.io.rawstore import load_raw


def open_raw(path, settings=None, info: registry.MethodInfo | None = None) -> tuple[Raw, object]:
    """The raw maps of the store at ``path`` and a model (without weights) that post-processes them.

    Parameters
    ----------
    path : path
        A store written by ``probseg segment --raw-out`` or
        :func:`probseg.io.rawstore.save_raw`.
    settings : dict, optional
        Post-processing settings on top of those stored with the model;
        checked as the user's (their errors do not blame the store).
    info : MethodInfo, optional
        The store's method, where the caller looked it up already.

    Returns
    -------
    raw : Raw
    model : SegmentationModel
        From :meth:`~probseg.engine.model.SegmentationModel.for_postprocessing`.

    Raises
    ------
    InputError
        Naming the store and what is wrong: anything :func:`load_raw` refuses,
        a method this probseg does not know, a stored model configuration the
        method refuses, a map the method needs that is missing, an image map
        of another size than the plane, or NaN in a map other than the
        method's ``nan_maps``.
    """
    path = Path(path)
    raw, meta = load_raw(path)
    method = meta.get("method") or raw.attrs.get("method")
    if info is None or info.name != method:
        try:
            info = registry.get(method)
        except InputError:
            raise InputError(f"{path} was written by method {method!r}, which this probseg does not know") from None
    cls = info.model_class
    try:
        model = cls.for_postprocessing(meta)
        needed = tuple(model.raw_maps)
    except (InputError, TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path} holds a model configuration {info.name} cannot use: {exc}") from None
    plane = raw.planes[0]
    missing = [name for name in needed if name not in plane]
    if missing:
        raise InputError(f"{path} lacks the map {missing[0]!r} that a {info.name} model needs (it holds "
                         f"{', '.join(plane)}); the store was edited or is incomplete")
    yx = spatial_shape(plane)
    for name, values in plane.items():
        if name not in cls.table_maps and tuple(values.shape[-2:]) != yx:
            raise InputError(f"{path} is not a usable raw store: {name} has shape {values.shape}, "
                             f"whose last two axes are not the plane's {yx}")
    for z, maps in enumerate(raw.planes):
        for name, values in maps.items():
            # A deleted chunk of a store written with NaN as fill value reads as NaN, too.
            if name not in cls.nan_maps and np.isnan(values).any():
                raise InputError(f"{path} is not a usable raw store: plane_{z:04d}/{name} holds NaN values, "
                                 f"which a {info.name} model never writes there (damaged data)")
    if settings:
        model.settings = model.make_settings(settings)
    return raw, model
