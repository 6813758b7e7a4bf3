"""The allowed range of every numeric option, written once.

The command line checks its flags against these before any work starts, the
engine checks its arguments against them, and the widgets use them as their
spin boxes' limits, so a value refused in one place is refused everywhere,
with the same words. The upper limits are where the work stops being useful
and starts being a hang (a graph radius of a million pixels links every pixel
pair) or an out-of-memory crash (a hundred thousand samples), not where it
stops being computable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from probseg.core.errors import InputError


@dataclass(frozen=True)
class Bound:
    """An inclusive range ``low..high`` of a numeric option.

    Parameters
    ----------
    low, high : float
        The smallest and largest allowed values.
    unit : str
        Shown after the numbers in messages and help, e.g. ``"px"``.
    integer : bool
        Whether only whole numbers are allowed.
    open_low : bool
        Whether ``low`` itself is excluded (e.g. a resolution must be above 0).
    """

    low: float
    high: float
    unit: str = ""
    integer: bool = True
    open_low: bool = False

    def describe(self) -> str:
        """``"from 1 to 16 px"`` or ``"above 0, at most 1"``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.open_low:
            return f"above {_number(self.low)}, at most {_number(self.high)}{unit}"
        return f"from {_number(self.low)} to {_number(self.high)}{unit}"

    def check(self, name: str, value):
        """Return ``value`` (an int for integer bounds) or raise a one-line InputError naming ``name``."""
        import numbers

        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if ok and self.integer:
            ok = isinstance(value, numbers.Integral) or float(value).is_integer()
        if ok:
            number = float(value)
            ok = math.isfinite(number) and (number > self.low if self.open_low else number >= self.low) and number <= self.high
        if not ok:
            kind = "a whole number" if self.integer else "a number"
            raise InputError(f"{name} must be {kind} {self.describe()}, got {value!r}")
        return int(value) if self.integer else float(value)


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


# Seeds feed numpy's and torch's generators; 2**32 - 1 is what every one of
# them accepts and what the widgets' spin boxes can show.
SEED = Bound(0, 2**32 - 1)
SAMPLES = Bound(1, 256)
TILE_SIZE = Bound(64, 8192, "px")
WINDOW = Bound(32, 8192, "px")
WINDOW_OVERLAP = Bound(0, 8191, "px")  # and less than the window, checked with it
PATCH_SIZE = Bound(4, 4096, "px")
# The consensus graph links every pixel pair within the radius: the work grows
# with its square, and beyond a few object widths no pair is informative.
RADIUS = Bound(1, 16, "px")
# Fractions of samples and of pixel pairs.
MIN_WEIGHT = Bound(0, 1, integer=False, open_low=True)
MIN_FOREGROUND = Bound(0, 1, integer=False)
MIN_SIZE = Bound(0, 10**8, "px")
# Object ids: label images are written as uint16 or uint32, so a larger id could never be found in one.
LABEL_ID = Bound(1, 2**32 - 1)
# CPM weighs pairs whose link strength is a fraction of samples: above 1 no
# pair holds together. RB's scale grows with the image (pixels squared over
# twice the total weight); 1e7 covers the largest images the engine handles.
RESOLUTION_CPM = Bound(0, 1, integer=False, open_low=True)
RESOLUTION_RB = Bound(0, 1e7, integer=False, open_low=True)
CHECKPOINT_EVERY = Bound(0, 10**7, "steps")


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int, or a one-line InputError unless it is 0 to 2**32 - 1."""
    return SEED.check(name, seed)


def resolution_bound(objective: str) -> Bound:
    """The allowed resolutions of a Leiden objective (``"cpm"`` or ``"rb"``)."""
    return RESOLUTION_RB if objective == "rb" else RESOLUTION_CPM


def finite_number(value, name: str) -> float:
    """``value`` as a float, or a one-line InputError naming ``name`` unless it is finite.

    Parameters
    ----------
    value : object
        Anything ``float()`` accepts.
    name : str
        The argument's name, for the message.

    Returns
    -------
    float

    Raises
    ------
    InputError
        If ``value`` is not a number, or is NaN or infinite; the message shows
        ``value`` as it was given.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return number
