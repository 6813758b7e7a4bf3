"""The Proofread widget: walk the most uncertain patches first and fix them, losing nothing.

A session (see :mod:`probseg.proofreading.session`) holds the corrected labels
and a log of every edit, written to disk on every edit, undo and review mark;
opening the same image again brings it back. The queue ranks patches by the
uncertainty inside them. Edits are merge, split along a drawn line, split by
re-running the consensus inside the patch (when samples are given), delete,
and napari's own paint and fill tools on the corrected layer.

A session remembers the layers it was made from (names, and checksums of the
labels and the uncertainty) and its patch size. When the image is opened
again, the widget picks the layers with that data and resumes; it never
guesses other layers, and refuses labels the session did not start from and
an intensity image as the uncertainty.

"Train from reviewed objects" closes the loop (see
:mod:`probseg.proofreading.retrain`): the objects of the reviewed patches
train SPOCO (the newest SPOCO model of the shared model store is fine-tuned,
else SPOCO starts from scratch) on a worker thread, the image is predicted
again, and the new labels, with every reviewed object exactly as corrected,
become one undoable edit; the queue is ranked by the new uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, SpinBox
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_probseg import _models
from napari_probseg._engine_widget import EngineWidget, JobMonitor, Outcome, format_seconds, run_engine
from napari_probseg._layers import OUTPUT_META_KEY, canvas_size, image_layer_names, layer_role, layer_run, viewer_camera
from probseg.core import bounds
from probseg.core.errors import Cancelled, InputError, ProbsegError
from probseg.proofreading import edits
from probseg.proofreading.retrain import FINE_TUNE_STEPS, reranked_queue, retrain_from_review
from probseg.proofreading.session import (
    Session,
    SessionError,
    SessionLocked,
    image_checksum,
    labels_checksum,
    saved_session_info,
)

#: Where sessions of images that were not opened from a file are kept.
SESSIONS_HOME = Path("~/probseg-sessions")
_NONE = "(none)"
#: Layer role of the uncertainty of the model retrained on the reviewed objects.
RETRAINED_ROLE = "retrained uncertainty"
#: How far above 1 an uncertainty may go: float32 rounding of a map clipped at 1.
_UNCERTAINTY_SLACK = 1e-5
_WHAT_UNCERTAINTY_IS = ("a probseg uncertainty is float between 0 and 1: the Predict widget's '<image> uncertainty' "
                        "layer, or the file of probseg segment --uncertainty-out")


def check_uncertainty(data, name: str, image=None) -> np.ndarray:
    """An uncertainty layer's data as float32, refusing what cannot be one (an intensity image).

    Parameters
    ----------
    data : array_like
        The layer's data.
    name : str
        The layer's name, for the message.
    image : array_like, optional
        The image being proofread; a layer holding the same data is refused.

    Returns
    -------
    ndarray of float32

    Raises
    ------
    InputError
        If the data are not floating point, not finite, or outside 0..1, or
        are the image itself.
    """
    array = np.asarray(data)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"'{name}' cannot be the uncertainty: it holds {array.dtype} values; {_WHAT_UNCERTAINTY_IS}")
    if array.size and not np.isfinite(array).all():
        raise InputError(f"'{name}' cannot be the uncertainty: it holds NaN or infinite values; {_WHAT_UNCERTAINTY_IS}")
    if array.size:
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1 + _UNCERTAINTY_SLACK:
            raise InputError(f"'{name}' cannot be the uncertainty: its values run from {low:.4g} to {high:.4g}; "
                             f"{_WHAT_UNCERTAINTY_IS}")
    if image is not None and np.shape(image) == array.shape and np.array_equal(np.asarray(image), array):
        raise InputError(f"'{name}' holds the image itself, not its uncertainty; {_WHAT_UNCERTAINTY_IS}")
    return array.astype(np.float32, copy=False)


def _uncertainty_checksum(data) -> str | None:
    array = np.asarray(data)
    return image_checksum(array.astype(np.float32, copy=False)) if np.issubdtype(array.dtype, np.floating) else None


@dataclass
class RetrainJob:
    """What retraining needs, gathered on the GUI thread; the labels and mask are copies."""

    session: Session
    image_name: str
    image: np.ndarray
    labels: np.ndarray
    checksum: str
    mask: np.ndarray
    reviewed: tuple
    model: object
    model_name: str | None
    steps: int
    device: str
    patch: int


def _retrain_job(job: RetrainJob, monitor: JobMonitor) -> Outcome:
    def retrain():
        try:
            return retrain_from_review(job.image, job.labels, job.mask, job.model, steps=job.steps, device=job.device,
                                       callbacks=monitor.callbacks(), patch=job.patch, reviewed_patches=job.reviewed)
        except Cancelled:
            return None  # nothing to apply; the widget says so

    return run_engine(retrain)


def _n_objects(labels) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def image_path_of(layer, home: Path | None = None) -> Path:
    """The file a session folder is placed beside: the layer's source, or a name under SESSIONS_HOME."""
    source = getattr(getattr(layer, "source", None), "path", None)
    if source:
        return Path(source)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in layer.name) or "image"
    return Path(home or SESSIONS_HOME).expanduser() / safe


class ProofreadWidget(EngineWidget):
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
        Where retraining finds the SPOCO model to fine-tune and puts the new
        one; the session-wide store by default.
    """

    job_name = "retraining"

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, store, parent)
        self.session: Session | None = None
        self.queue: list = []
        self.position = -1
        self._consensus = None
        self._syncing = False
        self._retrain: RetrainJob | None = None
        self._steps_chosen = False  # the user set the steps: keep them when the model store changes
        self._setting_steps = False

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
        self.retrain_button = QPushButton("Train from reviewed objects")
        self.retrain_button.setToolTip(
            "the objects of the reviewed patches become SPOCO training labels (0 in a reviewed patch is background, "
            "everything outside them unlabelled); the newest SPOCO model is fine-tuned (else SPOCO is trained from "
            "scratch), the image predicted again, your edits kept exactly, and the queue re-ranked by the new "
            "uncertainty. One undoable edit; Cancel changes nothing")
        self.retrain_button.clicked.connect(lambda: self.retrain())
        self.retrain_steps = SpinBox(value=FINE_TUNE_STEPS, min=1, max=1_000_000)
        self.retrain_steps.tooltip = (f"training steps: {FINE_TUNE_STEPS} when fine-tuning a SPOCO model, SPOCO's "
                                      f"default ({self._scratch_steps()}) when training from scratch")
        self.retrain_steps.changed.connect(self._steps_edited)
        self.retrain_from = QLabel("")
        self.retrain_from.setWordWrap(True)
        self.action_buttons = [merge_button, delete_button, split_button, resegment_button, self.undo_button,
                               self.redo_button, export_button, export_reviewed_button, self.prev_button,
                               self.next_button, self.accept_button]
        # What a read-only session (open for writing in another process) cannot do.
        self.edit_buttons = [merge_button, delete_button, split_button, resegment_button, self.undo_button,
                             self.redo_button, self.accept_button]

        form = QFormLayout()
        form.addRow("image", self.image_combo.native)
        form.addRow("labels to correct", self.labels_combo.native)
        form.addRow("uncertainty", self.uncertainty_combo.native)
        form.addRow("samples", self.samples_combo.native)
        form.addRow("patch (px)", self.patch_spin.native)
        nav = QHBoxLayout()
        for b in (self.prev_button, self.next_button, self.accept_button):
            nav.addWidget(b)
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
        layout.addLayout(pick)
        layout.addLayout(acts)
        layout.addLayout(hist)
        loop = QFormLayout()
        loop.addRow("retrain steps", self.retrain_steps.native)
        loop.addRow("device", self.device)
        layout.addLayout(loop)
        layout.addWidget(self.retrain_from)
        runs = QHBoxLayout()
        runs.addWidget(self.retrain_button)
        runs.addWidget(self.cancel_button)
        layout.addLayout(runs)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
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
        inputs = info["inputs"]
        labels_input = inputs.get("labels") or {}
        wanted = {info["initial_labels_checksum"], info["labels_checksum"]}
        labels = None
        # The recorded name first: of two layers with the same data, pick the one the session used.
        for name in sorted(self._labels_choices(), key=lambda n: n != labels_input.get("layer")):
            if labels_checksum(self.viewer.layers[name].data) in wanted:
                labels = name
                break
        unc_input = inputs.get("uncertainty") or {}
        uncertainty = None
        names = sorted(self._uncertainty_choices(), key=lambda n: n != unc_input.get("layer"))
        for name in names:
            if unc_input.get("checksum") and _uncertainty_checksum(self.viewer.layers[name].data) == unc_input["checksum"]:
                uncertainty = name
                break
        else:
            # Predict again gives a new uncertainty under the same name; take it if it is one.
            name = unc_input.get("layer")
            if name in names:
                try:
                    check_uncertainty(self.viewer.layers[name].data, name, self.viewer.layers[self.image_layer].data)
                    uncertainty = name
                except InputError:
                    pass
        return labels, uncertainty

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
            inputs = {
                "image": {"layer": image.name},
                "labels": {"layer": labels.name, "checksum": labels_checksum(initial)},
                "uncertainty": {"layer": uncertainty.name, "checksum": image_checksum(unc)},
                "samples": {"layer": self.samples_layer} if self.samples_layer else None,
                "patch": int(self.patch_spin.value),
            }
            info = None if start_over else saved_session_info(path)
            if info is not None and info["initial_labels_checksum"] is not None:
                recorded = info["inputs"]
                if inputs["labels"]["checksum"] not in (info["initial_labels_checksum"], info["labels_checksum"]):
                    was = (recorded.get("labels") or {}).get("layer")
                    raise InputError(
                        f"'{labels.name}' is not the labels the saved session of '{image.name}' continues from"
                        + (f" ('{was}')" if was else "") + "; choose those (or a layer with the same data), or press "
                        f"Start over to begin anew from '{labels.name}' (the saved session is kept aside)")
                if (recorded.get("uncertainty") or {}).get("checksum") not in (None, inputs["uncertainty"]["checksum"]):
                    notes.append(f"'{uncertainty.name}' is not the uncertainty the session was made with, so the "
                                 "queue may differ and some review marks may not show")
            if getattr(getattr(image, "source", None), "path", None) is None:
                path.parent.mkdir(parents=True, exist_ok=True)  # our own folder for images without a file
            try:
                session = Session.open(path, data, initial_labels=initial, start_over=start_over, inputs=inputs)
            except SessionLocked as exc:
                session = Session.open(path, data, read_only=True)
                holder = exc.holder
                who = (f"process {holder['pid']} on {holder['host']}" if holder else "another program")
                notes.append(f"read-only: {who} has this session open for editing"
                             + (f" since {holder['since']}" if holder and holder.get("since") else "")
                             + "; close it there and press Start / resume to edit here")
            if not session.read_only and session.inputs != inputs:
                session.set_inputs(inputs)  # e.g. renamed layers, a new patch size, or a session of older probseg
            # Reviewed patches stay listed (and marked) even where they came from a queue since re-ranked.
            queue = reranked_queue(unc, session.labels, session.reviewed, patch=int(self.patch_spin.value))
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
        reviewed = sum(self._is_reviewed(entry) for entry in queue)
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

    # -- the queue --------------------------------------------------------------------
    def _fill_queue(self) -> None:
        self.queue_list.blockSignals(True)
        self.queue_list.clear()
        for i, entry in enumerate(self.queue):
            self.queue_list.addItem(self._item_text(i, entry))
        self.queue_list.blockSignals(False)
        self._show_reviewed()

    def _item_text(self, i, entry) -> str:
        mark = "✓ " if self._is_reviewed(entry) else ""
        return f"{mark}#{i + 1}  score {entry.score:.3g}  ({len(entry.labels)} objects)"

    def _is_reviewed(self, entry) -> bool:
        # Patches are known by their rectangle, which stays valid if the queue is rebuilt.
        return self.session is not None and tuple(int(v) for v in entry.rect) in self.session.reviewed

    def _show_reviewed(self) -> None:
        k = sum(self._is_reviewed(entry) for entry in self.queue)
        self.reviewed_label.setText(f"reviewed {k} of {len(self.queue)}")

    def _row_chosen(self, row: int) -> None:
        if 0 <= row < len(self.queue):
            self.go_to(row)

    def go_to(self, index: int) -> None:
        """Centre and zoom the camera on patch ``index`` and highlight its objects."""
        if not self.queue:
            self._warn("the queue is empty; press Start")
            return
        index = max(0, min(len(self.queue) - 1, int(index)))
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
        for i in range(self.position + 1, len(self.queue)):
            if not self._is_reviewed(self.queue[i]):
                self.go_to(i)
                return
        self.go_to(min(self.position + 1, len(self.queue) - 1))
        self._set_status("no unreviewed patch after this one")

    def previous_patch(self) -> None:
        self.go_to(max(0, self.position - 1))

    def accept_patch(self) -> None:
        """Mark the current patch reviewed (saved at once) and go to the next."""
        if self.session is None or not (0 <= self.position < len(self.queue)):
            self._warn("no patch selected; press Next")
            return
        try:
            self.session.mark_reviewed(tuple(int(v) for v in self.queue[self.position].rect))
        except ProbsegError as exc:
            self._fail(str(exc))
            return
        self.queue_list.item(self.position).setText(self._item_text(self.position, self.queue[self.position]))
        self._show_reviewed()
        self._update_buttons()
        self.next_patch()

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
        obj = _object_under_line(labels, p0, p1)
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

    # -- retraining -------------------------------------------------------------------
    @staticmethod
    def _scratch_steps() -> int:
        from probseg.engine import api

        return int(api.make_config("spoco").steps)

    def current_spoco_model(self) -> tuple[str | None, object]:
        """``(name, model)`` of the newest SPOCO model with weights in the model store, or ``(None, None)``."""
        for name in reversed(self.store.names()):
            model = self.store.get(name)
            if getattr(model, "method", None) == "spoco" and getattr(model, "net", None) is not None:
                return name, model
        return None, None

    def _steps_edited(self, *_) -> None:
        if not self._setting_steps:
            self._steps_chosen = True

    def _store_changed(self, name: str) -> None:
        try:
            self._show_retrain_model()
        except RuntimeError:
            # The Qt side of this widget is gone (viewer closed); stop listening.
            self.store.changed.disconnect(self._store_changed)

    def _show_retrain_model(self) -> None:
        name, _ = self.current_spoco_model()
        if name is None:
            self.retrain_from.setText("no SPOCO model loaded: Train from reviewed objects trains SPOCO from scratch")
        else:
            self.retrain_from.setText(f"Train from reviewed objects fine-tunes '{name}'")
        if not self._steps_chosen:
            self._setting_steps = True
            try:
                self.retrain_steps.value = FINE_TUNE_STEPS if name is not None else self._scratch_steps()
            finally:
                self._setting_steps = False

    def retrain(self):
        """Train SPOCO on the reviewed objects in the background; returns the worker, or None on a problem.

        Problems are shown in the status line and as a notification, never
        raised. When the job finishes the new labels are one edit (undo
        reverts them); a cancel or an error changes nothing.
        """
        if self.running:
            self._warn("retraining is already running; cancel it first")
            return None
        if self.session is None:
            self._warn("press Start first")
            return None
        try:
            if self.session.read_only:
                raise InputError("this session is open read-only; retraining would change its labels")
            image = self._layer(self.image_layer, "an image layer")
            mask = self.session.reviewed_mask()
            device = self.device.check()
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        name, model = self.current_spoco_model()
        job = RetrainJob(self.session, image.name, np.asarray(image.data), np.array(self.session.labels, copy=True),
                         self.session.labels_checksum, mask, tuple(self.session.reviewed), model, name,
                         int(self.retrain_steps.value), device, int(self.patch_spin.value))
        self._retrain = job
        how = f"fine-tuning '{name}'" if name is not None else "training SPOCO from scratch"
        self._set_status(f"{how} on the objects of {len(job.reviewed)} reviewed patches, {job.steps} steps…")
        return self.start_job(_retrain_job, job, on_result=self._on_retrained)

    def _on_retrained(self, outcome: Outcome) -> None:
        job, self._retrain = self._retrain, None
        if outcome.error:
            self._fail(f"retraining failed, nothing was changed: {outcome.error}")
            return
        result = outcome.value
        # A Cancel pressed after the last step still means: change nothing.
        if result is None or (self._monitor is not None and self._monitor.stop_requested):
            self._warn("retraining cancelled; nothing was changed")
            return
        session = self.session
        if session is not job.session or session.closed or session.labels_checksum != job.checksum:
            self._fail("the session or its labels changed while retraining; nothing was applied")
            return
        log = result.model.train_log
        params = {"source": "retrain", "model": job.model_name, "fine_tuned": result.fine_tuned,
                  "steps": int(log.get("steps_done", 0)), "kept": len(result.kept)}
        try:
            session.commit_external(result.labels, kind="replace", params=params)
        except ProbsegError as exc:
            self._fail(f"retraining finished but its labels could not be saved, nothing was changed: {exc}")
            return
        self._sync_layer()
        self._show_uncertainty(job.image_name, result.uncertainty)
        model_name = self.store.add(f"spoco retrained on {job.image_name}", result.model)
        self.queue, self.position = result.queue, -1
        self._fill_queue()
        self._update_buttons()
        how = "fine-tuned" if result.fine_tuned else "trained from scratch"
        self._set_status(
            f"{how} for {params['steps']} steps and predicted again ({format_seconds(result.seconds)} in all): "
            f"{_n_objects(job.labels)} objects before, {_n_objects(result.labels)} after, the {len(result.kept)} "
            f"reviewed ones kept as corrected; {len(self.queue)} patches re-ranked; model '{model_name}' is in "
            "Predict; Undo reverts the labels")

    def _show_uncertainty(self, image_name: str, uncertainty: np.ndarray) -> None:
        """Add or replace the layer of the retrained model's uncertainty, which ranks the queue now.

        Its role is not "uncertainty", so the uncertainty box keeps the
        layer the session was made from, which it resumes with.
        """
        for layer in self.viewer.layers:
            meta = layer.metadata.get(OUTPUT_META_KEY)
            if isinstance(layer, Image) and layer_role(layer) == RETRAINED_ROLE and meta.get("source") == image_name:
                layer.data = uncertainty
                layer.contrast_limits = (0.0, 1.0)
                return
        image = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
        place = dict(scale=image.scale, translate=image.translate) if image is not None else {}
        meta = {OUTPUT_META_KEY: {"role": RETRAINED_ROLE, "source": image_name}}
        self.viewer.add_image(uncertainty, name=f"{image_name} retrained uncertainty", colormap="magma",
                              contrast_limits=(0.0, 1.0), visible=False, metadata=meta, **place)


def _object_under_line(labels: np.ndarray, p0, p1) -> int:
    """The object the segment p0-p1 crosses most (0 if none)."""
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) * 2 + 2
    ys = np.clip(np.rint(np.linspace(p0[0], p1[0], n)).astype(int), 0, labels.shape[0] - 1)
    xs = np.clip(np.rint(np.linspace(p0[1], p1[1], n)).astype(int), 0, labels.shape[1] - 1)
    values = labels[ys, xs]
    values = values[values > 0]
    return int(np.bincount(values).argmax()) if values.size else 0
