"""How long jobs talk to whoever started them (terminal, napari, a test).

The engine never prints or shows anything itself; it calls these hooks, and
asks ``should_stop`` between steps so a Cancel button takes effect within one
step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from probseg.core.errors import Cancelled


@dataclass
class Callbacks:
    """Hooks for a training or inference job; every one is optional.

    Attributes
    ----------
    on_progress : callable(step, total, loss)
        After every step; ``loss`` is ``None`` for inference.
    should_stop : callable() -> bool
        Polled before every step; ``True`` stops the job cleanly.
    on_checkpoint : callable(path)
        After a checkpoint folder was written.
    on_message : callable(text)
        Notices for the user (device used, plane-by-plane processing, retries).
    """

    on_progress: Callable[[int, int, float | None], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_checkpoint: Callable[[Path], None] | None = None
    on_message: Callable[[str], None] | None = None

    def progress(self, step: int, total: int, loss: float | None = None) -> None:
        if self.on_progress is not None:
            self.on_progress(step, total, loss)

    def stop_requested(self) -> bool:
        return bool(self.should_stop is not None and self.should_stop())

    def raise_if_stopped(self) -> None:
        if self.stop_requested():
            raise Cancelled("cancelled by the user")

    def checkpoint(self, path: Path) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(path)

    def message(self, text: str) -> None:
        if self.on_message is not None:
            self.on_message(text)


def ensure(callbacks: Callbacks | None) -> Callbacks:
    """``callbacks`` or an empty set of hooks."""
    return callbacks if callbacks is not None else Callbacks()
