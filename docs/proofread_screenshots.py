"""Regenerate the Proofread widget screenshot in docs/images/.

Trains the Concrete-Dropout model on the top half of the nuclei sample (with
its labels) for a few hundred steps, predicts the whole image with 8 dropout
draws through the Predict widget, opens the Proofread widget, goes to the most
uncertain patch and merges two objects there. Needs a display; headless::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/proofread_screenshots.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _capture import close_toasts, settle  # docs/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images", help="folder for the PNG file")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args(argv)

    import napari

    import probseg
    from napari_probseg import proofread_widget
    from napari_probseg._models import ModelStore
    from napari_probseg.predict_widget import PredictWidget
    from napari_probseg.proofread_widget import ProofreadWidget
    from probseg.evaluation.datasets import nuclei

    args.out.mkdir(parents=True, exist_ok=True)
    proofread_widget.SESSIONS_HOME = Path(tempfile.mkdtemp(prefix="probseg-sessions-"))
    image, truth = nuclei()
    half = image.shape[0] // 2
    model = probseg.train("concrete-dropout", image[:half], truth[:half], config={"steps": args.steps}, device="cpu")
    store = ModelStore()
    name = store.add("concrete-dropout @ nuclei", model, None)

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(image, name="nuclei", colormap="gray")
    predict = PredictWidget(viewer, store=store)
    predict.model_name = name
    predict.image_layer = "nuclei"
    predict.n_samples = 8
    predict.run()
    while predict.running:
        settle(0.1)
    proof = ProofreadWidget(viewer)
    viewer.window.add_dock_widget(proof, name="Proofread", area="right")
    proof.patch_spin.value = 48
    proof.start()
    proof.next_patch()
    entry = proof.queue[proof.position]
    if len(entry.labels) >= 2:
        proof.merge(entry.labels[0], entry.labels[1])
    viewer.layers["nuclei segmentation"].visible = False  # the corrected copy lies on top of it
    viewer.layers["nuclei corrected"].opacity = 0.55
    close_toasts()
    settle(1.0)
    path = args.out / "proofread_widget.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}: {proof.status}; {proof.reviewed_label.text()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
