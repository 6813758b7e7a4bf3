"""The retraining panel of the Proofread widget: "Train from reviewed objects".

The objects of the reviewed patches train a method that learns from reviewed
objects (:mod:`probseg.proofreading.learner`: the newest such model of the
shared model store is fine-tuned, else the method starts from scratch) on a
worker thread; the job is a :class:`probseg.proofreading.retrain_job.RetrainJob`,
so its labels cannot change under it, and its result, with every reviewed
object exactly as corrected, becomes one undoable edit; the queue is ranked
by the new uncertainty. :class:`RetrainPanel` is a part of
:class:`napari_probseg.proofread_widget.ProofreadWidget`.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import SpinBox
from napari.layers import Image
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPushButton

from napari_probseg._engine_widget import JobMonitor, Outcome, format_seconds, run_engine
from napari_probseg._layers import OUTPUT_META_KEY, layer_role
from probseg.core.errors import ProbsegError
from probseg.proofreading import learner
from probseg.proofreading.retrain import FINE_TUNE_STEPS
from probseg.proofreading.retrain_job import RetrainJob

#: Layer role of the uncertainty of the model retrained on the reviewed objects.
RETRAINED_ROLE = "retrained uncertainty"


def _retrain_job(job: RetrainJob, monitor: JobMonitor) -> Outcome:
    return run_engine(lambda: job.run(monitor.callbacks()))


def _n_objects(labels) -> int:
    return int(np.count_nonzero(np.unique(labels)))


class RetrainPanel:
    """The retraining panel, mixed into the Proofread widget."""

    def _build_retrain(self, layout) -> None:
        """Make the panel and add its rows to ``layout`` (the Cancel button beside the Train one)."""
        self._retrain: RetrainJob | None = None
        self._steps_chosen = False  # the user set the steps: keep them when the model store changes
        self._setting_steps = False
        method = learner.title(learner.learning_method())
        self.retrain_button = QPushButton("Train from reviewed objects")
        self.retrain_button.setToolTip(
            f"the objects of the reviewed patches become {method} training labels (0 in a reviewed patch is "
            f"background, everything outside them unlabelled); the newest {method} model is fine-tuned (else "
            f"{method} is trained from scratch), the image predicted again, your edits kept exactly, and the queue "
            "re-ranked by the new uncertainty. One undoable edit; Cancel changes nothing")
        self.retrain_button.clicked.connect(lambda: self.retrain())
        self.retrain_steps = SpinBox(value=FINE_TUNE_STEPS, min=1, max=1_000_000)
        self.retrain_steps.tooltip = (f"training steps: {FINE_TUNE_STEPS} when fine-tuning a {method} model, "
                                      f"{method}'s default ({self._scratch_steps()}) when training from scratch")
        self.retrain_steps.changed.connect(self._steps_edited)
        self.retrain_from = QLabel("")
        self.retrain_from.setWordWrap(True)

        loop = QFormLayout()
        loop.addRow("retrain steps", self.retrain_steps.native)
        loop.addRow("device", self.device)
        layout.addLayout(loop)
        layout.addWidget(self.retrain_from)
        runs = QHBoxLayout()
        runs.addWidget(self.retrain_button)
        runs.addWidget(self.cancel_button)
        layout.addLayout(runs)

    @staticmethod
    def _scratch_steps() -> int:
        return learner.scratch_steps(learner.learning_method())

    def current_learner(self) -> tuple[str | None, object]:
        """``(name, model)`` of the newest model in the store that retraining can fine-tune, or ``(None, None)``.

        See :func:`probseg.proofreading.learner.newest_learner`.
        """
        return learner.newest_learner((name, self.store.get(name)) for name in self.store.names())

    def _steps_edited(self, *_) -> None:
        if not self._setting_steps:
            self._steps_chosen = True

    def _store_changed(self, name: str) -> None:
        try:
            self._show_retrain_model()
        except RuntimeError:
            # The Qt side of this widget is gone (viewer closed); stop listening.
            self.store.changed.disconnect(self._store_changed)

    def _show_retrain_model(self) -> None:
        name, _ = self.current_learner()
        if name is None:
            method = learner.title(learner.learning_method())
            self.retrain_from.setText(f"no {method} model loaded: Train from reviewed objects trains {method} "
                                      "from scratch")
        else:
            self.retrain_from.setText(f"Train from reviewed objects fine-tunes '{name}'")
        if not self._steps_chosen:
            self._setting_steps = True
            try:
                self.retrain_steps.value = FINE_TUNE_STEPS if name is not None else self._scratch_steps()
            finally:
                self._setting_steps = False

    def retrain(self):
        """Train on the reviewed objects in the background; returns the worker, or None on a problem.

        Problems are shown in the status line and as a notification, never
        raised. When the job finishes the new labels are one edit (undo
        reverts them); a cancel or an error changes nothing.
        """
        if self.running:
            self._warn("retraining is already running; cancel it first")
            return None
        if self.session is None:
            self._warn("press Start first")
            return None
        name, model = self.current_learner()
        try:
            image = self._layer(self.image_layer, "an image layer")
            device = self.device.check()
            job = RetrainJob.from_session(self.session, image.name, image.data, model, name,
                                          steps=int(self.retrain_steps.value), device=device,
                                          patch=int(self.patch_spin.value))
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        self._retrain = job
        how = f"fine-tuning '{name}'" if name is not None else \
            f"training {learner.title(learner.learning_method())} from scratch"
        self._set_status(f"{how} on the objects of {len(job.reviewed)} reviewed patches, {job.steps} steps…")
        return self.start_job(_retrain_job, job, on_result=self._on_retrained)

    def _on_retrained(self, outcome: Outcome) -> None:
        job, self._retrain = self._retrain, None
        if outcome.error:
            self._fail(f"retraining failed, nothing was changed: {outcome.error}")
            return
        result = outcome.value
        # A Cancel pressed after the last step still means: change nothing.
        if result is None or (self._monitor is not None and self._monitor.stop_requested):
            self._warn("retraining cancelled; nothing was changed")
            return
        if not job.still_current(self.session):
            self._fail("the session or its labels changed while retraining; nothing was applied")
            return
        try:
            params = job.apply(result)
        except ProbsegError as exc:
            self._fail(f"retraining finished but its labels could not be saved, nothing was changed: {exc}")
            return
        self._sync_layer()
        self._show_uncertainty(job.image_name, result.uncertainty)
        model_name = self.store.add(f"{result.model.method} retrained on {job.image_name}", result.model)
        self.queue, self.position = result.queue, -1
        self._fill_queue()
        self._update_buttons()
        how = "fine-tuned" if result.fine_tuned else "trained from scratch"
        self._set_status(
            f"{how} for {params['steps']} steps and predicted again ({format_seconds(result.seconds)} in all): "
            f"{_n_objects(job.labels)} objects before, {_n_objects(result.labels)} after, the {len(result.kept)} "
            f"reviewed ones kept as corrected; {len(self.queue)} patches re-ranked; model '{model_name}' is in "
            "Predict; Undo reverts the labels")

    def _show_uncertainty(self, image_name: str, uncertainty: np.ndarray) -> None:
        """Add or replace the layer of the retrained model's uncertainty, which ranks the queue now.

        Its role is not "uncertainty", so the uncertainty box keeps the
        layer the session was made from, which it resumes with.
        """
        for layer in self.viewer.layers:
            meta = layer.metadata.get(OUTPUT_META_KEY)
            if isinstance(layer, Image) and layer_role(layer) == RETRAINED_ROLE and meta.get("source") == image_name:
                layer.data = uncertainty
                layer.contrast_limits = (0.0, 1.0)
                return
        image = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
        place = dict(scale=image.scale, translate=image.translate) if image is not None else {}
        meta = {OUTPUT_META_KEY: {"role": RETRAINED_ROLE, "source": image_name}}
        self.viewer.add_image(uncertainty, name=f"{image_name} retrained uncertainty", colormap="magma",
                              contrast_limits=(0.0, 1.0), visible=False, metadata=meta, **place)
