"""The Predict widget: segment an image layer with a trained model and show the samples.

Results go to layers named after the image and the model,
"<image> · <model> segmentation", "... samples", "... embeddings" (for
methods that have them), "... uncertainty", "... probability", where
<model> is the model's folder name (its name in the store when it has no
folder). Running the same model on the same image again updates its layers
in place, so the layer list does not fill up and any display settings the
user chose on them stay; another model gets layers of its own, so two models
can be compared side by side.

The widget keeps the network's raw output of the last run: editing a
post-processing setting re-computes every layer from it without running the
network again, and "Tune on labels" searches the settings against a labels
layer of the image (:func:`probseg.tune`).

A "foreground mask" layer (labels or an image of the image's shape, e.g.
another model's segmentation or an ilastik probability map; see
:func:`probseg.partition.foreground.as_mask`) confines the objects to it. Choosing
another one after a run re-computes the result from the kept raw output
too. Maps a method offers for display (:meth:`~probseg.engine.model.SegmentationModel.display_maps`)
become hidden image layers "<image> · <model> <map name>".

The controls are laid out in :mod:`._predict_panel`, the jobs (each a call
into probseg) are in :mod:`._predict_jobs`, and the result layers are made
and found in :mod:`._predict_layers`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_probseg import _models
from napari_probseg._engine_widget import Outcome
from napari_probseg._form import ConfigForm
from napari_probseg._layers import default_image, image_arrays
from napari_probseg._predict_jobs import PredictJob, PredictResult, RetuneJob, TuneJob, predict_job, retune_job, tune_job
from napari_probseg._predict_layers import MAP_ROLE, ROLES, model_key, run_layers, show_layers
from napari_probseg._predict_panel import NO_FOREGROUND, PredictPanel
from probseg.core.config import config_to_dict
from probseg.core.errors import InputError, ProbsegError
from probseg.partition.foreground import attach_foreground

__all__ = ["PredictWidget", "NO_FOREGROUND"]


class PredictWidget(PredictPanel):
    """Segment an image layer with a model from the shared store.

    Programmatic use (tests, scripts)::

        w = PredictWidget(viewer)
        w.model_name = "<method> @ <model folder>"   # a name in the store
        w.image_layer = "nuclei"
        w.n_samples = 8
        w.run()            # returns the worker; w.running until it is done
        w.output_layers    # {"segmentation": Labels, "samples": Labels, ...} of the run shown
        w.prediction       # the engine's Prediction
        w.settings_form.set_values({"min_size": 40})   # re-computes the layers from the kept raw output
        w.labels_layer = "nuclei truth"; w.tune()       # search the settings against labels
        w.foreground_layer = "cells"    # segment inside that layer's foreground; after a run, re-computes without the network

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    store : ModelStore, optional
        Where the models come from; the session-wide store by default.
    """

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, store, parent)
        self.prediction = None
        self._job: PredictJob | None = None  # the run in progress
        self._shown: PredictJob | None = None  # the run whose network output self.prediction holds
        self._model = None  # the model that made self.prediction
        self._retune_pending = False
        # A foreground mask was chosen after the run and is not in the result shown yet.
        self._foreground_pending = False
        self.tune_result = None
        self._tune_message = ""
        self._tuning: PredictJob | None = None
        self._retune_timer = QTimer(self)
        self._retune_timer.setSingleShot(True)
        self._retune_timer.setInterval(150)  # one re-computation per burst of edits
        self._retune_timer.timeout.connect(self.retune)

        self.run_button.clicked.connect(self.run)
        self.tune_button.clicked.connect(self.tune)
        self.model_combo.changed.connect(self._model_changed)
        self.foreground_combo.changed.connect(self._foreground_changed)
        self.store.changed.connect(self._store_changed)
        self._model_changed()
        if (pick := default_image(self.viewer)) is not None:
            self.image_layer = pick

    # -- the model and its settings ---------------------------------------------------
    def _store_changed(self, name: str) -> None:
        try:
            self.model_combo.reset_choices()
        except RuntimeError:
            # The Qt side of this widget is gone (viewer closed); stop listening.
            self.store.changed.disconnect(self._store_changed)
            return
        if name in self.store:
            self.model_combo.value = name  # a new model is most likely the one wanted next
        self._model_changed()

    def _model_changed(self, *_) -> None:
        self.foreground_combo.reset_choices()
        name = self.model_name
        if name is None or name not in self.store:
            self.model_info.setText("no model yet: train one in the Train widget or load a model folder")
            return
        entry = self.store.entry(name)
        self.model_info.setText(entry.describe())
        self.tile_size = entry.model.tile_size
        self._show_settings(entry.model)

    def _show_settings(self, model) -> None:
        """A form for ``model``'s post-processing settings, holding its current (maybe tuned) values."""
        if self.settings_form is None or self.settings_form.config_class is not model.settings_class:
            if self.settings_form is not None:
                self.settings_box.removeWidget(self.settings_form)
                self.settings_form.deleteLater()
            self.settings_form = ConfigForm(model.settings_class, self)
            self.settings_form.changed.connect(self._settings_edited)
            self.settings_box.addWidget(self.settings_form)
        self.settings_form.blockSignals(True)
        try:
            self.settings_form.set_values(config_to_dict(model.settings))
        finally:
            self.settings_form.blockSignals(False)

    def _settings_edited(self) -> None:
        # Only the model that made the shown result can re-compute it.
        if self.prediction is not None and self._shown is not None and self.model_name == self._shown.model_name:
            self._retune_timer.start()

    def _foreground_changed(self, *_) -> None:
        """Re-compute the shown result with the chosen mask, from the kept raw output (no network)."""
        shown = self._shown
        if self.prediction is None or shown is None or self._model is None:
            return  # the next Run uses it
        if self.foreground_layer == shown.foreground_name and not self._foreground_pending:
            return  # the list was refreshed, the choice stayed
        if self.model_name != shown.model_name or self.image_layer != shown.image_name:
            return  # the result shown is of another model or image; the next Run uses it
        try:
            self._foreground_mask(self.prediction.raw.shape)  # said now, not after a debounce
        except ProbsegError as exc:
            self._fail(str(exc))
            return
        self._foreground_pending = True
        self.retune()

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self.run_button.setEnabled(not running)
        self.tune_button.setEnabled(not running)

    def _on_finished(self) -> None:
        super()._on_finished()
        if self._retune_pending:
            self._retune_pending = False
            self.retune()

    # -- running ----------------------------------------------------------------------
    def run(self):
        """Check the inputs and start inference; returns the worker, or None if an input is wrong.

        Problems are shown in the status line and as a notification, never raised.
        """
        job = self.checked("a prediction is already running; cancel it first", self._gather)
        if job is None:
            return None
        self._foreground_pending = False  # the run takes the mask chosen now
        self._job = job
        self._set_status(f"segmenting {job.image_name} with {job.n_samples} sample(s)…")
        return self.start_job(predict_job, job, on_result=self._on_predicted)

    def _gather(self) -> PredictJob:
        name = self.model_name
        if name is None or name not in self.store:
            raise InputError("no model: train one in the Train widget or load a model folder")
        image_name = self.image_layer
        if image_name is None:
            raise InputError("no image layer: open an image (e.g. File > Open Sample > probseg) and select it")
        if image_name not in self.viewer.layers:
            raise InputError(f"layer {image_name!r} no longer exists")
        data, rgb = image_arrays(self.viewer.layers[image_name])
        entry = self.store.entry(name)
        device = self.device.check()
        mask = self._foreground_mask(self._image_shape(image_name))
        return PredictJob(
            entry.model, name, entry.folder, data, rgb, image_name, self.n_samples, self.seed, device, self.tile_size,
            self.settings, mask, self.foreground_layer if mask is not None else None,
        )

    def retune(self):
        """Re-compute the layers from the last run's raw output with the form's settings (no network).

        Returns the worker, or None when there is nothing to re-compute or
        the settings are invalid (said in the status line).
        """
        if self.prediction is None or self._model is None:
            self._warn("nothing to re-compute yet: press Run first")
            return None
        if self.model_name != self._shown.model_name or self.settings_form.config_class is not self._model.settings_class:
            self._warn(f"the result shown was made by {self._shown.model_name}; press Run to segment with {self.model_name}")
            return None
        if self.running:
            self._retune_pending = True  # the newest settings run once this job is done
            return None
        try:
            settings = self._model.make_settings(self.settings)
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        raw, source = self.prediction.raw, self._shown
        if self._foreground_pending:
            # Attached here rather than when chosen: a run may have replaced the raw output since.
            try:
                raw = attach_foreground(raw, self._foreground_mask(raw.shape))
            except ProbsegError as exc:
                self._foreground_pending = False
                self._fail(str(exc))
                return None
            source = replace(source, foreground=None, foreground_name=self.foreground_layer)
            self._foreground_pending = False
        self._set_status("re-computing from the kept network output…")
        return self.start_job(retune_job, RetuneJob(self._model, raw, config_to_dict(settings), source),
                              on_result=self._on_predicted)

    def tune(self):
        """Search the post-processing settings against the chosen labels layer; returns the worker or None."""
        gathered = self.checked("a job is running; wait for it or cancel it first", self._gather_tuning)
        if gathered is None:
            return None
        job, labels_name, labels = gathered
        self._tuning = job
        self._set_status(f"tuning the post-processing on {labels_name}…")
        return self.start_job(tune_job, TuneJob(job, labels), on_result=self._on_tuned)

    def _gather_tuning(self) -> tuple:
        job = self._gather()
        labels_name = self.labels_layer
        if labels_name is None or labels_name not in self.viewer.layers:
            raise InputError("choose a labels layer of this image to tune on (same shape as the image)")
        return job, labels_name, np.asarray(self.viewer.layers[labels_name].data)

    def _on_tuned(self, outcome: Outcome) -> None:
        if outcome.error:
            self._fail(outcome.error)
            return
        result = outcome.value
        self.tune_result = result
        best = result.best_row
        varied = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in best.items() if k not in ("f1", "ap_dsb"))
        where = f"; stored in {result.saved.parent}" if result.saved else " (the model has no folder: save it to keep them)"
        tuned = self._tuning
        if self.model_name == tuned.model_name:
            self._show_settings(tuned.model)
        self._tune_message = f"best of {len(result.table)} settings: {varied} (F1 {best['f1']:.3f}, AP_dsb {best['ap_dsb']:.3f}){where}"
        self._set_status(self._tune_message)
        shown = self._shown
        if self.prediction is not None and shown.model_name == tuned.model_name and shown.image_name == tuned.image_name:
            self._retune_pending = True  # show the tuned result once this job has finished

    def _on_predicted(self, outcome: Outcome) -> None:
        if outcome.error:
            self._fail(outcome.error)
            return
        result: PredictResult = outcome.value
        if result.cancelled:
            self._set_status("cancelled; the result layers were left as they were", "warning")
            return
        job = result.job
        if job.image_name not in self.viewer.layers:
            self._fail(f"layer {job.image_name!r} was removed while it was being segmented")
            return
        self.prediction = result.prediction
        self._model = result.model
        self._shown = job
        show_layers(self.viewer, self.viewer.layers[job.image_name], result, job)
        segmentation = self.output_layers["segmentation"]
        if result.features is not None:
            segmentation.features = result.features
        self.objects_table.set_table(segmentation, result.features)
        n_objects = int(result.prediction.segmentation.max())
        notice = f" ({result.prediction.notice})" if result.prediction.notice else ""
        if result.features is not None:
            notice += "; each object's features are in the Objects table below and in the segmentation layer's features"
        extras = ", ".join(["samples"] + (["embeddings"] if result.embeddings_rgb is not None else []) + ["uncertainty"]
                           + list(result.maps)) + " and probability"
        tuned, self._tune_message = self._tune_message, ""
        self._set_status(
            (f"{tuned}. " if tuned else "")
            + f"{n_objects} objects in {self.output_layers['segmentation'].name}{notice}; "
            f"{extras} are in hidden layers (eye icons in the layer list); "
            "edit a setting below to re-compute without the network"
        )

    # -- output layers ----------------------------------------------------------------
    @property
    def output_layers(self) -> dict:
        """The layers of the result shown (else of the chosen image and model), by role; missing roles left out."""
        if self._shown is not None:
            name, key = self._shown.image_name, model_key(self._shown.folder, self._shown.model_name)
        else:
            entry = self.store.entry(self.model_name) if self.model_name in self.store else None
            name, key = self.image_layer, (model_key(entry.folder, entry.name) if entry is not None else None)
        ours = run_layers(self.viewer, name, key)
        fixed = {role: ours[role] for role in ROLES if role in ours}
        return {**fixed, **{role: layer for role, layer in ours.items() if role.startswith(MAP_ROLE)}}

