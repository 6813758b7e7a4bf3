"""Retraining as a job: taken from a session at one moment, run elsewhere, applied only if nothing changed meanwhile.

A program that retrains while the user looks on (the Proofread widget runs
it on a worker thread) gathers what :func:`~probseg.proofreading.retrain.retrain_from_review`
needs with :meth:`RetrainJob.from_session`, copies of the labels and the
reviewed mask included, so later edits cannot reach the run. The result is
applied as one edit, and only to the same session with the labels the job
started from; otherwise it would undo the edits made since.

>>> name, model = learner.newest_learner(named_models)
>>> job = RetrainJob.from_session(session, "cells", image, model, name, steps=500, device="cpu", patch=64)
>>> result = job.run(callbacks)          # None when cancelled
>>> if result is not None and job.still_current(session):
...     params = job.apply(result)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probseg.core.errors import Cancelled, InputError
from probseg.proofreading.retrain import RetrainResult, retrain_from_review
from probseg.proofreading.session import Session

__all__ = ["RetrainJob"]


@dataclass
class RetrainJob:
    """What retraining needs, taken from a session at one moment; the labels and mask are copies.

    Attributes
    ----------
    session : Session
        The session the result will be applied to.
    image_name : str
        Names the new model and the layer of its uncertainty.
    image : ndarray, shape (Y, X)
    labels : ndarray of int32, shape (Y, X)
        The session's labels when the job was made.
    checksum : str
        Their checksum, to see that they did not change.
    mask : ndarray of bool, shape (Y, X)
        Where the pixels were reviewed.
    reviewed : tuple
        The reviewed patch ids, kept in the new queue.
    model : SegmentationModel or None
        The model to fine-tune, if it can be.
    model_name : str or None
        Its name, for the edit's log entry.
    steps : int
    device : str
    patch : int
        Side of a queue patch in pixels.
    """

    session: Session
    image_name: str
    image: np.ndarray
    labels: np.ndarray
    checksum: str
    mask: np.ndarray
    reviewed: tuple
    model: object
    model_name: str | None
    steps: int
    device: str
    patch: int

    @classmethod
    def from_session(cls, session: Session, image_name: str, image, model, model_name: str | None, *, steps: int,
                     device: str, patch: int) -> "RetrainJob":
        """A job of the reviewed patches of ``session`` as they are now.

        Raises
        ------
        InputError
            If the session is read-only or nothing is reviewed yet.
        """
        if session.read_only:
            raise InputError("this session is open read-only; retraining would change its labels")
        mask = session.reviewed_mask()
        return cls(session, image_name, np.asarray(image), np.array(session.labels, copy=True),
                   session.labels_checksum, mask, tuple(session.reviewed), model, model_name, int(steps), device,
                   int(patch))

    def run(self, callbacks=None) -> RetrainResult | None:
        """Train, predict and merge (:func:`~probseg.proofreading.retrain.retrain_from_review`); None when cancelled."""
        try:
            return retrain_from_review(self.image, self.labels, self.mask, self.model, steps=self.steps,
                                       device=self.device, callbacks=callbacks, patch=self.patch,
                                       reviewed_patches=self.reviewed)
        except Cancelled:
            return None  # nothing to apply

    def still_current(self, session: Session | None) -> bool:
        """Whether ``session`` is the job's, still open, with the labels the job started from."""
        return session is self.session and not session.closed and session.labels_checksum == self.checksum

    def apply(self, result: RetrainResult) -> dict:
        """Apply the merged labels of ``result`` to the session as one edit; returns its log ``params``.

        Raises
        ------
        ProbsegError
            If the session cannot save the edit (nothing changes).
        """
        log = result.model.train_log
        params = {"source": "retrain", "model": self.model_name, "fine_tuned": result.fine_tuned,
                  "steps": int(log.get("steps_done", 0)), "kept": len(result.kept)}
        self.session.commit_external(result.labels, kind="replace", params=params)
        return params
