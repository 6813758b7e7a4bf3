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

The controls are laid out in :mod:`._consensus_panel`, the layers found and
made in :mod:`._consensus_layers`, the jobs are in :mod:`._consensus_jobs`;
every computation, the undo history included
(:class:`probseg.consensus.labels_history.LabelsHistory`), is in
:mod:`probseg.consensus`.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QWidget

from napari_probseg import _consensus_layers as layers
from napari_probseg._consensus_jobs import BuildJob, auto_whole_job, build_job, sweep_job, whole_job
from napari_probseg._consensus_layers import FIELD_OF_VIEW
from napari_probseg._consensus_panel import SLIDER_STEPS, ConsensusPanel
from napari_probseg._engine_widget import Outcome
from probseg.consensus import write_region
from probseg.consensus.interactive import region_labels
from probseg.consensus.labels_history import LabelsHistory
from probseg.core.errors import InputError, ProbsegError

__all__ = ["ConsensusWidget", "FIELD_OF_VIEW"]


class ConsensusWidget(ConsensusPanel):
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

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        self._key = None
        self._region = None
        self._pending = None
        self._update_worker = None
        self.region_updates = 0
        self.last_sweep = None
        self._applying = ""
        # A run of slider moves on one region is one step.
        self._history = LabelsHistory()

        self.slider.valueChanged.connect(self._slider_moved)
        self.resolution_edit.editingFinished.connect(self._edit_finished)
        self.objective_combo.changed.connect(self._objective_changed)
        self.samples_combo.changed.connect(self._samples_changed)
        self.auto_button.clicked.connect(self.auto)
        self.auto_whole_button.clicked.connect(self.auto_whole_image)
        self.apply_button.clicked.connect(self.apply_to_whole_image)
        self.undo_button.clicked.connect(self.undo)
        self._select_default_region()
        self._select_default_samples()
        if self.samples_layer is not None:
            self.build()

    @property
    def resolution(self) -> float:
        """The resolution the slider stands for."""
        return self._slider_resolution()

    @resolution.setter
    def resolution(self, value: float) -> None:
        self._move_slider(value)
        self.request_region_update()

    # -- layers -----------------------------------------------------------------------
    @property
    def consensus_layer(self) -> Labels | None:
        """The consensus Labels layer of the chosen samples, if made yet."""
        return layers.consensus_layer(self.viewer, self.samples_layer)

    def _write_layer(self, labels: np.ndarray) -> Labels:
        samples = self._samples()
        layer = self.consensus_layer
        if layer is not None and layer.data.shape == labels.shape:
            self._history.before_whole(layer.data)
            self.undo_button.setEnabled(True)
            layer.data = labels
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        return layers.add_consensus_layer(self.viewer, samples, labels)

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
        return self.start_job(build_job, job, on_result=self._on_built)

    def _on_built(self, outcome: Outcome) -> None:
        if not self._succeeded(outcome, "cancelled; nothing was changed"):
            return
        key, built = outcome.value
        try:
            if self._current_key() != key:
                return  # built for samples that were replaced meanwhile
        except ProbsegError:
            return
        self.consensus, self._key, self._region = built.consensus, key, None
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
        worker = thread_worker(region_labels, start_thread=False)(
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
        if self._history.before_region(data, rect):
            self.undo_button.setEnabled(True)
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
    def undo(self) -> None:
        """Put back the consensus layer as it was before the last region session or whole-image run."""
        layer = self.consensus_layer
        if not self._history.can_undo or layer is None:
            self._set_status("nothing to undo")
            return
        layer.data = self._history.undo(np.asarray(layer.data))
        more = self._history.can_undo
        self.undo_button.setEnabled(more)
        self._set_status("undone" + ("" if more else "; nothing more to undo"))

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

    def _show_sweep(self, sweep) -> None:
        self.last_sweep = sweep
        self.plot.setVisible(True)
        self.plot.show_sweep(sweep)

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
        return self.start_job(sweep_job, self.consensus, self.objective, self.seed, rect, self.min_size, on_result=self._on_swept)

    def _on_swept(self, outcome: Outcome) -> None:
        if not self._succeeded(outcome, "cancelled"):
            return
        sweep = outcome.value
        self._show_sweep(sweep)
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
        return self.start_job(auto_whole_job, self.consensus, self.auto_window, self.auto_windows, self.objective, self.seed,
                              self.min_size, on_result=self._on_auto_whole)

    def _on_auto_whole(self, outcome: Outcome) -> None:
        if not self._succeeded(outcome, "cancelled; the consensus layer was left as it was"):
            return
        sweep, labels = outcome.value.sweep, outcome.value.labels
        self._show_sweep(sweep)
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
        return self.start_job(whole_job, self.consensus, self.resolution, self.objective, self.seed, self.min_size,
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
        self.undo_button.setEnabled(not running and self._history.can_undo)

    def _on_finished(self) -> None:
        super()._on_finished()
        if self._pending is not None and self._update_worker is None and self.consensus is not None:
            self._start_region_update()
