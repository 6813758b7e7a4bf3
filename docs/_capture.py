"""What the screenshot scripts share: letting Qt settle, and clearing napari's pop-ups."""

from __future__ import annotations

import time


def settle(seconds: float = 0.5) -> None:
    """Run the Qt event loop for ``seconds`` so redraws and layouts land."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.instance().processEvents()
        time.sleep(0.02)


def close_toasts() -> None:
    """Close napari's notification pop-ups (e.g. its PyQt5 notice), which would cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    for widget in QApplication.instance().allWidgets():
        if isinstance(widget, NapariQtNotification):
            widget.close()
