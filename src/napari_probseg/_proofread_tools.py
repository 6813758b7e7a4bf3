"""The edit tools of the Proofread widget: merge, delete, split, re-split, napari's paint, undo/redo, export.

Every edit is made by :mod:`probseg.proofreading.edits` from the session's
labels and saved by the session at once; the corrected layer only shows
them. :class:`EditTools` is a part of
:class:`napari_probseg.proofread_widget.ProofreadWidget`, which supplies the
session, the queue and the corrected layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import SpinBox
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton

from probseg.core.errors import ProbsegError
from probseg.proofreading import edits


class EditTools:
    """The edit tools panel, mixed into the Proofread widget."""

    def _build_tools(self, layout) -> tuple[list, list]:
        """Make the tools and add their rows to ``layout``.

        Returns
        -------
        (list, list)
            The buttons that change the labels (undo and redo last), and the
            export buttons.
        """
        self.a_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.a_spin.tooltip = ("keep: the label that stays; Merge gives its id to the other one, Delete removes it "
                               "(picking a label in the corrected layer puts it here)")
        self.b_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.b_spin.tooltip = ("merge into it: the label that Merge joins to the kept one and that then disappears "
                               "(the previously picked label moves here)")
        merge_button = QPushButton("Merge")
        merge_button.setToolTip("give the 'merge into it' label the id of the 'keep' label")
        merge_button.clicked.connect(lambda: self.merge(self.a_spin.value, self.b_spin.value))
        delete_button = QPushButton("Delete")
        delete_button.setToolTip("delete the 'keep' label")
        delete_button.clicked.connect(lambda: self.delete(self.a_spin.value))
        split_button = QPushButton("Split along line")
        split_button.setToolTip("draw a line across an object in the 'split line' layer, then press")
        split_button.clicked.connect(self.split_along_line)
        resegment_button = QPushButton("Re-split patch")
        resegment_button.setToolTip("re-run the consensus of the samples inside the patch at a higher resolution")
        resegment_button.clicked.connect(lambda: self.resegment_patch())
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        export_button = QPushButton("Export labels…")
        export_button.clicked.connect(lambda: self.export_labels())
        export_reviewed_button = QPushButton("Export reviewed…")
        export_reviewed_button.setToolTip("only the objects of reviewed patches, for weakly supervised training")
        export_reviewed_button.clicked.connect(lambda: self.export_reviewed())

        pick = QHBoxLayout()
        keep_label = QLabel("keep")
        keep_label.setToolTip(self.a_spin.tooltip)
        into_label = QLabel("merge into it")
        into_label.setToolTip(self.b_spin.tooltip)
        pick.addWidget(keep_label)
        pick.addWidget(self.a_spin.native)
        pick.addWidget(into_label)
        pick.addWidget(self.b_spin.native)
        acts = QHBoxLayout()
        for b in (merge_button, delete_button, split_button, resegment_button):
            acts.addWidget(b)
        hist = QHBoxLayout()
        for b in (self.undo_button, self.redo_button, export_button, export_reviewed_button):
            hist.addWidget(b)
        layout.addLayout(pick)
        layout.addLayout(acts)
        layout.addLayout(hist)
        return ([merge_button, delete_button, split_button, resegment_button, self.undo_button, self.redo_button],
                [export_button, export_reviewed_button])

    # -- napari's paint and fill tools ------------------------------------------------
    def _painted(self, event=None) -> None:
        # napari emits the paint event of a single dab before it writes the
        # pixels; record once the current call stack has finished.
        if not self._syncing and self.session is not None:
            QTimer.singleShot(0, self.record_paint)

    def record_paint(self) -> None:
        """Record what napari's paint and fill tools changed in the corrected layer as one edit."""
        if self._syncing or self.session is None:
            return
        layer = self.corrected_layer
        if layer is None:
            return
        try:
            edit = edits.diff(self.session.labels, np.asarray(layer.data), "paint", {"tool": str(layer.mode)})
            if edit is not None and edit.index.size:
                self.session.apply(edit)
        except ProbsegError as exc:
            self._fail(str(exc))
        self._update_buttons()

    def _label_picked(self, event=None) -> None:
        layer = self.corrected_layer
        if layer is not None and layer.selected_label > 0:
            self.b_spin.value = self.a_spin.value
            self.a_spin.value = int(layer.selected_label)

    # -- edits ------------------------------------------------------------------------
    def _apply(self, make_edit) -> bool:
        if self.session is None:
            self._warn("press Start first")
            return False
        try:
            edit = make_edit(self.session.labels)
            self.session.apply(edit)
        except ProbsegError as exc:
            self._fail(str(exc))
            return False
        self._sync_layer()
        self._update_buttons()
        return True

    def merge(self, a: int, b: int) -> bool:
        """Give object ``b`` the id of object ``a``."""
        if self._apply(lambda labels: edits.merge(labels, int(a), int(b))):
            self._set_status(f"merged {b} into {a}")
            return True
        return False

    def delete(self, obj: int) -> bool:
        if self._apply(lambda labels: edits.delete(labels, int(obj))):
            self._set_status(f"deleted {obj}")
            return True
        return False

    def split_along_line(self) -> bool:
        """Split the object crossed by the last line of the 'split line' layer."""
        name = f"{self.image_layer} split line"
        if name not in self.viewer.layers or len(self.viewer.layers[name].data) == 0:
            self._warn("draw a line across the object in the 'split line' layer first")
            return False
        line = np.asarray(self.viewer.layers[name].data[-1])[:, -2:]
        p0, p1 = tuple(line[0]), tuple(line[-1])
        labels = self.session.labels if self.session is not None else None
        if labels is None:
            self._warn("press Start first")
            return False
        obj = edits.object_under_line(labels, p0, p1)
        if obj == 0:
            self._warn("the line crosses no object")
            return False
        if self._apply(lambda lab: edits.split_line(lab, obj, p0, p1)):
            self.viewer.layers[name].data = []
            self._set_status(f"split {obj} along the line")
            return True
        return False

    def resegment_patch(self, factor: float = 3.0) -> bool:
        """Re-run the consensus of the samples inside the current patch at ``factor`` times the default resolution."""
        if self.samples_layer is None:
            self._warn("choose a samples layer to split by consensus")
            return False
        if not (0 <= self.position < len(self.queue)):
            self._warn("no patch selected; press Next")
            return False
        try:
            from probseg.consensus import Consensus
            from probseg.consensus.engine import CPM_RANGE

            if self._consensus is None:
                self._consensus = Consensus.from_samples(np.asarray(self.viewer.layers[self.samples_layer].data))
            rect = self.queue[self.position].rect
            resolution = factor * float(np.sqrt(CPM_RANGE[0] * CPM_RANGE[1]))
            new = self._consensus.update_region(self.session.labels, rect, resolution)
        except ProbsegError as exc:
            self._fail(str(exc))
            return False
        y0, x0, y1, x1 = rect
        if self._apply(lambda labels: edits.replace_region(labels, rect, new[y0:y1, x0:x1])):
            self._set_status(f"patch {self.position + 1} re-split by consensus at resolution {resolution:.3g}")
            return True
        return False

    def undo(self) -> None:
        self._step("undo")

    def redo(self) -> None:
        self._step("redo")

    def _step(self, verb: str) -> None:
        try:
            done = None if self.session is None else getattr(self.session, verb)()
        except ProbsegError as exc:
            self._fail(str(exc))
            done = None
        else:
            if done is None:
                self._set_status(f"nothing to {verb}")
            else:
                self._sync_layer()
                self._set_status("undone" if verb == "undo" else "redone")
        self._update_buttons()

    # -- export -----------------------------------------------------------------------
    def export_labels(self, path=None) -> Path | None:
        """Write the corrected labels (TIFF); a file dialog when ``path`` is None."""
        return self._export(path, "corrected labels", lambda p: self.session.export_labels(p))

    def export_reviewed(self, path=None) -> Path | None:
        """Write the objects of reviewed patches only, as sparse labels for later training."""
        return self._export(path, "reviewed objects", lambda p: self.session.export_reviewed(p)[0])

    def _export(self, path, what, write) -> Path | None:
        if self.session is None:
            self._warn("press Start first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, f"Export {what}", str(self.session.folder.parent), "TIFF (*.tif)")
            if not path:
                return None
        try:
            out = write(Path(path))
        except (ProbsegError, OSError) as exc:
            self._fail(f"export failed: {exc}")
            return None
        self._set_status(f"wrote {what} to {path}")
        return Path(out) if out else Path(path)
