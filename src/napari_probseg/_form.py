"""A settings form generated from a method's Config dataclass.

Every field's widget, label, tooltip and bounds come from
:func:`probseg.core.config.fields_of`, so a hyperparameter added to the engine
appears here without touching the plugin.
"""

from __future__ import annotations

import math
import re

from magicgui.widgets import CheckBox, ComboBox, FloatSlider, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from probseg.core.config import FieldSpec, fields_of
from probseg.core.errors import InputError

# Shown first because they are the settings most users change.
PROMINENT = ("object_size", "steps")

_INT_LIMIT = 2**31 - 1  # QSpinBox holds a C int
_FLOAT_LIMIT = 1e9


def _needs_text_entry(spec: FieldSpec) -> bool:
    """True for floats spanning decades (learning rates, weights) that a spin box would round."""
    tiny_default = spec.default != 0 and abs(spec.default) < 1e-2
    tiny_minimum = spec.minimum is not None and 0 < spec.minimum < 1e-3
    return tiny_default or tiny_minimum


def _float_step(spec: FieldSpec) -> float:
    """A tenth of the default's order of magnitude: 24 -> 1, 0.1 -> 0.01, 0 -> 0.1."""
    magnitude = abs(spec.default) if spec.default else 1.0
    return 10.0 ** math.floor(math.log10(magnitude)) / 10


def _format_float(value: float) -> str:
    return f"{float(value):g}"


# "...; -1: none", "...; 0: 0.3 of the object size", "...; 0 means a tenth of ...":
# what the field's lowest value stands for.
_SPECIAL = re.compile(r"(?:^|;\s*)(-?\d+(?:\.\d+)?)(?::| means)\s+([^;]+?)\s*$")


def special_value_text(spec: FieldSpec) -> str | None:
    """What the lowest value of a number field means, from its doc (``-1: none`` gives ``none``), or None."""
    if spec.minimum is None or spec.choices or spec.type not in (int, float):
        return None
    match = _SPECIAL.search(spec.doc)
    if match is None or float(match.group(1)) != float(spec.minimum):
        return None
    return match.group(2)


def _slider(spec: FieldSpec) -> FloatSlider:
    """A slider with a readout over the field's bounds, in steps of a hundredth of the range.

    Dragging it emits a change for every step; the widgets that re-compute on
    a change coalesce them (the Predict widget's debounce timer).
    """
    low, high = float(spec.minimum), float(spec.maximum)
    step = 10.0 ** math.floor(math.log10(high - low)) / 100 if high > low else 0.01
    widget = FloatSlider(min=low, max=high, step=step, readout=True)
    widget.value = float(spec.default)
    return widget


def _label(spec: FieldSpec) -> str:
    """``object size (px)``; a unit that repeats the name (steps in steps) is left out."""
    return spec.name.replace("_", " ") if spec.unit == spec.name else spec.label


class _Field:
    """One form row: a widget plus how to read and write its value."""

    def __init__(self, spec: FieldSpec):
        self.spec = spec
        self.widget = self._make_widget(spec)
        self.widget.tooltip = spec.doc
        self.hint: QLabel | None = None
        self.row: QWidget = self.widget.native
        special = special_value_text(spec)
        if special is not None:
            # A bare "-1" or "0" says nothing in a form: beside the box, what
            # that value means, while the box holds it.
            self.hint = QLabel(special)
            self.hint.setWordWrap(True)
            self.hint.setToolTip(spec.doc)
            self.hint.setStyleSheet("color: #a0a0a0")
            self.row = QWidget()
            box = QHBoxLayout(self.row)
            box.setContentsMargins(0, 0, 0, 0)
            box.addWidget(self.widget.native)
            box.addWidget(self.hint, 1)
            self.widget.changed.connect(self._show_hint)
            self._show_hint()

    def _show_hint(self, *_) -> None:
        try:
            at_minimum = float(self.get()) == float(self.spec.minimum)
        except InputError:
            at_minimum = False
        self.hint.setVisible(at_minimum)

    @staticmethod
    def _make_widget(spec: FieldSpec):
        if spec.choices:
            return ComboBox(choices=list(spec.choices), value=spec.default)
        if spec.type is bool:
            return CheckBox(value=bool(spec.default), text="")
        if spec.type is int:
            low = int(spec.minimum) if spec.minimum is not None else -_INT_LIMIT
            high = int(min(spec.maximum, _INT_LIMIT)) if spec.maximum is not None else _INT_LIMIT
            step = int(max(1, 10 ** (len(str(abs(int(spec.default)))) - 2))) if spec.default else 1
            return SpinBox(value=int(spec.default), min=low, max=high, step=step)
        if spec.type is float and spec.slider and spec.minimum is not None and spec.maximum is not None:
            return _slider(spec)
        if spec.type is float:
            if _needs_text_entry(spec):
                return LineEdit(value=_format_float(spec.default))
            step = _float_step(spec)
            widget = FloatSpinBox(step=step)
            # Qt rounds bounds and value to the current decimals, so these are
            # set only after the decimals fit the step.
            widget.native.setDecimals(max(2, math.ceil(-math.log10(step)) + 1))
            widget.min = spec.minimum if spec.minimum is not None else -_FLOAT_LIMIT
            widget.max = spec.maximum if spec.maximum is not None else _FLOAT_LIMIT
            widget.value = float(spec.default)
            return widget
        return LineEdit(value=str(spec.default))

    @property
    def native(self) -> QWidget:
        return self.widget.native

    def get(self):
        """The value in the field's type; text that is not a number raises InputError."""
        value = self.widget.value
        if isinstance(self.widget, LineEdit) and self.spec.type is not str:
            try:
                return self.spec.type(str(value).strip())
            except ValueError:
                raise InputError(f"{self.spec.label} expects a number such as 4e-4, got {value!r}") from None
        if self.spec.type is float:
            return float(value)
        if self.spec.type is int:
            return int(value)
        return value

    def set(self, value) -> None:
        if isinstance(self.widget, LineEdit) and self.spec.type is float:
            self.widget.value = _format_float(value)
        elif isinstance(self.widget, LineEdit):
            self.widget.value = str(value)
        else:
            self.widget.value = value


class ConfigForm(QWidget):
    """Editable form for a Config dataclass; advanced fields sit in a collapsed section.

    Parameters
    ----------
    config_class : type
        A method's ``Config`` (see :mod:`probseg.core.config`).

    Attributes
    ----------
    fields : dict
        Field name to its row (``.widget`` is the magicgui widget).
    advanced : superqt.QCollapsible or None
        The "Advanced" section, ``None`` when the config has no advanced fields.
    """

    #: Emitted whenever any value is edited.
    changed = Signal()

    def __init__(self, config_class: type, parent: QWidget | None = None):
        super().__init__(parent)
        self.config_class = config_class
        specs = fields_of(config_class)
        order = {name: i for i, name in enumerate(PROMINENT)}
        main = sorted((s for s in specs if not s.advanced), key=lambda s: order.get(s.name, len(order)))
        extra = [s for s in specs if s.advanced]
        self.fields: dict[str, _Field] = {}

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._rows(main))
        self.advanced = None
        if extra:
            self.advanced = QCollapsible("Advanced settings", self)
            inner = QWidget()
            inner.setLayout(self._rows(extra))
            self.advanced.addWidget(inner)
            layout.addWidget(self.advanced)

    def _rows(self, specs: list[FieldSpec]) -> QFormLayout:
        rows = QFormLayout()
        for spec in specs:
            field = _Field(spec)
            label = QLabel(_label(spec))
            label.setToolTip(spec.doc)
            rows.addRow(label, field.row)
            field.widget.changed.connect(self.changed.emit)
            self.fields[spec.name] = field
        return rows

    def values(self) -> dict:
        """Current values by field name.

        Raises
        ------
        InputError
            When a number field holds text that is not a number.
        """
        return {name: field.get() for name, field in self.fields.items()}

    def set_values(self, values: dict) -> None:
        """Set some or all fields; unknown names raise InputError."""
        unknown = sorted(set(values) - set(self.fields))
        if unknown:
            raise InputError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(self.fields))}")
        for name, value in values.items():
            self.fields[name].set(value)

    def reset(self) -> None:
        """Put every field back to the method's default."""
        for field in self.fields.values():
            field.set(field.spec.default)
