"""The models this napari session knows about, shared by the Train and Predict widgets.

A trained or loaded model lives here under a readable name, so the Predict
widget can offer it as soon as Train finishes or a folder is loaded, whichever
widget did it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psygnal import Signal

#: Where new model folders go when the user names none (and where Load model… starts looking).
MODELS_HOME = Path("~/probseg-models")


@dataclass
class StoredModel:
    """A model plus where it is saved (``None`` if it exists only in memory)."""

    name: str
    model: object
    folder: Path | None = None

    def describe(self) -> str:
        """One line for tooltips: the model's own summary and its folder."""
        where = f"; saved in {self.folder}" if self.folder is not None else "; not saved"
        return self.model.describe() + where


class ModelStore:
    """An ordered, named collection of models with a change signal.

    ``changed`` is emitted with the name of the model added or removed. It is
    only emitted from the GUI thread: the widgets add models in their worker's
    ``returned`` handler, never from the worker itself.
    """

    changed = Signal(str)

    def __init__(self) -> None:
        self._entries: dict[str, StoredModel] = {}

    def add(self, name: str, model, folder=None) -> str:
        """Store ``model`` and return the name it was stored under.

        A name already taken gets a numeric suffix rather than replacing the
        other model, which the user may still want.
        """
        unique, n = name, 2
        while unique in self._entries:
            unique = f"{name} ({n})"
            n += 1
        self._entries[unique] = StoredModel(unique, model, Path(folder) if folder is not None else None)
        self.changed.emit(unique)
        return unique

    def remove(self, name: str) -> None:
        """Forget a model (its folder on disk is left alone)."""
        if self._entries.pop(name, None) is not None:
            self.changed.emit(name)

    def clear(self) -> None:
        """Forget every model (folders on disk are left alone)."""
        for name in list(self._entries):
            self.remove(name)

    def names(self) -> list[str]:
        """Names in the order the models were added."""
        return list(self._entries)

    def entry(self, name: str) -> StoredModel:
        """The :class:`StoredModel` called ``name`` (KeyError if unknown)."""
        return self._entries[name]

    def get(self, name: str):
        """The model called ``name`` (KeyError if unknown)."""
        return self._entries[name].model

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


#: The store both widgets use unless given another (tests pass their own).
store = ModelStore()


def default_model_name(method: str, folder) -> str:
    """The name a model gets in the store, ``<method> @ <folder name>``, or the method alone for a model without a folder."""
    return f"{method} @ {Path(folder).name}" if folder is not None else method
