"""The closed loop: train on the reviewed objects, predict again, keep every correction.

Proofreading fixes the patches a person looked at; the rest of the image is
still the old prediction. :func:`retrain_from_review` turns the reviewed
patches into training labels (objects as corrected, known background,
everything else unlabelled), fine-tunes a model of a method that learns from
reviewed objects on them (or trains one from scratch; see
:mod:`probseg.proofreading.learner`), predicts the image again and merges the
new prediction around the corrected objects, which are never changed, then
ranks the patches again by the new uncertainty.

>>> result = retrain_from_review(image, session.labels, session.reviewed_mask(), model,
...                              reviewed_patches=session.reviewed)
>>> session.commit_external(result.labels, kind="replace", params={"source": "retrain"})

Nothing here touches a session: a caller applies ``result.labels`` as one
edit, or, when the job was cancelled (:class:`probseg.core.errors.Cancelled`),
nothing at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from probseg.core.callbacks import Callbacks, ensure
from probseg.core.errors import Cancelled, InputError
from probseg.partition.components import split_and_filter
import probseg.proofreading.learner as learner
from probseg.proofreading.edits import check_rect
from probseg.proofreading.queue import QueueEntry, proofreading_queue

__all__ = ["RetrainResult", "review_labels", "merge_retrained", "covered", "reranked_queue", "retrain_from_review",
           "FINE_TUNE_STEPS"]

#: Training steps when fine-tuning and the caller names none: the model already
#: knows the image, a short run adapts it to the corrections.
FINE_TUNE_STEPS = 1000
_DEFAULT_BACKGROUND_ID = 65535
_MAX_ID = np.iinfo(np.int32).max


@dataclass
class RetrainResult:
    """What :func:`retrain_from_review` returns.

    Attributes
    ----------
    model : SegmentationModel
        The fine-tuned (or newly trained) model; ``model.train_log`` says
        how, with ``fine_tuned_from`` when it started from another model.
    labels : ndarray of int32, shape (Y, X)
        The merged labels (:func:`merge_retrained`): the reviewed objects as
        corrected, the new prediction elsewhere.
    uncertainty : ndarray of float32, shape (Y, X)
        The new prediction's uncertainty, 0..1.
    queue : list of QueueEntry
        The patches ranked by the new uncertainty (:func:`reranked_queue`).
    segmentation : ndarray of int32, shape (Y, X)
        The new prediction before merging.
    kept : tuple of int
        Ids of the objects kept as corrected.
    fine_tuned : bool
        Whether training started from the given model.
    seconds : float
        Wall time of training and prediction.
    """

    model: object
    labels: np.ndarray
    uncertainty: np.ndarray
    queue: list
    segmentation: np.ndarray
    kept: tuple
    fine_tuned: bool
    seconds: float


def _check_pair(labels, mask, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels, mask = np.asarray(labels), np.asarray(mask)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"the {what} must be a 2-D integer label image, got {labels.dtype} of shape {labels.shape}")
    if mask.shape != labels.shape:
        raise InputError(f"the {what} have shape {labels.shape} but the reviewed mask {mask.shape}")
    if labels.size and labels.min() < 0:
        raise InputError(f"the {what} contain negative ids; background is 0 and objects are 1, 2, ...")
    return labels, mask.astype(bool)


def review_labels(session_labels, reviewed_mask, background_id: int = _DEFAULT_BACKGROUND_ID) -> np.ndarray:
    """Training labels of the reviewed pixels, in the ``"reviewed"`` encoding of :mod:`probseg.core.labels`.

    Inside the reviewed mask every object keeps its id and a 0 label
    becomes ``background_id`` (known background); outside it every pixel
    is 0 (unlabelled), also the rest of an object crossing the mask's
    border, which nobody checked there. The same as
    :meth:`probseg.proofreading.session.Session.export_reviewed` joined by
    :func:`probseg.core.labels.reviewed_labels`.

    Parameters
    ----------
    session_labels : ndarray of int, shape (Y, X)
        The corrected labels, 0 background.
    reviewed_mask : ndarray, shape (Y, X)
        Non-zero where the pixels were reviewed
        (:meth:`~probseg.proofreading.session.Session.reviewed_mask`).
    background_id : int
        The id of known background; ``Config.background_id`` of the model
        trained on the result.

    Returns
    -------
    ndarray of int64, shape (Y, X)
        0 unlabelled, ``background_id`` known background, other ids objects.

    Raises
    ------
    InputError
        If the shapes differ, the labels are not integer or negative,
        nothing is reviewed, or a reviewed object uses ``background_id``.
    """
    from probseg.core.labels import reviewed_labels

    labels, mask = _check_pair(session_labels, reviewed_mask, "corrected labels")
    if not mask.any():
        raise InputError("nothing is reviewed yet; accept at least one patch to train on")
    return reviewed_labels(np.where(mask, labels, 0), mask, background_id)


def merge_retrained(current, predicted, reviewed_mask, min_size: int) -> np.ndarray:
    """A new prediction merged around the reviewed objects, which stay exactly as corrected.

    Every object of ``current`` with at least one pixel in the reviewed
    mask is kept whole, with its id and all its pixels (also those outside
    the mask), and so is every other pixel of the mask, background
    included: the user checked them. Everywhere else the objects of
    ``predicted`` replace those of ``current``, clipped where they would
    cover a kept pixel; each 4-connected piece left of one becomes an
    object of its own, pieces of fewer than ``min_size`` pixels are
    dropped, and the rest are numbered ``m + 1, m + 2, ...`` in raster
    order of their first pixel, ``m`` being the largest kept id (0 if
    none).

    Parameters
    ----------
    current : ndarray of int, shape (Y, X)
        The corrected labels, 0 background.
    predicted : ndarray of int, shape (Y, X)
        The new prediction, 0 background.
    reviewed_mask : ndarray, shape (Y, X)
        Non-zero where the pixels were reviewed.
    min_size : int
        Smallest piece of a predicted object kept, in pixels (e.g.
        ``model.min_size(model.settings)``); 0 keeps every piece.

    Returns
    -------
    ndarray of int32, shape (Y, X)

    Raises
    ------
    InputError
        If the shapes differ, labels are not integer or negative,
        ``min_size`` is negative, or the new ids would not fit in int32.
    """
    current, mask = _check_pair(current, reviewed_mask, "corrected labels")
    predicted, _ = _check_pair(predicted, reviewed_mask, "predicted labels")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise InputError(f"min_size must be a whole number >= 0, got {min_size!r}")
    kept_ids = np.unique(current[mask & (current > 0)])
    kept = np.isin(current, kept_ids) & (current > 0)
    fixed = kept | mask
    out = np.where(fixed, current, 0).astype(np.int32)
    pieces = split_and_filter(np.where(fixed, 0, predicted), int(min_size))
    offset = int(kept_ids.max()) if kept_ids.size else 0
    if offset + int(pieces.max(initial=0)) > _MAX_ID:
        raise InputError(f"the corrected labels use ids up to {offset}; the new objects would not fit below 2**31")
    new = pieces > 0
    out[new] = pieces[new] + offset
    return out


def covered(rect, rects) -> bool:
    """Whether ``rect`` ``(y0, x0, y1, x1)`` overlaps one of ``rects`` by more than half its own area.

    A patch so covered by reviewed patches counts as reviewed already.
    """
    y0, x0, y1, x1 = rect
    area = (y1 - y0) * (x1 - x0)
    for ry0, rx0, ry1, rx1 in rects:
        overlap = max(0, min(y1, ry1) - max(y0, ry0)) * max(0, min(x1, rx1) - max(x0, rx0))
        if 2 * overlap > area:
            return True
    return False


def reranked_queue(uncertainty, labels, reviewed_patches=(), patch: int = 64) -> list[QueueEntry]:
    """The proofreading queue of a new uncertainty that still lists the reviewed patches.

    The queue of :func:`~probseg.proofreading.queue.proofreading_queue`,
    less its patches covered more than half by a reviewed patch (already
    checked), plus every reviewed patch not in it, with its rectangle as
    its id, its mean uncertainty as score, its objects and its centre; all
    sorted by descending score, ties by rectangle.

    Parameters
    ----------
    uncertainty : ndarray of float, shape (Y, X)
    labels : ndarray of int, shape (Y, X)
    reviewed_patches : iterable of (y0, x0, y1, x1)
        Rectangles of the reviewed patches; other patch ids, and
        rectangles not inside the image, are ignored.
    patch : int
        Side of a new patch in pixels.

    Returns
    -------
    list of QueueEntry

    Raises
    ------
    InputError
        As :func:`~probseg.proofreading.queue.proofreading_queue`.
    """
    entries = proofreading_queue(uncertainty, labels, patch)
    u, lab = np.asarray(uncertainty, dtype=np.float64), np.asarray(labels)
    rects = set()
    for rect in reviewed_patches:
        try:
            rects.add(check_rect(rect, u.shape))
        except InputError:
            continue  # another kind of patch id, or a patch of another image size: not a place in this queue

    queue = [e for e in entries if e.rect in rects or not covered(e.rect, rects)]
    present = {e.rect for e in queue}
    for rect in rects - present:
        y0, x0, y1, x1 = rect
        ids = np.unique(lab[y0:y1, x0:x1])
        queue.append(QueueEntry(rect=rect, score=float(u[y0:y1, x0:x1].mean()), labels=tuple(ids[ids > 0].tolist()),
                                center=((y0 + y1) // 2, (x0 + x1) // 2)))
    queue.sort(key=lambda e: (-e.score, e.rect))
    return queue


def _free_background_id(labels: np.ndarray) -> int:
    # The reviewed encoding's usual id unless a corrected object already uses it.
    if not (labels == _DEFAULT_BACKGROUND_ID).any():
        return _DEFAULT_BACKGROUND_ID
    return int(labels.max()) + 1


def retrain_from_review(image, labels, reviewed_mask, model=None, *, steps: int | None = None, n_samples: int = 8,
                        seed: int = 0, device: str = "auto", callbacks: Callbacks | None = None, patch: int = 64,
                        reviewed_patches=()) -> RetrainResult:
    """Train on the reviewed objects, predict the image again and merge, keeping every correction.

    The method trained is one that learns from reviewed objects
    (:func:`probseg.proofreading.learner.method_of` ``model``).

    Parameters
    ----------
    image : ndarray, shape (Y, X)
        The image being proofread.
    labels : ndarray of int, shape (Y, X)
        The corrected labels (a session's :attr:`labels`).
    reviewed_mask : ndarray, shape (Y, X)
        Non-zero where the pixels were reviewed.
    model : SegmentationModel, optional
        A model to fine-tune (:func:`probseg.train` with ``init``) if
        :func:`~probseg.proofreading.learner.can_fine_tune` it; None, or a
        model of another method, trains
        :func:`~probseg.proofreading.learner.learning_method` from scratch.
    steps : int, optional
        Training steps; default :data:`FINE_TUNE_STEPS` when fine-tuning,
        else the method's default.
    n_samples : int
        Samples of the new prediction, whose disagreement is the uncertainty.
    seed : int
        Seed of training and prediction.
    device : str
        As :func:`probseg.train`.
    callbacks : Callbacks, optional
        Training progress, then the prediction's; notices; ``should_stop``
        cancels (see Raises).
    patch : int
        Side of a queue patch in pixels.
    reviewed_patches : iterable of (y0, x0, y1, x1)
        Rectangles of the reviewed patches, kept in the new queue.

    Returns
    -------
    RetrainResult

    Raises
    ------
    Cancelled
        When ``callbacks.should_stop`` turned true during training or
        prediction. Nothing is returned, so a caller has nothing to apply;
        the given model is never changed.
    InputError
        If nothing is reviewed, the reviewed pixels hold no object, or an
        input cannot be used.
    """
    from probseg.engine.api import train

    started = time.perf_counter()
    cb = ensure(callbacks)
    labels = np.asarray(labels)
    background_id = _free_background_id(labels)
    train_labels = review_labels(labels, reviewed_mask, background_id)
    mask = np.asarray(reviewed_mask).astype(bool)
    fine_tune = learner.can_fine_tune(model)
    method = learner.method_of(model)
    if model is not None and not fine_tune:
        what = getattr(model, "method", None) or type(model).__name__
        name = learner.title(method)
        cb.message(f"a {what} model cannot be fine-tuned as {name}; training {name} from scratch")
    if steps is None and fine_tune:
        steps = FINE_TUNE_STEPS
    config = {"label_mode": "reviewed", "background_id": background_id}
    trained = train(method, image, train_labels, config, steps=steps, device=device, seed=seed, callbacks=cb,
                    init=model if fine_tune else None)
    log = trained.train_log
    if log.get("cancelled"):
        raise Cancelled(f"retraining cancelled after {log.get('steps_done', 0)} of {log.get('steps_total', 0)} steps; "
                        "nothing was changed")
    cb.message(f"predicting the image again with {n_samples} samples")
    try:
        prediction = trained.predict(image, n_samples=n_samples, seed=seed, callbacks=cb, keep_raw=False)
    except Cancelled:
        raise Cancelled("retraining cancelled while predicting; nothing was changed") from None
    merged = merge_retrained(labels, prediction.segmentation, mask, trained.min_size(trained.settings))
    queue = reranked_queue(prediction.uncertainty, merged, reviewed_patches, patch)
    kept = np.unique(labels[mask & (labels > 0)])
    return RetrainResult(trained, merged, prediction.uncertainty, queue, prediction.segmentation,
                         tuple(int(i) for i in kept), fine_tune, time.perf_counter() - started)
