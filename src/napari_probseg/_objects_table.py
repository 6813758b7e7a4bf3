"""The Objects table: one row per segmented object, sortable, and colouring the labels by a column.

Methods that describe each object (e.g. by latent codes, box, presence
and size) hand the Predict widget a table of columns; this widget
shows it, selects an object's label when its row is clicked, and colours the
segmentation layer by any numeric column.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import AVAILABLE_COLORMAPS, DirectLabelColormap
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

NATURAL = "label colours"


class _NumberItem(QTableWidgetItem):
    """A cell that sorts by its number, not its text."""

    def __init__(self, value):
        super().__init__(f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(int(value)))
        self.value = float(value)
        self.setFlags(self.flags() & ~Qt.ItemIsEditable)

    def __lt__(self, other):
        return self.value < other.value if isinstance(other, _NumberItem) else super().__lt__(other)


class ObjectsTable(QWidget):
    """Rows of objects for a Labels layer; hidden until a table is set.

    Programmatic use: ``set_table(layer, columns)``, ``sort_by(name)``,
    ``colour_by(name)``; ``labels_in_order()`` gives the labels as the rows
    show them.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.layer = None
        self.columns: dict = {}
        self._natural = None  # the layer's own colours, restored by "label colours"
        self._applied = None  # the colour map this table set
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.itemSelectionChanged.connect(self._row_selected)
        self.colour_combo = QComboBox()
        self.colour_combo.setToolTip("colour the segmentation by this column (low: dark blue, high: yellow)")
        self.colour_combo.currentTextChanged.connect(self._colour_changed)
        row = QHBoxLayout()
        row.addWidget(QLabel("colour by"))
        row.addWidget(self.colour_combo, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Objects (click a header to sort, a row to select its label)"))
        layout.addLayout(row)
        layout.addWidget(self.table)
        self.setVisible(False)

    def set_table(self, layer, columns: dict | None) -> None:
        """Show ``columns`` (``"label"`` first) for ``layer``, or hide the table when None."""
        if layer is not None and (layer is not self.layer or layer.colormap is not self._applied):
            self._natural = layer.colormap
        self.layer, self.columns = layer, dict(columns or {})
        if not self.columns:
            self.setVisible(False)
            return
        names = list(self.columns)
        n = len(self.columns[names[0]])
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setRowCount(n)
        self.table.setColumnCount(len(names))
        self.table.setHorizontalHeaderLabels(names)
        for j, name in enumerate(names):
            values = np.asarray(self.columns[name])
            for i in range(n):
                self.table.setItem(i, j, _NumberItem(values[i]))
        self.table.setSortingEnabled(True)
        self.colour_combo.blockSignals(True)
        self.colour_combo.clear()
        self.colour_combo.addItems([NATURAL] + [c for c in names if c != "label"])
        self.colour_combo.blockSignals(False)
        self.setVisible(True)

    def sort_by(self, name: str, descending: bool = False) -> None:
        self.table.sortItems(list(self.columns).index(name), Qt.DescendingOrder if descending else Qt.AscendingOrder)

    def labels_in_order(self) -> list[int]:
        col = list(self.columns).index("label")
        return [int(self.table.item(i, col).value) for i in range(self.table.rowCount())]

    def colour_by(self, name: str) -> None:
        self.colour_combo.setCurrentText(name)

    def _row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if self.layer is None or not rows:
            return
        col = list(self.columns).index("label")
        self.layer.selected_label = int(self.table.item(rows[0].row(), col).value)

    def _colour_changed(self, name: str) -> None:
        if self.layer is None or not name:
            return
        if name == NATURAL or name not in self.columns:
            if self._natural is not None:
                self.layer.colormap = self._natural
            self._applied = None
            return
        values = np.asarray(self.columns[name], dtype=float)
        lo, hi = np.nanmin(values), np.nanmax(values)
        scaled = (values - lo) / (hi - lo) if hi > lo else np.full_like(values, 0.5)
        colours = AVAILABLE_COLORMAPS["viridis"].map(scaled)
        mapping = {None: np.zeros(4)}
        mapping.update({int(label): colour for label, colour in zip(self.columns["label"], colours)})
        self.layer.colormap = DirectLabelColormap(color_dict=mapping)
        self._applied = self.layer.colormap
