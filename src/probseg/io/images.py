"""Reading and writing images for the command line and the plugin.

Supported formats
-----------------
Reading:

* TIFF (``.tif``, ``.tiff``, including OME-TIFF): the first series, all pages,
  via tifffile, so a multi-page file becomes a ``(Z, Y, X)`` stack.
* PNG and JPEG (``.png``, ``.jpg``, ``.jpeg``) via imageio; colour images keep
  their colour axis last, ``(Y, X, 3)`` or ``(Y, X, 4)``.
* NumPy ``.npy`` files, never unpickled (``allow_pickle=False``).
* Zarr stores (a folder, usually named ``*.zarr``, in format 2 or 3). A store
  holding one array is read directly. For a group, give the array's folder
  (``plate.zarr/raw`` or ``plate.zarr/labels/nuclei``) or pass its path inside
  the group as ``name``; with neither, the first array in alphabetical order
  (searching sub-groups depth first) is read. A path inside the store was
  chosen over a special ``store::name`` syntax because it is what a file
  browser shows and needs no quoting in a shell.

Writing: TIFF (labels and other integer images zlib-compressed), ``.npy``,
PNG (2-D ``uint8``/``uint16`` only) and zarr (a ``*.zarr`` folder holding one
array chunked in 1024 px tiles, one plane per chunk, for outputs that are
read back piece by piece). Every write goes to a temporary file in
the target folder that is fsynced and renamed over the target at the end
(:func:`probseg.io.atomic.atomic_write`), so an interrupted or failed write
never leaves a half-written image behind.

Every problem with a file to read raises :class:`probseg.core.errors.InputError`
with one line naming the file and what is wrong.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from probseg.io.atomic import atomic_write
from probseg.core.errors import InputError

__all__ = ["read_image", "write_image", "check_output_path", "READ_SUFFIXES", "WRITE_SUFFIXES"]

TIFF_SUFFIXES = (".tif", ".tiff")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
READ_SUFFIXES = TIFF_SUFFIXES + PICTURE_SUFFIXES + (".npy", ".zarr")
WRITE_SUFFIXES = TIFF_SUFFIXES + (".npy", ".png", ".zarr")
ZARR_CHUNK = 1024  # px; chunks of a written zarr array, one plane deep
_FORMAT_NAMES = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".npy": "NumPy .npy"}


def _reason(exc: BaseException) -> str:
    """First line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_zarr_folder(path: Path) -> bool:
    # Format 3 marks every node with zarr.json; format 2 with .zarray/.zgroup.
    markers = ("zarr.json", ".zarray", ".zgroup")
    return path.suffix.lower() == ".zarr" or any((path / m).is_file() for m in markers)


def read_image(path, name: str | None = None) -> np.ndarray:
    """Read an image file into a NumPy array, as stored (no conversion).

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff``, ``.png``, ``.jpg``/``.jpeg`` or ``.npy`` file, or
        a zarr store folder (or an array folder inside one).
    name : str, optional
        For zarr groups only: the array's path inside the group, e.g.
        ``"raw"`` or ``"labels/nuclei"``.

    Returns
    -------
    ndarray
        The pixel data with the file's dtype and axes.

    Raises
    ------
    InputError
        If the file is missing, has an unsupported extension, or cannot be
        decoded (corrupt, truncated, or not the format its name says).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(missing(path))
    if path.is_dir():
        if not _is_zarr_folder(path):
            raise InputError(f"{path} is a folder but not a zarr store (no zarr.json, .zarray or .zgroup inside)")
        return _read_zarr(path, name)
    suffix = path.suffix.lower()
    if name is not None:
        raise InputError(f"an array name ({name!r}) selects an array inside a zarr store, but {path} is a {suffix or 'plain'} file")
    if suffix not in READ_SUFFIXES or suffix == ".zarr":
        supported = ", ".join(s for s in READ_SUFFIXES if s != ".zarr")
        raise InputError(f"{path} has an unsupported extension {suffix or '(none)'!r}; use {supported} or a zarr folder")
    try:
        if suffix in TIFF_SUFFIXES:
            array = _read_tiff(path)
        elif suffix in PICTURE_SUFFIXES:
            import imageio.v3 as iio

            array = iio.imread(path)
        else:
            array = np.load(path, allow_pickle=False)
    except PermissionError:
        raise InputError(f"{path} cannot be read: permission denied") from None
    except _MixedPages as exc:
        raise InputError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many unrelated types for corrupt data
        raise InputError(f"{path} is not a readable {_FORMAT_NAMES[suffix]} file ({_reason(exc)})") from None
    return _as_pixels(np.asarray(array), path)


def missing(path) -> str:
    """Why ``path``, which does not exist as far as ``Path.exists`` can tell, cannot be opened: one line."""
    import errno
    import os

    path = Path(path)
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop (it leads back to itself); point it at a real file"
    if path.is_symlink():
        return f"{path} is a broken symbolic link to {os.readlink(path)}, which does not exist"
    return f"{path} does not exist"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _read_tiff(path: Path) -> np.ndarray:
    """Read a TIFF; a file tifffile only warns about is an error here.

    For some broken files (a valid header pointing nowhere) tifffile logs a
    warning and returns an empty array. Its warnings are collected instead of
    reaching stderr through logging's last-resort handler, which would put an
    unexplained extra line above the CLI's one-line error.
    """
    import tifffile

    logger = logging.getLogger("tifffile")
    collect = _Collect()
    logger.addHandler(collect)
    try:
        with tifffile.TiffFile(path) as tif:
            _check_one_series(tif)
            array = tif.asarray()
    finally:
        logger.removeHandler(collect)
    if array is None or np.asarray(array).size == 0:
        raise ValueError(collect.messages[0] if collect.messages else "no image data; the file is corrupt or truncated")
    return array


class _MixedPages(ValueError):
    """A TIFF whose pages cannot form one stack; reported as is, not as a decoding failure."""


def _check_one_series(tif) -> None:
    # tifffile splits pages of different shapes into separate series and
    # reads only the first, so the rest of the file would vanish unnoticed.
    series = tif.series
    if len(series) <= 1:
        return
    first = series[0]
    other = next((s for s in series[1:] if s.shape != first.shape), series[1])
    page = tif.pages.index(other.pages[0]) + 1 if other.pages and other.pages[0] is not None else "?"
    raise _MixedPages(
        f"its pages do not form one image: page {page} is {'x'.join(map(str, other.shape))} but the first is "
        f"{'x'.join(map(str, first.shape))}; save one image per file"
    )


def _read_zarr(path: Path, name: str | None) -> np.ndarray:
    try:
        import zarr

        node = zarr.open(str(path), mode="r")
        if name is not None:
            if not hasattr(node, "arrays"):
                raise InputError(f"{path} is a single zarr array; it holds no array named {name!r}")
            try:
                node = node[name]
            except KeyError:
                raise InputError(f"{path} holds no array named {name!r}; found {', '.join(_array_names(node)) or 'none'}") from None
        if hasattr(node, "arrays"):  # a group
            found = _first_array(node)
            if found is None:
                raise InputError(f"zarr group {path} holds no array")
            node = found
        array = node[...]
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr and its codecs raise many types for broken stores
        raise InputError(f"{path} is not a readable zarr store ({_reason(exc)})") from None
    return _as_pixels(np.asarray(array), path)


def _array_names(group) -> list[str]:
    return sorted(key for key, _ in group.arrays())


def _first_array(group):
    """The alphabetically first array of ``group``, searching sub-groups depth first."""
    arrays = dict(group.arrays())
    if arrays:
        return arrays[sorted(arrays)[0]]
    for key in sorted(k for k, _ in group.groups()):
        found = _first_array(group[key])
        if found is not None:
            return found
    return None


def _as_pixels(array: np.ndarray, path: Path) -> np.ndarray:
    # Structured or object arrays (e.g. a .npy of records) are not images; say
    # so here where the file name is known rather than deep inside a method.
    if array.dtype.fields is not None or array.dtype == object:
        raise InputError(f"{path} holds {array.dtype} data, not pixel values")
    return array


def check_output_path(path, overwrite: bool = False) -> Path:
    """Check that ``path`` has an extension :func:`write_image` can write.

    Called before long computations so that a typo in an output name fails
    at once instead of after the work is done.

    Parameters
    ----------
    path : str or Path
    overwrite : bool
        Whether an existing zarr array folder at ``path`` may be replaced.

    Raises
    ------
    InputError
        For an unsupported extension, a path that is an existing folder, or
        an existing ``.zarr`` folder unless ``overwrite`` is given and it
        holds a zarr array.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise InputError(
            f"cannot write {path}: unsupported extension {path.suffix or '(none)'!r}; use {', '.join(WRITE_SUFFIXES)}"
        )
    zarr_output = path.suffix.lower() == ".zarr"
    if zarr_output and path.exists():
        if not (overwrite and is_zarr_array(path)):
            raise InputError(f"cannot write {path}: it exists; a zarr output replaces only a zarr array, and only when asked to")
    elif path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder")
    return path


def is_zarr_array(path) -> bool:
    """Whether ``path`` is a folder holding one zarr array (format 2 or 3), the kind :func:`write_image` writes."""
    import json

    path = Path(path)
    if (path / ".zarray").is_file():
        return True
    try:
        return json.loads((path / "zarr.json").read_text()).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        return False


def write_image(path, array, overwrite: bool = False) -> Path:
    """Write ``array`` to ``path`` atomically, creating missing folders.

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff`` (any shape and numeric dtype, stored as grayscale
        planes, never as RGB; integer data is zlib-compressed, which shrinks
        label images many times), ``.npy``
        (any array), ``.png`` (2-D ``uint8`` or ``uint16`` only), or
        ``.zarr`` (a folder holding one chunked array of any numeric
        dtype).
    array : array_like
    overwrite : bool
        Whether an existing ``.zarr`` array folder may be replaced (files of
        the other formats are always replaced, atomically). Any other
        existing folder is never replaced.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    InputError
        For an unsupported extension, or data the format cannot hold.
    OSError
        If the folder cannot be created or written (permissions, full disk).
    """
    path = check_output_path(path, overwrite)
    array = np.asarray(array)
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return _write_zarr(path, array, overwrite)
    if suffix == ".png" and (array.ndim != 2 or array.dtype not in (np.uint8, np.uint16)):
        raise InputError(
            f"cannot write {path}: PNG holds 2-D uint8 or uint16 images, got {array.ndim}-D {array.dtype}; use .tif"
        )
    if suffix != ".npy" and (array.dtype.fields is not None or array.dtype == object or np.iscomplexobj(array)):
        raise InputError(f"cannot write {path}: {array.dtype} data is not an image; use .npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Writers get an open file, not the name, so none of them appends or
    # guesses an extension from the temporary name.
    def write(handle) -> None:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            integer = np.issubdtype(array.dtype, np.integer) or array.dtype == bool
            # minisblack: a (3, Y, X) stack of samples or embeddings must
            # not be stored (and shown by Fiji) as one RGB image.
            tifffile.imwrite(handle, array, photometric="minisblack", compression="zlib" if integer else None)
        elif suffix == ".npy":
            np.save(handle, array, allow_pickle=False)
        else:
            import imageio.v3 as iio

            iio.imwrite(handle, array, extension=".png")

    atomic_write(path, write)
    return path


def _write_zarr(path: Path, array: np.ndarray, overwrite: bool = False) -> Path:
    """Write ``array`` as a zarr store at ``path``, built beside it under a hidden name and swapped into place.

    With ``overwrite``, an existing zarr array at ``path`` is replaced only
    once the new one is complete (see :func:`probseg.io.atomic.replace_folder`).
    """
    import shutil

    import zarr

    from probseg.io.atomic import hidden_sibling, replace_folder

    if array.dtype.fields is not None or array.dtype == object or np.iscomplexobj(array):
        raise InputError(f"cannot write {path}: {array.dtype} data is not an image; use .npy")
    if (path.exists() or path.is_symlink()) and not (overwrite and is_zarr_array(path)):
        raise InputError(f"cannot write {path}: it exists; remove it first or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = hidden_sibling(path, "partial")
    if array.ndim >= 2:
        chunks = (1,) * (array.ndim - 2) + tuple(min(ZARR_CHUNK, max(1, n)) for n in array.shape[-2:])
    else:
        chunks = tuple(max(1, n) for n in array.shape)
    try:
        out = zarr.create_array(store=str(partial), shape=array.shape, dtype=array.dtype, chunks=chunks)
        # Plane by plane, so zarr never needs a second copy of a large stack.
        for index in np.ndindex(array.shape[:-2]):
            out[index] = array[index]
        replace_folder(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path
