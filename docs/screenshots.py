"""Regenerate the screenshots of the napari widgets in docs/images/.

Trains Cellulus on the nuclei sample through the Train widget, segments the
image through the Predict widget, tunes its post-processing settings on the
ground-truth labels ("Tune on labels", which re-computes the result from the
kept network output), and captures the napari window after each.
Needs a display; on a headless machine run it under Xvfb::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/screenshots.py

Takes a few minutes on a laptop CPU (``--steps`` trades time for quality).
``--only predict_retune --steps 300`` makes just the re-tune picture, quickly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _capture import close_toasts  # docs/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
PICTURES = ("train_widget", "predict_widget", "predict_retune", "results_grid")


def _settle() -> None:
    """Let pending redraws (loss plot, canvas, layouts) land."""
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.instance().processEvents()
        time.sleep(0.02)


def _wait(widget, timeout: float) -> None:
    """Run the Qt event loop until the widget's job is done."""
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    deadline = time.monotonic() + timeout
    while widget.running:
        if time.monotonic() > deadline:
            widget.cancel()
            deadline += 60
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    _settle()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images", help="folder for the PNG files")
    parser.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before training is cancelled")
    parser.add_argument("--only", nargs="+", choices=PICTURES, default=list(PICTURES), metavar="NAME",
                        help=f"write only these pictures ({', '.join(PICTURES)}); the steps before them still run")
    args = parser.parse_args(argv)
    wanted = set(args.only)

    def capture(name: str) -> None:
        if name in wanted:
            close_toasts()
            _settle()
            viewer.screenshot(str(args.out / f"{name}.png"), canvas_only=False, flash=False)

    import napari

    from napari_probseg._models import ModelStore
    from napari_probseg._sample_data import nuclei
    from napari_probseg.predict_widget import PredictWidget
    from napari_probseg.train_widget import TrainWidget

    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-probseg", show=True)
    viewer.window.resize(1500, 1000)
    for data, kwargs, kind in nuclei():
        getattr(viewer, f"add_{kind}")(data, **kwargs)

    store = ModelStore()
    trainer = TrainWidget(viewer, store=store)
    predictor = PredictWidget(viewer, store=store)
    viewer.window.add_dock_widget(trainer, name="Train (probseg)", area="right")

    with tempfile.TemporaryDirectory() as tmp:
        # Smaller crops and batches than the defaults: a few minutes on a CPU
        # is enough for these well separated nuclei.
        trainer.form.set_values({"steps": args.steps, "batch_size": 4, "crop_size": 96})
        trainer.output_folder = Path(tmp) / "nuclei-model"
        trainer.start()
        _wait(trainer, args.timeout)
        print(trainer.status)
        capture("train_widget")

        # Docked only now, as a tab in front of Train, so each picture shows one widget.
        viewer.window.add_dock_widget(predictor, name="Predict (probseg)", area="right", tabify=True)
        predictor.image_layer = "nuclei"
        predictor.run()
        _wait(predictor, args.timeout)
        print(predictor.status)
        viewer.layers.selection.active = viewer.layers["nuclei segmentation"]
        capture("predict_widget")

        # Tune on labels: the settings are searched against the ground truth
        # (the network runs once), the form takes the best ones, and the
        # layers are re-computed from the kept raw output without the network.
        if {"predict_retune", "results_grid"} & wanted:
            predictor.labels_layer = "nuclei ground truth"
            predictor.tune()
            _wait(predictor, args.timeout)
            _wait(predictor, args.timeout)  # the re-computation with the tuned settings follows the tuning
            print(predictor.status)
            viewer.layers.selection.active = viewer.layers["nuclei segmentation"]
            capture("predict_retune")

        # All results side by side: image, segmentation, one sample, uncertainty, embeddings.
        shown = ["nuclei", "nuclei segmentation", "nuclei samples", "nuclei uncertainty", "nuclei embeddings"]
        for layer in viewer.layers:
            layer.visible = layer.name in shown
            if layer.name in shown[1:3]:
                layer.opacity = 1.0
        grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # moved in napari 0.9
        grid.enabled = True
        grid.shape = (1, -1)
        _settle()
        viewer.reset_view()
        _settle()
        capture("results_grid")
    viewer.close()
    print(f"screenshots written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
