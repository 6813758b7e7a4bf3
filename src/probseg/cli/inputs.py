"""Reading the images and masks named on the command line, checked at once so that errors name the file."""

from __future__ import annotations

import numpy as np

from probseg.core.errors import InputError


def read_checked(path: str, channel_axis=None, rgb=False) -> np.ndarray:
    """Read an image and check it now, so errors name the file and come early."""
    return read_with_shape(path, channel_axis, rgb)[0]


def read_with_shape(path: str, channel_axis=None, rgb=False) -> tuple[np.ndarray, tuple]:
    """:func:`read_checked` and the image's spatial shape, ``(Y, X)`` or ``(Z, Y, X)``."""
    from probseg.core.inputs import to_planes
    from probseg.io.images import read_image

    image = read_image(path)
    planes = to_planes(image, channel_axis=channel_axis, rgb=rgb, name=str(path))
    shape = ((planes.data.shape[0],) if planes.is_stack else ()) + planes.spatial_shape
    return image, shape


def read_foreground(path: str, shape: tuple) -> np.ndarray:
    """The ``--foreground-mask``, checked against the image's spatial ``shape``; errors name the file."""
    from probseg.partition.foreground import as_mask
    from probseg.io.images import read_image

    try:
        return as_mask(read_image(path), shape)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"--foreground-mask {path}: {message}") from None
