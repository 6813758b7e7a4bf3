"""Progress bars and Ctrl-C handling of the long commands (train, segment, tune)."""

from __future__ import annotations

import signal
import sys
import threading


class Reporter:
    """Turns engine callbacks into a tqdm bar and notices on stderr."""

    def __init__(self, description: str, unit: str):
        self.description = description
        self.unit = unit
        self.bar = None
        self.step = 0
        self.total = 0

    def progress(self, step: int, total: int, loss: float | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        elif total != self.bar.total or step < self.bar.n:
            # Inference restarts its count for every plane of a stack.
            self.bar.reset(total=total)
        self.bar.update(step - self.bar.n)
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.step, self.total = step, total

    def message(self, text: str) -> None:
        from tqdm import tqdm

        # tqdm.write clears and redraws the bar so notices do not garble it.
        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopOnSigint:
    """Context manager: the first Ctrl-C asks the job to stop, a second one aborts.

    Outside the main thread (signals cannot be caught there) it does nothing
    and Ctrl-C keeps its default behaviour.
    """

    def __init__(self):
        self.requested = threading.Event()
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame):
        if self.requested.is_set():
            raise KeyboardInterrupt
        # Only set a flag: printing from a signal handler can re-enter a
        # stream that is being written to. The notice is printed from
        # should_stop, which the training loop polls before every step.
        self.requested.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        return False
