"""The Consensus widget's controls and the inputs they hold (samples, region, resolution); the jobs are in :mod:`consensus_widget`.

The resolution slider walks the graph's resolution range on a log scale
(:func:`probseg.consensus.interactive.resolution_at`); its text box shows
and takes the value itself.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, SpinBox
from napari.layers import Labels, Shapes
from qtpy.QtCore import Qt
from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import QCheckBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSlider, QVBoxLayout, QWidget

from napari_probseg import _consensus_layers as layers
from napari_probseg._engine_widget import EngineWidget
from napari_probseg._sweep_plot import SweepPlot
from probseg.consensus import DEFAULT_OBJECTIVE, OBJECTIVES, Consensus
from probseg.consensus.engine import AUTO_WINDOW, AUTO_WINDOWS
from probseg.consensus.interactive import DEFAULT_FRACTION, fraction_of, resolution_at, resolution_range
from probseg.core.errors import InputError, ProbsegError

SLIDER_STEPS = 400


class ConsensusPanel(EngineWidget):
    """The controls of :class:`~napari_probseg.consensus_widget.ConsensusWidget`, laid out, and their values."""

    job_name = "consensus"
    #: Window side and number of windows of "Auto (whole image)".
    auto_window = AUTO_WINDOW
    auto_windows = AUTO_WINDOWS

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(napari_viewer, None, parent)
        self.consensus: Consensus | None = None
        self._fraction = DEFAULT_FRACTION
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
        self.graph_info = QLabel("")
        self.graph_info.setWordWrap(True)
        self._lay_out()

        self.slider.setValue(round(self._fraction * SLIDER_STEPS))
        self._show_resolution()
        self.region_button.clicked.connect(self.draw_region)

    def _lay_out(self) -> None:
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

    # -- the resolution slider --------------------------------------------------------
    def _bounds(self) -> tuple[float, float]:
        return resolution_range(self.consensus, self.objective)

    def _slider_resolution(self) -> float:
        """The resolution the slider stands for."""
        return resolution_at(self._fraction, self._bounds())

    def _move_slider(self, value: float) -> None:
        """Put the slider (and the text box) at ``value`` without re-segmenting anything."""
        lo, hi = self._bounds()
        value = float(value)
        if not value > 0:
            raise InputError(f"the resolution must be positive, got {value}")
        self._region_pick = None
        self._fraction = min(1.0, max(0.0, fraction_of(value, (lo, hi))))
        self.slider.blockSignals(True)
        self.slider.setValue(round(self._fraction * SLIDER_STEPS))
        self.slider.blockSignals(False)
        self._show_resolution()

    def _show_resolution(self) -> None:
        resolution = self._slider_resolution()
        self.resolution_edit.setText(f"{resolution:.4g}")
        self.plot.mark(resolution)

    # -- the region -------------------------------------------------------------------
    def current_rect(self) -> tuple[int, int, int, int]:
        """The region in the samples' pixel coordinates ``(y0, x0, y1, x1)``."""
        return layers.region_rect(self.viewer, self._samples(), self.region_source)

    def draw_region(self) -> Shapes:
        """Add a Shapes layer for the region, in rectangle mode, and make it the region source.

        napari's default white fill would hide the cells being tuned, so the
        rectangles are drawn as outlines only.
        """
        try:
            samples = self._samples()
        except ProbsegError:
            samples = None  # no samples yet: the layer lives in world coordinates
        layer = layers.add_region_layer(self.viewer, samples)
        self.region_combo.reset_choices()
        self.region_source = layer.name
        self._set_status("draw a rectangle around the cells to tune, then move the resolution slider")
        return layer

    def _samples(self) -> Labels:
        name = self.samples_layer
        if name is None or name not in self.viewer.layers:
            raise InputError("no samples layer: run the Predict widget, or open (n, Y, X) label images")
        return self.viewer.layers[name]

    # -- layer lists ------------------------------------------------------------------
    def _samples_choices(self, _widget=None) -> list[str]:
        return layers.samples_choices(self.viewer)

    def _region_choices(self, _widget=None) -> list[str]:
        return layers.region_choices(self.viewer)

    def reset_choices(self, *_) -> None:
        had = self.samples_layer
        self.samples_combo.reset_choices()
        self.region_combo.reset_choices()
        self._select_default_region()
        if had is None:
            self._select_default_samples()

    def _select_default_region(self) -> None:
        shapes = [n for n in self.region_combo.choices if n != layers.FIELD_OF_VIEW]
        if self.region_combo.value == layers.FIELD_OF_VIEW and shapes:
            # A rectangle the user drew is the region they mean.
            self.region_combo.value = shapes[-1]

    def _select_default_samples(self) -> None:
        if (pick := layers.default_samples(self.viewer)) is not None:
            self.samples_layer = pick
