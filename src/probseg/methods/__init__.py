"""The method registry: one module per published method.

A method module defines a model class deriving from
:class:`probseg.model.SegmentationModel` (the contract is written down in
:mod:`probseg.model`) and a :class:`MethodInfo` named ``METHOD``. Adding a
method is that module plus one line in ``_MODULES`` (or one call to
:func:`register` for a method that lives outside probseg). Modules are
imported on first use so that listing methods costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from probseg.errors import InputError

# name -> module; a new method is one line here plus its module.
_MODULES = {
    "cellulus": "probseg.methods.cellulus",
    "concrete-dropout": "probseg.methods.concrete_dropout",
    "spoco": "probseg.methods.spoco",
    "cellsegmenter": "probseg.methods.cellsegmenter",
    "inpaintaff": "probseg.methods.inpaintaff",
}


@dataclass(frozen=True)
class MethodInfo:
    """What the CLI and the widgets need to offer a method."""

    name: str
    title: str
    summary: str  # one line for menus and --help
    reference: str  # the paper
    labels: str  # "none", "optional" or "required"
    model_class: type
    labels_use: str = ""  # what labels do, for methods where they are optional

    @property
    def config_class(self) -> type:
        """Training hyperparameters (generates the Train form and ``probseg train`` flags)."""
        return self.model_class.config_class

    @property
    def settings_class(self) -> type:
        """Post-processing settings (generates the Predict form and ``probseg segment`` flags)."""
        return self.model_class.settings_class


def register(name: str, module: str) -> None:
    """Make the method in ``module`` (which defines ``METHOD``) available as ``name``."""
    _MODULES[name.strip().lower()] = module


def available() -> list[str]:
    """Names of all registered methods, in menu order."""
    return list(_MODULES)


def get(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of ``name``.

    Raises
    ------
    InputError
        For an unknown name, listing the known ones.
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in _MODULES:
        raise InputError(f"unknown method {name!r}; available: {', '.join(available())}")
    return importlib.import_module(_MODULES[key]).METHOD
