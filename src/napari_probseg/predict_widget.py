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
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from magicgui.widgets import ComboBox, SpinBox
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

import probseg
from napari_probseg import _models
from napari_probseg._objects_table import ObjectsTable
from napari_probseg._form import ConfigForm
from napari_probseg._engine_widget import EngineWidget, JobMonitor, Outcome, run_engine
from napari_probseg._layers import OUTPUT_META_KEY, default_image, image_arrays, image_layer_names, layer_run
from probseg.engine import api
from probseg.core import bounds
from probseg.core.device import resolve_device
from probseg.core.errors import Cancelled, InputError, ProbsegError
from probseg.partition.foreground import as_mask, attach_foreground
from probseg.evaluation.visualize import embeddings_to_rgb

ROLES = ("segmentation", "samples", "embeddings", "uncertainty", "probability")
#: Roles of the layers of a method's display maps start with this, then the map's name.
MAP_ROLE = "map:"
NO_FOREGROUND = "(the model's own)"
FOREGROUND_TIP = ("where objects may be: a labels or image layer of the image's shape (e.g. another model's segmentation "
                  "or an ilastik probability map). Foreground is labels above 0, values of 0.5 and above in a map of 0..1, "
                  "other values above 0. Changing it after a run re-computes the result without the network")
SEPARATOR = " · "  # between the image and the model in layer names


def model_key(folder, model_name: str) -> str:
    """What tells two models' layers apart: the model folder, else the name in the store.

    The same folder loaded twice is one model, whatever its store names.
    """
    return str(folder) if folder is not None else model_name


def layer_prefix(image_name: str, folder, model_name: str) -> str:
    """``nuclei · cellulus-2000``: the start of every result layer's name."""
    from pathlib import Path

    return f"{image_name}{SEPARATOR}{Path(folder).name if folder is not None else model_name}"


@dataclass
class PredictJob:
    """Everything an inference run needs, gathered on the GUI thread."""

    model: object
    model_name: str
    folder: object
    image: object
    rgb: bool
    image_name: str
    n_samples: int
    seed: int
    device: str
    tile_size: int
    settings: dict | None = None
    foreground: np.ndarray | None = None  # the mask, checked (bool)
    foreground_name: str | None = None  # the layer it came from


@dataclass
class PredictResult:
    """The engine's prediction plus the embeddings as colours, ready for layers."""

    prediction: object
    embeddings_rgb: np.ndarray | None
    cancelled: bool = False
    model: object = None  # the model that post-processes it (maybe a copy on another device)
    job: object = None  # the PredictJob whose network output this is
    features: dict | None = None  # the object table of the segmentation, for methods that make one
    maps: dict = field(default_factory=dict)  # the method's display maps by name


def _embeddings_rgb(pred) -> np.ndarray | None:
    emb = pred.embeddings
    if emb is None:
        return None
    return np.stack([embeddings_to_rgb(e) for e in emb]) if emb.ndim == 4 else embeddings_to_rgb(emb)


def _predict_job(job: PredictJob, monitor: JobMonitor) -> Outcome:
    return run_engine(_predict, job, monitor)


@dataclass
class RetuneJob:
    """Post-processing of a kept raw output with new settings; the network does not run."""

    model: object
    raw: object
    settings: dict
    source: object  # the PredictJob that made the raw output


def _retune_job(job: RetuneJob, monitor: JobMonitor) -> Outcome:
    def retune() -> PredictResult:
        try:
            pred = job.model.postprocess(job.raw, job.settings, callbacks=monitor.callbacks())
        except Cancelled:
            return PredictResult(None, None, cancelled=True)
        return PredictResult(pred, _embeddings_rgb(pred), model=job.model, job=job.source, features=job.model.features(pred),
                             maps=job.model.shown_maps(pred))

    return run_engine(retune)


@dataclass
class TuneJob:
    """A search of the post-processing settings; the ones in the form are the starting point."""

    predict: PredictJob
    labels: np.ndarray


def _tune_job(job: TuneJob, monitor: JobMonitor) -> Outcome:
    def tune():
        run = job.predict
        model = run.model
        # The settings outside the grid are the form's, and the run options the widget's.
        model.settings = model.make_settings(run.settings)
        model.tile_size = run.tile_size
        return probseg.tune(model, np.asarray(run.image), job.labels, seed=run.seed, rgb=run.rgb, callbacks=monitor.callbacks(),
                            foreground=run.foreground)

    return run_engine(tune)


def _predict(job: PredictJob, monitor: JobMonitor) -> PredictResult:
    try:
        model = job.model
        if resolve_device(job.device) != model.device:
            if job.folder is None:
                raise InputError(f"this model exists only in memory on {model.device}; choose that device")
            # A reload is how a saved model moves between devices; the copy in
            # the store stays where it was for other runs.
            model = api.load_model(job.folder, device=job.device)
        model.tile_size = job.tile_size
        pred = model.predict(
            np.asarray(job.image), n_samples=job.n_samples, seed=job.seed, settings=job.settings, rgb=job.rgb,
            callbacks=monitor.callbacks(), foreground=job.foreground,
        )
        return PredictResult(pred, _embeddings_rgb(pred), model=model, job=job, features=model.features(pred),
                             maps=model.shown_maps(pred))
    except Cancelled:
        return PredictResult(None, None, cancelled=True)


class PredictWidget(EngineWidget):
    """Segment an image layer with a model from the shared store.

    Programmatic use (tests, scripts)::

        w = PredictWidget(viewer)
        w.model_name = "cellulus @ nuclei"
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

    job_name = "prediction"

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, store, parent)
        self.prediction = None
        self._job: PredictJob | None = None  # the run in progress
        self._shown: PredictJob | None = None  # the run whose network output self.prediction holds
        self._model = None  # the model that made self.prediction
        self._retune_pending = False
        # A foreground mask was chosen after the run and is not in the result shown yet.
        self._foreground_pending = False
        self.settings_form: ConfigForm | None = None
        self.tune_result = None
        self._tune_message = ""
        self._tuning: PredictJob | None = None

        self.model_combo = ComboBox(choices=self._model_choices)
        self.model_combo.tooltip = "models trained in the Train widget or loaded from a folder"
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        load = QToolButton()
        load.setText("Load…")
        load.setToolTip("load a saved model folder")
        load.clicked.connect(self._load_clicked)
        self.load_button = load
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo.native, 1)
        model_row.addWidget(load)

        self.image_combo = ComboBox(choices=self._image_choices)
        self.foreground_combo = ComboBox(choices=self._foreground_choices, nullable=True)
        self.foreground_combo.null_string = NO_FOREGROUND
        self.foreground_combo.reset_choices()  # the null entry is named when choices are set
        self.foreground_combo.tooltip = FOREGROUND_TIP
        self.samples_spin = SpinBox(value=8, min=int(bounds.SAMPLES.low), max=int(bounds.SAMPLES.high))
        self.samples_spin.tooltip = "segmentations drawn from the model; their disagreement is the uncertainty"
        self.tile_spin = SpinBox(value=512, min=int(bounds.TILE_SIZE.low), max=int(bounds.TILE_SIZE.high), step=64)
        self.tile_spin.tooltip = "side of the windows the image is processed in; lower it if memory runs out"
        self.seed_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.seed_spin.tooltip = "same seed, same samples"

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        # Post-processing: the form is generated from the model's settings
        # class; edits re-compute the layers from the kept raw output.
        self.settings_box = QVBoxLayout()
        self.settings_note = QLabel("post-processing settings; changing one re-computes the result without the network")
        self.settings_note.setWordWrap(True)
        self._retune_timer = QTimer(self)
        self._retune_timer.setSingleShot(True)
        self._retune_timer.setInterval(150)  # one re-computation per burst of edits
        self._retune_timer.timeout.connect(self.retune)
        self.labels_combo = ComboBox(choices=self._labels_choices, nullable=True)
        self.labels_combo.tooltip = "a labels layer of this image (e.g. corrected objects) to tune the settings on"
        self.tune_button = QPushButton("Tune on labels")
        self.tune_button.setToolTip("try the method's settings against the labels (the network runs once) and keep the best")
        self.tune_button.clicked.connect(self.tune)
        tune_row = QHBoxLayout()
        tune_row.addWidget(self.labels_combo.native, 1)
        tune_row.addWidget(self.tune_button)

        form = QFormLayout()
        form.addRow("model", model_row)
        form.addRow("", self.model_info)
        form.addRow("image", self.image_combo.native)
        # Not "foreground": Cellulus has a post-processing setting of that name.
        form.addRow("foreground mask", self.foreground_combo.native)
        form.addRow("samples", self.samples_spin.native)
        form.addRow("tile size (px)", self.tile_spin.native)
        form.addRow("seed", self.seed_spin.native)
        form.addRow("device", self.device)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.settings_note)
        layout.addLayout(self.settings_box)
        tune_form = QFormLayout()
        tune_form.addRow("labels", tune_row)
        layout.addLayout(tune_form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status_label)
        self.objects_table = ObjectsTable()
        layout.addWidget(self.objects_table, 1)
        layout.addStretch(1)

        self.model_combo.changed.connect(self._model_changed)
        self.image_combo.changed.connect(self._image_changed)
        self.foreground_combo.changed.connect(self._foreground_changed)
        self.store.changed.connect(self._store_changed)
        self._model_changed()
        if (pick := default_image(self.viewer)) is not None:
            self.image_layer = pick

    # -- inputs -----------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """Name of the chosen model in the store, or None."""
        return self.model_combo.value

    @model_name.setter
    def model_name(self, name: str) -> None:
        self.model_combo.value = name

    @property
    def image_layer(self) -> str | None:
        """Name of the image layer to segment."""
        return self.image_combo.value

    @image_layer.setter
    def image_layer(self, name: str) -> None:
        self.image_combo.value = name

    @property
    def n_samples(self) -> int:
        return int(self.samples_spin.value)

    @n_samples.setter
    def n_samples(self, n: int) -> None:
        self.samples_spin.value = int(n)

    @property
    def tile_size(self) -> int:
        return int(self.tile_spin.value)

    @tile_size.setter
    def tile_size(self, px: int) -> None:
        self.tile_spin.value = int(px)

    @property
    def seed(self) -> int:
        return int(self.seed_spin.value)

    @seed.setter
    def seed(self, value: int) -> None:
        self.seed_spin.value = int(value)

    @property
    def foreground_layer(self) -> str | None:
        """Name of the layer whose foreground confines the objects, or None for the model's own."""
        return self.foreground_combo.value

    @foreground_layer.setter
    def foreground_layer(self, name: str | None) -> None:
        self.foreground_combo.value = name

    @property
    def labels_layer(self) -> str | None:
        """Name of the labels layer to tune on, or None."""
        return self.labels_combo.value

    @labels_layer.setter
    def labels_layer(self, name: str | None) -> None:
        self.labels_combo.value = name

    @property
    def settings(self) -> dict:
        """The post-processing settings in the form."""
        return self.settings_form.values() if self.settings_form is not None else {}

    def _labels_choices(self, _widget=None) -> list[str]:
        # Only labels of the image's own shape can be compared with its
        # segmentation; our own output layers are not ground truth.
        name = self.image_layer
        if name is None or name not in self.viewer.layers:
            return []
        shape = tuple(self.viewer.layers[name].data.shape[:2] if self.viewer.layers[name].rgb else self.viewer.layers[name].data.shape)
        return [layer.name for layer in self.viewer.layers
                if isinstance(layer, Labels) and OUTPUT_META_KEY not in layer.metadata and tuple(layer.data.shape) == shape]

    def _image_shape(self, name: str) -> tuple:
        layer = self.viewer.layers[name]
        return tuple(layer.data.shape[:-1] if layer.rgb else layer.data.shape)

    def _foreground_choices(self, _widget=None) -> list[str]:
        # Layers of the image's shape (a plane's shape for a stack: it applies
        # to every plane); not the image itself, and not what the chosen model
        # made of this image, which the mask would then change.
        name = self.image_layer
        if name is None or name not in self.viewer.layers:
            return []
        shape = self._image_shape(name)
        fits = (shape, shape[1:]) if len(shape) == 3 else (shape,)
        own = (name, self._chosen_model_key())
        return [layer.name for layer in self.viewer.layers
                if isinstance(layer, (Labels, Image)) and layer.name != name
                and not (isinstance(layer, Image) and (layer.rgb or layer.multiscale))
                and tuple(layer.data.shape) in fits and layer_run(layer) != own]

    def _chosen_model_key(self) -> str | None:
        name = self.model_name
        if name is None or name not in self.store:
            return None
        entry = self.store.entry(name)
        return model_key(entry.folder, entry.name)

    def _foreground_mask(self, shape: tuple) -> np.ndarray | None:
        """The chosen foreground layer as a mask checked against ``shape``, or None for the model's own."""
        name = self.foreground_layer
        if name is None:
            return None
        if name not in self.viewer.layers:
            raise InputError(f"foreground mask layer {name!r} no longer exists")
        try:
            return as_mask(np.asarray(self.viewer.layers[name].data), shape)
        except InputError as exc:
            raise InputError(f"foreground mask layer {name!r}: {exc}") from None

    def _model_choices(self, _widget=None) -> list[str]:
        return self.store.names()

    def _image_choices(self, _widget=None) -> list[str]:
        return image_layer_names(self.viewer)

    def reset_choices(self, *_) -> None:
        """Refresh the image list, keeping the selection where possible."""
        had_image = self.image_layer is not None
        self.image_combo.reset_choices()
        self.labels_combo.reset_choices()
        self.foreground_combo.reset_choices()
        if not had_image and (pick := default_image(self.viewer)) is not None:
            self.image_layer = pick

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

    def _image_changed(self, *_) -> None:
        self.foreground_combo.reset_choices()
        self.labels_combo.reset_choices()

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
        from probseg.core.config import config_to_dict

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

    def _load_clicked(self) -> None:
        self.load_model()

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
        if self.running:
            self._warn("a prediction is already running; cancel it first")
            return None
        try:
            job = self._gather()
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        self._foreground_pending = False  # the run takes the mask chosen now
        self._job = job
        self._set_status(f"segmenting {job.image_name} with {job.n_samples} sample(s)…")
        return self.start_job(_predict_job, job, on_result=self._on_predicted)

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
        from probseg.core.config import config_to_dict

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
        return self.start_job(_retune_job, RetuneJob(self._model, raw, config_to_dict(settings), source),
                              on_result=self._on_predicted)

    def tune(self):
        """Search the post-processing settings against the chosen labels layer; returns the worker or None."""
        if self.running:
            self._warn("a job is running; wait for it or cancel it first")
            return None
        try:
            job = self._gather()
            labels_name = self.labels_layer
            if labels_name is None or labels_name not in self.viewer.layers:
                raise InputError("choose a labels layer of this image to tune on (same shape as the image)")
            labels = np.asarray(self.viewer.layers[labels_name].data)
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        self._tuning = job
        self._set_status(f"tuning the post-processing on {labels_name}…")
        return self.start_job(_tune_job, TuneJob(job, labels), on_result=self._on_tuned)

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
        self._show_layers(self.viewer.layers[job.image_name], result)
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
        ours = self._run_layers(name, key)
        fixed = {role: ours[role] for role in ROLES if role in ours}
        return {**fixed, **{role: layer for role, layer in ours.items() if role.startswith(MAP_ROLE)}}

    def _run_layers(self, source: str, key: str | None) -> dict:
        """Our layers made from image ``source`` by the model ``key``, by role (display maps' roles start with MAP_ROLE)."""
        found = {}
        for layer in self.viewer.layers:
            meta = layer.metadata.get(OUTPUT_META_KEY)
            if isinstance(meta, dict) and meta.get("source") == source and meta.get("model_key") == key:
                found.setdefault(meta.get("role"), layer)
        return found

    def _find_layer(self, source: str, key: str | None, role: str):
        """Our layer of ``role`` made from image ``source`` by the model ``key`` (see :func:`model_key`)."""
        return self._run_layers(source, key).get(role)

    def _show_layers(self, image, result: PredictResult) -> None:
        pred = result.prediction
        # RGB layers leave the colour axis out of scale, so this fits every output.
        scale, translate = tuple(image.scale), tuple(image.translate)
        shown = self._shown
        key = model_key(shown.folder, shown.model_name)
        prefix = layer_prefix(image.name, shown.folder, shown.model_name)
        extra = {"model": shown.model_name, "model_key": key, "label": prefix, "n_samples": int(pred.samples.shape[0])}
        # Added bottom to top: the segmentation ends up above the hidden extras.
        specs = {MAP_ROLE + name: (Image, data, dict(colormap="gray", visible=False)) for name, data in result.maps.items()}
        specs |= {
            "embeddings": (Image, result.embeddings_rgb, dict(rgb=True, visible=False)),
            "probability": (Image, pred.probability, dict(colormap="viridis", contrast_limits=(0.0, 1.0), visible=False)),
            "uncertainty": (Image, pred.uncertainty, dict(colormap="magma", contrast_limits=(0.0, 1.0), visible=False)),
            "samples": (Labels, pred.samples, dict(visible=False, opacity=0.6)),
            "segmentation": (Labels, pred.segmentation, dict(opacity=0.6)),
        }
        if result.embeddings_rgb is None:
            del specs["embeddings"]
        for role, (kind, data, style) in specs.items():
            lead = data.ndim - len(scale) - (1 if role == "embeddings" else 0)
            layer_scale = (1.0,) * lead + scale
            layer_translate = (0.0,) * lead + translate
            meta = {"role": role, "source": image.name, **extra}
            layer = self._find_layer(image.name, key, role)
            if layer is not None and isinstance(layer, kind) and layer.data.ndim == data.ndim:
                layer.data = data
                layer.scale, layer.translate = layer_scale, layer_translate
                layer.metadata[OUTPUT_META_KEY] = meta
                if role == "embeddings":
                    layer.metadata["embeddings"] = pred.embeddings
                if role in ("uncertainty", "probability"):
                    layer.contrast_limits = (0.0, 1.0)
                continue
            if layer is not None:
                # Ours (marked in metadata) but of another dimensionality:
                # replacing it is the only way to show the new result.
                self.viewer.layers.remove(layer)
            metadata = {OUTPUT_META_KEY: meta}
            if role == "embeddings":
                metadata["embeddings"] = pred.embeddings
            add = self.viewer.add_labels if kind is Labels else self.viewer.add_image
            title = role[len(MAP_ROLE):] if role.startswith(MAP_ROLE) else role
            add(data, name=f"{prefix} {title}", scale=layer_scale, translate=layer_translate, metadata=metadata, **style)
        for role, layer in self._run_layers(image.name, key).items():
            if role.startswith(MAP_ROLE) and role not in specs:
                self.viewer.layers.remove(layer)  # a map the method no longer offers would show an old result
