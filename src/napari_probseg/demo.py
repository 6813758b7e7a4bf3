"""Open napari with the plugin docked and the nuclei sample loaded (`make demo`)."""

from __future__ import annotations


def main() -> None:
    import napari

    viewer = napari.Viewer(title="napari-probseg demo")
    viewer.open_sample("napari-probseg", "nuclei")
    viewer.window.add_plugin_dock_widget("napari-probseg", "Train")
    viewer.window.add_plugin_dock_widget("napari-probseg", "Predict")
    viewer.window.add_plugin_dock_widget("napari-probseg", "Consensus", tabify=True)
    viewer.window.add_plugin_dock_widget("napari-probseg", "Proofread", tabify=True)
    napari.run()


if __name__ == "__main__":
    main()
