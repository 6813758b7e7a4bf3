"""Typed configuration dataclasses that describe themselves.

Each method's ``Config`` is a dataclass whose fields are declared with
:func:`param`. The metadata (one line of doc, unit, bounds, choices) is read by
:func:`fields_of`, from which the CLI flags and the napari form are generated,
so a new hyperparameter appears everywhere by adding one line.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from probseg.core.errors import InputError


def param(
    default: Any,
    doc: str,
    *,
    unit: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple | None = None,
    advanced: bool = False,
    slider: bool = False,
) -> Any:
    """Declare a configuration field with its documentation.

    Parameters
    ----------
    default : Any
        Default value; must be an immutable scalar (int, float, str, bool).
    doc : str
        One line shown as tooltip and CLI help.
    unit : str, optional
        Unit of the value, e.g. ``"px"`` or ``"steps"``.
    minimum, maximum : float, optional
        Inclusive bounds, checked by :func:`validate_config`.
    choices : tuple, optional
        Allowed values for a string field.
    advanced : bool, optional
        Hidden behind "advanced" in the GUI.
    slider : bool, optional
        Shown as a slider in the GUI, for a float with both bounds that is
        worth dragging while watching the result (a live knob); otherwise a
        spin box.
    """
    meta = dict(doc=doc, unit=unit, minimum=minimum, maximum=maximum, choices=choices, advanced=advanced, slider=slider)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """Everything a form or a CLI needs to know about one config field."""

    name: str
    type: type
    default: Any
    doc: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    advanced: bool = False
    slider: bool = False

    @property
    def flag(self) -> str:
        """The CLI flag, e.g. ``--object-size``."""
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """A human label with the unit, e.g. ``object size (px)``."""
        text = self.name.replace("_", " ")
        return f"{text} ({self.unit})" if self.unit else text


def fields_of(config_cls: type) -> list[FieldSpec]:
    """List the documented fields of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    specs = []
    for f in dataclasses.fields(config_cls):
        meta = dict(f.metadata)
        specs.append(
            FieldSpec(
                name=f.name,
                type=hints[f.name],
                default=f.default,
                doc=meta.get("doc", ""),
                unit=meta.get("unit", ""),
                minimum=meta.get("minimum"),
                maximum=meta.get("maximum"),
                choices=meta.get("choices"),
                advanced=meta.get("advanced", False),
                slider=meta.get("slider", False),
            )
        )
    return specs


def parse_value(spec: FieldSpec, text: str) -> Any:
    """Convert a command-line string to the field's type, with a clear error."""
    try:
        if spec.type is bool:
            low = str(text).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        return spec.type(text)
    except (TypeError, ValueError):
        kind = {"int": "an integer", "float": "a number", "bool": "yes or no", "str": "text"}.get(spec.type.__name__, spec.type.__name__)
        raise InputError(f"{spec.flag} expects {kind}, got {text!r}") from None


def _plain(spec: FieldSpec, value):
    """``value`` as the field's Python type where it is the same number in another dress: a numpy scalar
    (``np.int64(2)``, ``np.float32(0.5)``, ``np.bool_(True)``), an int for a float field or a whole float
    for an int field; anything else (text, bools for numbers, fractions for whole numbers) unchanged,
    for the type check to refuse."""
    import numbers

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or spec.type is bool:
        return value
    if spec.type is float and isinstance(value, numbers.Integral):
        return float(value)
    if spec.type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def validate_config(config: Any) -> Any:
    """Check types, bounds and choices of every field; return the config.

    Raises
    ------
    InputError
        Naming the first field that is out of range or of the wrong type.
    """
    for spec in fields_of(type(config)):
        value = _plain(spec, getattr(config, spec.name))
        object.__setattr__(config, spec.name, value)
        if not isinstance(value, spec.type) or (spec.type in (int, float) and isinstance(value, bool)):
            kind = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "text"}.get(
                spec.type.__name__, f"a {spec.type.__name__}")
            raise InputError(f"{spec.name} must be {kind}, got {value!r}")
        if spec.type is float and value != value:
            raise InputError(f"{spec.name} must be a number, got NaN")
        if spec.minimum is not None and value < spec.minimum:
            raise InputError(f"{spec.name} must be at least {spec.minimum} {spec.unit}".rstrip() + f", got {value}")
        if spec.maximum is not None and value > spec.maximum:
            raise InputError(f"{spec.name} must be at most {spec.maximum} {spec.unit}".rstrip() + f", got {value}")
        if spec.choices is not None and value not in spec.choices:
            raise InputError(f"{spec.name} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    # Rules between fields (a size range, a window that must hold the largest
    # object) live with the config that has them.
    check = getattr(config, "check", None)
    if callable(check):
        check()
    return config


def config_from_dict(config_cls: type, values: dict | None) -> Any:
    """Build and validate a config from a mapping; unknown keys are an error."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"unknown setting(s) {', '.join(unknown)} for {config_cls.__qualname__}; "
            f"known: {', '.join(sorted(known))}"
        )
    return validate_config(config_cls(**values))


def make_config(config_cls: type, value=None, base=None, what: str = "config") -> Any:
    """A validated ``config_cls`` from None, a dict or an instance.

    Parameters
    ----------
    config_cls : type
    value : None, dict or config_cls
        None gives ``base`` (or the defaults); a dict gives ``base``'s values
        (or the defaults) updated by it; an instance is checked and copied.
    base : config_cls, optional
        What None and a dict start from.
    what : str
        The name used in the TypeError for any other ``value``.

    Raises
    ------
    InputError
        For unknown keys or values out of range.
    TypeError
        For a ``value`` of another type.
    """
    if value is None:
        return base if base is not None else validate_config(config_cls())
    if isinstance(value, config_cls):
        return validate_config(dataclasses.replace(value))
    if isinstance(value, dict):
        return config_from_dict(config_cls, {**(config_to_dict(base) if base is not None else {}), **value})
    raise TypeError(f"{what} must be a {config_cls.__qualname__}, a dict or None")


def config_to_dict(config: Any) -> dict:
    """Plain, JSON-serialisable dict of a config."""
    return dataclasses.asdict(config)


@dataclass
class TrainingConfig:
    """Fields every method's Config starts with; the shared loop reads them."""

    steps: int = param(2000, "training iterations", unit="steps", minimum=1, maximum=1_000_000)
    batch_size: int = param(8, "crops per iteration", unit="crops", minimum=1, maximum=256, advanced=True)
    crop_size: int = param(128, "side of the random training crops (after any rescaling)", unit="px", minimum=32, maximum=2048, advanced=True)
    learning_rate: float = param(4e-4, "AdamW learning rate", minimum=1e-7, maximum=1.0, advanced=True)
    weight_decay: float = param(1e-4, "AdamW weight decay", minimum=0.0, maximum=1.0, advanced=True)

    def check_training_images(self, sides: list[int]) -> None:
        """Refuse settings the training images cannot support; ``sides`` holds each plane's shorter side in px.

        Called once the images are read, before the network is built; the
        default accepts everything. A method with such a rule overrides it.
        """
