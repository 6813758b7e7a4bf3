"""Label encodings: how the labels a user gives become training codes.

Every method that learns from labels reads them through these functions, so
"0 is unlabelled", "0 is background" and "this id marks known background"
mean the same everywhere (the Train widget's label modes, ``probseg train
--label-mode``, the proofreading loop's reviewed patches).
"""

from __future__ import annotations

import numpy as np

from probseg.core.errors import InputError

LABEL_MODES = ("sparse", "dense", "reviewed")
# Codes of the encoded training labels: 0 unlabelled (also the zero padding
# random_crops adds), 1 known background, id + 1 for object id.
UNLABELLED, BACKGROUND = 0, 1


def reviewed_labels(labels: np.ndarray, mask: np.ndarray, background_id: int = 65535) -> np.ndarray:
    """One ``"reviewed"`` labels image from sparse labels and a reviewed mask.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Object ids, 0 elsewhere (what the proofreading export writes).
    mask : ndarray, shape (Y, X)
        Non-zero where the pixels were reviewed (the export's ``*_reviewed``
        image): there a 0 label is known background.
    background_id : int
        The id written for known background; ``Config.background_id``.

    Returns
    -------
    ndarray of int64, shape (Y, X)
        Objects kept, reviewed 0 pixels set to ``background_id``, others 0.

    Raises
    ------
    InputError
        For shapes that differ, labels that are not whole non-negative ids,
        a mask with NaN, or labels already using ``background_id``.
    """
    labels, mask = np.asarray(labels), np.asarray(mask)
    if labels.shape != mask.shape:
        raise InputError(f"the labels have shape {labels.shape} but the reviewed mask {mask.shape}")
    if np.issubdtype(labels.dtype, np.floating) and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
        # 2.5 would become object 2 without a word.
        raise InputError("the labels must hold whole object ids, got fractions or NaN")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating) or labels.dtype == bool):
        raise InputError(f"the labels have dtype {labels.dtype}; expected whole object ids")
    if np.issubdtype(mask.dtype, np.floating) and np.isnan(mask).any():
        # NaN != 0, so a NaN pixel would count as reviewed.
        raise InputError(f"the reviewed mask has {int(np.isnan(mask).sum())} NaN value(s); give 0 (not reviewed) or 1 (reviewed)")
    out = labels.astype(np.int64)
    if out.size and out.min() < 0:
        raise InputError("the labels contain negative ids; background is 0 and objects are 1, 2, ...")
    if (out == background_id).any():
        raise InputError(f"the labels already use id {background_id}, which marks known background; pick another background_id")
    out[(mask != 0) & (labels == 0)] = background_id
    return out


def encode_labels(labels: np.ndarray, mode: str, background_id: int = 65535, ignore_id: int | None = None) -> np.ndarray:
    """Training codes of one labels image: 0 unlabelled, 1 known background, ``id + 1`` for object ``id``.

    In ``"sparse"`` mode 0 stays unlabelled; in ``"dense"`` mode 0 is known
    background; in ``"reviewed"`` mode ``background_id`` is known background
    and 0 unlabelled. Pixels equal to ``ignore_id`` (None: no such id) are
    unlabelled in every mode: partly annotated images mark what nobody
    labelled with an id no object uses.
    """
    labels = np.asarray(labels).astype(np.int64)
    if mode not in LABEL_MODES:
        raise InputError(f"unknown label mode {mode!r}; choose one of {', '.join(LABEL_MODES)}")
    codes = np.where(labels > 0, labels + 1, UNLABELLED)
    if mode == "dense":
        codes[labels == 0] = BACKGROUND
    elif mode == "reviewed":
        codes[labels == background_id] = BACKGROUND
    if ignore_id is not None:
        codes[labels == ignore_id] = UNLABELLED
    return codes
