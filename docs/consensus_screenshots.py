"""Regenerate the Consensus widget screenshots in docs/images/.

The nuclei sample with 16 samples made from its ground truth by random
splits and merges (probseg.evaluation.synthetic.perturbed_samples), so the effect of
the resolution is plain to see; a rectangle marks the region the slider
re-segments. Captures the region at a low and a high resolution, then after
Auto. Needs a display; headless::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/consensus_screenshots.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _capture import close_toasts, settle  # docs/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent


def _wait(widget, timeout: float = 120) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while (widget.running or widget.updating) and time.monotonic() < deadline:
        QApplication.instance().processEvents()
        time.sleep(0.01)
    settle()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images", help="folder for the PNG files")
    args = parser.parse_args(argv)

    import napari
    import numpy as np

    from napari_probseg.consensus_widget import ConsensusWidget
    from napari_probseg._layers import OUTPUT_META_KEY, viewer_camera
    from probseg.evaluation.datasets import nuclei
    from probseg.evaluation.synthetic import perturbed_samples

    args.out.mkdir(parents=True, exist_ok=True)
    image, truth = nuclei()
    samples = perturbed_samples(truth, 16, split=0.2, merge=0.2, seed=3)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(image, name="nuclei", colormap="gray")
    viewer.add_labels(samples, name="nuclei samples", visible=False,
                      metadata={OUTPUT_META_KEY: {"role": "samples", "source": "nuclei"}})
    rect = (96, 40, 352, 216)
    y0, x0, y1, x1 = rect
    viewer.add_shapes([np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])], shape_type="rectangle", name="region",
                      edge_color="yellow", face_color="transparent", edge_width=2)
    widget = ConsensusWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Consensus", area="right")
    viewer.dims.current_step = (0,) * viewer.dims.ndim
    _wait(widget)
    camera = viewer_camera(viewer)
    camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    camera.zoom = 2.6
    for name, value in (("consensus_low.png", 3e-5), ("consensus_high.png", 3e-2)):
        widget.resolution = value
        _wait(widget)
        viewer.layers.selection.active = viewer.layers["region"]
        close_toasts()
        settle()
        viewer.screenshot(str(args.out / name), canvas_only=False, flash=False)
        print(f"wrote {args.out / name}: {widget.status}")
    widget.auto()
    _wait(widget)
    close_toasts()
    settle()
    viewer.screenshot(str(args.out / "consensus_auto.png"), canvas_only=False, flash=False)
    print(f"wrote {args.out / 'consensus_auto.png'}: {widget.auto_info.text()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
