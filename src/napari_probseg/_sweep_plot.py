"""A small plot of what Auto measured: mean NMI and object count against resolution."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from napari_probseg._loss_plot import _napari_colors


class SweepPlot(QWidget):
    """NMI (left axis) and objects (right axis) on a log resolution axis, with markers."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        colors = _napari_colors()
        self.colors = colors
        self.figure = Figure(figsize=(3.2, 1.9), dpi=90, facecolor=colors["background"], layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.axes = self.figure.add_subplot(1, 1, 1)
        self.count_axes = self.axes.twinx()
        for ax in (self.axes, self.count_axes):
            ax.set_facecolor(colors["background"])
            ax.tick_params(colors=colors["text"], labelsize=7)
            for spine in ax.spines.values():
                spine.set_color(colors["grid"])
        self.axes.set_xscale("log")
        self.axes.set_xlabel("resolution", color=colors["text"], fontsize=8)
        self.axes.set_ylabel("mean NMI", color=colors["mean"], fontsize=8)
        self.count_axes.set_ylabel("objects", color=colors["raw"], fontsize=8)
        (self._nmi_line,) = self.axes.plot([], [], color=colors["mean"], marker="o", markersize=2.5, linewidth=1.4)
        (self._count_line,) = self.count_axes.plot([], [], color=colors["raw"], linewidth=1.0, linestyle="--")
        self._best = self.axes.axvline(1.0, color="#f0b64f", linewidth=1.0, visible=False)
        self._current = self.axes.axvline(1.0, color=colors["text"], linewidth=0.8, linestyle=":", visible=False)
        self.sweep = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def show_sweep(self, sweep) -> None:
        """Draw a :class:`probseg.consensus.Sweep`."""
        self.sweep = sweep
        r = np.asarray(sweep.resolutions)
        self._nmi_line.set_data(r, sweep.nmi)
        self._count_line.set_data(r, sweep.n_objects)
        self.axes.set_xlim(r.min(), r.max())
        lo, hi = float(np.min(sweep.nmi)), float(np.max(sweep.nmi))
        pad = 0.05 * (hi - lo) or 0.01
        self.axes.set_ylim(lo - pad, hi + pad)
        self.count_axes.set_ylim(0, max(1, int(np.max(sweep.n_objects))) * 1.05)
        self._best.set_xdata([sweep.best, sweep.best])
        self._best.set_visible(True)
        self.canvas.draw_idle()

    def mark(self, resolution: float) -> None:
        """Move the dotted marker to the resolution in use."""
        if self.sweep is None:
            return
        self._current.set_xdata([resolution, resolution])
        self._current.set_visible(True)
        self.canvas.draw_idle()
