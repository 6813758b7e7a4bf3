"""Checks of a run against its predicted cost, before the network runs.

A method that can tell how long a prediction will take implements
:meth:`~probseg.engine.model.SegmentationModel.estimate_seconds`; the engine
turns the figure into a notice above :data:`WARN_SECONDS` and a refusal above
:data:`LIMIT_SECONDS` unless the caller insists (``cost_limit=False`` in
Python, ``--no-cost-limit`` on the command line). Settings inside their
documented ranges can otherwise ask for hours of work with nothing on screen
but a progress bar that barely moves.
"""

from __future__ import annotations

from probseg.core.callbacks import Callbacks
from probseg.core.errors import InputError

#: Above this predicted time a notice says how long the run will take.
WARN_SECONDS = 60.0
#: Above this predicted time the run is refused unless ``cost_limit=False``.
LIMIT_SECONDS = 3600.0


def duration(seconds: float) -> str:
    """``"about 40 s"``, ``"about 12 minutes"``, ``"about 3.4 hours"``."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} minutes"
    return f"about {seconds / 3600:.1f} hours"


def check_cost(model, shape: tuple, n_samples: int, callbacks: Callbacks, cost_limit: bool = True) -> float | None:
    """Warn about, or refuse, a prediction of ``model`` predicted to take long; return the estimate (s) or None.

    Parameters
    ----------
    model : SegmentationModel
    shape : tuple of int
        The image's spatial shape: ``(Y, X)``, or ``(Z, Y, X)`` for a stack
        (each plane costs the same).
    n_samples : int
        Samples asked for.
    callbacks : Callbacks
        Where the notice goes.
    cost_limit : bool
        False: above :data:`LIMIT_SECONDS` only warn.

    Raises
    ------
    InputError
        When the estimate is above :data:`LIMIT_SECONDS` and ``cost_limit`` is true.
    """
    plane = tuple(int(s) for s in shape[-2:])
    per_plane = model.estimate_seconds(plane, n_samples)
    if per_plane is None:
        return None
    planes = int(shape[0]) if len(shape) == 3 else 1
    seconds = float(per_plane) * planes
    why = model.cost_hint or "fewer samples or a smaller image"
    if seconds > LIMIT_SECONDS and cost_limit:
        raise InputError(f"this prediction would take {duration(seconds)} on {model.device.type.upper()} "
                         f"(more than {LIMIT_SECONDS / 3600:.0f} hour); use {why}, or add --no-cost-limit "
                         "(cost_limit=False in Python) to run it anyway")
    if seconds > WARN_SECONDS:
        callbacks.message(f"this prediction will take {duration(seconds)} (estimated); {why} would be faster")
    return seconds
