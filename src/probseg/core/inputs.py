"""Checking and arranging input images before any network sees them.

Every image is brought to one canonical layout, ``(Z, C, Y, X)`` float32,
where Z counts planes of a 3-D stack (1 for a 2-D image) and C counts channels
(1 for grayscale). Methods work plane by plane on ``(C, Y, X)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probseg.core.errors import InputError

MIN_SIDE = 16  # px; smaller images cannot hold even one object worth segmenting


@dataclass
class Planes:
    """An image in canonical layout plus how to put results back."""

    data: np.ndarray  # (Z, C, Y, X) float32, not yet normalised
    is_stack: bool  # True when the input was a 3-D stack (results keep Z)
    notice: str | None = None  # something the user should know, e.g. "processed plane by plane"

    @property
    def n_channels(self) -> int:
        return self.data.shape[1]

    @property
    def spatial_shape(self) -> tuple:
        return tuple(self.data.shape[2:])


def check_finite(image: np.ndarray, name: str = "image", allow_constant: bool = False) -> np.ndarray:
    """Return ``image`` as an ndarray after checking dtype, size and values.

    ``allow_constant`` leaves the constant-image check to the caller, e.g. to
    say first that an image is too small, which is the more useful news.

    Raises
    ------
    InputError
        For non-numeric or complex dtypes, empty arrays, NaN or infinite
        values, and constant images.
    """
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{name} has dtype {array.dtype}; expected integers or floats")
    if array.size == 0 or 0 in array.shape:
        raise InputError(f"{name} is empty (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            raise InputError(f"{name} contains {int(bad.sum())} NaN or infinite pixel(s); fix or mask them first")
    if not allow_constant:
        _check_not_constant(array, name)
    return array


def _check_not_constant(array: np.ndarray, name: str) -> None:
    if array.min() == array.max():
        raise InputError(f"{name} is constant (every pixel is {array.flat[0]}); nothing to segment")


def to_planes(image: np.ndarray, channel_axis: int | None = None, rgb: bool = False, name: str = "image") -> Planes:
    """Arrange an image as ``(Z, C, Y, X)``.

    Parameters
    ----------
    image : ndarray
        ``(Y, X)`` grayscale; ``(Z, Y, X)`` stack; with ``rgb=True`` a
        ``(Y, X, 3|4)`` colour image; with ``channel_axis`` a multichannel
        ``(C, Y, X)`` image or ``(Z, C, Y, X)`` stack.
    channel_axis : int, optional
        Axis holding channels.
    rgb : bool
        Treat the last axis as colour channels (alpha is dropped).
    name : str
        Used in error messages.

    Returns
    -------
    Planes

    Raises
    ------
    InputError
        For shapes that fit none of the layouts above, images smaller than
        16 px on a side, and the value problems listed in :func:`check_finite`.
    """
    array = check_finite(image, name, allow_constant=True)
    if rgb:
        if array.ndim not in (3, 4) or array.shape[-1] not in (3, 4):
            raise InputError(f"{name} has shape {array.shape}; RGB needs a last axis of 3 or 4 channels")
        array = array[..., :3]
        channel_axis = array.ndim - 1
    notice = None
    if channel_axis is not None:
        if array.ndim not in (3, 4):
            raise InputError(f"{name} has shape {array.shape}; with channels expected (C, Y, X) or (Z, C, Y, X)")
        channel_axis = channel_axis % array.ndim
        if array.ndim == 3:
            data = np.moveaxis(array, channel_axis, 0)[None]
        else:
            rest = [a for a in range(4) if a != channel_axis]
            data = np.transpose(array, (rest[0], channel_axis, rest[1], rest[2]))
        is_stack = array.ndim == 4
    elif array.ndim == 2:
        data, is_stack = array[None, None], False
    elif array.ndim == 3:
        if array.shape[-1] in (3, 4) and min(array.shape[:2]) > 4:
            notice = f"{name} looks like an RGB image {array.shape}; treating it as a 3-D stack. Set rgb=True if it is colour."
        data, is_stack = array[:, None], True
    else:
        raise InputError(
            f"{name} has {array.ndim} dimensions {array.shape}; expected (Y, X), a (Z, Y, X) stack, "
            "or channels via channel_axis/rgb"
        )
    if is_stack:
        stack_notice = f"{name} is a 3-D stack of {data.shape[0]} planes; processing it plane by plane"
        notice = stack_notice if notice is None else notice + "; " + stack_notice
    if min(data.shape[2:]) < MIN_SIDE:
        hint = " (it looks like an RGB image: use the RGB option)" if is_stack and array.shape[-1] in (3, 4) else ""
        raise InputError(f"{name} is {data.shape[2]}x{data.shape[3]} px, too small: at least {MIN_SIDE} px per side is needed{hint}")
    _check_not_constant(array, name)
    # Always a copy: normalisation works in place and must never touch the caller's array.
    return Planes(np.array(data, dtype=np.float32, order="C", copy=True), is_stack, notice)


def check_labels(labels: np.ndarray, shape: tuple, name: str = "labels") -> np.ndarray:
    """Check an instance label image against the image it annotates.

    Returns the labels as int64. Raises :class:`InputError` for a shape
    mismatch, non-integer values or negative ids.
    """
    array = np.asarray(labels)
    if array.shape != tuple(shape):
        raise InputError(f"{name} has shape {array.shape} but the image is {tuple(shape)}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(f"{name} must hold integer instance ids, got non-integral floats")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputError(f"{name} has dtype {array.dtype}; expected integer instance ids")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise InputError(f"{name} contains negative ids; background is 0 and objects are 1, 2, ...")
    return array


def check_label_stack(samples, name: str = "samples") -> np.ndarray:
    """``samples`` as an ``(n, Y, X)`` int array of non-negative labels.

    Raises
    ------
    InputError
        On a wrong number of dimensions, a non-integer dtype, negative
        labels or an empty array.
    """
    arr = np.asarray(samples)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{name} must be (n, Y, X) label images, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.integer):
        # Label images often round-trip through float (napari, some readers).
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name} must hold integer instance labels, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise InputError(f"{name} holds negative labels; 0 is background and ids are positive")
    if arr.max() > np.iinfo(np.int32).max:
        raise InputError(f"{name} holds labels above {np.iinfo(np.int32).max}")
    return arr
