"""What a raw store must hold to be read back: its attributes, its arrays and their shapes.

A raw store is read back by ``probseg instances`` and the napari reader long
after it was written, possibly after a copy that lost files or an edit by
hand. Zarr itself trusts what it finds: a deleted chunk reads as the fill
value, a deleted array simply is not there, an integer array converts. So
every store is checked against what :mod:`probseg.io.rawstore` writes before
any of it is used; each mismatch is one :class:`~probseg.core.errors.InputError`
naming the store and what is wrong. What only the method knows (the maps it
needs, which axes are the image's) is checked above, by
:func:`probseg.engine.rawread.open_raw`.

Arrays are written with every chunk stored (zarr otherwise skips chunks
equal to the fill value) and NaN as their fill value, which marks such
stores: a chunk missing from one was deleted. Stores written before that
(fill value 0) cannot tell a deleted chunk from one of zeros. NaN values are
refused above, except in maps where the method writes NaN on purpose
(``nan_maps``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from probseg.core.errors import InputError

FORMAT = "probseg-raw"
FORMAT_VERSION = 1
PLANE = re.compile(r"plane_\d{4}")


def _fail(path: Path, what: str) -> InputError:
    return InputError(f"{path} is not a usable raw store: {what}")


def check_attrs(attrs, path: Path) -> dict:
    """``attrs`` of the store at ``path`` if they are what :mod:`probseg.io.rawstore` writes.

    Raises
    ------
    InputError
        Naming the first attribute that is missing or of the wrong kind.
    """
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT:
        raise InputError(f"{path} is not a probseg raw store (write one with 'probseg segment ... --raw-out')")
    version = attrs.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(path, f"its format_version is {version!r}, not a version probseg writes (1 to {FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise InputError(f"{path} has raw format version {version}; update probseg to read it")
    method = attrs.get("method")
    if not isinstance(method, str) or not method:
        raise _fail(path, f"its method is {method!r}, not a method name")
    n = attrs.get("n_samples")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 2**31:
        raise _fail(path, f"its n_samples is {n!r}, not a whole number of at least 1")
    if not isinstance(attrs.get("is_stack"), bool):
        raise _fail(path, f"its is_stack is {attrs.get('is_stack')!r}, not true or false")
    if attrs.get("notice") is not None and not isinstance(attrs["notice"], str):
        raise _fail(path, "its notice is not text")
    if attrs.get("run") is not None and not isinstance(attrs["run"], dict):
        raise _fail(path, "its run facts are not an object")
    maps = attrs.get("maps")
    if not isinstance(maps, list) or not maps or not all(isinstance(m, str) and m for m in maps) \
            or len(set(maps)) != len(maps):
        raise _fail(path, f"its list of maps is {maps!r}")
    model = attrs.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("config"), dict):
        raise _fail(path, "it lacks the model's configuration (attribute 'model' with a 'config' object)")
    if model.get("method", method) != method:
        raise _fail(path, f"its model is a {model.get('method')!r} model but the store says {method!r}")
    planes = attrs.get("planes")
    if planes is not None and (isinstance(planes, bool) or not isinstance(planes, int) or planes < 1):
        raise _fail(path, f"its plane count is {planes!r}")
    return attrs


def check_planes(keys, attrs: dict, path: Path) -> list[str]:
    """The plane groups of the store, in order; every one from ``plane_0000`` on must be there.

    Raises
    ------
    InputError
        For a missing, extra or misnamed plane.
    """
    keys = sorted(keys)
    stray = [k for k in keys if not PLANE.fullmatch(k)]
    if stray:
        raise _fail(path, f"it holds a group {stray[0]!r} that is not a plane")
    expected = attrs.get("planes", len(keys))
    if not attrs["is_stack"]:
        expected = 1
    names = [f"plane_{z:04d}" for z in range(expected)]
    if keys != names:
        missing = sorted(set(names) - set(keys))
        what = f"{missing[0]} is missing" if missing else f"it holds {len(keys)} planes, expected {expected}"
        raise _fail(path, what)
    return names


def check_array(array, where: str, path: Path) -> None:
    """Refuse a stored array that is not float32 or that lost chunks (see the module docstring)."""
    if array.dtype != np.float32:
        raise _fail(path, f"{where} is {array.dtype}, expected float32")
    if array.ndim < 2:
        raise _fail(path, f"{where} has shape {tuple(array.shape)}; a raw map has at least the image's 2 axes")
    fill = array.fill_value
    if fill is not None and np.isnan(fill) and array.nchunks_initialized < array.nchunks:
        lost = array.nchunks - array.nchunks_initialized
        raise _fail(path, f"{where} lacks {lost} of its {array.nchunks} chunks (deleted or not copied)")


def check_values(values: np.ndarray, where: str, path: Path) -> None:
    """Refuse infinite values; networks never write them, a damaged store does (NaN is the method's to judge)."""
    if np.isinf(values).any():
        raise _fail(path, f"{where} holds infinite values (damaged data)")


def check_shapes(planes: list[dict], n_samples: int, path: Path) -> None:
    """Refuse maps whose shapes disagree: across planes, between draw maps, and with ``n_samples``.

    Maps of three or more axes have the draws first: ``1 + n_samples`` of
    them (one for one sample), or one for a store that kept draw 0 only.
    Maps of two axes are the plane's ``(Y, X)``.
    """
    draws = 1 if n_samples == 1 else 1 + n_samples
    first = planes[0]
    for z, plane in enumerate(planes):
        for name, values in plane.items():
            if values.shape != first[name].shape:
                raise _fail(path, f"plane_{z:04d}/{name} has shape {values.shape} but plane_0000/{name} {first[name].shape}")
    counts = {name: v.shape[0] for name, v in first.items() if v.ndim >= 3}
    if counts:
        name, count = next(iter(counts.items()))
        other = next((n for n, c in counts.items() if c != count), None)
        if other is not None:
            raise _fail(path, f"{name} holds {count} draws but {other} {counts[other]}")
        if count not in (draws, 1):
            raise _fail(path, f"{name} holds {count} draws; n_samples {n_samples} means {draws} (or 1 for draw 0 only)")
    flat = {name: v.shape for name, v in first.items() if v.ndim == 2}
    if len(set(flat.values())) > 1:
        (a, sa), (b, sb) = _two_different(flat)
        raise _fail(path, f"{a} has shape {sa} but {b} {sb}; the maps of a plane share one (Y, X)")
    if any(0 in v.shape for v in first.values()):
        raise _fail(path, "a map is empty")


def _two_different(shapes: dict) -> list:
    items = list(shapes.items())
    return [items[0], next(item for item in items if item[1] != items[0][1])]


def spatial_shape(plane: dict) -> tuple:
    """The ``(Y, X)`` of a checked plane: that of its 2-axis maps, else the last two axes of its first map."""
    flat = [v.shape for v in plane.values() if v.ndim == 2]
    return tuple(flat[0]) if flat else tuple(next(iter(plane.values())).shape[-2:])
