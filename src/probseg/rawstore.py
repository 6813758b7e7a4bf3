"""Raw network output on disk: a chunked zarr store that post-processing reads later.

Layout of ``RAW.zarr``::

    RAW.zarr/                 attrs: format, format_version, method, n_samples, is_stack,
                              notice, config (the model's config.json), run facts
      plane_0000/<name>       one float32 array per raw map of plane 0, chunked
      plane_0001/<name>       ... (one group per plane of a stack)

It holds everything :meth:`probseg.model.SegmentationModel.postprocess` needs,
including the model's configuration, so ``probseg instances RAW.zarr`` turns
it into labels with any settings and without the model's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probseg.errors import InputError

if TYPE_CHECKING:
    from probseg.model import Raw

FORMAT = "probseg-raw"
FORMAT_VERSION = 1
CHUNK = 256  # px; whole planes would make one enormous chunk per map


def store_method(path) -> str | None:
    """The method of the raw store at ``path``, or None if ``path`` is not one; cheap (reads one small JSON file)."""
    import json

    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {}) if meta.is_file() else {}
    except (OSError, ValueError, AttributeError):
        return None
    return str(attrs.get("method")) if isinstance(attrs, dict) and attrs.get("format") == FORMAT else None


def save_raw(path, raw: Raw, model_meta: dict) -> Path:
    """Write ``raw`` to a zarr store at ``path``.

    Parameters
    ----------
    path : path
        The store (a folder, conventionally ending in ``.zarr``).
    raw : Raw
        From :meth:`~probseg.model.SegmentationModel.predict_raw`.
    model_meta : dict
        The model's ``config.json`` contents (method, config, in_channels, ...).

    Returns
    -------
    Path
    """
    import zarr

    path = Path(path)
    if path.exists():
        raise InputError(f"{path} exists; choose another name for the raw output or remove it first")
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update({
        "format": FORMAT, "format_version": FORMAT_VERSION, "method": model_meta["method"],
        "n_samples": int(raw.n_samples), "is_stack": bool(raw.is_stack), "notice": raw.notice,
        "model": {k: model_meta[k] for k in ("method", "config", "in_channels", "normalization", "settings") if k in model_meta},
        "run": raw.attrs,
        "maps": list(raw.planes[0]),  # zarr lists arrays in its own order; keep the method's
    })
    for z, plane in enumerate(raw.planes):
        group = root.create_group(f"plane_{z:04d}")
        for name, array in plane.items():
            chunks = tuple(array.shape[:-2]) + (CHUNK, CHUNK)
            out = group.create_array(name, shape=array.shape, chunks=chunks, dtype="float32")
            out[...] = np.asarray(array, dtype=np.float32)
    return path


def load_raw(path) -> tuple[Raw, dict]:
    """Read a store written by :func:`save_raw`.

    Returns
    -------
    raw : Raw
    model_meta : dict
        The model's method and configuration, for
        :meth:`~probseg.model.SegmentationModel.for_postprocessing`.

    Raises
    ------
    InputError
        For a missing path or a folder that is not a probseg raw store.
    """
    import zarr

    from probseg.model import Raw

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = dict(root.attrs)
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for broken stores
        raise InputError(f"{path} is not a readable zarr store ({type(exc).__name__}: {exc})") from None
    if attrs.get("format") != FORMAT:
        raise InputError(f"{path} is not a probseg raw store (write one with 'probseg segment ... --raw-out')")
    if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} has raw format version {attrs.get('format_version')}; update probseg to read it")
    planes = []
    try:
        for key in sorted(k for k, _ in root.groups()):
            group = root[key]
            arrays = dict(group.arrays())
            order = [n for n in attrs.get("maps", []) if n in arrays] + sorted(n for n in arrays if n not in attrs.get("maps", []))
            planes.append({name: np.asarray(arrays[name][...], dtype=np.float32) for name in order})
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    if not planes or not all(planes):
        raise InputError(f"{path} holds no raw maps")
    raw = Raw(planes, int(attrs["n_samples"]), bool(attrs["is_stack"]), attrs.get("notice"), dict(attrs.get("run") or {}))
    return raw, dict(attrs["model"])
