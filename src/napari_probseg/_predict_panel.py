"""The Predict widget's controls and the inputs they hold; the runs are in :mod:`predict_widget`."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, SpinBox
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from napari_probseg import _models
from napari_probseg import _predict_layers as layers
from napari_probseg._engine_widget import EngineWidget
from napari_probseg._layers import default_image, image_layer_names
from napari_probseg._objects_table import ObjectsTable
from probseg.core import bounds

NO_FOREGROUND = "(the model's own)"
FOREGROUND_TIP = ("where objects may be: a labels or image layer of the image's shape (e.g. another model's segmentation "
                  "or an ilastik probability map). Foreground is labels above 0, values of 0.5 and above in a map of 0..1, "
                  "other values above 0. Changing it after a run re-computes the result without the network")


class PredictPanel(EngineWidget):
    """The controls of :class:`~napari_probseg.predict_widget.PredictWidget`, laid out, and their values."""

    job_name = "prediction"

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(napari_viewer, store, parent)
        self.settings_form = None  # a ConfigForm of the chosen model's post-processing settings

        self.model_combo = ComboBox(choices=self._model_choices)
        self.model_combo.tooltip = "models trained in the Train widget or loaded from a folder"
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        load = QToolButton()
        load.setText("Load…")
        load.setToolTip("load a saved model folder")
        load.clicked.connect(self._load_clicked)
        self.load_button = load

        self.image_combo = ComboBox(choices=self._image_choices)
        self.foreground_combo = ComboBox(choices=self._foreground_choices, nullable=True)
        self.foreground_combo.null_string = NO_FOREGROUND
        self.foreground_combo.reset_choices()  # the null entry is named when choices are set
        self.foreground_combo.tooltip = FOREGROUND_TIP
        self.samples_spin = SpinBox(value=8, min=int(bounds.SAMPLES.low), max=int(bounds.SAMPLES.high))
        self.samples_spin.tooltip = "segmentations drawn from the model; their disagreement is the uncertainty"
        self.tile_spin = SpinBox(value=512, min=int(bounds.TILE_SIZE.low), max=int(bounds.TILE_SIZE.high), step=64)
        self.tile_spin.tooltip = "side of the windows the image is processed in; lower it if memory runs out"
        self.seed_spin = SpinBox(value=0, min=0, max=2**31 - 1)
        self.seed_spin.tooltip = "same seed, same samples"
        self.run_button = QPushButton("Run")

        # Post-processing: the form is generated from the model's settings
        # class; edits re-compute the layers from the kept raw output.
        self.settings_box = QVBoxLayout()
        self.settings_note = QLabel("post-processing settings; changing one re-computes the result without the network")
        self.settings_note.setWordWrap(True)
        self.labels_combo = ComboBox(choices=self._labels_choices, nullable=True)
        self.labels_combo.tooltip = "a labels layer of this image (e.g. corrected objects) to tune the settings on"
        self.tune_button = QPushButton("Tune on labels")
        self.tune_button.setToolTip("try the method's settings against the labels (the network runs once) and keep the best")
        self.objects_table = ObjectsTable()
        self._lay_out()
        self.image_combo.changed.connect(self._image_changed)

    def _lay_out(self) -> None:
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo.native, 1)
        model_row.addWidget(self.load_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        tune_row = QHBoxLayout()
        tune_row.addWidget(self.labels_combo.native, 1)
        tune_row.addWidget(self.tune_button)
        form = QFormLayout()
        form.addRow("model", model_row)
        form.addRow("", self.model_info)
        form.addRow("image", self.image_combo.native)
        # Not "foreground": a method may have a post-processing setting of that name.
        form.addRow("foreground mask", self.foreground_combo.native)
        form.addRow("samples", self.samples_spin.native)
        form.addRow("tile size (px)", self.tile_spin.native)
        form.addRow("seed", self.seed_spin.native)
        form.addRow("device", self.device)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.settings_note)
        layout.addLayout(self.settings_box)
        tune_form = QFormLayout()
        tune_form.addRow("labels", tune_row)
        layout.addLayout(tune_form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.objects_table, 1)
        layout.addStretch(1)

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

    @property
    def foreground_layer(self) -> str | None:
        """Name of the layer whose foreground confines the objects, or None for the model's own."""
        return self.foreground_combo.value

    @foreground_layer.setter
    def foreground_layer(self, name: str | None) -> None:
        self.foreground_combo.value = name

    @property
    def labels_layer(self) -> str | None:
        """Name of the labels layer to tune on, or None."""
        return self.labels_combo.value

    @labels_layer.setter
    def labels_layer(self, name: str | None) -> None:
        self.labels_combo.value = name

    @property
    def settings(self) -> dict:
        """The post-processing settings in the form."""
        return self.settings_form.values() if self.settings_form is not None else {}

    def _chosen_model_key(self) -> str | None:
        name = self.model_name
        if name is None or name not in self.store:
            return None
        entry = self.store.entry(name)
        return layers.model_key(entry.folder, entry.name)

    def _image_shape(self, name: str) -> tuple:
        return layers.image_shape(self.viewer.layers[name])

    def _foreground_mask(self, shape: tuple) -> np.ndarray | None:
        """The chosen foreground layer as a mask checked against ``shape``, or None for the model's own."""
        return layers.foreground_mask(self.viewer, self.foreground_layer, shape)

    def _load_clicked(self) -> None:
        self.load_model()

    # -- layer and model lists --------------------------------------------------------
    def _labels_choices(self, _widget=None) -> list[str]:
        return layers.labels_choices(self.viewer, self.image_layer)

    def _foreground_choices(self, _widget=None) -> list[str]:
        return layers.foreground_choices(self.viewer, self.image_layer, self._chosen_model_key())

    def _model_choices(self, _widget=None) -> list[str]:
        return self.store.names()

    def _image_choices(self, _widget=None) -> list[str]:
        return image_layer_names(self.viewer)

    def reset_choices(self, *_) -> None:
        """Refresh the image list, keeping the selection where possible."""
        had_image = self.image_layer is not None
        self.image_combo.reset_choices()
        self.labels_combo.reset_choices()
        self.foreground_combo.reset_choices()
        if not had_image and (pick := default_image(self.viewer)) is not None:
            self.image_layer = pick

    def _image_changed(self, *_) -> None:
        self.foreground_combo.reset_choices()
        self.labels_combo.reset_choices()
