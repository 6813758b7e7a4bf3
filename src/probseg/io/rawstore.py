"""Raw network output on disk: a chunked zarr store that post-processing reads later.

Layout of ``RAW.zarr``::

    RAW.zarr/                 attrs: format, format_version, method, n_samples, is_stack,
                              notice, model (the model's config.json), run facts,
                              maps (their names, in order), planes (their count)
      plane_0000/<name>       one float32 array per raw map of plane 0, chunked,
                              every chunk stored, NaN as fill value
      plane_0001/<name>       ... (one group per plane of a stack)

It holds everything :meth:`probseg.engine.model.SegmentationModel.postprocess` needs,
including the model's configuration, so ``probseg instances RAW.zarr`` turns
it into labels with any settings and without the model's weights.

Maps with draws are chunked one draw at a time, so :class:`RawWriter` can
write each draw as the network finishes it (``probseg segment --raw-out``
never holds all draws of a large image in memory) and a reader can load
single draws. :func:`load_raw` checks a store against this layout before
using it (:mod:`probseg.io.rawcheck`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probseg.core.errors import InputError
from probseg.io import rawcheck
from probseg.io.atomic import interrupts_deferred
from probseg.io.rawcheck import FORMAT, FORMAT_VERSION

if TYPE_CHECKING:
    from probseg.core.results import Raw

CHUNK = 256  # px; whole planes would make one enormous chunk per map
# Every chunk is stored, even one equal to the fill value, so a missing chunk means a deleted one;
# NaN as the fill value marks such stores (see probseg.io.rawcheck).
ARRAY_OPTIONS = {"dtype": "float32", "fill_value": np.nan, "config": {"write_empty_chunks": True}}
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
        "planes": len(raw.planes),  # so a deleted plane is noticed
    })
    for z, plane in enumerate(raw.planes):
        group = root.create_group(f"plane_{z:04d}")
        for name, array in plane.items():
            out = group.create_array(name, shape=array.shape, chunks=_chunks(array.shape), **ARRAY_OPTIONS)
            out[...] = np.asarray(array, dtype=np.float32)
    return path



def _chunks(shape: tuple) -> tuple:
    # One draw per chunk along the draws axis; whole channels; CHUNK px tiles.
    if len(shape) >= 3:
        return (1,) + tuple(shape[1:-2]) + (CHUNK, CHUNK)
    return tuple(shape[:-2]) + (CHUNK, CHUNK)


class RawWriter:
    """Writes a raw store draw by draw, as :meth:`SegmentationModel.predict` makes the draws.

    The store is built in a hidden folder beside ``path`` and moved to
    ``path`` by :meth:`close` (inside a
    :func:`probseg.io.atomic.replace_on_success` block, when the block
    succeeds), so an interrupted or failed run leaves no half-written store
    under the name the user gave and an existing store as it was;
    :meth:`abort` removes the hidden one.

    Parameters
    ----------
    path : path
        The store to create; it must not exist unless ``overwrite``.
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

    def __init__(self, path, model_meta: dict, n_samples: int, overwrite: bool = False):
        import zarr

        from probseg.io.atomic import hidden_sibling

        self.path = Path(path)
        self.overwrite = bool(overwrite)
        if self.path.exists() and not self.overwrite:
            raise InputError(f"{self.path} exists; choose another name for the raw output or remove it first")
        self.partial = hidden_sibling(self.path, "partial")
        self.n_samples = int(n_samples)
        self.n_draws = 1 if self.n_samples == 1 else 1 + self.n_samples
        self.meta = model_meta
        self.maps: list[str] = []
        try:
            # zarr writes from its own I/O thread: a Ctrl-C that stopped the
            # wait could leave files landing after abort() removed the folder.
            with interrupts_deferred():
                self.root = zarr.open_group(str(self.partial), mode="w")
        except BaseException:  # Ctrl-C while the folder is made: nobody else will remove it
            self.abort()
            raise
        self._arrays: dict = {}

    def add(self, z: int, k: int, draw: dict) -> None:
        """Write draw ``k`` of plane ``z``: one-draw maps as :meth:`SegmentationModel.raw_draws` yields them."""
        with interrupts_deferred():  # every write finished before a Ctrl-C lets abort() remove the store
            if k == 0:
                group = self.root.create_group(f"plane_{z:04d}")
                self._arrays = {}
                for name, array in draw.items():
                    shape = ((self.n_draws,) + tuple(array.shape[1:])) if array.ndim >= 3 else tuple(array.shape)
                    self._arrays[name] = group.create_array(name, shape=shape, chunks=_chunks(shape), **ARRAY_OPTIONS)
                    if z == 0:
                        self.maps.append(name)
                    if array.ndim < 3:
                        self._arrays[name][...] = np.asarray(array, dtype=np.float32)
            for name, array in draw.items():
                if array.ndim >= 3:
                    self._arrays[name][k] = np.asarray(array[0], dtype=np.float32)

    def close(self, raw: Raw) -> Path:
        """Write the attributes (from ``raw``, whose maps may hold draw 0 only) and move the store into place."""
        with interrupts_deferred():
            self._write_attrs(raw)
        return self._move_into_place()

    def _write_attrs(self, raw: Raw) -> None:
        self.root.attrs.update({
            "format": FORMAT, "format_version": FORMAT_VERSION, "method": self.meta["method"],
            "n_samples": self.n_samples, "is_stack": bool(raw.is_stack), "notice": raw.notice,
            "model": {k: self.meta[k] for k in MODEL_KEYS if k in self.meta},
            "run": raw.attrs,
            "maps": list(self.maps),
            "planes": len(raw.planes),
        })

    def _move_into_place(self) -> Path:
        from probseg.io.atomic import replace_folder

        if self.path.exists() and not self.overwrite:
            raise InputError(f"{self.path} appeared while segmenting; choose another name for the raw output")
        return replace_folder(self.partial, self.path)

    def abort(self) -> None:
        """Remove the partial store."""
        import shutil

        shutil.rmtree(self.partial, ignore_errors=True)


def load_raw(path) -> tuple[Raw, dict]:
    """Read a store written by :func:`save_raw` or :class:`RawWriter`, checked against what they write.

    Returns
    -------
    raw : Raw
    model_meta : dict
        The model's method and configuration, for
        :meth:`~probseg.engine.model.SegmentationModel.for_postprocessing`.

    Raises
    ------
    InputError
        Naming the store and what is wrong: a missing path, a folder that is
        not a probseg raw store, a format version this release does not read,
        malformed attributes, deleted planes, arrays or chunks, maps that are
        not finite float32 or whose shapes disagree with each other or with
        the sample count (see :mod:`probseg.io.rawcheck`). What the method
        needs is checked by :func:`probseg.engine.rawread.open_raw`.
    """
    import warnings

    import zarr

    from probseg.core.results import Raw

    path = Path(path)
    if not path.exists():
        from probseg.io.images import missing

        raise InputError(f"raw store {missing(path)}")  # says "symbolic link loop" or "broken symbolic link" where it is one
    if not path.is_dir():
        raise InputError(f"{path} is a file; a raw store is a folder written by 'probseg segment ... --raw-out'")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="zarr")  # a folder without metadata: a missing plane below
            root = zarr.open_group(str(path), mode="r")
            attrs = dict(root.attrs)
            keys = [k for k, _ in root.groups()]
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for broken stores
        raise InputError(f"{path} is not a readable zarr store ({type(exc).__name__}: {exc})") from None
    attrs = rawcheck.check_attrs(attrs, path)
    planes = []
    for key in rawcheck.check_planes(keys, attrs, path):
        try:
            with warnings.catch_warnings():
                # zarr warns of a folder whose metadata was deleted; it is reported below as a missing map.
                warnings.filterwarnings("ignore", module="zarr")
                arrays = dict(root[key].arrays())
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path} is damaged: {key} cannot be read ({type(exc).__name__}: {exc})") from None
        stray = sorted(set(arrays) - set(attrs["maps"]))
        if stray:
            raise InputError(f"{path} is not a usable raw store: {key} holds {stray[0]!r}, which its maps do not list")
        plane = {}
        for name in attrs["maps"]:
            if name not in arrays:
                raise InputError(f"{path} is not a usable raw store: {key}/{name} is missing (deleted or not copied)")
            rawcheck.check_array(arrays[name], f"{key}/{name}", path)
            try:
                values = np.asarray(arrays[name][...])
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"{path} is damaged: {key}/{name} cannot be read ({type(exc).__name__}: {exc})") from None
            rawcheck.check_values(values, f"{key}/{name}", path)
            plane[name] = values
        planes.append(plane)
    rawcheck.check_shapes(planes, attrs["n_samples"], path)
    raw = Raw(planes, attrs["n_samples"], attrs["is_stack"], attrs.get("notice"), dict(attrs.get("run") or {}))
    return raw, dict(attrs["model"])
