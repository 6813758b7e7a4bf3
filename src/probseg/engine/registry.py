"""The method registry: names, menu facts and model classes of the methods.

The list of built-in methods is ``probseg.methods.BUILTIN`` (one line per
method). The engine never imports a method statically: the list and each
method's module are imported by name on first use, as plugin entry points
are, so listing methods costs nothing and no layer below ``methods`` depends
on one. A method module defines a model class deriving from
:class:`probseg.engine.model.SegmentationModel` (the contract) and a
:class:`MethodInfo` named ``METHOD``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from probseg.core.errors import InputError

_EXTRA: dict[str, str] = {}  # name -> module, from register()


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


def _modules() -> dict[str, str]:
    builtin = importlib.import_module("probseg.methods").BUILTIN
    return {**builtin, **_EXTRA}


def register(name: str, module: str) -> None:
    """Make the method in ``module`` (which defines ``METHOD``) available as ``name``."""
    _EXTRA[name.strip().lower()] = module


def unregister(name: str) -> None:
    """Forget a method made available by :func:`register` (built-in methods stay)."""
    _EXTRA.pop(name.strip().lower(), None)


def available() -> list[str]:
    """Names of all registered methods, in menu order."""
    return list(_modules())


def get(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of ``name``.

    Raises
    ------
    InputError
        For an unknown name, listing the known ones.
    """
    modules = _modules()
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in modules:
        raise InputError(f"unknown method {name!r}; available: {', '.join(modules)}")
    return importlib.import_module(modules[key]).METHOD


def with_capability(name: str) -> list[str]:
    """Registered methods whose model class declares the capability ``name`` (a class attribute that is true), in menu order."""
    return [method for method in available() if getattr(get(method).model_class, name, False)]
