"""The Train widget: pick images and settings, train a model, watch the loss.

Also home of the machinery both widgets share: :class:`JobMonitor` (how an
engine job on a worker thread reports to the GUI), :class:`DeviceChooser` and
:class:`EngineWidget` (status line, progress bar, cancel, model loading).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Select, SpinBox
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_probseg import _models
from napari_probseg._form import ConfigForm
from napari_probseg._loss_plot import LossPlot
from probseg import api, methods
from probseg.callbacks import Callbacks
from probseg.checkpoint import CONFIG_NAME
from probseg.device import DEVICE_CHOICES, describe_device, gpu_warning, resolve_device
from probseg.errors import InputError, ProbsegError

#: Where new model folders go when the user names none.
MODELS_HOME = Path("~/probseg-models")

#: Metadata key marking the layers the Predict widget made (and may replace).
OUTPUT_META_KEY = "probseg"

POLL_MS = 100  # GUI refresh while a job runs: ~10 updates a second, however fast the steps

_NO_LABELS = "(none)"


# -- shared machinery -------------------------------------------------------------------


@dataclass
class Snapshot:
    """What a job reported since the last look."""

    step: int
    total: int
    loss: float | None
    elapsed: float
    new_losses: list = field(default_factory=list)
    messages: list = field(default_factory=list)

    @property
    def eta(self) -> float | None:
        """Seconds left at the average pace so far, ``None`` before the first step."""
        if self.step <= 0 or self.total <= 0:
            return None
        return self.elapsed / self.step * max(0, self.total - self.step)


def format_seconds(seconds: float | None) -> str:
    """``3.24`` -> ``3.2 s``, ``75`` -> ``1:15``, ``3725`` -> ``1:02:05``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JobMonitor:
    """Mailbox between an engine job on a worker thread and a widget on the GUI thread.

    The engine calls the hooks of :meth:`callbacks` from the worker thread;
    they only record under a lock. The widget reads a :class:`Snapshot` on a
    timer, so Qt is touched only from the GUI thread and the GUI is updated
    at the timer's pace however fast the steps come.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._step = 0
        self._total = 0
        self._loss: float | None = None
        self._new_losses: list[float] = []
        self._messages: list[str] = []

    def callbacks(self) -> Callbacks:
        """Hooks to pass to the engine call."""
        return Callbacks(on_progress=self._on_progress, should_stop=self._stop.is_set, on_message=self._on_message)

    def request_stop(self, *_) -> None:
        """Ask the job to stop; the engine polls this before every step."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _on_progress(self, step: int, total: int, loss: float | None) -> None:
        with self._lock:
            self._step, self._total = int(step), int(total)
            if loss is not None:
                self._loss = float(loss)
                self._new_losses.append(float(loss))

    def _on_message(self, text: str) -> None:
        with self._lock:
            self._messages.append(str(text))

    def drain(self) -> Snapshot:
        """The current state plus the losses and messages that arrived since the last call."""
        with self._lock:
            snap = Snapshot(
                self._step, self._total, self._loss, time.monotonic() - self._started,
                self._new_losses, self._messages,
            )
            self._new_losses, self._messages = [], []
        return snap


@dataclass
class Outcome:
    """What a job hands back: a result, or the user-facing message of a ProbsegError.

    Engine errors are returned rather than raised so they reach the user as
    one clear line instead of a traceback; real bugs still raise.
    """

    value: object = None
    error: str | None = None


def image_arrays(layer) -> tuple[object, bool]:
    """The data of an Image layer as the engine reads it, and whether it is RGB.

    Multiscale layers give their full-resolution level. The array is not
    copied here; the worker thread turns it into numpy (which may read from
    disk for lazy data).
    """
    data = layer.data[0] if layer.multiscale else layer.data
    return data, bool(layer.rgb)


def image_layer_names(viewer) -> list[str]:
    """Image layers a model can learn from or segment: not our own result layers."""
    return [
        layer.name for layer in viewer.layers
        if isinstance(layer, Image) and OUTPUT_META_KEY not in layer.metadata
    ]


def layer_role(layer) -> str | None:
    """The role our widgets gave a layer ("samples", "uncertainty", ...), or None for the user's own layers."""
    meta = layer.metadata.get(OUTPUT_META_KEY)
    return meta.get("role") if isinstance(meta, dict) else None


def viewer_camera(viewer):
    """The camera of the 2-D view (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def canvas_size(viewer) -> tuple | None:
    """The canvas size (height, width) in screen pixels, or None where napari does not say (< 0.6)."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    return tuple(size) if size is not None and min(size) > 0 else None


def default_image(viewer) -> str | None:
    """The image layer a user most likely means: the active one, else the newest."""
    names = image_layer_names(viewer)
    active = viewer.layers.selection.active
    if active is not None and active.name in names:
        return active.name
    return names[-1] if names else None


class DeviceChooser(QWidget):
    """Device combo plus a line that always says which device will be used and why."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.combo = ComboBox(choices=list(DEVICE_CHOICES), value="auto")
        self.combo.tooltip = "auto prefers a CUDA GPU, then Apple's MPS, then the CPU"
        self.label = QLabel()
        self.label.setWordWrap(True)
        self._warning = gpu_warning()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo.native)
        layout.addWidget(self.label)
        self.combo.changed.connect(self._update)
        self._update()

    @property
    def value(self) -> str:
        return self.combo.value

    @value.setter
    def value(self, name: str) -> None:
        self.combo.value = name

    def check(self) -> str:
        """The chosen name after checking this machine has it (InputError if not)."""
        resolve_device(self.value)
        return self.value

    def _update(self, *_) -> None:
        try:
            text = f"uses {describe_device(resolve_device(self.value))}"
            style = ""
        except InputError as exc:
            text, style = str(exc), "color: #ff6b6b"
        if self._warning:
            text += f"\n{self._warning}"
            style = style or "color: #f0b64f"
        self.label.setText(text)
        self.label.setStyleSheet(style)


def _load_job(folder: str, device: str) -> Outcome:
    return run_engine(lambda: (api.load_model(folder, device=device), folder))


class EngineWidget(QWidget):
    """Base of both widgets: viewer, model store, device, status line, progress, cancel, Load.

    Subclasses build their own inputs and layout (placing the widgets made
    here), call :meth:`_launch` with an engine job, and may override
    :meth:`_show_progress` and :meth:`_set_running`.
    """

    #: Name of the job for status texts, e.g. "training".
    job_name = "job"

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.store = store if store is not None else _models.store
        self.worker = None
        self.load_worker = None
        self._monitor: JobMonitor | None = None
        self._on_result = None
        self._running = False

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_label = QLabel("")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.device = DeviceChooser()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

        events = self.viewer.layers.events
        for name in ("inserted", "removed", "reordered", "renamed"):
            getattr(events, name).connect(self.reset_choices)

    # -- status -----------------------------------------------------------------------
    @property
    def status(self) -> str:
        """The text of the status line."""
        return self.status_label.text()

    def _set_status(self, text: str, kind: str = "info") -> None:
        colors = {"info": "", "warning": "color: #f0b64f", "error": "color: #ff6b6b"}
        self.status_label.setText(text)
        self.status_label.setStyleSheet(colors[kind])

    def _fail(self, message: str) -> None:
        """Show a one-line error in the status line and as a napari notification."""
        self._set_status(message, "error")
        show_error(message)

    def _warn(self, message: str) -> None:
        self._set_status(message, "warning")
        show_warning(message)

    # -- jobs -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True from start until the worker has finished (result handled)."""
        return self._running

    def reset_choices(self, *_) -> None:
        """Refresh layer lists; napari calls this when layers change."""

    def _launch(self, job, *args, on_result):
        """Run ``job(*args, monitor)`` on a worker thread; ``on_result(Outcome)`` on the GUI thread."""
        self._monitor = monitor = JobMonitor()
        self._on_result = on_result
        worker = thread_worker(job, start_thread=False)(*args, monitor)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        # Closing the widget (or napari) stops the job like Cancel does, so no
        # thread keeps computing for a window that is gone.
        self.destroyed.connect(monitor.request_stop)
        self.worker = worker
        self._running = True
        self.progress_bar.setRange(0, 0)  # busy until the first step is reported
        self.progress_label.setText("starting…")
        self._set_running(True)
        self._timer.start()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop; it ends within one step and keeps what it has."""
        if self._running and self._monitor is not None and not self._monitor.stop_requested:
            self._monitor.request_stop()
            self.cancel_button.setEnabled(False)
            self._set_status(f"cancelling {self.job_name}…")

    def _poll(self) -> None:
        if self._monitor is None:
            return
        snap = self._monitor.drain()
        self._show_progress(snap)
        for message in snap.messages:
            self._set_status(message)
            show_info(message)

    def _show_progress(self, snap: Snapshot) -> None:
        if snap.total > 0:
            self.progress_bar.setRange(0, snap.total)
            self.progress_bar.setValue(min(snap.step, snap.total))
            self.progress_label.setText(
                f"{snap.step}/{snap.total} · {format_seconds(snap.elapsed)} elapsed · ETA {format_seconds(snap.eta)}"
            )

    def _on_returned(self, outcome: Outcome) -> None:
        # Show the job's last notices first, so the result's summary is what
        # stays in the status line.
        self._poll()
        self._on_result(outcome)

    def _on_error(self, exc: BaseException) -> None:
        # Not a ProbsegError (those come back as Outcome.error): napari also
        # logs the traceback, this line tells the user in plain words.
        self._poll()
        self._fail(f"{self.job_name} failed: {_plain_reason(exc)}")

    def _on_load_error(self, exc: BaseException) -> None:
        self._fail(f"loading the model failed: {_plain_reason(exc)}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self._poll()
        self._running = False
        self._monitor = None
        self.cancel_button.setEnabled(False)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)

    # -- loading ----------------------------------------------------------------------
    def load_model(self, folder=None):
        """Load a model folder into the shared store (a folder dialog when ``folder`` is None).

        Returns the worker doing the loading, or ``None`` if nothing was chosen.
        Problems with the folder (missing files, corrupt weights) are shown in
        the status line.
        """
        if folder is None:
            start = MODELS_HOME.expanduser()
            folder = QFileDialog.getExistingDirectory(
                self, "Load a probseg model folder", str(start if start.is_dir() else Path.home())
            )
            if not folder:
                return None
        folder = str(Path(folder).expanduser())
        self._set_status(f"loading {folder}…")
        worker = thread_worker(_load_job, start_thread=False)(folder, self.device.value)
        worker.returned.connect(self._on_loaded)
        worker.errored.connect(self._on_load_error)
        self.load_worker = worker
        worker.start()
        return worker

    def _on_loaded(self, outcome: Outcome) -> None:
        if outcome.error:
            self._fail(outcome.error)
            return
        model, folder = outcome.value
        name = self.store.add(_models.default_model_name(model.method, folder), model, folder)
        self._set_status(f"loaded '{name}': {model.describe()}")


_OOM_MESSAGE = "out of memory; try a smaller tile size, crop size or batch size, or the cpu device"


def _is_oom(exc: BaseException) -> bool:
    # torch reports GPU memory exhaustion as a RuntimeError subclass whose
    # message is the only stable marker across versions and backends.
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _plain_reason(exc: BaseException) -> str:
    return _OOM_MESSAGE if _is_oom(exc) else f"{type(exc).__name__}: {exc}"


def run_engine(call, *args, **kwargs) -> Outcome:
    """Call the engine on a worker thread; expected failures become ``Outcome.error``.

    ProbsegErrors carry a message written for the user and running out of
    memory has a known remedy, so both come back as one line. Anything else
    is a bug and raises, so napari shows its traceback.
    """
    try:
        return Outcome(value=call(*args, **kwargs))
    except ProbsegError as exc:
        return Outcome(error=str(exc))
    except (MemoryError, RuntimeError) as exc:
        if _is_oom(exc):
            return Outcome(error=_OOM_MESSAGE)
        raise


# -- the Train widget -------------------------------------------------------------------


@dataclass
class TrainJob:
    """Everything a training run needs, gathered on the GUI thread."""

    method: str
    images: list
    labels: list | None
    config: object
    device: str
    seed: int
    out: Path
    rgb: bool
    created_out: bool


def _train_job(job: TrainJob, monitor: JobMonitor) -> Outcome:
    def train():
        images = [np.asarray(a) for a in job.images]
        labels = None if job.labels is None else [np.asarray(a) for a in job.labels]
        return api.train(
            job.method, images, labels, job.config, device=job.device, seed=job.seed,
            callbacks=monitor.callbacks(), out=job.out, rgb=job.rgb,
        )

    return run_engine(train)


class TrainWidget(EngineWidget):
    """Train a segmentation model on image layers.

    Programmatic use (tests, scripts)::

        w = TrainWidget(viewer)
        w.method = "cellulus"
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
        self.labels_note = QLabel()
        self.labels_note.setWordWrap(True)
        self.seed_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.seed_spin.tooltip = "same seed, same device and settings: the same model"
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText(f"new folder in {MODELS_HOME}")
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
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.load_button)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.method_combo.changed.connect(self._method_changed)
        self._method_changed()
        self._select_default_image()

    # -- inputs -----------------------------------------------------------------------
    @property
    def method(self) -> str:
        """Name of the chosen method, e.g. ``"cellulus"``; setting it rebuilds the form."""
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
        return [_NO_LABELS] + [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]

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
        notes = {
            "none": f"{info.title} is self-supervised: labels are not used.",
            "optional": f"{info.title} can use labels but does not need them.",
            "required": f"{info.title} learns from labels: choose a labels layer.",
        }
        self.labels_note.setText(notes[info.labels])
        self.labels_combo.enabled = info.labels != "none"

    def _browse_output(self) -> None:
        start = self.output_folder or str(MODELS_HOME.expanduser())
        folder = QFileDialog.getExistingDirectory(self, "Folder to save the model in", start)
        if folder:
            self.output_folder = folder

    # -- running ----------------------------------------------------------------------
    def start(self):
        """Check the inputs and start training; returns the worker, or None if an input is wrong.

        Problems are shown in the status line and as a notification, never raised.
        """
        if self.running:
            self._warn("training is already running; cancel it first")
            return None
        try:
            job = self._gather()
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        self._job = job
        self.loss_plot.reset(job.config.steps)
        self._set_status(f"training {methods.get(job.method).title}; the model is saved in {job.out}")
        return self._launch(_train_job, job, on_result=self._on_trained)

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
            raise InputError(f"{info.title} learns from labels: choose a labels layer")

        config = api.make_config(self.method, self.form.values())
        device = self.device.check()
        out, created = self._output_folder(self.method)
        return TrainJob(self.method, arrays, labels, config, device, self.seed, out, rgb, created)

    def _output_folder(self, method: str) -> tuple[Path, bool]:
        if self.output_folder:
            folder = Path(self.output_folder).expanduser()
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{folder} is a file; choose a folder to save the model in")
            if (folder / CONFIG_NAME).exists():
                raise InputError(f"{folder} already holds a model; choose another folder (models are never overwritten)")
        else:
            base = MODELS_HOME.expanduser() / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
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
                f"step {snap.step}/{snap.total} · loss {snap.loss:.4f} · "
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
            _remove_if_empty(self._job.out)

    def _on_trained(self, outcome: Outcome) -> None:
        job = self._job
        if outcome.error:
            self._fail(outcome.error)
            if job is not None and job.created_out:
                _remove_if_empty(job.out)
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


def _remove_if_empty(folder: Path) -> None:
    # Only a folder this widget created and nothing was written to: rmdir
    # refuses anything non-empty, so no user file can be lost.
    try:
        folder.rmdir()
    except OSError:
        pass
