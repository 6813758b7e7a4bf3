"""The machinery the widgets share: running an engine job on a worker thread.

:class:`JobMonitor` is how an engine job on a worker thread reports to the
GUI, :func:`run_engine` turns expected failures into an :class:`Outcome`,
:class:`DeviceChooser` picks the device, and :class:`EngineWidget` is the base
of the widgets: status line, progress bar, cancel, model loading and
:meth:`EngineWidget.start_job`.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from magicgui.widgets import ComboBox
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_probseg import _models
from probseg.engine import api
from probseg.core.callbacks import Callbacks
from probseg.core.device import DEVICE_CHOICES, describe_device, gpu_warning, resolve_device
from probseg.core.errors import InputError, ProbsegError

POLL_MS = 100  # GUI refresh while a job runs: ~10 updates a second, however fast the steps
# A docked widget may shrink to this height and scrolls below it; several
# docked widgets then fit a laptop screen (the tallest is over 1000 px
# without it: docked together, four of them asked for 2660 px).
MIN_SCROLL_HEIGHT = 160
# The ETA follows the recent pace: the mean over the first steps, then an
# exponential average over about the last 20, so a machine that got busy (or
# free) shows within a few seconds and the slow first step fades out.
ETA_WINDOW = 20


@dataclass
class Snapshot:
    """What a job reported since the last look."""

    step: int
    total: int
    loss: float | None
    elapsed: float
    new_losses: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    step_seconds: float | None = None

    @property
    def eta(self) -> float | None:
        """Seconds left at the recent pace (``step_seconds``), else at the mean pace; ``None`` before the first step."""
        if self.step <= 0 or self.total <= 0:
            return None
        pace = self.step_seconds if self.step_seconds is not None else self.elapsed / self.step
        return pace * max(0, self.total - self.step)


def format_seconds(seconds: float | None) -> str:
    """``3.24`` -> ``3.2 s``, ``75`` -> ``1:15``, ``3725`` -> ``1:02:05``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_loss(value: float) -> str:
    """A loss with 4 significant digits, whole numbers from 1000 up.

    ``52736.07`` -> ``52736``, ``1.23456`` -> ``1.235``, ``0.0123456`` ->
    ``0.01235``; below 1e-3, above 1e6 and non-finite values in ``%.3e`` form.
    """
    value = float(value)
    size = abs(value)
    if not math.isfinite(value) or (size != 0 and not 1e-3 <= size < 1e6):
        return f"{value:.3e}"
    if size == 0:
        return "0"
    return f"{value:.{max(0, 3 - math.floor(math.log10(size)))}f}"


class JobMonitor:
    """Mailbox between an engine job on a worker thread and a widget on the GUI thread.

    The engine calls the hooks of :meth:`callbacks` from the worker thread;
    they only record under a lock. The widget reads a :class:`Snapshot` on a
    timer, so Qt is touched only from the GUI thread and the GUI is updated
    at the timer's pace however fast the steps come.

    Parameters
    ----------
    clock : callable, optional
        Seconds as a float; :func:`time.monotonic` unless a test steps it by hand.
    """

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = clock()
        self._last: tuple[int, float] | None = None  # (step, time) of the previous report
        self._pace: float | None = None  # smoothed seconds per step
        self._paces = 0
        self._step = 0
        self._total = 0
        self._loss: float | None = None
        self._new_losses: list[float] = []
        self._messages: list[str] = []

    def callbacks(self) -> Callbacks:
        """Hooks to pass to the engine call."""
        return Callbacks(on_progress=self._on_progress, should_stop=self._stop.is_set, on_message=self._on_message)

    def request_stop(self, *_) -> None:
        """Ask the job to stop; the engine polls this before every step."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def _on_progress(self, step: int, total: int, loss: float | None) -> None:
        now = self._clock()
        with self._lock:
            step, total = int(step), int(total)
            if total != self._total or (self._last is not None and step < self._last[0]):
                # Another phase of the job (e.g. post-processing after the passes): another pace.
                self._last, self._pace, self._paces = None, None, 0
            # The time to the first report (loading, setting up) is not a step's pace.
            if self._last is not None and step > self._last[0]:
                pace = (now - self._last[1]) / (step - self._last[0])
                self._paces += 1
                alpha = max(1.0 / self._paces, 1.0 / ETA_WINDOW)
                self._pace = pace if self._pace is None else self._pace + alpha * (pace - self._pace)
            if self._last is None or step != self._last[0]:
                self._last = (step, now)
            self._step, self._total = step, total
            if loss is not None:
                self._loss = float(loss)
                self._new_losses.append(float(loss))

    def _on_message(self, text: str) -> None:
        with self._lock:
            self._messages.append(str(text))

    def drain(self) -> Snapshot:
        """The current state plus the losses and messages that arrived since the last call."""
        with self._lock:
            snap = Snapshot(
                self._step, self._total, self._loss, self._clock() - self._started,
                self._new_losses, self._messages, self._pace,
            )
            self._new_losses, self._messages = [], []
        return snap


@dataclass
class Outcome:
    """What a job hands back: a result, or the user-facing message of a ProbsegError.

    Engine errors are returned rather than raised so they reach the user as
    one clear line instead of a traceback; real bugs still raise.
    """

    value: object = None
    error: str | None = None



class DeviceChooser(QWidget):
    """Device combo plus a line that always says which device will be used and why."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.combo = ComboBox(choices=list(DEVICE_CHOICES), value="auto")
        self.combo.tooltip = "auto prefers a CUDA GPU, then Apple's MPS, then the CPU"
        self.label = QLabel()
        self.label.setWordWrap(True)
        # Wrapped, not clipped: the line may be long (the GPU warning) in a narrow dock.
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self.label.setMinimumWidth(0)
        self._warning = gpu_warning()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo.native)
        layout.addWidget(self.label)
        self.combo.changed.connect(self._update)
        self._update()

    @property
    def value(self) -> str:
        return self.combo.value

    @value.setter
    def value(self, name: str) -> None:
        self.combo.value = name

    def check(self) -> str:
        """The chosen name after checking this machine has it (InputError if not)."""
        try:
            resolve_device(self.value)
        except InputError as exc:
            raise InputError(self._for_the_gui(exc)) from None
        return self.value

    def _for_the_gui(self, exc: InputError) -> str:
        # The engine's advice names the command line's --device flag; here
        # the choice is the combo box above.
        if "--device" in str(exc):
            return f"device '{self.value}' is not available: torch cannot use it on this machine; choose auto or cpu"
        return str(exc)

    def _update(self, *_) -> None:
        try:
            text = f"uses {describe_device(resolve_device(self.value))}"
            style = ""
        except InputError as exc:
            text, style = self._for_the_gui(exc), "color: #ff6b6b"
        if self._warning:
            text += f"\n{self._warning}"
            style = style or "color: #f0b64f"
        self.label.setText(text)
        self.label.setStyleSheet(style)


class _FitWidth(QObject):
    """Keeps a scroll area at least as wide as its content, which only scrolls vertically."""

    def __init__(self, scroll: QScrollArea):
        super().__init__(scroll)
        self._scroll = scroll

    def update(self) -> None:
        content = self._scroll.widget()
        if content is not None:
            bar = self._scroll.verticalScrollBar().sizeHint().width()
            self._scroll.setMinimumWidth(content.minimumSizeHint().width() + bar)

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:
            self.update()
        return False


def _load_job(folder: str, device: str) -> Outcome:
    return run_engine(lambda: (api.load_model(folder, device=device), folder))


class EngineWidget(QWidget):
    """Base of the widgets: viewer, model store, device, status line, progress, cancel, Load.

    Subclasses build their own inputs and layout (placing the widgets made
    here), call :meth:`start_job` with an engine job, and may override
    :meth:`_show_progress` and :meth:`_set_running`. When a subclass's
    ``__init__`` returns, its layout is moved into :attr:`scroll_area`, so
    the docked widget scrolls instead of growing the window.
    """

    #: Name of the job for status texts, e.g. "training".
    job_name = "job"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        # Every widget ends up in a scroll area once its own __init__ (the
        # outermost one, for subclasses of subclasses) has laid it out, so
        # subclasses keep building their layout on ``self`` as usual.
        @functools.wraps(init)
        def __init__(self, *args, **kw):
            depth = self.__dict__.get("_init_depth", 0)
            self.__dict__["_init_depth"] = depth + 1
            try:
                init(self, *args, **kw)
            finally:
                self.__dict__["_init_depth"] = depth
            if depth == 0:
                self._wrap_in_scroll_area()

        cls.__init__ = __init__

    def __init__(self, napari_viewer, store: _models.ModelStore | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.store = store if store is not None else _models.store
        self.worker = None
        self.load_worker = None
        self._monitor: JobMonitor | None = None
        self._on_result = None
        self._running = False
        self.scroll_area: QScrollArea | None = None

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_label = QLabel("")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.device = DeviceChooser()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)

        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

        events = self.viewer.layers.events
        for name in ("inserted", "removed", "reordered", "renamed"):
            getattr(events, name).connect(self.reset_choices)

    # -- layout -----------------------------------------------------------------------
    def _wrap_in_scroll_area(self) -> None:
        """Move the widget's contents into a vertical scroll area.

        Docked without one, a widget asks the window for its full height
        (four of them: over 2600 px) and the lower buttons end up off screen.
        """
        outer = self.layout()
        if outer is None or self.scroll_area is not None:
            return
        content = QWidget()
        content.setObjectName("probsegContent")
        inner = QVBoxLayout(content)
        inner.setContentsMargins(outer.contentsMargins())
        inner.setSpacing(outer.spacing())
        while outer.count():
            stretch = outer.stretch(0) if hasattr(outer, "stretch") else 0
            item = outer.takeAt(0)
            if item.widget() is not None:
                inner.addWidget(item.widget(), stretch, item.alignment())
            elif item.layout() is not None:
                child = item.layout()
                child.setParent(None)
                inner.addLayout(child, stretch)
            else:
                inner.addItem(item)
        scroll = QScrollArea()
        scroll.setObjectName("probsegScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setMinimumHeight(MIN_SCROLL_HEIGHT)
        scroll.setWidget(content)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.scroll_area = scroll
        self._fit_width = _FitWidth(scroll)
        content.installEventFilter(self._fit_width)
        self._fit_width.update()

    # -- status -----------------------------------------------------------------------
    @property
    def status(self) -> str:
        """The text of the status line."""
        return self.status_label.text()

    def _set_status(self, text: str, kind: str = "info") -> None:
        colors = {"info": "", "warning": "color: #f0b64f", "error": "color: #ff6b6b"}
        self.status_label.setText(text)
        self.status_label.setStyleSheet(colors[kind])

    def _fail(self, message: str) -> None:
        """Show a one-line error in the status line and as a napari notification."""
        self._set_status(message, "error")
        show_error(message)

    def _warn(self, message: str) -> None:
        self._set_status(message, "warning")
        show_warning(message)

    # -- jobs -------------------------------------------------------------------------
    def checked(self, busy: str, gather):
        """``gather()``'s job, or None once the user was told why not: ``busy`` while a job runs, or the input error."""
        if self.running:
            self._warn(busy)
            return None
        try:
            return gather()
        except ProbsegError as exc:
            self._fail(str(exc))
            return None

    @property
    def running(self) -> bool:
        """True from start until the worker has finished (result handled)."""
        return self._running

    def reset_choices(self, *_) -> None:
        """Refresh layer lists; napari calls this when layers change."""

    def start_job(self, job, *args, on_result):
        """Start a background job: ``job(*args, monitor)`` on a worker thread.

        ``job`` gets a fresh :class:`JobMonitor` as its last argument and
        returns an :class:`Outcome` (usually through :func:`run_engine`);
        ``on_result(outcome)`` is then called on the GUI thread. While it
        runs the widget is :attr:`running`, shows progress and offers Cancel.
        Returns the worker.
        """
        self._monitor = monitor = JobMonitor()
        self._on_result = on_result
        worker = thread_worker(job, start_thread=False)(*args, monitor)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        # Closing the widget (or napari) stops the job like Cancel does, so no
        # thread keeps computing for a window that is gone.
        self.destroyed.connect(monitor.request_stop)
        self.worker = worker
        self._running = True
        self.progress_bar.setRange(0, 0)  # busy until the first step is reported
        self.progress_label.setText("starting…")
        self._set_running(True)
        self._timer.start()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop; it ends within one step and keeps what it has."""
        if self._running and self._monitor is not None and not self._monitor.stop_requested:
            self._monitor.request_stop()
            self.cancel_button.setEnabled(False)
            self._set_status(f"cancelling {self.job_name}…")

    def _poll(self) -> None:
        if self._monitor is None:
            return
        snap = self._monitor.drain()
        self._show_progress(snap)
        for message in snap.messages:
            self._set_status(message)
            show_info(message)

    def _show_progress(self, snap: Snapshot) -> None:
        if snap.total > 0:
            self.progress_bar.setRange(0, snap.total)
            self.progress_bar.setValue(min(snap.step, snap.total))
            self.progress_label.setText(
                f"{snap.step}/{snap.total} · {format_seconds(snap.elapsed)} elapsed · ETA {format_seconds(snap.eta)}"
            )

    def _on_returned(self, outcome: Outcome) -> None:
        # Show the job's last notices first, so the result's summary is what
        # stays in the status line.
        self._poll()
        self._on_result(outcome)

    def _on_error(self, exc: BaseException) -> None:
        # Not a ProbsegError (those come back as Outcome.error): napari also
        # logs the traceback, this line tells the user in plain words.
        self._poll()
        self._fail(f"{self.job_name} failed: {_plain_reason(exc)}")

    def _on_load_error(self, exc: BaseException) -> None:
        self._fail(f"loading the model failed: {_plain_reason(exc)}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self._poll()
        self._running = False
        self._monitor = None
        self.cancel_button.setEnabled(False)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)

    # -- loading ----------------------------------------------------------------------
    def load_model(self, folder=None):
        """Load a model folder into the shared store (a folder dialog when ``folder`` is None).

        Returns the worker doing the loading, or ``None`` if nothing was chosen.
        Problems with the folder (missing files, corrupt weights) are shown in
        the status line.
        """
        if folder is None:
            start = _models.MODELS_HOME.expanduser()
            folder = QFileDialog.getExistingDirectory(
                self, "Load a probseg model folder", str(start if start.is_dir() else Path.home())
            )
            if not folder:
                return None
        folder = str(Path(folder).expanduser())
        self._set_status(f"loading {folder}…")
        worker = thread_worker(_load_job, start_thread=False)(folder, self.device.value)
        worker.returned.connect(self._on_loaded)
        worker.errored.connect(self._on_load_error)
        self.load_worker = worker
        worker.start()
        return worker

    def _on_loaded(self, outcome: Outcome) -> None:
        if outcome.error:
            self._fail(outcome.error)
            return
        model, folder = outcome.value
        name = self.store.add(_models.default_model_name(model.method, folder), model, folder)
        self._set_status(f"loaded '{name}': {model.describe()}")


_OOM_MESSAGE = "out of memory; try a smaller tile size, crop size or batch size, or the cpu device"


def _is_oom(exc: BaseException) -> bool:
    # torch reports GPU memory exhaustion as a RuntimeError subclass whose
    # message is the only stable marker across versions and backends.
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _plain_reason(exc: BaseException) -> str:
    return _OOM_MESSAGE if _is_oom(exc) else f"{type(exc).__name__}: {exc}"


def run_engine(call, *args, **kwargs) -> Outcome:
    """Call the engine on a worker thread; expected failures become ``Outcome.error``.

    ProbsegErrors carry a message written for the user and running out of
    memory has a known remedy, so both come back as one line. Anything else
    is a bug and raises, so napari shows its traceback.
    """
    try:
        return Outcome(value=call(*args, **kwargs))
    except ProbsegError as exc:
        return Outcome(error=str(exc))
    except (MemoryError, RuntimeError) as exc:
        if _is_oom(exc):
            return Outcome(error=_OOM_MESSAGE)
        raise
