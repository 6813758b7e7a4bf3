"""Open napari with the plugin docked and the nuclei sample loaded (`make demo`)."""

from __future__ import annotations

WIDGETS = ("Train", "Predict", "Consensus", "Proofread")


def main() -> None:
    import napari

    viewer = napari.Viewer(title="napari-probseg demo")
    viewer.open_sample("napari-probseg", "nuclei")
    dock_all(viewer)
    napari.run()


def dock_all(viewer) -> list:
    """Dock the four widgets as tabs of one dock area, Train in front; returns their dock widgets.

    Stacked one above the other they would need more height than a screen
    has; as tabs each gets the full height (and scrolls when that is short).
    """
    docks = [viewer.window.add_plugin_dock_widget("napari-probseg", name, tabify=i > 0)[0] for i, name in enumerate(WIDGETS)]
    docks[0].raise_()
    return docks


if __name__ == "__main__":
    main()
