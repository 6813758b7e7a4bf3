"""The Train widget: pick images and settings, train a model, watch the loss.

The machinery all widgets share (running a job, progress, cancel, model
loading) is in :mod:`napari_probseg._engine_widget`; the layer helpers are in
:mod:`napari_probseg._layers`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from magicgui.widgets import ComboBox, Select, SpinBox
from napari.layers import Labels
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_probseg import _models
from napari_probseg._engine_widget import (
    EngineWidget,
    JobMonitor,
    Outcome,
    Snapshot,
    format_loss,
    format_seconds,
    run_engine,
)
from napari_probseg._form import ConfigForm
from napari_probseg._layers import default_image, image_arrays, image_layer_names
from napari_probseg._loss_plot import LossPlot
from probseg import methods
from probseg.engine import api
from probseg.io.checkpoint import CONFIG_NAME
from probseg.core.errors import InputError

_NO_LABELS = "(none)"


@dataclass
class TrainJob:
    """Everything a training run needs, gathered and checked on the GUI thread."""

    training: api.TrainingJob
    images: list
    labels: list | None
    out: Path
    created_out: bool

    @property
    def method(self) -> str:
        return self.training.info.name

    @property
    def config(self):
        return self.training.config


def _train_job(job: TrainJob, monitor: JobMonitor) -> Outcome:
    return run_engine(lambda: job.training.run(job.images, job.labels, monitor.callbacks(), job.out))


class TrainWidget(EngineWidget):
    """Train a segmentation model on image layers.

    Programmatic use (tests, scripts)::

        w = TrainWidget(viewer)
        w.method = methods.available()[0]
        w.image_layers = ["nuclei"]
        w.form.set_values({"object_size": 24, "steps": 500})
        w.output_folder = "models/nuclei"
        w.start()          # returns the worker; w.running until it is done
        w.cancel()         # stops within one step, keeps the model so far
        w.model, w.model_name

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    store : ModelStore, optional
        Where finished models go; the session-wide store by default.
    """

    job_name = "training"

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, store, parent)
        self.model = None
        self.model_name: str | None = None
        self.form: ConfigForm | None = None
        self._job: TrainJob | None = None

        self.method_combo = ComboBox(choices=[(methods.get(n).title, n) for n in methods.available()])
        self.images_select = Select(choices=self._image_choices)
        self.images_select.tooltip = "one or several image layers to learn from (Ctrl-click to pick several)"
        self.images_select.native.setMaximumHeight(80)
        self.labels_combo = ComboBox(choices=self._labels_choices)
        self.labels_combo.tooltip = "labels layers of the image's shape (0 = background, one id per object)"
        self.labels_note = QLabel()
        self.labels_note.setWordWrap(True)
        self.seed_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.seed_spin.tooltip = "same seed, same device and settings: the same model"
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText(f"new folder in {_models.MODELS_HOME}")
        self.out_edit.setToolTip(
            "folder the model is saved to; leave empty for a new time-stamped folder. "
            "A folder that already holds a model is never overwritten."
        )
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("choose the output folder")
        browse.clicked.connect(self._browse_output)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit)
        out_row.addWidget(browse)

        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.start)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.loss_plot = LossPlot()
        # Apart from the status line, which the job's notices overwrite, so
        # where the model goes stays in view during and after training.
        self.folder_label = QLabel("")
        self.folder_label.setWordWrap(True)
        self.folder_label.setTextInteractionFlags(self.status_label.textInteractionFlags())
        self.load_button = QPushButton("Load model…")
        self.load_button.setToolTip("add a saved model folder to the models Predict can use")
        self.load_button.clicked.connect(lambda: self.load_model())

        top = QFormLayout()
        top.addRow("method", self.method_combo.native)
        top.addRow("images", self.images_select.native)
        top.addRow("labels", self.labels_combo.native)
        top.addRow("", self.labels_note)
        self._form_box = QVBoxLayout()
        bottom = QFormLayout()
        bottom.addRow("device", self.device)
        bottom.addRow("seed", self.seed_spin.native)
        bottom.addRow("save to", out_row)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(self._form_box)
        layout.addLayout(bottom)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.folder_label)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.load_button)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.method_combo.changed.connect(self._method_changed)
        self.images_select.changed.connect(self._images_changed)
        self._method_changed()
        self._select_default_image()

    # -- inputs -----------------------------------------------------------------------
    @property
    def method(self) -> str:
        """Name of the chosen method (one of ``probseg.methods.available()``); setting it rebuilds the form."""
        return self.method_combo.value

    @method.setter
    def method(self, name: str) -> None:
        self.method_combo.value = methods.get(name).name

    @property
    def image_layers(self) -> list[str]:
        """Names of the image layers to train on."""
        return list(self.images_select.value)

    @image_layers.setter
    def image_layers(self, names) -> None:
        self.images_select.value = [names] if isinstance(names, str) else list(names)

    @property
    def labels_layer(self) -> str | None:
        """Name of the labels layer, or None."""
        value = self.labels_combo.value
        return None if value in (None, _NO_LABELS) else value

    @labels_layer.setter
    def labels_layer(self, name: str | None) -> None:
        self.labels_combo.value = _NO_LABELS if name is None else name

    @property
    def seed(self) -> int:
        return int(self.seed_spin.value)

    @seed.setter
    def seed(self, value: int) -> None:
        self.seed_spin.value = int(value)

    @property
    def output_folder(self) -> str:
        """The folder typed by the user ('' means a new one under ~/probseg-models)."""
        return self.out_edit.text().strip()

    @output_folder.setter
    def output_folder(self, folder) -> None:
        self.out_edit.setText("" if folder is None else str(folder))

    def _image_choices(self, _widget=None) -> list[str]:
        return image_layer_names(self.viewer)

    def _labels_choices(self, _widget=None) -> list[str]:
        # Labels must cover the image pixel for pixel: a (n, Y, X) samples
        # layer or the labels of another image cannot be trained on.
        shapes = set()
        for name in self.image_layers:
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                data, rgb = image_arrays(layer)
                shapes.add(tuple(data.shape[:-1] if rgb else data.shape))
        return [_NO_LABELS] + [
            layer.name for layer in self.viewer.layers
            if isinstance(layer, Labels) and len(shapes) == 1 and tuple(layer.data.shape) in shapes
        ]

    def _images_changed(self, *_) -> None:
        self.labels_combo.reset_choices()

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists, keeping the selection where possible."""
        had_images = bool(self.image_layers)
        self.images_select.reset_choices()
        self.labels_combo.reset_choices()
        if not had_images:
            self._select_default_image()

    def _select_default_image(self) -> None:
        pick = default_image(self.viewer)
        if pick is not None:
            self.images_select.value = [pick]

    def _method_changed(self, *_) -> None:
        info = methods.get(self.method)
        self.method_combo.tooltip = f"{info.summary}\n{info.reference}"
        if self.form is not None:
            self._form_box.removeWidget(self.form)
            self.form.deleteLater()
        self.form = ConfigForm(info.config_class)
        self._form_box.addWidget(self.form)
        # Some titles are plural nouns ("... embeddings"), so the method is not the subject.
        notes = {
            "none": f"{info.title}: self-supervised, labels are not used.",
            "optional": f"{info.title}: labels are optional{'; ' + info.labels_use if info.labels_use else ''}.",
            "required": f"{info.title}: trained on labels; choose a labels layer of the image.",
        }
        self.labels_note.setText(notes[info.labels])
        self.labels_combo.enabled = info.labels != "none"

    def _browse_output(self) -> None:
        start = self.output_folder or str(_models.MODELS_HOME.expanduser())
        folder = QFileDialog.getExistingDirectory(self, "Folder to save the model in", start)
        if folder:
            self.output_folder = folder

    # -- running ----------------------------------------------------------------------
    def start(self):
        """Check the inputs and start training; returns the worker, or None if an input is wrong.

        Problems are shown in the status line and as a notification, never raised.
        """
        job = self.checked("training is already running; cancel it first", self._gather)
        if job is None:
            return None
        self._job = job
        self.loss_plot.reset(job.config.steps)
        self._set_status(f"training {job.training.info.title}; the model is saved in {job.out}")
        self.folder_label.setText(f"model folder: {job.out}")
        return self.start_job(_train_job, job, on_result=self._on_trained)

    def _gather(self) -> TrainJob:
        names = self.image_layers
        if not names:
            raise InputError("no image layer chosen: open an image (e.g. File > Open Sample > probseg) and select it")
        arrays, rgb_flags = [], []
        for name in names:
            if name not in self.viewer.layers:
                raise InputError(f"layer {name!r} no longer exists")
            data, rgb = image_arrays(self.viewer.layers[name])
            arrays.append(data)
            rgb_flags.append(rgb)
        if len(set(rgb_flags)) > 1:
            raise InputError("mix of RGB and grayscale images: train on images with the same channels")
        rgb = rgb_flags[0]
        if rgb:
            self._warn("RGB image: its three colour channels are used as the model's input channels")

        info = methods.get(self.method)
        labels = None
        if info.labels != "none" and self.labels_layer is not None:
            if len(arrays) != 1:
                raise InputError("with a labels layer, train on exactly one image layer")
            labels = [self.viewer.layers[self.labels_layer].data]
        if info.labels == "required" and labels is None:
            raise InputError(f"{info.title}: trained on labels; choose a labels layer of the image's shape")

        training = api.prepare_training(info, self.form.values(), device=self.device.check(), seed=self.seed, rgb=rgb,
                                        labelled=labels is not None)
        out, created = self._output_folder(info.name)
        return TrainJob(training, arrays, labels, out, created)

    def _output_folder(self, method: str) -> tuple[Path, bool]:
        if self.output_folder:
            folder = Path(self.output_folder).expanduser()
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{folder} is a file; choose a folder to save the model in")
            if (folder / CONFIG_NAME).exists():
                raise InputError(f"{folder} already holds a model; choose another folder (models are never overwritten)")
        else:
            base = _models.MODELS_HOME.expanduser() / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
            folder, n = base, 2
            while folder.exists():
                folder = base.with_name(f"{base.name}-{n}")
                n += 1
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the model folder {folder}: {exc.strerror or exc}") from None
        return folder, created

    def _show_progress(self, snap: Snapshot) -> None:
        super()._show_progress(snap)
        if snap.loss is not None and snap.total > 0:
            self.progress_label.setText(
                f"step {snap.step}/{snap.total} · loss {format_loss(snap.loss)} · "
                f"{format_seconds(snap.elapsed)} elapsed · ETA {format_seconds(snap.eta)}"
            )
        self.loss_plot.extend(snap.new_losses)

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self.start_button.setEnabled(not running)
        self.method_combo.enabled = not running
        if self.form is not None:
            self.form.setEnabled(not running)
        if not running:
            self.loss_plot.flush()

    def _on_error(self, exc: BaseException) -> None:
        super()._on_error(exc)
        if self._job is not None and self._job.created_out:
            self._forget_folder(self._job.out)

    def _forget_folder(self, folder: Path) -> None:
        if _remove_if_empty(folder):
            self.folder_label.setText(f"nothing was saved; the empty folder {folder} was removed")

    def _on_trained(self, outcome: Outcome) -> None:
        job = self._job
        if outcome.error:
            self._fail(outcome.error)
            if job is not None and job.created_out:
                self._forget_folder(job.out)
            return
        model = outcome.value
        self.model = model
        self.model_name = self.store.add(_models.default_model_name(job.method, job.out), model, job.out)
        log = model.train_log
        done, total = log.get("steps_done", 0), log.get("steps_total", 0)
        if log.get("cancelled"):
            self._set_status(
                f"cancelled after {done} of {total} steps; the model so far is kept as "
                f"'{self.model_name}' in {job.out}",
                "warning",
            )
        else:
            self._set_status(
                f"trained {done} steps in {format_seconds(log.get('seconds'))}; saved as '{self.model_name}' in {job.out}"
            )


def _remove_if_empty(folder: Path) -> bool:
    # Only a folder this widget created and nothing was written to: rmdir
    # refuses anything non-empty, so no user file can be lost.
    try:
        folder.rmdir()
    except OSError:
        return False
    return True
