"""Starting or resuming the session of an image with the inputs it was made from, never with others.

A session remembers its inputs (:func:`session_inputs`: the names of the
image, labels, uncertainty and samples it was made from, checksums of the
labels and the uncertainty, and its patch size). Opened again, it is resumed
only with labels it started from (or its current labels), and any
uncertainty must be one (:func:`check_uncertainty`: float, 0..1, not the
image). :func:`matching_inputs` finds, among what is open, the data a saved
session was made from, :func:`continues_from` checks what is given, and
:func:`open_for_review` opens the session (read-only while another process
edits it) together with its queue.

>>> inputs = session_inputs("cells", "cells segmentation", labels, "cells uncertainty", uncertainty, None, 64)
>>> labels_ok, uncertainty_ok = continues_from(saved_session_info("cells.tif"), inputs)
>>> session, queue, locked = open_for_review("cells.tif", image, labels, uncertainty, inputs)
"""

from __future__ import annotations

import numpy as np

from probseg.core.errors import InputError
from probseg.proofreading.format import image_checksum, labels_checksum
from probseg.proofreading.retrain import reranked_queue
from probseg.proofreading.session import Session, SessionLocked

__all__ = ["check_uncertainty", "uncertainty_checksum", "session_inputs", "matching_inputs", "continues_from",
           "open_for_review"]

#: How far above 1 an uncertainty may go: float32 rounding of a map clipped at 1.
_UNCERTAINTY_SLACK = 1e-5
_WHAT_UNCERTAINTY_IS = ("a probseg uncertainty is float between 0 and 1: the Predict widget's '<image> uncertainty' "
                        "layer, or the file of probseg segment --uncertainty-out")


def check_uncertainty(data, name: str, image=None) -> np.ndarray:
    """An uncertainty layer's data as float32, refusing what cannot be one (an intensity image).

    Parameters
    ----------
    data : array_like
        The layer's data.
    name : str
        The layer's name, for the message.
    image : array_like, optional
        The image being proofread; a layer holding the same data is refused.

    Returns
    -------
    ndarray of float32

    Raises
    ------
    InputError
        If the data are not floating point, not finite, or outside 0..1, or
        are the image itself.
    """
    array = np.asarray(data)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"'{name}' cannot be the uncertainty: it holds {array.dtype} values; {_WHAT_UNCERTAINTY_IS}")
    if array.size and not np.isfinite(array).all():
        raise InputError(f"'{name}' cannot be the uncertainty: it holds NaN or infinite values; {_WHAT_UNCERTAINTY_IS}")
    if array.size:
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1 + _UNCERTAINTY_SLACK:
            raise InputError(f"'{name}' cannot be the uncertainty: its values run from {low:.4g} to {high:.4g}; "
                             f"{_WHAT_UNCERTAINTY_IS}")
    if image is not None and np.shape(image) == array.shape and np.array_equal(np.asarray(image), array):
        raise InputError(f"'{name}' holds the image itself, not its uncertainty; {_WHAT_UNCERTAINTY_IS}")
    return array.astype(np.float32, copy=False)


def uncertainty_checksum(data) -> str | None:
    """The checksum a session records of an uncertainty (as float32); None for data that cannot be one."""
    array = np.asarray(data)
    return image_checksum(array.astype(np.float32, copy=False)) if np.issubdtype(array.dtype, np.floating) else None


def session_inputs(image_name: str, labels_name: str, labels, uncertainty_name: str, uncertainty,
                   samples_name: str | None, patch: int) -> dict:
    """What a session is made from, as it records it (:attr:`~probseg.proofreading.session.Session.inputs`).

    ``labels`` and ``uncertainty`` are the data (the uncertainty as
    :func:`check_uncertainty` gives it), recorded by checksum.
    """
    return {
        "image": {"layer": image_name},
        "labels": {"layer": labels_name, "checksum": labels_checksum(labels)},
        "uncertainty": {"layer": uncertainty_name, "checksum": image_checksum(uncertainty)},
        "samples": {"layer": samples_name} if samples_name else None,
        "patch": int(patch),
    }


def matching_inputs(info: dict, labels: dict, uncertainties: dict, image) -> tuple[str | None, str | None]:
    """The labels and uncertainty, among those open, holding the data a saved session was made from.

    Parameters
    ----------
    info : dict
        :func:`~probseg.proofreading.loading.saved_session_info` of the session.
    labels, uncertainties : dict of str to array_like
        The data of the open label images and uncertainty candidates, by name.
    image : array_like
        The image being proofread.

    Returns
    -------
    (str or None, str or None)
        The names found. Labels match by checksum (the session's initial or
        current labels); an uncertainty by checksum, else the recorded name
        when its data are an uncertainty (Predict again gives a new one
        under the same name). Of two with the same data, the recorded name
        wins.
    """
    inputs = info["inputs"]
    labels_input = inputs.get("labels") or {}
    wanted = {info["initial_labels_checksum"], info["labels_checksum"]}
    found_labels = None
    for name in sorted(labels, key=lambda n: n != labels_input.get("layer")):
        if labels_checksum(labels[name]) in wanted:
            found_labels = name
            break
    unc_input = inputs.get("uncertainty") or {}
    found_uncertainty = None
    names = sorted(uncertainties, key=lambda n: n != unc_input.get("layer"))
    for name in names:
        if unc_input.get("checksum") and uncertainty_checksum(uncertainties[name]) == unc_input["checksum"]:
            found_uncertainty = name
            break
    else:
        name = unc_input.get("layer")
        if name in names:
            try:
                check_uncertainty(uncertainties[name], name, image)
                found_uncertainty = name
            except InputError:
                pass
    return found_labels, found_uncertainty


def continues_from(info: dict | None, inputs: dict) -> tuple[bool, bool]:
    """Whether a saved session continues from the labels, and was made with the uncertainty, of ``inputs``.

    Parameters
    ----------
    info : dict or None
        :func:`~probseg.proofreading.loading.saved_session_info` of the
        image; None when there is no session (or it is to start over).
    inputs : dict
        :func:`session_inputs` of what is given now.

    Returns
    -------
    (bool, bool)
        The labels are the session's initial or current ones; the
        uncertainty is the one it was made with. Both true without a saved
        session, or for a session of older probseg, which kept no inputs.
    """
    if info is None or info["initial_labels_checksum"] is None:
        return True, True
    labels = inputs["labels"]["checksum"] in (info["initial_labels_checksum"], info["labels_checksum"])
    recorded = (info["inputs"].get("uncertainty") or {}).get("checksum")
    return labels, recorded in (None, inputs["uncertainty"]["checksum"])


def open_for_review(image_path, image, labels, uncertainty, inputs: dict, *,
                    start_over: bool = False) -> tuple[Session, list, SessionLocked | None]:
    """Open (or begin) the session of an image for review, with its queue.

    Parameters
    ----------
    image_path : str or Path
        As :meth:`~probseg.proofreading.session.Session.open`.
    image : ndarray, shape (Y, X)
    labels : ndarray of int, shape (Y, X)
        The labels a new session begins with.
    uncertainty : ndarray of float32, shape (Y, X)
        Ranks the queue (as :func:`check_uncertainty` gives it).
    inputs : dict
        :func:`session_inputs` of these; a resumed session records them
        when they changed (a layer renamed, a new patch size).
    start_over : bool
        Set a saved session aside and begin anew from ``labels``.

    Returns
    -------
    session : Session
        Read-only when another process has it open for writing.
    queue : list of QueueEntry
        Patches of ``inputs["patch"]`` pixels ranked by ``uncertainty``;
        the reviewed patches stay listed even where they came from a queue
        since ranked again.
    locked : SessionLocked or None
        Why the session was opened read-only (its ``holder`` says who has
        it open); None when it is open for writing.

    Raises
    ------
    InputError, SessionError
        As :meth:`~probseg.proofreading.session.Session.open`.
    """
    locked = None
    try:
        session = Session.open(image_path, image, initial_labels=labels, start_over=start_over, inputs=inputs)
    except SessionLocked as exc:
        session = Session.open(image_path, image, read_only=True)
        locked = exc
    if not session.read_only and session.inputs != inputs:
        session.set_inputs(inputs)  # e.g. renamed layers, a new patch size, or a session of older probseg
    queue = reranked_queue(uncertainty, session.labels, session.reviewed, patch=inputs["patch"])
    return session, queue, locked
