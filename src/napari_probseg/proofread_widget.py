"""The Proofread widget: walk the most uncertain patches first and fix them, losing nothing.

A session (see :mod:`probseg.proofreading.session`) holds the corrected labels
and a log of every edit, written to disk on every edit, undo and review mark;
opening the same image again brings it back. The queue ranks patches by the
uncertainty inside them (:mod:`probseg.proofreading.navigator` walks it).
Edits are merge, split along a drawn line, split by re-running the consensus
inside the patch (when samples are given), delete, and napari's own paint and
fill tools on the corrected layer (:mod:`napari_probseg._proofread_tools`).

A session remembers the layers it was made from (names, and checksums of the
labels and the uncertainty) and its patch size. When the image is opened
again, the widget picks the layers with that data and resumes
(:mod:`probseg.proofreading.resume`); it never guesses other layers, and
refuses labels the session did not start from and an intensity image as the
uncertainty.

"Train from reviewed objects" closes the loop (see
:mod:`probseg.proofreading.retrain` and :mod:`napari_probseg._proofread_retrain`):
the objects of the reviewed patches train a method that learns from reviewed
objects on a worker thread, the image is predicted again, and the new labels,
with every reviewed object exactly as corrected, become one undoable edit; the
queue is ranked by the new uncertainty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, SpinBox
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_probseg import _models
from napari_probseg._engine_widget import EngineWidget
from napari_probseg._layers import OUTPUT_META_KEY, canvas_size, image_layer_names, layer_role, layer_run, viewer_camera
from napari_probseg._proofread_retrain import RetrainPanel
from napari_probseg._proofread_tools import EditTools
from probseg.core import bounds
from probseg.core.errors import InputError, ProbsegError
from probseg.proofreading import navigator
from probseg.proofreading.resume import (
    check_uncertainty,
    continues_from,
    matching_inputs,
    open_for_review,
    session_inputs,
)
from probseg.proofreading.session import Session, SessionError, saved_session_info

__all__ = ["ProofreadWidget", "image_path_of", "check_uncertainty", "SESSIONS_HOME"]

#: Where sessions of images that were not opened from a file are kept.
SESSIONS_HOME = Path("~/probseg-sessions")
_NONE = "(none)"


def image_path_of(layer, home: Path | None = None) -> Path:
    """The file a session folder is placed beside: the layer's source, or a name under SESSIONS_HOME."""
    source = getattr(getattr(layer, "source", None), "path", None)
    if source:
        return Path(source)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in layer.name) or "image"
    return Path(home or SESSIONS_HOME).expanduser() / safe


class ProofreadWidget(EditTools, RetrainPanel, EngineWidget):
    """Correct a segmentation patch by patch, most uncertain first.

    Programmatic use (tests, scripts)::

        w = ProofreadWidget(viewer)
        w.image_layer, w.labels_layer, w.uncertainty_layer = "nuclei", "nuclei segmentation", "nuclei uncertainty"
        w.start()                 # opens or restores the session, fills the queue
        w.next_patch()            # centres the camera on the most uncertain patch
        w.merge(3, 7); w.delete(5); w.split_along_line(); w.undo(); w.redo()
        w.accept_patch()          # marks it reviewed, goes to the next
        w.retrain_steps.value = 500
        w.retrain()               # returns the worker; the result is one undoable edit
        w.export_labels("corrected.tif")

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    store : ModelStore, optional
        Where retraining finds the model to fine-tune and puts the new one;
        the session-wide store by default.
    """

    job_name = "retraining"

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, store, parent)
        self.session: Session | None = None
        self.queue: list = []
        self.position = -1
        self._consensus = None
        self._syncing = False

        self.image_combo = ComboBox(choices=self._image_choices)
        self.labels_combo = ComboBox(choices=self._labels_choices)
        self.labels_combo.tooltip = "the segmentation to correct; it is copied, never changed"
        self.uncertainty_combo = ComboBox(choices=self._uncertainty_choices)
        self.uncertainty_combo.tooltip = "ranks the patches; the Predict widget's uncertainty layer"
        self.samples_combo = ComboBox(choices=self._samples_choices)
        self.samples_combo.tooltip = "optional: (n, Y, X) samples, for splitting a patch by consensus"
        self.patch_spin = SpinBox(value=64, min=8, max=int(bounds.PATCH_SIZE.high), step=8)
        self.patch_spin.tooltip = "side of a proofreading patch in pixels"
        self.start_button = QPushButton("Start / resume")
        self.start_button.clicked.connect(lambda: self.start())
        self.start_over_button = QPushButton("Start over")
        self.start_over_button.setToolTip("set the saved session of this image aside (kept as "
                                          "<name>.probseg.old-<time>) and begin anew from the chosen labels")
        self.start_over_button.clicked.connect(lambda: self.start(start_over=True))
        self.session_label = QLabel("")
        self.session_label.setWordWrap(True)

        self.queue_list = QListWidget()
        self.queue_list.setMinimumHeight(120)
        self.queue_list.currentRowChanged.connect(self._row_chosen)
        self.prev_button = QPushButton("Previous")
        self.next_button = QPushButton("Next")
        self.accept_button = QPushButton("Accept patch")
        self.prev_button.clicked.connect(self.previous_patch)
        self.next_button.clicked.connect(self.next_patch)
        self.accept_button.clicked.connect(self.accept_patch)
        self.reviewed_label = QLabel("")

        form = QFormLayout()
        form.addRow("image", self.image_combo.native)
        form.addRow("labels to correct", self.labels_combo.native)
        form.addRow("uncertainty", self.uncertainty_combo.native)
        form.addRow("samples", self.samples_combo.native)
        form.addRow("patch (px)", self.patch_spin.native)
        nav = QHBoxLayout()
        for b in (self.prev_button, self.next_button, self.accept_button):
            nav.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        starts = QHBoxLayout()
        starts.addWidget(self.start_button)
        starts.addWidget(self.start_over_button)
        layout.addLayout(starts)
        layout.addWidget(self.session_label)
        layout.addWidget(self.queue_list)
        layout.addLayout(nav)
        layout.addWidget(self.reviewed_label)
        edit_tools, exports = self._build_tools(layout)
        self._build_retrain(layout)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        navigation = [self.prev_button, self.next_button, self.accept_button]
        self.action_buttons = edit_tools + exports + navigation
        # What a read-only session (open for writing in another process) cannot do.
        self.edit_buttons = edit_tools + [self.accept_button]
        self._select_defaults()
        self.store.changed.connect(self._store_changed)
        self._show_retrain_model()
        self._update_buttons()
        self.image_combo.changed.connect(lambda *_: self.uncertainty_combo.reset_choices())
        self.image_combo.changed.connect(self._resume_if_saved)
        self._resume_if_saved()

    # -- inputs -----------------------------------------------------------------------
    def _image_choices(self, _w=None):
        return image_layer_names(self.viewer)

    def _labels_choices(self, _w=None):
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Labels) and layer.data.ndim == 2
                and layer_role(layer) != "corrected"]

    def _uncertainty_choices(self, _w=None):
        # Never the image being proofread: offered first, it was the usual wrong pick.
        image = self.image_combo.value if hasattr(self, "image_combo") else None
        return [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.data.ndim == 2
                and not layer.rgb and layer.name != image]

    def _samples_choices(self, _w=None):
        return [_NONE] + [layer.name for layer in self.viewer.layers if isinstance(layer, Labels) and layer.data.ndim == 3]

    def reset_choices(self, *_) -> None:
        for combo in (self.image_combo, self.labels_combo, self.uncertainty_combo, self.samples_combo):
            combo.reset_choices()
        self._select_defaults()
        # napari calls this when layers come and go: the layers a saved session waits for may have arrived.
        self._resume_if_saved()

    def _select_defaults(self) -> None:
        # The newest segmentation, then the uncertainty and samples of the same
        # run, so that two models side by side are never mixed.
        roles = {"segmentation": self.labels_combo, "uncertainty": self.uncertainty_combo, "samples": self.samples_combo}
        segmentations = [layer for layer in self.viewer.layers
                         if layer_role(layer) == "segmentation" and layer.name in self.labels_combo.choices]
        run = layer_run(segmentations[-1]) if segmentations else None
        for layer in self.viewer.layers:
            combo = roles.get(layer_role(layer))
            if combo is None or layer.name not in combo.choices:
                continue
            if run is None or layer_run(layer) in (run, None):
                combo.value = layer.name
        images = self._image_choices()
        if images and self.image_combo.value is None:
            self.image_combo.value = images[0]

    @property
    def image_layer(self):
        return self.image_combo.value

    @image_layer.setter
    def image_layer(self, name):
        self.image_combo.value = name

    @property
    def labels_layer(self):
        return self.labels_combo.value

    @labels_layer.setter
    def labels_layer(self, name):
        self.labels_combo.value = name

    @property
    def uncertainty_layer(self):
        return self.uncertainty_combo.value

    @uncertainty_layer.setter
    def uncertainty_layer(self, name):
        self.uncertainty_combo.value = name

    @property
    def samples_layer(self):
        value = self.samples_combo.value
        return None if value in (None, _NONE) else value

    @samples_layer.setter
    def samples_layer(self, name):
        self.samples_combo.value = name or _NONE

    # -- the session ------------------------------------------------------------------
    def _resume_if_saved(self, *_) -> None:
        """Reopen the saved session of the chosen image with the layers it was made from, never with others."""
        if self.session is not None or self.image_layer not in self.viewer.layers:
            return
        image = self.viewer.layers[self.image_layer]
        try:
            info = saved_session_info(image_path_of(image))
        except SessionError as exc:
            self._set_status(str(exc), "warning")
            return
        if info is None:
            return
        inputs = info["inputs"]
        patch = inputs.get("patch")
        if isinstance(patch, int) and self.patch_spin.min <= patch <= self.patch_spin.max:
            self.patch_spin.value = patch  # the queue's patches, and so the review marks, depend on it
        if info["initial_labels_checksum"] is None:
            # Made by an older probseg, which kept no inputs: the user says which layers.
            if self.labels_layer is None or self.uncertainty_layer is None:
                self._set_status("a saved session exists for this image; choose the labels and uncertainty, "
                                 "then Start / resume")
                return
            self.start()
            return
        labels, uncertainty = self._matching_layers(info)
        if labels is not None:
            self.labels_layer = labels
        if uncertainty is not None:
            self.uncertainty_layer = uncertainty
        samples = (inputs.get("samples") or {}).get("layer")
        if samples in self.samples_combo.choices:
            self.samples_layer = samples
        if labels is not None and uncertainty is not None:
            self.start()
            return
        missing = []
        if labels is None:
            missing.append(f"the labels '{(inputs.get('labels') or {}).get('layer')}'")
        if uncertainty is None:
            missing.append(f"the uncertainty '{(inputs.get('uncertainty') or {}).get('layer')}'")
        self._set_status(
            f"a saved session of '{image.name}' ({info['n_edits']} edits, {info['n_reviewed']} reviewed patches) "
            f"continues from {' and '.join(missing)}, which {'are' if len(missing) > 1 else 'is'} not open here: open "
            f"{'them' if len(missing) > 1 else 'it'} (or layers with the same data) and press Start / resume, "
            "or Start over", "warning")

    def _matching_layers(self, info: dict) -> tuple[str | None, str | None]:
        """The open labels and uncertainty layers holding the data the saved session was made from."""
        layers = self.viewer.layers
        return matching_inputs(info, {name: layers[name].data for name in self._labels_choices()},
                               {name: layers[name].data for name in self._uncertainty_choices()},
                               layers[self.image_layer].data)

    def _layer(self, name, what: str):
        if name is None or name not in self.viewer.layers:
            raise InputError(f"choose {what} first")
        return self.viewer.layers[name]

    def start(self, start_over: bool = False) -> bool:
        """Open (or restore) the session of the chosen image and fill the queue; False on a problem.

        A saved session is resumed only with labels it started from (or its
        current labels), and any uncertainty must be one (float, 0..1).
        Another process editing the session gives a read-only view.
        """
        notes = []
        try:
            image = self._layer(self.image_layer, "an image layer")
            labels = self._layer(self.labels_layer, "the labels to correct")
            uncertainty = self._layer(self.uncertainty_layer, "an uncertainty layer")
            data = np.asarray(image.data)
            if data.ndim != 2:
                raise InputError(f"proofreading works on 2-D images; {image.name} is {data.shape}")
            initial = np.asarray(labels.data)
            unc = check_uncertainty(uncertainty.data, uncertainty.name, data)
            if initial.shape != data.shape or unc.shape != data.shape:
                raise InputError(f"image {data.shape}, labels {initial.shape} and uncertainty {unc.shape} must have one shape")
            path = image_path_of(image)
            inputs = session_inputs(image.name, labels.name, initial, uncertainty.name, unc, self.samples_layer,
                                    int(self.patch_spin.value))
            info = None if start_over else saved_session_info(path)
            labels_ok, uncertainty_ok = continues_from(info, inputs)
            if not labels_ok:
                was = (info["inputs"].get("labels") or {}).get("layer")
                raise InputError(
                    f"'{labels.name}' is not the labels the saved session of '{image.name}' continues from"
                    + (f" ('{was}')" if was else "") + "; choose those (or a layer with the same data), or press "
                    f"Start over to begin anew from '{labels.name}' (the saved session is kept aside)")
            if not uncertainty_ok:
                notes.append(f"'{uncertainty.name}' is not the uncertainty the session was made with, so the "
                             "queue may differ and some review marks may not show")
            if getattr(getattr(image, "source", None), "path", None) is None:
                path.parent.mkdir(parents=True, exist_ok=True)  # our own folder for images without a file
            session, queue, locked = open_for_review(path, data, initial, unc, inputs, start_over=start_over)
            if locked is not None:
                holder = locked.holder
                who = (f"process {holder['pid']} on {holder['host']}" if holder else "another program")
                notes.append(f"read-only: {who} has this session open for editing"
                             + (f" since {holder['since']}" if holder and holder.get("since") else "")
                             + "; close it there and press Start / resume to edit here")
        except ProbsegError as exc:
            self._fail(str(exc))
            return False
        old, self.session = self.session, session
        if old is not None and old is not session:
            old.close()  # a no-op when the new session took its lock over
        self.queue, self.position = queue, -1
        self._consensus = None
        self._show_corrected(image)
        self._fill_queue()
        restored = len(session.history)
        reviewed = navigator.count_reviewed(queue, session.reviewed)
        details = [f"{restored} edits" if restored else "", f"{reviewed} reviewed" if reviewed else "",
                   "read-only" if session.read_only else ""]
        details = ", ".join(d for d in details if d)
        self.session_label.setText(f"session: {session.folder}"
                                   + (f" (restored, {details})" if restored or reviewed else
                                      f" ({details})" if details else ""))
        message = f"{len(queue)} patches to review, most uncertain first; press Next"
        notes = list(session.notices) + notes
        if notes:
            self._warn("; ".join(notes + [message]))
        else:
            self._set_status(message)
        self._update_buttons()
        return True

    @property
    def corrected_layer(self) -> Labels | None:
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and layer_role(layer) == "corrected" and layer.metadata[OUTPUT_META_KEY].get("source") == self.image_layer:
                return layer
        return None

    def _show_corrected(self, image) -> None:
        layer = self.corrected_layer
        data = np.array(self.session.labels, copy=True)
        if layer is None:
            meta = {OUTPUT_META_KEY: {"role": "corrected", "source": image.name}}
            layer = self.viewer.add_labels(data, name=f"{image.name} corrected", scale=image.scale, translate=image.translate,
                                           metadata=meta, opacity=0.7)
            layer.events.paint.connect(self._painted)
            layer.events.selected_label.connect(self._label_picked)
        else:
            self._sync_layer(data)
        for name, kind in (("patch", "rectangle"), ("split line", "line")):
            full = f"{image.name} {name}"
            if full not in self.viewer.layers:
                shapes = self.viewer.add_shapes(name=full, scale=image.scale, translate=image.translate, edge_width=2,
                                                edge_color="yellow" if name == "patch" else "cyan", face_color="transparent")
                shapes.metadata[OUTPUT_META_KEY] = {"role": name, "source": image.name}
        layer.editable = not self.session.read_only  # paint that could not be saved would be lost
        self.viewer.layers.selection.active = layer

    def _sync_layer(self, data=None) -> None:
        layer = self.corrected_layer
        if layer is None:
            return
        self._syncing = True
        try:
            layer.data = np.array(self.session.labels if data is None else data, copy=True)
        finally:
            self._syncing = False

    # -- the queue --------------------------------------------------------------------
    def _fill_queue(self) -> None:
        self.queue_list.blockSignals(True)
        self.queue_list.clear()
        for i, entry in enumerate(self.queue):
            self.queue_list.addItem(self._item_text(i, entry))
        self.queue_list.blockSignals(False)
        self._show_reviewed()

    def _item_text(self, i, entry) -> str:
        mark = "✓ " if navigator.is_reviewed(entry, self._reviewed) else ""
        return f"{mark}#{i + 1}  score {entry.score:.3g}  ({len(entry.labels)} objects)"

    @property
    def _reviewed(self) -> frozenset:
        return self.session.reviewed if self.session is not None else frozenset()

    def _show_reviewed(self) -> None:
        k = navigator.count_reviewed(self.queue, self._reviewed)
        self.reviewed_label.setText(f"reviewed {k} of {len(self.queue)}")

    def _row_chosen(self, row: int) -> None:
        if 0 <= row < len(self.queue):
            self.go_to(row)

    def go_to(self, index: int) -> None:
        """Centre and zoom the camera on patch ``index`` and highlight its objects."""
        if not self.queue:
            self._warn("the queue is empty; press Start")
            return
        index = navigator.clamp(self.queue, index)
        self.position = index
        entry = self.queue[index]
        y0, x0, y1, x1 = entry.rect
        image = self.viewer.layers[self.image_layer]
        scale = np.asarray(image.scale[-2:])
        translate = np.asarray(image.translate[-2:])
        center = (np.array([(y0 + y1) / 2, (x0 + x1) / 2]) * scale + translate)
        camera = viewer_camera(self.viewer)
        camera.center = tuple(center)
        size = canvas_size(self.viewer)
        if size is not None:
            # The patch takes about 40 % of the view: its surroundings help to judge it.
            camera.zoom = 0.4 * min(size) / (max(y1 - y0, x1 - x0) * float(scale.max()))
        name = f"{self.image_layer} patch"
        if name in self.viewer.layers:  # the user may have deleted the frame layer
            patch = self.viewer.layers[name]
            patch.data = [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)]
            patch.shape_type = ["rectangle"]
        layer = self.corrected_layer
        if layer is not None and entry.labels:
            layer.selected_label = int(entry.labels[0])
        self.queue_list.blockSignals(True)
        self.queue_list.setCurrentRow(index)
        self.queue_list.blockSignals(False)
        self._set_status(f"patch {index + 1} of {len(self.queue)}: objects {', '.join(map(str, entry.labels)) or 'none'}")

    def next_patch(self) -> None:
        """The next patch not yet reviewed (most uncertain first)."""
        if not self.queue:
            self._warn("the queue is empty; press Start")
            return
        index, found = navigator.next_patch(self.queue, self.position, self._reviewed)
        self.go_to(index)
        if not found:
            self._set_status("no unreviewed patch after this one")

    def previous_patch(self) -> None:
        self.go_to(navigator.previous_patch(self.position))

    def accept_patch(self) -> None:
        """Mark the current patch reviewed (saved at once) and go to the next."""
        if self.session is None or not (0 <= self.position < len(self.queue)):
            self._warn("no patch selected; press Next")
            return
        try:
            self.session.mark_reviewed(navigator.patch_id(self.queue[self.position]))
        except ProbsegError as exc:
            self._fail(str(exc))
            return
        self.queue_list.item(self.position).setText(self._item_text(self.position, self.queue[self.position]))
        self._show_reviewed()
        self._update_buttons()
        self.next_patch()

    def _update_buttons(self) -> None:
        active = self.session is not None
        for b in self.action_buttons:
            b.setEnabled(active)
        if active:
            self.undo_button.setEnabled(self.session.can_undo)
            self.redo_button.setEnabled(self.session.can_redo)
            if self.session.read_only:
                for b in self.edit_buttons:
                    b.setEnabled(False)
        # While retraining, the labels must stay those it started from, or its result would undo new edits.
        busy = self.running
        for b in self.edit_buttons + [self.start_button, self.start_over_button]:
            if busy:
                b.setEnabled(False)
        layer = self.corrected_layer if active else None
        if layer is not None:
            layer.editable = not busy and not self.session.read_only
        can = active and not busy and not self.session.read_only and bool(self.session.reviewed)
        self.retrain_button.setEnabled(can)

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self._update_buttons()

