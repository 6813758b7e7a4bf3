"""Which method the proofreading loop trains and which model it fine-tunes: by capability, never by name.

A method whose model class declares ``learns_from_reviewed_objects`` (see
:class:`probseg.engine.model.SegmentationModel`) trains on the reviewed
patches of a session: labels in the ``"reviewed"`` encoding of
:mod:`probseg.core.labels`, given through its config's ``label_mode`` and
``background_id``. Retraining fine-tunes such a model when it has weights,
and otherwise trains the first registered method that has the capability
from scratch.

>>> method = learning_method()
>>> name, model = newest_learner(zip(store.names(), map(store.get, store.names())))
>>> f"{title(method)} trains for {scratch_steps(method)} steps from scratch"
"""

from __future__ import annotations

from probseg.core.errors import InputError
from probseg.engine import api, registry

__all__ = ["CAPABILITY", "learning_method", "can_fine_tune", "method_of", "newest_learner", "title", "scratch_steps"]

#: The model class attribute that makes a method trainable on reviewed objects.
CAPABILITY = "learns_from_reviewed_objects"


def learning_method() -> str:
    """The method retraining trains from scratch: the first registered one with :data:`CAPABILITY`.

    Raises
    ------
    InputError
        If no registered method has it.
    """
    names = registry.with_capability(CAPABILITY)
    if not names:
        raise InputError("no registered method learns from reviewed objects, so there is nothing to retrain")
    return names[0]


def can_fine_tune(model) -> bool:
    """Whether retraining can start from ``model``: its class learns from reviewed objects and it has weights."""
    return bool(getattr(type(model), CAPABILITY, False)) and getattr(model, "net", None) is not None


def method_of(model) -> str:
    """The method retraining trains for ``model``: its own when it can be fine-tuned, else :func:`learning_method`."""
    return type(model).method if can_fine_tune(model) else learning_method()


def newest_learner(models) -> tuple[str | None, object]:
    """The last model that retraining can fine-tune.

    Parameters
    ----------
    models : iterable of (str, model)
        Named models, oldest first (e.g. a model store's).

    Returns
    -------
    (str, model) or (None, None)
        The name and the model of the last one for which
        :func:`can_fine_tune` holds; ``(None, None)`` when none does.
    """
    for name, model in reversed(list(models)):
        if can_fine_tune(model):
            return name, model
    return None, None


def title(method: str) -> str:
    """The name of ``method`` for messages: its title in the registry."""
    return registry.get(method).title


def scratch_steps(method: str) -> int:
    """The training steps of ``method`` from scratch: its config's default."""
    return int(api.make_config(method).steps)
