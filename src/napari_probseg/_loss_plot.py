"""A live training-loss plot that stays cheap however long the run.

Points arrive about ten times a second; drawing is the expensive part, so the
canvas is redrawn at most every :attr:`LossPlot.REDRAW_MS` milliseconds and at
most :attr:`LossPlot.MAX_POINTS` points are drawn (longer runs are binned).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

_DARK = {"background": "#23242b", "text": "#f0f1f2", "grid": "#565f6c", "raw": "#7f8c9a", "mean": "#4f9bff"}
_LIGHT = {"background": "#ffffff", "text": "#3b3a39", "grid": "#c0c0c0", "raw": "#9aa4ae", "mean": "#1f5fc4"}


def _napari_colors() -> dict:
    """Colours matching napari's current theme (dark if it cannot be read)."""
    try:
        from napari.settings import get_settings
        from napari.utils.theme import get_theme

        theme = get_theme(get_settings().appearance.theme)
        base = _LIGHT if theme.type == "light" else _DARK
        return dict(base, background=theme.background.as_hex(), text=theme.text.as_hex())
    except Exception:  # a missing or odd theme must not break training
        return dict(_DARK)


class LossPlot(QWidget):
    """Training loss against step: raw values faint, a running mean bold."""

    REDRAW_MS = 400
    MAX_POINTS = 1000

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._losses: list[float] = []
        self._total = 0
        colors = _napari_colors()
        self.figure = Figure(figsize=(3.2, 1.9), dpi=90, facecolor=colors["background"], layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.axes = self.figure.add_subplot(1, 1, 1)
        ax = self.axes
        ax.set_facecolor(colors["background"])
        ax.set_xlabel("step", color=colors["text"], fontsize=8)
        ax.set_ylabel("loss", color=colors["text"], fontsize=8)
        ax.tick_params(colors=colors["text"], labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(colors["grid"])
        ax.grid(True, color=colors["grid"], linewidth=0.4, alpha=0.6)
        (self._raw_line,) = ax.plot([], [], color=colors["raw"], linewidth=0.7, alpha=0.8)
        (self._mean_line,) = ax.plot([], [], color=colors["mean"], linewidth=1.6)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.REDRAW_MS)
        self._timer.timeout.connect(self._redraw)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._redraw()

    @property
    def points(self) -> int:
        """Number of losses received since the last :meth:`reset`."""
        return len(self._losses)

    @property
    def losses(self) -> list[float]:
        """A copy of the losses received since the last :meth:`reset`."""
        return list(self._losses)

    def reset(self, total: int = 0) -> None:
        """Clear the plot for a new run of ``total`` steps."""
        self._losses = []
        self._total = int(total)
        self._schedule()

    def extend(self, losses: Iterable[float]) -> None:
        """Append losses of consecutive steps; the redraw happens later, coalesced."""
        new = [float(v) for v in losses]
        if new:
            self._losses.extend(new)
            self._schedule()

    def flush(self) -> None:
        """Redraw now (at the end of a run, so the final state is shown)."""
        self._timer.stop()
        self._redraw()

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def _redraw(self) -> None:
        y = np.asarray(self._losses, dtype=np.float64)
        x = np.arange(1, len(y) + 1, dtype=np.float64)
        if len(y) > self.MAX_POINTS:
            # Bin means keep the shape of the curve at a fixed drawing cost.
            bins = np.array_split(np.arange(len(y)), self.MAX_POINTS)
            x = np.array([x[b].mean() for b in bins])
            y = np.array([y[b].mean() for b in bins])
        self._raw_line.set_data(x, y)
        window = max(1, len(y) // 20)
        if len(y) >= 2 * window and window > 1:
            mean = np.convolve(y, np.ones(window) / window, mode="valid")
            self._mean_line.set_data(x[window - 1 :], mean)
        else:
            self._mean_line.set_data(x, y)
        ax = self.axes
        ax.set_xlim(0, max(self._total, len(self._losses), 1))
        if len(y):
            low, high = float(np.min(y)), float(np.max(y))
            pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
            ax.set_ylim(low - pad, high + pad)
        else:
            ax.set_ylim(0, 1)
        self.canvas.draw_idle()
