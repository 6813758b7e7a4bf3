"""A user-supplied foreground mask: where objects may be.

Any method segments inside a mask: :meth:`probseg.engine.model.SegmentationModel.predict`
takes one as ``foreground``, ``probseg segment`` and ``probseg instances``
as ``--foreground``. The mask travels with the raw maps as a map named
``"mask"`` (float32, 1 inside, ``(Y, X)`` in every plane), so it is stored
in raw stores and applied again whenever the maps are post-processed.

What counts as foreground depends on the mask's values, so that the layers
people have at hand work as they are:

* labels, booleans and other integers: values above 0;
* floats between 0 and 1 (a probability map, e.g. exported from ilastik):
  values of 0.5 and above;
* other floats: values above 0.
"""

from __future__ import annotations

import numpy as np

from probseg.core.errors import InputError

#: The name of the mask among a plane's raw maps.
MASK = "mask"


def as_mask(array, shape: tuple | None = None) -> np.ndarray:
    """A boolean foreground mask from a labels, boolean, probability or other numeric image.

    Parameters
    ----------
    array : array-like
        Labels, bool or integers (foreground: > 0), floats in 0..1 such as
        a probability map (foreground: >= 0.5), or other floats
        (foreground: > 0).
    shape : tuple, optional
        The spatial shape of the image the mask is for, ``(Y, X)`` or
        ``(Z, Y, X)``. A ``(Y, X)`` mask also fits a stack: it applies to
        every plane. None skips the check.

    Returns
    -------
    ndarray of bool
        The mask, in its own shape (a 2-D mask for a stack stays 2-D).

    Raises
    ------
    InputError
        One line for a mask of another shape, of a non-numeric dtype, with
        NaN values, or without any foreground pixel.
    """
    values = np.asarray(array)
    if not (values.dtype == bool or np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise InputError(f"the foreground mask has dtype {values.dtype}; give labels, a boolean mask or a probability map")
    _check_shape(values.shape, shape)
    if values.dtype == bool:
        mask, rule = values, "True"
    elif np.issubdtype(values.dtype, np.integer):
        mask, rule = values > 0, "values above 0"
    else:
        if np.isnan(values).any():
            raise InputError(f"the foreground mask has {int(np.isnan(values).sum())} NaN value(s); "
                             "give 0 for background instead")
        if values.size and values.min() >= 0 and values.max() <= 1:
            mask, rule = values >= 0.5, "values of 0.5 and above, as it holds probabilities in 0..1"
        else:
            mask, rule = values > 0, "values above 0"
    if not mask.any():
        raise InputError(f"the foreground mask is empty: no pixel is foreground (foreground here: {rule})")
    return mask


def _check_shape(given: tuple, shape: tuple | None) -> None:
    if len(given) not in (2, 3):
        raise InputError(f"the foreground mask has shape {given}; give a (Y, X) mask or a (Z, Y, X) one for a stack")
    if shape is None:
        return
    shape = tuple(int(s) for s in shape)
    if tuple(given) == shape or (len(shape) == 3 and tuple(given) == shape[1:]):
        return
    hint = "; a (Y, X) mask applies to every plane of a stack" if len(shape) == 3 else ""
    raise InputError(f"the foreground mask has shape {tuple(given)} but the image is {shape}; they must be the same{hint}")


def plane_masks(array, shape: tuple) -> list[np.ndarray]:
    """The mask of each plane as float32 ``(Y, X)`` maps (1 inside, 0 outside), checked by :func:`as_mask`.

    Parameters
    ----------
    array : array-like
        As :func:`as_mask`.
    shape : tuple
        The image's spatial shape, ``(Y, X)`` (one plane) or ``(Z, Y, X)``.

    Returns
    -------
    list of ndarray
        One map per plane; a ``(Y, X)`` mask of a stack is shared by every plane.
    """
    mask = as_mask(array, shape).astype(np.float32)
    n_planes = shape[0] if len(shape) == 3 else 1
    if mask.ndim == 2:
        return [mask] * n_planes
    return list(mask)


def attach_foreground(raw, mask):
    """``raw`` with the foreground ``mask`` among each plane's maps (no network runs).

    Parameters
    ----------
    raw : probseg.engine.model.Raw
        Raw maps, e.g. of :meth:`~probseg.engine.model.SegmentationModel.predict_raw`
        or :func:`probseg.io.rawstore.load_raw`.
    mask : array-like or None
        As :func:`as_mask`, of ``raw.shape`` (a ``(Y, X)`` mask also fits a
        stack). None removes any mask.

    Returns
    -------
    probseg.engine.model.Raw
        A new ``Raw``: its planes' dicts are copies, their other arrays are
        ``raw``'s own. Post-process it with
        :meth:`~probseg.engine.model.SegmentationModel.postprocess`.

    Raises
    ------
    InputError
        As :func:`as_mask`.
    """
    import dataclasses

    planes = [{name: array for name, array in plane.items() if name != MASK} for plane in raw.planes]
    if mask is not None:
        for plane, plane_mask in zip(planes, plane_masks(mask, raw.shape)):
            plane[MASK] = plane_mask
    return dataclasses.replace(raw, planes=planes, attrs=dict(raw.attrs))
