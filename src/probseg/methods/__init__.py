"""The method registry: one module per published method.

A method module defines a ``Config`` dataclass (see :mod:`probseg.config`), a
model class deriving from :class:`probseg.model.SegmentationModel`, a
``train`` function, and registers them as ``METHOD``. Modules are imported on
first use so that listing methods costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from probseg.errors import InputError

# name -> module; a new method is one line here plus its module.
_MODULES = {
    "cellulus": "probseg.methods.cellulus",
    "concrete-dropout": "probseg.methods.concrete_dropout",
}


@dataclass(frozen=True)
class MethodInfo:
    """What the CLI and the widgets need to offer a method."""

    name: str
    title: str
    summary: str  # one line for menus and --help
    reference: str  # the paper
    labels: str  # "none", "optional" or "required"
    config_class: type
    model_class: type
    train: Callable


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
