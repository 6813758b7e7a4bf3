"""Raw network output on disk: a chunked zarr store that post-processing reads later.

Layout of ``RAW.zarr``::

    RAW.zarr/                 attrs: format, format_version, method, n_samples, is_stack,
                              notice, config (the model's config.json), run facts
      plane_0000/<name>       one float32 array per raw map of plane 0, chunked
      plane_0001/<name>       ... (one group per plane of a stack)

It holds everything :meth:`probseg.engine.model.SegmentationModel.postprocess` needs,
including the model's configuration, so ``probseg instances RAW.zarr`` turns
it into labels with any settings and without the model's weights.

Maps with draws are chunked one draw at a time, so :class:`RawWriter` can
write each draw as the network finishes it (``probseg segment --raw-out``
never holds all draws of a large image in memory) and a reader can load
single draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probseg.core.errors import InputError

if TYPE_CHECKING:
    from probseg.core.results import Raw

FORMAT = "probseg-raw"
FORMAT_VERSION = 1
CHUNK = 256  # px; whole planes would make one enormous chunk per map
#: What a store keeps of the model's ``meta()``: enough to post-process without weights.
MODEL_KEYS = ("method", "config", "in_channels", "normalization", "settings", "learned")


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
        From :meth:`~probseg.engine.model.SegmentationModel.predict_raw`.
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
        "model": {k: model_meta[k] for k in MODEL_KEYS if k in model_meta},
        "run": raw.attrs,
        "maps": list(raw.planes[0]),  # zarr lists arrays in its own order; keep the method's
    })
    for z, plane in enumerate(raw.planes):
        group = root.create_group(f"plane_{z:04d}")
        for name, array in plane.items():
            out = group.create_array(name, shape=array.shape, chunks=_chunks(array.shape), dtype="float32")
            out[...] = np.asarray(array, dtype=np.float32)
    return path



def _chunks(shape: tuple) -> tuple:
    # One draw per chunk along the draws axis; whole channels; CHUNK px tiles.
    if len(shape) >= 3:
        return (1,) + tuple(shape[1:-2]) + (CHUNK, CHUNK)
    return tuple(shape[:-2]) + (CHUNK, CHUNK)


class RawWriter:
    """Writes a raw store draw by draw, as :meth:`SegmentationModel.predict` makes the draws.

    The store is built in a hidden folder beside ``path`` and renamed to
    ``path`` by :meth:`close`, so an interrupted run leaves no half-written
    store under the name the user gave; :meth:`abort` removes it.

    Parameters
    ----------
    path : path
        The store to create; it must not exist.
    model_meta : dict
        The model's ``config.json`` contents (method, config, in_channels, ...).
    n_samples : int
        Samples the draws are made for (``1 + n_samples`` draws, or 1 draw
        for one sample).

    Examples
    --------
    >>> writer = RawWriter("raw.zarr", model.meta(), 8)  # doctest: +SKIP
    >>> pred = model.predict(image, 8, keep_raw=False, on_draw=writer.add)  # doctest: +SKIP
    >>> writer.close(pred.raw)  # doctest: +SKIP
    """

    def __init__(self, path, model_meta: dict, n_samples: int):
        import os
        import zarr

        self.path = Path(path)
        if self.path.exists():
            raise InputError(f"{self.path} exists; choose another name for the raw output or remove it first")
        self.partial = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.n_samples = int(n_samples)
        self.n_draws = 1 if self.n_samples == 1 else 1 + self.n_samples
        self.meta = model_meta
        self.maps: list[str] = []
        self.root = zarr.open_group(str(self.partial), mode="w")
        self._arrays: dict = {}

    def add(self, z: int, k: int, draw: dict) -> None:
        """Write draw ``k`` of plane ``z``: one-draw maps as :meth:`SegmentationModel.raw_draws` yields them."""
        if k == 0:
            group = self.root.create_group(f"plane_{z:04d}")
            self._arrays = {}
            for name, array in draw.items():
                shape = ((self.n_draws,) + tuple(array.shape[1:])) if array.ndim >= 3 else tuple(array.shape)
                self._arrays[name] = group.create_array(name, shape=shape, chunks=_chunks(shape), dtype="float32")
                if z == 0:
                    self.maps.append(name)
                if array.ndim < 3:
                    self._arrays[name][...] = np.asarray(array, dtype=np.float32)
        for name, array in draw.items():
            if array.ndim >= 3:
                self._arrays[name][k] = np.asarray(array[0], dtype=np.float32)

    def close(self, raw: Raw) -> Path:
        """Write the attributes (from ``raw``, whose maps may hold draw 0 only) and move the store into place."""
        self.root.attrs.update({
            "format": FORMAT, "format_version": FORMAT_VERSION, "method": self.meta["method"],
            "n_samples": self.n_samples, "is_stack": bool(raw.is_stack), "notice": raw.notice,
            "model": {k: self.meta[k] for k in MODEL_KEYS if k in self.meta},
            "run": raw.attrs,
            "maps": list(self.maps),
        })
        if self.path.exists():
            raise InputError(f"{self.path} appeared while segmenting; the raw output is kept in {self.partial}")
        self.partial.rename(self.path)
        return self.path

    def abort(self) -> None:
        """Remove the partial store."""
        import shutil

        shutil.rmtree(self.partial, ignore_errors=True)


def load_raw(path) -> tuple[Raw, dict]:
    """Read a store written by :func:`save_raw`.

    Returns
    -------
    raw : Raw
    model_meta : dict
        The model's method and configuration, for
        :meth:`~probseg.engine.model.SegmentationModel.for_postprocessing`.

    Raises
    ------
    InputError
        For a missing path or a folder that is not a probseg raw store.
    """
    import zarr

    from probseg.core.results import Raw

    path = Path(path)
    if not path.exists():
        from probseg.io.images import missing

        raise InputError(missing(path))  # says "symbolic link loop" or "broken symbolic link" where it is one
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
