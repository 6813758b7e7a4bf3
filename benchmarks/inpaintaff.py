"""InpaintAff: the paper's Table 1 protocol, on the nuclei sample and on touching blobs, and its speed.

Two parts, each printing its table (``--parts`` picks some):

* **accuracy**, Table 1 of Wolf, Hamprecht, Funke (2020) on three splits:
  the nuclei sample's top half for training and its bottom half for
  testing, the other way round, and synthetic touching blobs (one 256 x 256
  image for training, another for testing). InpaintAff trains on the
  training image without labels, with its default settings. Rows, all
  scored on the test image (SEG, the Cell Tracking Challenge's measure the
  paper reports, and F1 at IoU 0.5):

  - connected components of the true foreground, where objects separated
    by a one-pixel gap are joined (the paper's TRUEFG);
  - InpaintAff inside that true foreground;
  - InpaintAff inside the intensity threshold (Otsu's) foreground;
  - InpaintAff inside the foreground of its small foreground network,
    trained on a crop of the training image that holds 10, then 25, objects
    (every object of the crop labelled), fine-tuned from the unsupervised
    model (the paper's FGNET);
  - Voronoi-Otsu labelling, the classical baseline.

  ``alpha`` is chosen for each row on the training image (its labels serve
  as the validation set, as the paper chose alpha on a validation image);
  the test image's labels are used only to score. The splits run in
  parallel, one core each.
* **speed**: one draw of affinities (the default settings) for a 256 x 256,
  a 512 x 512 and a 700 x 1100 image of nuclei-sized touching blobs on the
  whole machine, split into network, split logic and averaging; then the
  seconds to re-partition the 512 x 512 image's affinities for a new alpha
  (what the Predict widget's slider does).

* **stride**: the patch stride, the setting that trades time for accuracy
  most, at the default 32 and at 16 px on the first split (InpaintAff +
  true foreground, alpha chosen on the training image), with each one's
  seconds on one core. It runs in the accuracy part's pool.

    python benchmarks/inpaintaff.py [--parts accuracy stride speed] [--steps 3000] [--samples 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

import probseg
from probseg.engine import api
from probseg.evaluation.baseline import default_sigmas, voronoi_otsu_labeling
from probseg.core.callbacks import Callbacks
from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE, nuclei
from probseg.partition.foreground import attach_foreground
from probseg.evaluation.metrics import evaluate
from probseg.engine.model import Raw
from probseg.partition import connected_components
from probseg.methods.inpaintaff.split import Timer
from probseg.evaluation.synthetic import touching_blobs

ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
BLOB_SIZE = 20.0
FG_OBJECTS = (10, 25)
FG_STEPS = 600


def true_foreground(labels: np.ndarray) -> np.ndarray:
    """The paper's TRUEFG: the objects' pixels, with one-pixel gaps between objects closed."""
    fg = labels > 0
    return fg | ndi.binary_closing(fg, np.ones((3, 3), bool))


def crop_with_objects(image: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The smallest centred square crop holding at least ``n`` whole objects, its labels and that count."""
    h, w = labels.shape
    cy, cx = h // 2, w // 2
    for half in range(8, max(h, w)):
        y0, y1, x0, x1 = max(0, cy - half), min(h, cy + half), max(0, cx - half), min(w, cx + half)
        crop = labels[y0:y1, x0:x1]
        inside = set(np.unique(crop)) - {0}
        border = set(np.unique(np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])))
        whole = len(inside - border)
        if whole >= n or (y0 == 0 and x0 == 0 and y1 == h and x1 == w):
            return image[y0:y1, x0:x1], crop, whole
    raise AssertionError("unreachable")


def splits(seed: int) -> list[dict]:
    img, lab = nuclei()
    half = img.shape[0] // 2
    blob_train = touching_blobs((256, 256), object_size=BLOB_SIZE, density=0.55, seed=seed + 1)
    blob_test = touching_blobs((256, 256), object_size=BLOB_SIZE, density=0.55, seed=seed + 2)
    return [
        dict(name="nuclei, top -> bottom", train=(img[:half], lab[:half]), test=(img[half:], lab[half:]), size=NUCLEI_OBJECT_SIZE),
        dict(name="nuclei, bottom -> top", train=(img[half:], lab[half:]), test=(img[:half], lab[:half]), size=NUCLEI_OBJECT_SIZE),
        dict(name="touching blobs", train=blob_train, test=blob_test, size=BLOB_SIZE),
    ]


def best_alpha(model, raw, labels: np.ndarray, settings: dict) -> float:
    """The alpha of :data:`ALPHAS` with the highest SEG of ``raw``'s segmentation against ``labels``."""
    scores = [evaluate(model.postprocess(raw, {**settings, "alpha": a}).segmentation, labels)["seg"] for a in ALPHAS]
    return ALPHAS[int(np.argmax(scores))]


def with_foreground_map(raw, probability: np.ndarray):
    """A copy of ``raw`` whose planes' ``"foreground"`` is ``probability`` (another model's foreground network)."""
    planes = [{**plane, "foreground": probability} for plane in raw.planes]
    return type(raw)(planes, raw.n_samples, raw.is_stack, raw.notice, dict(raw.attrs))


def accuracy_one(task: dict) -> dict:
    """Train InpaintAff on one split's training image and score every row on its test image."""
    torch.set_num_threads(1)
    (train_img, train_lab), (test_img, test_lab) = task["train"], task["test"]
    start = time.perf_counter()
    model = probseg.train("inpaintaff", train_img, steps=task["steps"], seed=task["seed"])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    raw_val = model.predict_raw(train_img, task["samples"], seed=task["seed"], cost_limit=False)
    raw_test = model.predict_raw(test_img, task["samples"], seed=task["seed"], cost_limit=False)
    predict_s = (time.perf_counter() - start) / 2
    rows = []

    def row(name: str, seg: np.ndarray, alpha=None, note: str = "") -> None:
        scores = evaluate(seg, test_lab)
        rows.append(dict(split=task["name"], row=name, seg=scores["seg"], f1=scores["f1"], n_pred=scores["n_pred"],
                         n_gt=scores["n_gt"], alpha=alpha, note=note))

    row("connected components on the true foreground", connected_components(true_foreground(test_lab)))
    fixed = {"foreground": "mask"}
    val_true = attach_foreground(raw_val, true_foreground(train_lab))
    test_true = attach_foreground(raw_test, true_foreground(test_lab))
    alpha = best_alpha(model, val_true, train_lab, fixed)
    row("InpaintAff + true foreground", model.postprocess(test_true, {**fixed, "alpha": alpha}).segmentation, alpha)
    fixed = {"foreground": "threshold"}
    alpha = best_alpha(model, raw_val, train_lab, fixed)
    row("InpaintAff + threshold foreground", model.postprocess(raw_test, {**fixed, "alpha": alpha}).segmentation, alpha)
    for n in FG_OBJECTS:
        crop_img, crop_lab, whole = crop_with_objects(train_img, train_lab, n)
        fg_model = probseg.train("inpaintaff", [crop_img], [crop_lab], init=model, steps=FG_STEPS, seed=task["seed"])
        prob_val = fg_model.foreground_probability(model.prepare(train_img).data[0])
        prob_test = fg_model.foreground_probability(model.prepare(test_img).data[0])
        fixed = {"foreground": "network"}
        val, test = with_foreground_map(raw_val, prob_val), with_foreground_map(raw_test, prob_test)
        # The fine-tuned copy post-processes: it is the one that has a foreground network.
        alpha = best_alpha(fg_model, val, train_lab, fixed)
        row(f"InpaintAff + foreground net ({n} objects)", fg_model.postprocess(test, {**fixed, "alpha": alpha}).segmentation,
            alpha, f"{whole} whole objects in a {crop_lab.shape[0]}x{crop_lab.shape[1]} crop")
    row("Voronoi-Otsu", voronoi_otsu_labeling(test_img, *default_sigmas(task["size"])))
    return dict(rows=rows, train_s=train_s, predict_s=predict_s, name=task["name"])


def accuracy_table(results: list[dict]) -> str:
    lines = ["| split | method | SEG | F1 | objects (true) | alpha |", "|---|---|---|---|---|---|"]
    for result in results:
        for r in result["rows"]:
            alpha = "" if r["alpha"] is None else f"{r['alpha']:g}"
            note = f" ({r['note']})" if r["note"] else ""
            lines.append(f"| {r['split']} | {r['row']}{note} | {r['seg']:.3f} | {r['f1']:.3f} | {r['n_pred']} ({r['n_gt']}) | {alpha} |")
    lines.append("")
    for result in results:
        cc = next(r for r in result["rows"] if r["row"].startswith("connected"))
        ia = next(r for r in result["rows"] if r["row"] == "InpaintAff + true foreground")
        vo = next(r for r in result["rows"] if r["row"] == "Voronoi-Otsu")
        best = max((r for r in result["rows"] if r["row"].startswith("InpaintAff +") and "true" not in r["row"]), key=lambda r: r["seg"])
        lines.append(f"{result['name']}: InpaintAff + true foreground - connected components = {ia['seg'] - cc['seg']:+.3f} SEG "
                     f"(target +0.10); best InpaintAff without the true foreground - Voronoi-Otsu = {best['seg'] - vo['seg']:+.3f} SEG; "
                     f"training {result['train_s'] / 60:.1f} min, one image's affinities {result['predict_s']:.0f} s (one core)")
    return "\n".join(lines)


def speed_rows(model, seed: int) -> tuple[list[dict], dict]:
    """One draw of affinities per size on the whole machine, and the alpha re-partition of the 512 x 512 one."""
    rows, repartition = [], {}
    for shape in ((256, 256), (512, 512), (700, 1100)):
        image, _ = touching_blobs(shape, object_size=NUCLEI_OBJECT_SIZE, density=0.5, seed=seed)
        plane = model.prepare(image).data[0]
        timer = Timer()
        start = time.perf_counter()
        aff = model.affinities(plane, seed, 0, Callbacks(), timer=timer)
        total = time.perf_counter() - start
        rows.append(dict(shape=shape, total_s=total, **timer.as_dict()))
        print(f"  {shape[0]}x{shape[1]}: {total:.0f} s", flush=True)
        if shape == (512, 512):
            raw = {"affinities": aff[None], "intensity": ndi.gaussian_filter(plane[0], 1.0).astype(np.float32),
                   "foreground": np.zeros(shape, np.float32)}
            settings = model.make_settings({"foreground": "threshold"})
            times = []
            for alpha in (0.5, 0.75, 1.0, 1.25, 1.5):
                start = time.perf_counter()
                model.instances(raw, model.make_settings({"foreground": "threshold", "alpha": alpha}), 1)
                times.append(time.perf_counter() - start)
            mask = model.plane_context(raw, settings)
            # What the Predict widget re-computes per move with 8 samples: the
            # segmentation and 8 samples (the draw stands in for each; a mutex
            # watershed's time hardly depends on the values), uncertainty and
            # probability.
            eight = Raw([{**raw, "affinities": np.repeat(aff[None], 9, axis=0)}], 8)
            start = time.perf_counter()
            model.postprocess(eight, {"foreground": "threshold", "alpha": 1.0})
            repartition = dict(median_s=float(np.median(times)), max_s=float(np.max(times)), foreground=float(mask.mean()),
                               eight_samples_s=time.perf_counter() - start)
    return rows, repartition


def speed_table(rows: list[dict], repartition: dict, device: str) -> str:
    lines = ["| image | device | total s | network s | split logic s | averaging s | network images |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {device} | {r['total_s']:.0f} | {r['network_s']:.0f} | {r['split_s']:.0f} | "
                     f"{r['averaging_s']:.1f} | {r['passes']} |")
    lines.append("")
    lines.append(f"alpha re-partition of the 512x512 affinities (mutex watershed, {repartition['foreground']:.0%} of the pixels in the "
                 f"threshold foreground, segmentation only): median {repartition['median_s']:.2f} s, slowest {repartition['max_s']:.2f} s "
                 f"(target 0.5 s); with 8 samples, uncertainty and probability {repartition['eight_samples_s']:.1f} s")
    big = next(r for r in rows if r["shape"] == (700, 1100))
    lines.append(f"700x1100: {big['total_s'] / 60:.1f} min (target 15 min on the 2-core CPU; the paper: about 48 GPU-hours)")
    return "\n".join(lines)


def stride_rows(task: dict, strides=(32, 16)) -> dict:
    """SEG of InpaintAff + true foreground on one split for each patch stride, and the seconds of its affinities."""
    torch.set_num_threads(1)
    (train_img, train_lab), (test_img, test_lab) = task["train"], task["test"]
    model = probseg.train("inpaintaff", train_img, steps=task["steps"], seed=task["seed"])
    rows = []
    for stride in strides:
        model.config.patch_stride = stride
        start = time.perf_counter()
        raw_val = attach_foreground(model.predict_raw(train_img, 1, seed=task["seed"], cost_limit=False), true_foreground(train_lab))
        raw_test = attach_foreground(model.predict_raw(test_img, 1, seed=task["seed"], cost_limit=False), true_foreground(test_lab))
        seconds = (time.perf_counter() - start) / 2
        alpha = best_alpha(model, raw_val, train_lab, {"foreground": "mask"})
        scores = evaluate(model.postprocess(raw_test, {"foreground": "mask", "alpha": alpha}).segmentation, test_lab)
        rows.append(dict(stride=stride, seg=scores["seg"], f1=scores["f1"], alpha=alpha, seconds=seconds))
    return dict(stride_rows=rows, name=task["name"])


def pool_task(task: dict) -> dict:
    return stride_rows(task) if task.get("kind") == "stride" else accuracy_one(task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("accuracy", "stride", "speed"), default=["accuracy", "stride", "speed"])
    parser.add_argument("--steps", type=int, default=3000, help="training steps (default: the method's 3000)")
    parser.add_argument("--samples", type=int, default=1, help="draws per image for the accuracy part (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"probseg {probseg.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads", flush=True)
    model_dir = Path(tempfile.mkdtemp(prefix="inpaintaff-bench-"))
    tasks = []
    if "accuracy" in args.parts:
        tasks += [dict(task, steps=args.steps, samples=args.samples, seed=args.seed) for task in splits(args.seed)]
    if "stride" in args.parts:
        tasks.append(dict(splits(args.seed)[0], kind="stride", steps=args.steps, seed=args.seed))
    if tasks:
        with mp.get_context("spawn").Pool(2) as pool:
            results = pool.map(pool_task, tasks, chunksize=1)
    accuracy = [r for r in results if "rows" in r] if tasks else []
    if accuracy:
        print("\n## Table 1 protocol (SEG and F1 on the test image)\n")
        print(accuracy_table(accuracy), flush=True)
    for result in (r for r in results if "stride_rows" in r) if tasks else ():
        print(f"\n## Patch stride ({result['name']}, InpaintAff + true foreground, one core)\n")
        print("| stride px | SEG | F1 | alpha | seconds per 256x256 image |\n|---|---|---|---|---|")
        for r in result["stride_rows"]:
            print(f"| {r['stride']} | {r['seg']:.3f} | {r['f1']:.3f} | {r['alpha']:g} | {r['seconds']:.0f} |", flush=True)
    if "speed" in args.parts:
        torch.set_num_threads(2)
        img, _ = nuclei()
        start = time.perf_counter()
        model = probseg.train("inpaintaff", img[: img.shape[0] // 2], steps=args.steps, seed=args.seed)
        model.save(model_dir / "nuclei")
        print(f"\ntrained the speed model on the nuclei top half in {(time.perf_counter() - start) / 60:.1f} min (2 threads)")
        model = api.load_model(model_dir / "nuclei")
        rows, repartition = speed_rows(model, args.seed)
        print(f"\n## Speed, one draw of affinities, default settings ({model.device})\n")
        print(speed_table(rows, repartition, f"{model.device} ({torch.get_num_threads()} threads)"), flush=True)


if __name__ == "__main__":
    main()
