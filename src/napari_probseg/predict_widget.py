"""The Predict widget: segment an image layer with a trained model and show the samples.

Results go to five layers named after the image ("<image> segmentation",
"... samples", "... embeddings", "... uncertainty", "... probability"). Running again updates
those layers in place, so the layer list does not fill up and any display
settings the user chose on them stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import ComboBox, SpinBox
from napari.layers import Image, Labels
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from napari_probseg import _models
from napari_probseg._engine_widget import EngineWidget, JobMonitor, Outcome, run_engine
from napari_probseg._layers import OUTPUT_META_KEY, default_image, image_arrays, image_layer_names
from probseg import api
from probseg.device import resolve_device
from probseg.errors import Cancelled, InputError, ProbsegError
from probseg.visualize import embeddings_to_rgb

ROLES = ("segmentation", "samples", "embeddings", "uncertainty", "probability")


@dataclass
class PredictJob:
    """Everything an inference run needs, gathered on the GUI thread."""

    model: object
    model_name: str
    folder: object
    image: object
    rgb: bool
    image_name: str
    n_samples: int
    seed: int
    device: str
    tile_size: int


@dataclass
class PredictResult:
    """The engine's prediction plus the embeddings as colours, ready for layers."""

    prediction: object
    embeddings_rgb: np.ndarray
    cancelled: bool = False


def _predict_job(job: PredictJob, monitor: JobMonitor) -> Outcome:
    return run_engine(_predict, job, monitor)


def _predict(job: PredictJob, monitor: JobMonitor) -> PredictResult:
    try:
        model = job.model
        if resolve_device(job.device) != model.device:
            if job.folder is None:
                raise InputError(f"this model exists only in memory on {model.device}; choose that device")
            # A reload is how a saved model moves between devices; the copy in
            # the store stays where it was for other runs.
            model = api.load_model(job.folder, device=job.device)
        model.tile_size = job.tile_size
        pred = model.predict(
            np.asarray(job.image), n_samples=job.n_samples, seed=job.seed, rgb=job.rgb,
            callbacks=monitor.callbacks(),
        )
        emb = pred.embeddings
        rgb = np.stack([embeddings_to_rgb(e) for e in emb]) if emb.ndim == 4 else embeddings_to_rgb(emb)
        return PredictResult(pred, rgb)
    except Cancelled:
        return PredictResult(None, None, cancelled=True)


class PredictWidget(EngineWidget):
    """Segment an image layer with a model from the shared store.

    Programmatic use (tests, scripts)::

        w = PredictWidget(viewer)
        w.model_name = "cellulus @ nuclei"
        w.image_layer = "nuclei"
        w.n_samples = 8
        w.run()            # returns the worker; w.running until it is done
        w.output_layers    # {"segmentation": Labels, "samples": Labels, ...}
        w.prediction       # the engine's Prediction

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    store : ModelStore, optional
        Where the models come from; the session-wide store by default.
    """

    job_name = "prediction"

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, store, parent)
        self.prediction = None
        self._job: PredictJob | None = None

        self.model_combo = ComboBox(choices=self._model_choices)
        self.model_combo.tooltip = "models trained in the Train widget or loaded from a folder"
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        load = QToolButton()
        load.setText("Load…")
        load.setToolTip("load a saved model folder")
        load.clicked.connect(self._load_clicked)
        self.load_button = load
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo.native, 1)
        model_row.addWidget(load)

        self.image_combo = ComboBox(choices=self._image_choices)
        self.samples_spin = SpinBox(value=8, min=1, max=256)
        self.samples_spin.tooltip = "segmentations drawn from the model; their disagreement is the uncertainty"
        self.tile_spin = SpinBox(value=512, min=64, max=8192, step=64)
        self.tile_spin.tooltip = "side of the windows the image is processed in; lower it if memory runs out"
        self.seed_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.seed_spin.tooltip = "same seed, same samples"

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        form = QFormLayout()
        form.addRow("model", model_row)
        form.addRow("", self.model_info)
        form.addRow("image", self.image_combo.native)
        form.addRow("samples", self.samples_spin.native)
        form.addRow("tile size (px)", self.tile_spin.native)
        form.addRow("seed", self.seed_spin.native)
        form.addRow("device", self.device)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.model_combo.changed.connect(self._model_changed)
        self.store.changed.connect(self._store_changed)
        self._model_changed()
        if (pick := default_image(self.viewer)) is not None:
            self.image_layer = pick

    # -- inputs -----------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """Name of the chosen model in the store, or None."""
        return self.model_combo.value

    @model_name.setter
    def model_name(self, name: str) -> None:
        self.model_combo.value = name

    @property
    def image_layer(self) -> str | None:
        """Name of the image layer to segment."""
        return self.image_combo.value

    @image_layer.setter
    def image_layer(self, name: str) -> None:
        self.image_combo.value = name

    @property
    def n_samples(self) -> int:
        return int(self.samples_spin.value)

    @n_samples.setter
    def n_samples(self, n: int) -> None:
        self.samples_spin.value = int(n)

    @property
    def tile_size(self) -> int:
        return int(self.tile_spin.value)

    @tile_size.setter
    def tile_size(self, px: int) -> None:
        self.tile_spin.value = int(px)

    @property
    def seed(self) -> int:
        return int(self.seed_spin.value)

    @seed.setter
    def seed(self, value: int) -> None:
        self.seed_spin.value = int(value)

    def _model_choices(self, _widget=None) -> list[str]:
        return self.store.names()

    def _image_choices(self, _widget=None) -> list[str]:
        return image_layer_names(self.viewer)

    def reset_choices(self, *_) -> None:
        """Refresh the image list, keeping the selection where possible."""
        had_image = self.image_layer is not None
        self.image_combo.reset_choices()
        if not had_image and (pick := default_image(self.viewer)) is not None:
            self.image_layer = pick

    def _store_changed(self, name: str) -> None:
        try:
            self.model_combo.reset_choices()
        except RuntimeError:
            # The Qt side of this widget is gone (viewer closed); stop listening.
            self.store.changed.disconnect(self._store_changed)
            return
        if name in self.store:
            self.model_combo.value = name  # a new model is most likely the one wanted next
        self._model_changed()

    def _model_changed(self, *_) -> None:
        name = self.model_name
        if name is None or name not in self.store:
            self.model_info.setText("no model yet: train one in the Train widget or load a model folder")
            return
        entry = self.store.entry(name)
        self.model_info.setText(entry.describe())
        self.tile_size = entry.model.tile_size

    def _load_clicked(self) -> None:
        self.load_model()

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self.run_button.setEnabled(not running)

    # -- running ----------------------------------------------------------------------
    def run(self):
        """Check the inputs and start inference; returns the worker, or None if an input is wrong.

        Problems are shown in the status line and as a notification, never raised.
        """
        if self.running:
            self._warn("a prediction is already running; cancel it first")
            return None
        try:
            job = self._gather()
        except ProbsegError as exc:
            self._fail(str(exc))
            return None
        self._job = job
        self._set_status(f"segmenting {job.image_name} with {job.n_samples} sample(s)…")
        return self.start_job(_predict_job, job, on_result=self._on_predicted)

    def _gather(self) -> PredictJob:
        name = self.model_name
        if name is None or name not in self.store:
            raise InputError("no model: train one in the Train widget or load a model folder")
        image_name = self.image_layer
        if image_name is None:
            raise InputError("no image layer: open an image (e.g. File > Open Sample > probseg) and select it")
        if image_name not in self.viewer.layers:
            raise InputError(f"layer {image_name!r} no longer exists")
        data, rgb = image_arrays(self.viewer.layers[image_name])
        entry = self.store.entry(name)
        device = self.device.check()
        return PredictJob(
            entry.model, name, entry.folder, data, rgb, image_name, self.n_samples, self.seed, device, self.tile_size
        )

    def _on_predicted(self, outcome: Outcome) -> None:
        if outcome.error:
            self._fail(outcome.error)
            return
        result: PredictResult = outcome.value
        if result.cancelled:
            self._set_status("cancelled; the result layers were left as they were", "warning")
            return
        job = self._job
        if job.image_name not in self.viewer.layers:
            self._fail(f"layer {job.image_name!r} was removed while it was being segmented")
            return
        self.prediction = result.prediction
        self._show_layers(self.viewer.layers[job.image_name], result)
        n_objects = int(result.prediction.segmentation.max())
        notice = f" ({result.prediction.notice})" if result.prediction.notice else ""
        self._set_status(
            f"{n_objects} objects in {job.image_name}{notice}; samples, embeddings, uncertainty and probability "
            "are in hidden layers (eye icons in the layer list)"
        )

    # -- output layers ----------------------------------------------------------------
    @property
    def output_layers(self) -> dict:
        """This widget's layers for the current image, by role (missing roles left out)."""
        name = self.image_layer if self._job is None else self._job.image_name
        return {role: layer for role in ROLES if (layer := self._find_layer(name, role)) is not None}

    def _find_layer(self, source: str, role: str):
        for layer in self.viewer.layers:
            meta = layer.metadata.get(OUTPUT_META_KEY)
            if isinstance(meta, dict) and meta.get("source") == source and meta.get("role") == role:
                return layer
        return None

    def _show_layers(self, image, result: PredictResult) -> None:
        pred = result.prediction
        # RGB layers leave the colour axis out of scale, so this fits every output.
        scale, translate = tuple(image.scale), tuple(image.translate)
        extra = {"model": self._job.model_name, "n_samples": int(pred.samples.shape[0])}
        # Added bottom to top: the segmentation ends up above the hidden extras.
        specs = {
            "embeddings": (Image, result.embeddings_rgb, dict(rgb=True, visible=False)),
            "probability": (Image, pred.probability, dict(colormap="viridis", contrast_limits=(0.0, 1.0), visible=False)),
            "uncertainty": (Image, pred.uncertainty, dict(colormap="magma", contrast_limits=(0.0, 1.0), visible=False)),
            "samples": (Labels, pred.samples, dict(visible=False, opacity=0.6)),
            "segmentation": (Labels, pred.segmentation, dict(opacity=0.6)),
        }
        for role, (kind, data, style) in specs.items():
            lead = data.ndim - len(scale) - (1 if role == "embeddings" else 0)
            layer_scale = (1.0,) * lead + scale
            layer_translate = (0.0,) * lead + translate
            meta = {"role": role, "source": image.name, **extra}
            layer = self._find_layer(image.name, role)
            if layer is not None and isinstance(layer, kind) and layer.data.ndim == data.ndim:
                layer.data = data
                layer.scale, layer.translate = layer_scale, layer_translate
                layer.metadata[OUTPUT_META_KEY] = meta
                if role == "embeddings":
                    layer.metadata["embeddings"] = pred.embeddings
                if role in ("uncertainty", "probability"):
                    layer.contrast_limits = (0.0, 1.0)
                continue
            if layer is not None:
                # Ours (marked in metadata) but of another dimensionality:
                # replacing it is the only way to show the new result.
                self.viewer.layers.remove(layer)
            metadata = {OUTPUT_META_KEY: meta}
            if role == "embeddings":
                metadata["embeddings"] = pred.embeddings
            add = self.viewer.add_labels if kind is Labels else self.viewer.add_image
            add(data, name=f"{image.name} {role}", scale=layer_scale, translate=layer_translate, metadata=metadata, **style)
