"""The Consensus widget: one segmentation from the samples, with a live resolution knob.

The graph is built once per samples layer (in the background). Moving the
resolution slider re-runs Leiden inside the chosen region only, on a worker
thread, newest request first, and writes the result into the consensus
layer; nothing outside the region changes. Auto sweeps the resolution on the
region and plots the agreement with the samples; "Auto (whole image)" sweeps
a subsample of windows spread over the image and applies its pick
everywhere; "Apply to whole image" runs the consensus everywhere at the
slider's resolution, with progress and cancel. "Draw region" adds a Shapes
layer with a transparent fill, so the cells being tuned stay visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from magicgui.widgets import ComboBox, SpinBox
from napari.layers import Labels, Shapes
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt
from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import QCheckBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSlider, QVBoxLayout, QWidget

from napari_probseg._engine_widget import EngineWidget, JobMonitor, Outcome, run_engine
from napari_probseg._layers import OUTPUT_META_KEY, canvas_size, layer_role, viewer_camera
from napari_probseg._sweep_plot import SweepPlot
from probseg.consensus import DEFAULT_OBJECTIVE, OBJECTIVES, Consensus, check_rect, write_region
from probseg.consensus.engine import AUTO_WINDOW, AUTO_WINDOWS, CPM_RANGE
from probseg.consensus.fragments import check_labelings
from probseg.core.errors import Cancelled, InputError, ProbsegError

FIELD_OF_VIEW = "field of view"
SLIDER_STEPS = 400
UNDO_DEPTH = 20  # earlier states of the consensus layer kept for Undo
REGION_LAYER = "consensus region"


@dataclass
class BuildJob:
    samples: np.ndarray
    key: tuple
    device: str
    resolution_fraction: float
    objective: str
    seed: int
    min_size: int


@dataclass
class Built:
    consensus: Consensus
    key: tuple
    labels: np.ndarray
    resolution: float


def _build(job: BuildJob, monitor: JobMonitor) -> Outcome:
    def work():
        cb = monitor.callbacks()
        cb.progress(0, 2)
        samples = check_labelings(job.samples, "the samples layer")
        consensus = Consensus.from_samples(samples, device=job.device)
        cb.progress(1, 2)
        cb.raise_if_stopped()
        resolution = _from_fraction(job.resolution_fraction, consensus.resolution_range(job.objective))
        labels = consensus.labels(resolution, job.objective, job.seed, job.min_size)
        cb.progress(2, 2)
        return Built(consensus, job.key, labels, resolution)

    return _cancellable(work)


def _whole(consensus: Consensus, resolution, objective, seed, min_size, monitor: JobMonitor) -> Outcome:
    def work():
        cb = monitor.callbacks()
        cb.progress(0, 1)
        labels = consensus.labels(resolution, objective, seed, min_size)
        cb.raise_if_stopped()
        cb.progress(1, 1)
        return labels

    return _cancellable(work)


def _sweep(consensus: Consensus, objective, seed, rect, min_size, monitor: JobMonitor) -> Outcome:
    return _cancellable(lambda: consensus.sweep(objective=objective, seed=seed, region=rect, min_size=min_size,
                                                callbacks=monitor.callbacks()))


@dataclass
class WholeAuto:
    """A whole-image Auto: the sweep on the sampled windows and the whole image at its pick."""

    sweep: object
    labels: np.ndarray


def _auto_whole(consensus: Consensus, window, max_windows, objective, seed, min_size, monitor: JobMonitor) -> Outcome:
    def work():
        cb = monitor.callbacks()
        sweep = consensus.sweep_windows(window, max_windows, objective=objective, seed=seed, min_size=min_size, callbacks=cb)
        cb.raise_if_stopped()
        return WholeAuto(sweep, consensus.labels(sweep.best, objective, seed, min_size))

    return _cancellable(work)


def _cancellable(work) -> Outcome:
    try:
        return run_engine(work)
    except Cancelled:
        return Outcome(value=None)


def _region_labels(consensus: Consensus, region, rect, resolution, objective, seed, min_size):
    if region is None or region.rect != rect:
        region = consensus.region(rect)
    return region, consensus.region_labels(region, resolution, objective, seed, min_size)


def _to_fraction(value: float, bounds) -> float:
    lo, hi = bounds
    return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))


def _from_fraction(fraction: float, bounds) -> float:
    lo, hi = bounds
    return float(math.exp(math.log(lo) + fraction * (math.log(hi) - math.log(lo))))


class ConsensusWidget(EngineWidget):
    """Turn a samples layer into one consensus Labels layer.

    Programmatic use (tests, scripts)::

        w = ConsensusWidget(viewer)
        w.samples_layer = "nuclei samples"      # (n, Y, X) labels
        w.region_source = "Shapes"              # or FIELD_OF_VIEW
        w.resolution = 3e-3                     # region updates follow
        w.auto()                                # sweep on the region
        w.auto_whole_image()                    # sweep sampled windows, apply everywhere
        w.apply_to_whole_image()
        w.consensus_layer                       # the Labels layer
    """

    job_name = "consensus"
    #: Window side and number of windows of "Auto (whole image)".
    auto_window = AUTO_WINDOW
    auto_windows = AUTO_WINDOWS

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, None, parent)
        self.consensus: Consensus | None = None
        self._key = None
        self._region = None
        self._pending = None
        self._update_worker = None
        self.region_updates = 0
        self.last_sweep = None
        self._applying = ""
        # Undo: (rect or None for the whole image, the labels there before).
        # A run of slider moves on one region is one step.
        self._history: list[tuple] = []
        self._history_rect = None
        self._fraction = _to_fraction(math.sqrt(CPM_RANGE[0] * CPM_RANGE[1]), CPM_RANGE)
        # The region's rect while the slider holds Auto's pick for it, so
        # Apply can say the whole image gets a region's resolution.
        self._region_pick: tuple | None = None

        self.samples_combo = ComboBox(choices=self._samples_choices)
        self.samples_combo.tooltip = "(n, Y, X) label images, e.g. the samples layer of the Predict widget"
        self.region_combo = ComboBox(choices=self._region_choices)
        self.region_combo.tooltip = "the slider re-segments this rectangle only: the last (or selected) rectangle of a Shapes layer, or what is on screen"
        self.objective_combo = ComboBox(choices=list(OBJECTIVES), value=DEFAULT_OBJECTIVE)
        self.objective_combo.tooltip = (
            "cpm: constant Potts model, a resolution means the same on any region; rb: modularity with resolution"
        )
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setToolTip("resolution on a log scale: right splits objects, left merges them")
        self.resolution_edit = QLineEdit()
        self.resolution_edit.setValidator(QDoubleValidator(1e-300, 1e300, 12))
        self.resolution_edit.setMaximumWidth(90)
        self.resolution_edit.setToolTip("resolution; press Enter to apply")
        self.live_check = QCheckBox("update the region while sliding")
        self.live_check.setChecked(True)
        self.min_size_spin = SpinBox(value=0, min=0, max=10**7)
        self.min_size_spin.tooltip = "objects with fewer pixels become background"
        self.seed_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.seed_spin.tooltip = "same seed, same consensus"
        self.auto_button = QPushButton("Auto")
        self.auto_button.setToolTip("sweep resolutions on the region; pick the one agreeing best with the samples (mean NMI)")
        self.auto_whole_button = QPushButton("Auto (whole image)")
        self.auto_whole_button.setToolTip(
            f"sweep resolutions on up to {self.auto_windows} windows of {self.auto_window} px spread over the image, "
            "then apply the best to the whole image"
        )
        self.apply_button = QPushButton("Apply to whole image")
        self.apply_button.setToolTip("the consensus of the whole image at the slider's resolution")
        self.region_button = QPushButton("Draw region")
        self.region_button.setToolTip("add a Shapes layer for the region (transparent, so the cells stay visible) and draw a rectangle")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("restore the consensus layer as it was before the last region session or whole-image run")
        self.undo_button.setEnabled(False)
        self.plot = SweepPlot()
        self.plot.setVisible(False)
        self.auto_info = QLabel("")
        self.auto_info.setWordWrap(True)

        resolution_row = QHBoxLayout()
        resolution_row.addWidget(self.slider, 1)
        resolution_row.addWidget(self.resolution_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.auto_button)
        buttons.addWidget(self.auto_whole_button)
        buttons.addWidget(self.apply_button)
        buttons2 = QHBoxLayout()
        buttons2.addWidget(self.undo_button)
        buttons2.addWidget(self.cancel_button)
        region_row = QHBoxLayout()
        region_row.addWidget(self.region_combo.native, 1)
        region_row.addWidget(self.region_button)
        form = QFormLayout()
        form.addRow("samples", self.samples_combo.native)
        form.addRow("region", region_row)
        form.addRow("objective", self.objective_combo.native)
        form.addRow("resolution", resolution_row)
        form.addRow("", self.live_check)
        form.addRow("min size (px)", self.min_size_spin.native)
        form.addRow("seed", self.seed_spin.native)
        form.addRow("device", self.device)
        self.graph_info = QLabel("")
        self.graph_info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.graph_info)
        layout.addLayout(buttons)
        layout.addLayout(buttons2)
        layout.addWidget(self.plot)
        layout.addWidget(self.auto_info)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.slider.setValue(round(self._fraction * SLIDER_STEPS))
        self._show_resolution()
        self.slider.valueChanged.connect(self._slider_moved)
        self.resolution_edit.editingFinished.connect(self._edit_finished)
        self.objective_combo.changed.connect(self._objective_changed)
        self.samples_combo.changed.connect(self._samples_changed)
        self.auto_button.clicked.connect(self.auto)
        self.auto_whole_button.clicked.connect(self.auto_whole_image)
        self.apply_button.clicked.connect(self.apply_to_whole_image)
        self.region_button.clicked.connect(self.draw_region)
        self.undo_button.clicked.connect(self.undo)
        self._select_default_region()
        self._select_default_samples()
        if self.samples_layer is not None:
            self.build()

    # -- inputs -----------------------------------------------------------------------
    @property
    def samples_layer(self) -> str | None:
        return self.samples_combo.value

    @samples_layer.setter
    def samples_layer(self, name: str) -> None:
        self.samples_combo.value = name

    @property
    def region_source(self) -> str:
        return self.region_combo.value

    @region_source.setter
    def region_source(self, name: str) -> None:
        self.region_combo.value = name

    @property
    def objective(self) -> str:
        return self.objective_combo.value

    @objective.setter
    def objective(self, name: str) -> None:
        self.objective_combo.value = name

    @property
    def seed(self) -> int:
        return int(self.seed_spin.value)

    @property
    def min_size(self) -> int:
        return int(self.min_size_spin.value)

    def _bounds(self) -> tuple[float, float]:
        if self.consensus is not None:
            return self.consensus.resolution_range(self.objective)
        return CPM_RANGE if self.objective == "cpm" else (CPM_RANGE[0], CPM_RANGE[1] * 1e4)

    @property
    def resolution(self) -> float:
        """The resolution the slider stands for."""
        return _from_fraction(self._fraction, self._bounds())

    @resolution.setter
    def resolution(self, value: float) -> None:
        self._move_slider(value)
        self.request_region_update()

    def _move_slider(self, value: float) -> None:
        """Put the slider (and the text box) at ``value`` without re-segmenting anything."""
        lo, hi = self._bounds()
        value = float(value)
        if not value > 0:
            raise InputError(f"the resolution must be positive, got {value}")
        self._region_pick = None
        self._fraction = min(1.0, max(0.0, _to_fraction(value, (lo, hi))))
        self.slider.blockSignals(True)
        self.slider.setValue(round(self._fraction * SLIDER_STEPS))
        self.slider.blockSignals(False)
        self._show_resolution()

    def _show_resolution(self) -> None:
        self.resolution_edit.setText(f"{self.resolution:.4g}")
        self.plot.mark(self.resolution)

    def _samples_choices(self, _widget=None) -> list[str]:
        # A 3-D segmentation of a stack is (Z, Y, X) too; Predict marks its layers, so those are left out.
        return [
            layer.name for layer in self.viewer.layers
            if isinstance(layer, Labels) and layer.data.ndim == 3
            and layer_role(layer) not in ("segmentation", "consensus")
        ]

    def _region_choices(self, _widget=None) -> list[str]:
        return [FIELD_OF_VIEW] + [layer.name for layer in self.viewer.layers if isinstance(layer, Shapes)]

    def reset_choices(self, *_) -> None:
        had = self.samples_layer
        self.samples_combo.reset_choices()
        self.region_combo.reset_choices()
        self._select_default_region()
        if had is None:
            self._select_default_samples()

    def _select_default_region(self) -> None:
        shapes = [n for n in self.region_combo.choices if n != FIELD_OF_VIEW]
        if self.region_combo.value == FIELD_OF_VIEW and shapes:
            # A rectangle the user drew is the region they mean.
            self.region_combo.value = shapes[-1]

    def _select_default_samples(self) -> None:
        names = self._samples_choices()
        preferred = [n for n in names if layer_role(self.viewer.layers[n]) == "samples"]
        if preferred or names:
            self.samples_layer = (preferred or names)[-1]

    # -- the region -------------------------------------------------------------------
    def current_rect(self) -> tuple[int, int, int, int]:
        """The region in the samples' pixel coordinates ``(y0, x0, y1, x1)``."""
        layer = self._samples()
        shape = layer.data.shape[-2:]
        scale, translate = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
        source = self.region_source
        if source == FIELD_OF_VIEW or source not in self.viewer.layers:
            world = self._field_of_view()
            if world is None:
                return (0, 0) + tuple(shape)
        else:
            shapes = self.viewer.layers[source]
            if len(shapes.data) == 0:
                raise InputError(f"the Shapes layer {source!r} has no rectangle; draw one around the cells to tune")
            picked = sorted(shapes.selected_data) or [len(shapes.data) - 1]
            vertices = np.concatenate([np.asarray(shapes.data[i])[:, -2:] for i in picked])
            vertices = vertices * np.asarray(shapes.scale[-2:]) + np.asarray(shapes.translate[-2:])
            world = (vertices.min(0), vertices.max(0))
        lo = (np.asarray(world[0]) - translate) / scale
        hi = (np.asarray(world[1]) - translate) / scale
        return check_rect((np.floor(lo[0]), np.floor(lo[1]), np.ceil(hi[0]), np.ceil(hi[1])), shape)

    def draw_region(self) -> Shapes:
        """Add a Shapes layer for the region, in rectangle mode, and make it the region source.

        napari's default white fill would hide the cells being tuned, so the
        rectangles are drawn as outlines only.
        """
        scale = translate = None
        try:
            samples = self._samples()
            scale, translate = tuple(samples.scale[-2:]), tuple(samples.translate[-2:])
        except ProbsegError:
            pass  # no samples yet: the layer lives in world coordinates
        kwargs = {} if scale is None else dict(scale=scale, translate=translate)
        layer = self.viewer.add_shapes(
            name=REGION_LAYER, face_color="transparent", edge_color="yellow", edge_width=2, ndim=2, **kwargs
        )
        layer.current_face_color = "transparent"
        layer.current_edge_color = "yellow"
        layer.mode = "add_rectangle"
        self.region_combo.reset_choices()
        self.region_source = layer.name
        self._set_status("draw a rectangle around the cells to tune, then move the resolution slider")
        return layer

    def _field_of_view(self):
        size = canvas_size(self.viewer)
        if size is None:
            return None  # the caller then uses the whole image
        camera = viewer_camera(self.viewer)
        center = np.asarray(camera.center[-2:], dtype=float)
        half = np.asarray(size[-2:], dtype=float) / (2.0 * float(camera.zoom))
        return center - half, center + half

    # -- layers -----------------------------------------------------------------------
    def _samples(self) -> Labels:
        name = self.samples_layer
        if name is None or name not in self.viewer.layers:
            raise InputError("no samples layer: run the Predict widget, or open (n, Y, X) label images")
        return self.viewer.layers[name]

    @property
    def consensus_layer(self) -> Labels | None:
        """The consensus Labels layer of the chosen samples, if made yet."""
        name = self.samples_layer
        for layer in self.viewer.layers:
            meta = layer.metadata.get(OUTPUT_META_KEY)
            if isinstance(layer, Labels) and isinstance(meta, dict) and meta.get("role") == "consensus" and meta.get("samples") == name:
                return layer
        return None

    def _write_layer(self, labels: np.ndarray) -> Labels:
        samples = self._samples()
        layer = self.consensus_layer
        if layer is not None and layer.data.shape == labels.shape:
            self._remember(None, np.array(layer.data, copy=True))
            layer.data = labels
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        samples_meta = samples.metadata.get(OUTPUT_META_KEY) or {}
        source = samples_meta.get("source") or samples.name
        # "nuclei · cellulus-2000 consensus": which model's samples it fuses.
        label = samples_meta.get("label") or source
        meta = {OUTPUT_META_KEY: {"role": "consensus", "samples": samples.name, "source": source}}
        if samples_meta.get("model_key") is not None:
            meta[OUTPUT_META_KEY]["model_key"] = samples_meta["model_key"]
        return self.viewer.add_labels(
            labels, name=f"{label} consensus", scale=samples.scale[-2:], translate=samples.translate[-2:], metadata=meta, opacity=0.7
        )

    # -- building ---------------------------------------------------------------------
    def _current_key(self):
        layer = self._samples()
        return (layer.name, id(layer.data), layer.data.shape)

    def _samples_changed(self, *_) -> None:
        self.consensus, self._key, self._region = None, None, None
        self.graph_info.setText("")
        if self.samples_layer is not None and not self.running:
            self.build()

    def build(self):
        """Build the graph of the chosen samples in the background; returns the worker or None."""
        if self.running:
            return None
        try:
            layer = self._samples()
            job = BuildJob(np.asarray(layer.data), self._current_key(), self.device.check(), self._fraction, self.objective,
                           self.seed, self.min_size)
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        self._set_status(f"building the consensus graph of {layer.name}…")
        return self.start_job(_build, job, on_result=self._on_built)

    def _on_built(self, outcome: Outcome) -> None:
        if not self._succeeded(outcome, "cancelled; nothing was changed"):
            return
        built: Built = outcome.value
        try:
            if self._current_key() != built.key:
                return  # built for samples that were replaced meanwhile
        except ProbsegError:
            return
        self.consensus, self._key, self._region = built.consensus, built.key, None
        c = built.consensus
        self.graph_info.setText(
            f"{c.n_layers} samples, {c.fragments.count} fragments, {len(c.graph.edges)} links"
        )
        self._show_resolution()
        layer = self._write_layer(built.labels)
        self._set_status(f"{int(built.labels.max())} objects in {layer.name} at resolution {built.resolution:.4g}")

    def _ready(self) -> bool:
        """True when the graph matches the chosen samples; otherwise starts a build."""
        try:
            key = self._current_key()
        except ProbsegError as exc:
            self._fail(str(exc))
            return False
        if self.consensus is not None and key == self._key:
            return True
        if not self.running:
            self.build()
        return False

    # -- live region updates ----------------------------------------------------------
    def _slider_moved(self, value: int) -> None:
        self._region_pick = None
        self._fraction = value / SLIDER_STEPS
        self._show_resolution()
        if self.live_check.isChecked():
            self.request_region_update()

    def _edit_finished(self) -> None:
        try:
            value = float(self.resolution_edit.text())
            self.resolution = value
        except (ValueError, InputError):
            self._warn(f"not a positive number: {self.resolution_edit.text()!r}")
            self._show_resolution()

    def _objective_changed(self, *_) -> None:
        self._region_pick = None
        self._show_resolution()
        self.request_region_update()

    @property
    def updating(self) -> bool:
        """True while a region update runs or waits."""
        return self._update_worker is not None or self._pending is not None

    def request_region_update(self) -> None:
        """Re-segment the region at the current resolution (newest request wins)."""
        if not self._ready():
            return  # the build under way ends with the whole image at this resolution
        try:
            rect = self.current_rect()
        except ProbsegError as exc:
            self._warn(str(exc))
            return
        self._pending = (rect, self.resolution, self.objective, self.seed, self.min_size)
        if self._update_worker is None:
            self._start_region_update()

    def _start_region_update(self) -> None:
        rect, resolution, objective, seed, min_size = self._pending
        self._pending = None
        if not self.running:
            # The bar belongs to the region now, not to the last build or run.
            self.progress_bar.setRange(0, 0)
            self.progress_label.setText("re-segmenting the region…")
        worker = thread_worker(_region_labels, start_thread=False)(
            self.consensus, self._region, rect, resolution, objective, seed, min_size
        )
        worker.returned.connect(lambda result, args=(rect, resolution): self._on_region(result, *args))
        worker.errored.connect(self._on_region_error)
        worker.finished.connect(self._on_region_finished)
        self._update_worker = worker
        worker.start()

    def _on_region(self, result, rect, resolution) -> None:
        region, labels = result
        try:
            current = self.consensus is not None and self._current_key() == self._key
        except ProbsegError:
            current = False
        if not current:
            return  # the samples changed or went away while this region was computed
        self._region = region
        layer = self.consensus_layer
        if layer is None or layer.data.shape != self.consensus.shape:
            layer = self._write_layer(np.zeros(self.consensus.shape, dtype=np.int32))
        data = np.asarray(layer.data)
        if data.dtype != np.int32:
            data = data.astype(np.int32)
        if rect != self._history_rect:
            y0, x0, y1, x1 = rect
            self._remember(rect, data[y0:y1, x0:x1].copy())
        write_region(data, labels, rect)
        layer.data = data
        self.region_updates += 1
        y0, x0, y1, x1 = rect
        self._set_status(f"{int(labels.max())} objects in the region ({y1 - y0}x{x1 - x0} px) at resolution {resolution:.4g}")

    def _on_region_error(self, exc: BaseException) -> None:
        self._pending = None
        self._fail(f"region update failed: {exc}")

    def _on_region_finished(self) -> None:
        self._update_worker = None
        if self._pending is not None and self.consensus is not None:
            self._start_region_update()
        elif not self.running:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1)
            self.progress_label.setText("region re-segmented")

    # -- undo -------------------------------------------------------------------------
    def _remember(self, rect, labels: np.ndarray) -> None:
        self._history.append((rect, labels))
        del self._history[:-UNDO_DEPTH]
        self._history_rect = rect
        self.undo_button.setEnabled(True)

    def undo(self) -> None:
        """Put back the consensus layer as it was before the last region session or whole-image run."""
        layer = self.consensus_layer
        if not self._history or layer is None:
            self._set_status("nothing to undo")
            return
        rect, labels = self._history.pop()
        self._history_rect = None
        if rect is None:
            if labels.shape == layer.data.shape:
                layer.data = labels
        else:
            data = np.asarray(layer.data)
            y0, x0, y1, x1 = rect
            data[y0:y1, x0:x1] = labels
            layer.data = data
        self.undo_button.setEnabled(bool(self._history))
        self._set_status("undone" + ("" if self._history else "; nothing more to undo"))

    # -- Auto and whole image ---------------------------------------------------------
    def _can_start(self, building: str) -> bool:
        """Whether a job on the graph may start now; if not, the status line says why (``building``: the graph is not ready yet)."""
        if self.running:
            self._warn("busy; wait or cancel first")
            return False
        if not self._ready():
            if self.running:  # otherwise _ready has said what is missing
                self._set_status(building, "warning")
            return False
        return True

    def _succeeded(self, outcome: Outcome, cancelled: str) -> bool:
        """Whether a job brought a result; if not, its error or ``cancelled`` is shown."""
        if outcome.error:
            self._fail(outcome.error)
            return False
        if outcome.value is None:
            self._set_status(cancelled, "warning")
            return False
        return True

    def auto(self):
        """Sweep resolutions on the region; plot the curve and move the slider to the best."""
        if not self._can_start("building the graph first; press Auto again when it is done"):
            return None
        try:
            rect = self.current_rect()
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        self._set_status("sweeping resolutions on the region…")
        return self.start_job(_sweep, self.consensus, self.objective, self.seed, rect, self.min_size, on_result=self._on_swept)

    def _on_swept(self, outcome: Outcome) -> None:
        if not self._succeeded(outcome, "cancelled"):
            return
        sweep = outcome.value
        self.last_sweep = sweep
        self.plot.setVisible(True)
        self.plot.show_sweep(sweep)
        i = sweep.best_index
        y0, x0, y1, x1 = sweep.windows[0]
        # The count is of what the region update below writes: split
        # communities, after min size.
        self.auto_info.setText(
            f"Auto: resolution {sweep.best:.4g} (mean NMI {sweep.nmi[i]:.3f}, {int(sweep.n_objects[i])} objects in the "
            f"{y1 - y0}x{x1 - x0} px region); solid line: NMI with the samples, dashed: objects. A region's pick fits "
            "its cells; 'Auto (whole image)' picks one for the whole image"
        )
        self.resolution = sweep.best
        self._region_pick = sweep.windows[0]

    def auto_whole_image(self):
        """Sweep resolutions on windows sampled over the image, apply the best everywhere; returns the worker or None."""
        if not self._can_start("building the graph first; press Auto (whole image) again when it is done"):
            return None
        self._set_status(f"sweeping resolutions on up to {self.auto_windows} windows of {self.auto_window} px…")
        return self.start_job(_auto_whole, self.consensus, self.auto_window, self.auto_windows, self.objective, self.seed,
                              self.min_size, on_result=self._on_auto_whole)

    def _on_auto_whole(self, outcome: Outcome) -> None:
        if not self._succeeded(outcome, "cancelled; the consensus layer was left as it was"):
            return
        sweep, labels = outcome.value.sweep, outcome.value.labels
        self.last_sweep = sweep
        self.plot.setVisible(True)
        self.plot.show_sweep(sweep)
        # The whole image is written below; a region update at the same
        # resolution would only redo part of it, differently.
        self._move_slider(sweep.best)
        layer = self._write_layer(labels)
        n_objects = int(labels.max())
        where = f"{len(sweep.windows)} windows of {self.auto_window} px" if sweep.windows else "the whole image"
        i = sweep.best_index
        self.auto_info.setText(
            f"Auto (whole image, swept on {where}): resolution {sweep.best:.4g} (mean NMI {sweep.nmi[i]:.3f}); "
            f"applied: {n_objects} objects in {layer.name}. Solid line: NMI with the samples, dashed: objects in the swept area"
        )
        self._set_status(f"{n_objects} objects in {layer.name} at resolution {sweep.best:.4g} (Auto, whole image)")

    def apply_to_whole_image(self):
        """Run the consensus on the whole image at the current resolution (background, cancellable)."""
        if self.running:
            self._warn("busy; wait or cancel first")
            return None
        if not self._ready():
            if self.running:
                self._set_status("building the graph first; it ends with the whole image at this resolution")
                return self.worker
            return None
        self._applying = self._pick_note()
        self._set_status(f"consensus of the whole image at resolution {self.resolution:.4g}{self._applying}…")
        return self.start_job(_whole, self.consensus, self.resolution, self.objective, self.seed, self.min_size,
                              on_result=self._on_whole)

    def _pick_note(self) -> str:
        """A note when the slider holds Auto's pick for a region, which may not fit the whole image."""
        if self._region_pick is None:
            return ""
        y0, x0, y1, x1 = self._region_pick
        return (f" (Auto's pick for the {y1 - y0}x{x1 - x0} px region; "
                "'Auto (whole image)' picks one for the whole image)")

    def _on_whole(self, outcome: Outcome) -> None:
        if not self._succeeded(outcome, "cancelled; the consensus layer was left as it was"):
            return
        labels = outcome.value
        layer = self._write_layer(labels)
        self._set_status(f"{int(labels.max())} objects in {layer.name} at resolution {self.resolution:.4g}{self._applying}")

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self.auto_button.setEnabled(not running)
        self.auto_whole_button.setEnabled(not running)
        self.apply_button.setEnabled(not running)
        self.undo_button.setEnabled(not running and bool(self._history))

    def _on_finished(self) -> None:
        super()._on_finished()
        if self._pending is not None and self._update_worker is None and self.consensus is not None:
            self._start_region_update()
