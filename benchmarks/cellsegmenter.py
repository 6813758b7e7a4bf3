"""CellSegmenter: counting digits, nuclei without labels, and the consensus of a large image's windows.

Three parts, each printing its table (``--parts`` picks some):

* **digits**, the paper's multi-MNIST experiment built from scikit-learn's
  8x8 digits (:func:`probseg.evaluation.synthetic.digit_scenes`): 80x80 canvases with
  2-6 digits of 20-35 px, 5000 for training and 500 others for testing,
  once on a black background and once on a grid. CellSegmenter trains with
  its default settings for ``--minutes`` of training time (evaluations
  excluded, measured as the CPU time of its one thread, so other work on the
  machine does not shorten it); every ``--eval-steps`` steps the test canvases are segmented
  and scored: counting accuracy (the posterior mode's object count equals
  the true count), mean absolute count error, and the mean F1 (IoU 0.5) of
  the masks. The two backgrounds train in parallel, one core each.
* **nuclei**: the nuclei sample's top half trains CellSegmenter, Cellulus
  and nothing for Voronoi-Otsu; all are scored on the bottom half (F1, SEG,
  AP_dsb). CellSegmenter's segmentation is the consensus of its windows
  (every pixel seen 16 times) and draws; also shown: the resolution chosen
  on the top half's labels.
* **scale**: the nuclei model on a 2048x2048 image (the sample mirrored):
  seconds for the network over all windows, and for the consensus (graph
  and Leiden) of their soft masks.

    python benchmarks/cellsegmenter.py [--parts digits nuclei scale] [--minutes 30] [--eval-steps 500]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import probseg
from probseg.evaluation.baseline import default_sigmas, voronoi_otsu_labeling
from probseg.core.callbacks import Callbacks
from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE, nuclei
from probseg.methods.cellsegmenter.model import CellSegmenterModel
from probseg.evaluation.metrics import evaluate, f1_score
from probseg.evaluation.synthetic import digit_scenes

# What a microscopist would enter for the nuclei sample: boxes of 8-40 px,
# 1-8 nuclei in an 80 px window covering 10-35 % of it.
NUCLEI_CONFIG = dict(crop_size=80, object_size_min=8.0, object_size_max=40.0, objects_min=1.0, objects_max=8.0,
                     foreground_min=10.0, foreground_max=35.0, max_objects=12)
RESOLUTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def one_thread() -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


# -- digits -------------------------------------------------------------------------------
def score_digits(model: CellSegmenterModel, test) -> dict:
    """Counting accuracy, count error and mask F1 of ``model`` on the test canvases.

    The count is the number of objects in the segmentation (what a user
    sees); ``presence_accuracy`` counts the posterior mode's present objects
    instead, some of which may own no pixels.
    """
    raw = model.predict_raw(test.images, 1)
    present = np.array([model.count(plane) for plane in raw.planes])
    seg = model.postprocess(raw).segmentation
    counts = np.array([len(np.unique(s)) - 1 for s in seg])
    f1 = [f1_score(seg[i], test.labels[i]) for i in range(len(test))]
    return dict(count_accuracy=float(np.mean(counts == test.counts)), presence_accuracy=float(np.mean(present == test.counts)),
                count_mae=float(np.mean(np.abs(counts - test.counts))), mean_count=float(counts.mean()),
                true_mean_count=float(test.counts.mean()), mask_f1=float(np.mean(f1)), nms=model.config.nms_threshold)


def digits_one(task: dict) -> dict:
    """Train on one background for a time budget, scoring the test canvases every ``eval_steps`` steps."""
    one_thread()
    bg = task["background"]
    train = digit_scenes(task["n_train"], background=bg, seed=2 * task["seed"] + 1)
    test = digit_scenes(task["n_test"], background=bg, seed=2 * task["seed"] + 2)
    # The budget is the training process's CPU time on its one thread, so
    # that other work on the machine (or the evaluations) does not shorten it.
    start, wall = time.process_time(), time.perf_counter()
    paused = [0.0, 0.0]  # CPU and wall seconds spent evaluating
    rows = []

    def training_seconds() -> float:
        return time.process_time() - start - paused[0]

    def checkpoint(path) -> None:
        t, tw = time.process_time(), time.perf_counter()
        minutes = training_seconds() / 60
        wall_minutes = (tw - wall - paused[1]) / 60
        model = CellSegmenterModel.load(path, device="cpu")
        row = dict(background=bg, step=int(model.train_log.get("steps_done", 0)), train_minutes=minutes,
                   wall_minutes=wall_minutes, **score_digits(model, test))
        row["eval_s"] = time.perf_counter() - tw
        rows.append(row)
        print(json.dumps(row), flush=True)
        paused[0] += time.process_time() - t
        paused[1] += time.perf_counter() - tw

    cb = Callbacks(should_stop=lambda: training_seconds() > task["minutes"] * 60, on_checkpoint=checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        model = probseg.train("cellsegmenter", train.images, steps=1_000_000, device="cpu", seed=task["seed"], callbacks=cb,
                              out=Path(folder) / f"digits-{bg}", checkpoint_every=task["eval_steps"])
    # The final model again with the paper's permissive test-time NMS.
    model.config.nms_threshold = 0.5
    rows.append(dict(rows[-1], **score_digits(model, test)))
    print(json.dumps(rows[-1]), flush=True)
    return dict(background=bg, rows=rows)


def digits_table(results: list[dict]) -> str:
    lines = ["| background | step | training, CPU (min) | test NMS | counting accuracy | (present objects) | count error | mean count (true) | mask F1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for r in result["rows"]:
            lines.append(f"| {r['background']} | {r['step']} | {r['train_minutes']:.1f} | {r['nms']:g} | {100 * r['count_accuracy']:.1f} % | "
                         f"{100 * r['presence_accuracy']:.1f} % | {r['count_mae']:.3f} | {r['mean_count']:.2f} ({r['true_mean_count']:.2f}) | {r['mask_f1']:.3f} |")
    return "\n".join(lines)


# -- nuclei -------------------------------------------------------------------------------
def nuclei_rows(steps: int, samples: int, seed: int) -> tuple[list[dict], CellSegmenterModel]:
    image, labels = nuclei()
    h = image.shape[0] // 2
    train_image, train_labels, test_image, test_labels = image[:h], labels[:h], image[h:], labels[h:]
    rows = []
    t = time.perf_counter()
    model = probseg.train("cellsegmenter", train_image, config=dict(NUCLEI_CONFIG, steps=steps), device="cpu", seed=seed)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    raw_test = model.predict_raw(test_image, samples, seed=seed)
    net_s = time.perf_counter() - t
    raw_train = model.predict_raw(train_image, samples, seed=seed)
    default = model.settings.window_resolution
    chosen = max(RESOLUTIONS, key=lambda r: evaluate(model.postprocess(raw_train, {"window_resolution": r}).segmentation, train_labels)["f1"])
    for label, resolution in ((f"default resolution {default:g}", default), (f"resolution {chosen:g} (best on the top half)", chosen)):
        t = time.perf_counter()
        pred = model.postprocess(raw_test, {"window_resolution": resolution})
        post_s = time.perf_counter() - t
        sample_f1 = float(np.mean([evaluate(s, test_labels)["f1"] for s in pred.samples]))
        rows.append(dict(method="cellsegmenter", variant=f"{label}, consensus of {samples} draws + mode", train_s=train_s,
                         infer_s=net_s + post_s, sample_f1=sample_f1, **evaluate(pred.segmentation, test_labels)))
    mode = model.postprocess(mode_only(raw_test), {"window_resolution": default})
    rows.append(dict(method="cellsegmenter", variant="posterior mode only (windows fused)", train_s=train_s, infer_s=float("nan"),
                     sample_f1=float("nan"), **evaluate(mode.segmentation, test_labels)))
    t = time.perf_counter()
    cellulus = probseg.train("cellulus", train_image, config={"object_size": float(NUCLEI_OBJECT_SIZE)}, device="cpu", seed=seed)
    c_train = time.perf_counter() - t
    t = time.perf_counter()
    pred = cellulus.predict(test_image, n_samples=samples, seed=seed)
    rows.append(dict(method="cellulus", variant="defaults", train_s=c_train, infer_s=time.perf_counter() - t,
                     sample_f1=float(np.mean([evaluate(s, test_labels)["f1"] for s in pred.samples])), **evaluate(pred.segmentation, test_labels)))
    spot, outline = default_sigmas(NUCLEI_OBJECT_SIZE)
    t = time.perf_counter()
    vo = voronoi_otsu_labeling(test_image.astype(np.float32), spot, outline)
    rows.append(dict(method="voronoi-otsu", variant="default sigmas", train_s=0.0, infer_s=time.perf_counter() - t,
                     sample_f1=float("nan"), **evaluate(vo, test_labels)))
    return rows, model


def mode_only(raw):
    """``raw`` with draw 0 (the posterior mode) only."""
    from probseg.engine.model import Raw

    planes = [{k: (v[:1] if v.ndim >= 3 else v) for k, v in plane.items()} for plane in raw.planes]
    return Raw(planes, 1, raw.is_stack, raw.notice, raw.attrs)


def nuclei_table(rows: list[dict]) -> str:
    lines = ["| method | variant | F1 | SEG | AP_dsb | objects (true 40) | mean F1 of the samples | training (s) | inference (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['variant']} | {r['f1']:.3f} | {r['seg']:.3f} | {r['ap_dsb']:.3f} | {r['n_pred']} | "
                     f"{r['sample_f1']:.3f} | {r['train_s']:.0f} | {r['infer_s']:.1f} |")
    return "\n".join(lines)


# -- scale --------------------------------------------------------------------------------
def scale_row(model: CellSegmenterModel, side: int, seed: int) -> dict:
    image, _ = nuclei()
    reps = (side // image.shape[0] + 1, side // image.shape[1] + 1)
    big = np.pad(image, ((0, reps[0] * image.shape[0] - image.shape[0]), (0, reps[1] * image.shape[1] - image.shape[1])), mode="symmetric")[:side, :side]
    t = time.perf_counter()
    raw = model.predict_raw(big, 1, seed=seed)
    net_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = model.postprocess(raw)
    post_s = time.perf_counter() - t
    n_windows = len(model.window_origins(big.shape))
    return dict(side=side, windows=n_windows, network_s=net_s, consensus_s=post_s, objects=int(len(np.unique(pred.segmentation)) - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["digits", "nuclei", "scale"], choices=["digits", "nuclei", "scale"])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time per background (digits)")
    parser.add_argument("--eval-steps", type=int, default=500)
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--backgrounds", nargs="+", default=["black", "grid"], choices=["black", "grid"])
    parser.add_argument("--nuclei-steps", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--scale-side", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"probseg {probseg.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{mp.cpu_count()} cores")
    if "digits" in args.parts:
        tasks = [dict(background=bg, minutes=args.minutes, n_train=args.train, n_test=args.test, eval_steps=args.eval_steps,
                      seed=args.seed) for bg in args.backgrounds]
        with mp.get_context("spawn").Pool(len(tasks)) as pool:
            results = pool.map(digits_one, tasks)
        print("\nDigits: counting accuracy and mask F1 against training time (one core per background)\n")
        print(digits_table(results))
    model = None
    if "nuclei" in args.parts or "scale" in args.parts:
        torch.set_num_threads(2)
        rows, model = nuclei_rows(args.nuclei_steps, args.samples, args.seed)
        if "nuclei" in args.parts:
            print("\nNuclei, trained on the top half, scored on the bottom half (two threads)\n")
            print(nuclei_table(rows))
    if "scale" in args.parts:
        row = scale_row(model, args.scale_side, args.seed)
        print(f"\nScale: {row['side']}x{row['side']} px, {row['windows']} windows of {model.config.crop_size} px, one draw: "
              f"network {row['network_s']:.0f} s, consensus (graph and Leiden) {row['consensus_s']:.0f} s, {row['objects']} objects")


if __name__ == "__main__":
    main()
