"""Accuracy and speed of every method and partition against the classical Voronoi-Otsu baseline.

One run prints every table of docs/benchmarks.md's "Accuracy" section:

* **accuracy**: F1 (IoU 0.5), SEG and AP_dsb on images the models did not
  train on, or (Cellulus, which needs no labels and trains on the image it
  segments) whose labels they never saw; each method with each of its
  partitions at default settings, and "tuned" (``probseg.tune`` on the
  training image's labels, scored on the test image); Voronoi-Otsu with the
  default sigmas for the object size and with the best of 16 sigma pairs
  chosen on the training image;
* **speed**: training time, inference MPix/s on a 2048x2048 image for 1 and
  8 samples (network and post-processing separately), re-tune time (all
  layers re-computed from the kept raw output of the 512x256 sample with 8
  samples) and peak memory (the high-water resident set of a fresh process
  segmenting a 1024x1024, 2048x2048 and 4096x4096 image with 1 sample).

Images: the nuclei sample's top half (train) and bottom half (test), the
whole sample for Cellulus as the issue asks, and two synthetic touching-blob
images (256x256, 16 px objects on a structured background with noise 0.3, where
the baseline is not already perfect; seed 1 train, seed 2 test).

    python benchmarks/accuracy.py [--steps-cellulus N] [--steps-cd N] [--skip-speed]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time

import numpy as np
import torch

import probseg
from probseg.evaluation.baseline import default_sigmas, voronoi_otsu_labeling
from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE, nuclei
from probseg.evaluation.metrics import evaluate
from probseg.evaluation.synthetic import touching_blobs

BLOB_SIZE = 16


def _scores(labels, truth) -> dict:
    s = evaluate(labels, truth)
    return {k: s[k] for k in ("f1", "seg", "ap_dsb", "n_pred", "n_gt")}


def baseline_rows(name: str, train, test, object_size: float) -> list[dict]:
    """Voronoi-Otsu: default sigmas, and the best sigma pair on the training image."""
    spot, outline = default_sigmas(object_size)
    rows = [dict(image=name, method="voronoi-otsu", partition="default sigmas",
                 **_scores(voronoi_otsu_labeling(test[0].astype(np.float32), spot, outline), test[1]))]
    grid = list(itertools.product([object_size / f for f in (4, 6, 8, 10)], [1.0, object_size / 12, object_size / 8, object_size / 6]))
    best = max(grid, key=lambda so: evaluate(voronoi_otsu_labeling(train[0].astype(np.float32), *so), train[1])["f1"])
    rows.append(dict(image=name, method="voronoi-otsu", partition=f"tuned ({best[0]:.1f}, {best[1]:.1f})",
                     **_scores(voronoi_otsu_labeling(test[0].astype(np.float32), *best), test[1])))
    return rows


def method_rows(name: str, model, train, test, partitions: list[str], train_s: float) -> list[dict]:
    """Every partition at default settings, then tuned on the training image."""
    raw = model.predict_raw(test[0], 1)
    rows = []
    for partition in partitions:
        pred = model.postprocess(raw, {"partition": partition})
        rows.append(dict(image=name, method=model.method, partition=partition, train_s=train_s,
                         **_scores(pred.segmentation, test[1])))
    default = model.settings
    result = probseg.tune(model, train[0], train[1], save=False)
    pred = model.postprocess(raw)
    varied = ", ".join(f"{k}={v}" for k, v in result.best_row.items() if k not in ("f1", "ap_dsb"))
    rows.append(dict(image=name, method=model.method, partition=f"tuned ({varied})", train_s=train_s,
                     **_scores(pred.segmentation, test[1])))
    model.settings = default
    return rows


def train(method: str, image, labels, steps: int | None, **config):
    if steps is not None:
        config["steps"] = steps
    t0 = time.perf_counter()
    model = probseg.train(method, image, labels, config=config, device="cpu", seed=0)
    return model, time.perf_counter() - t0


def speed_rows(models: dict) -> list[dict]:
    image, _ = touching_blobs(shape=(2048, 2048), object_size=24, seed=3)
    sample, _ = nuclei()
    rows = []
    for name, model in models.items():
        row = {"method": name}
        for n in (1, 8):
            t0 = time.perf_counter()
            raw = model.predict_raw(image, n)
            t1 = time.perf_counter()
            model.postprocess(raw)
            t2 = time.perf_counter()
            row[f"net_{n}"], row[f"post_{n}"] = t1 - t0, t2 - t1
            row[f"mpx_{n}"] = image.size / 1e6 / (t2 - t0)
            del raw
        raw = model.predict_raw(sample, 8)
        t0 = time.perf_counter()
        model.postprocess(raw, {"min_size": 30})
        row["retune"] = time.perf_counter() - t0
        rows.append(row)
    return rows


_PEAK = """
import sys, time
import probseg
from probseg.evaluation.synthetic import touching_blobs


def high_water_mb():
    # VmHWM starts afresh with the new process image; ru_maxrss would carry the
    # parent's peak across fork and exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


side, folder = int(sys.argv[1]), sys.argv[2]
image, _ = touching_blobs(shape=(side, side), object_size=24, seed=3)
model = probseg.load_model(folder, device="cpu")
base = high_water_mb()
t0 = time.perf_counter()
model.predict(image, n_samples=1)
print(time.perf_counter() - t0, base, high_water_mb())
"""


def peak_rows(folders: dict) -> list[dict]:
    rows = []
    for name, folder in folders.items():
        for side in (1024, 2048, 4096):
            out = subprocess.run([sys.executable, "-c", _PEAK, str(side), str(folder)], capture_output=True, text=True, check=True)
            seconds, base, peak = map(float, out.stdout.split())
            rows.append(dict(method=name, side=side, seconds=seconds, start_mb=base, peak_mb=peak))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-cellulus", type=int, help="default: the method's own")
    parser.add_argument("--steps-cd", type=int, help="default: the method's own")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", help="also write every row to this file")
    args = parser.parse_args()
    import tempfile

    image, truth = nuclei()
    top, bottom = (image[:256], truth[:256]), (image[256:], truth[256:])
    blobs = dict(shape=(256, 256), object_size=BLOB_SIZE, background="structured", noise=0.3, density=0.6)
    blobs_train = touching_blobs(**blobs, seed=1)
    blobs_test = touching_blobs(**blobs, seed=2)
    size = float(NUCLEI_OBJECT_SIZE)
    rows = []
    rows += baseline_rows("nuclei bottom half", top, bottom, size)
    rows += baseline_rows("nuclei whole", (image, truth), (image, truth), size)
    rows += baseline_rows("blobs (seed 2)", blobs_train, blobs_test, BLOB_SIZE)

    # Concrete-Dropout learns from labels: trained on the top half, scored on the bottom half.
    cd, cd_s = train("concrete-dropout", top[0], top[1], args.steps_cd)
    cd_parts = list(cd.settings_class.__dataclass_fields__["partition"].metadata["choices"])
    rows += method_rows("nuclei bottom half", cd, top, bottom, cd_parts, cd_s)
    cd_blobs, cd_blobs_s = train("concrete-dropout", blobs_train[0], blobs_train[1], args.steps_cd)
    rows += method_rows("blobs (seed 2)", cd_blobs, blobs_train, blobs_test, cd_parts, cd_blobs_s)

    # Cellulus needs no labels and trains on the images it segments: the whole sample
    # (labels unseen; "tuned" uses the top half's labels and is scored on the bottom half).
    cel, cel_s = train("cellulus", image, None, args.steps_cellulus, object_size=size)
    cel_parts = list(cel.settings_class.__dataclass_fields__["partition"].metadata["choices"])
    for part in cel_parts:
        pred = cel.postprocess(cel.predict_raw(image, 1), {"partition": part})
        rows.append(dict(image="nuclei whole", method="cellulus", partition=part, train_s=cel_s, **_scores(pred.segmentation, truth)))
    rows += method_rows("nuclei bottom half", cel, top, bottom, cel_parts, cel_s)
    cel_blobs, cel_blobs_s = train("cellulus", blobs_test[0], None, args.steps_cellulus, object_size=float(BLOB_SIZE))
    rows += method_rows("blobs (seed 2)", cel_blobs, blobs_train, blobs_test, cel_parts, cel_blobs_s)

    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    print(f"\n{'image':<20}{'method':<18}{'partition':<44}{'F1':>7}{'SEG':>7}{'AP_dsb':>8}{'n_pred':>8}{'n_gt':>6}{'train s':>9}")
    for r in rows:
        print(f"{r['image']:<20}{r['method']:<18}{r['partition'][:43]:<44}{r['f1']:>7.3f}{r['seg']:>7.3f}{r['ap_dsb']:>8.3f}"
              f"{r['n_pred']:>8d}{r['n_gt']:>6d}{r.get('train_s', 0.0):>9.1f}")
    # The verdict the issue asks for: every method's default ahead of the best baseline on every image.
    print()
    for name in sorted({r["image"] for r in rows}):
        base = max((r for r in rows if r["image"] == name and r["method"] == "voronoi-otsu"), key=lambda r: r["f1"])
        for method in ("concrete-dropout", "cellulus"):
            mine = [r for r in rows if r["image"] == name and r["method"] == method]
            if not mine:
                continue
            default = mine[0]  # the method's default partition comes first
            key = lambda r: (round(r["f1"], 3), round(r["seg"], 3))  # noqa: E731 - F1, then SEG on a tie
            verdict = "ahead" if key(default) > key(base) else "BEHIND"
            print(f"{name:<20}{method:<18} default F1 {default['f1']:.3f} SEG {default['seg']:.3f} vs best Voronoi-Otsu "
                  f"F1 {base['f1']:.3f} SEG {base['seg']:.3f}: {verdict}")

    if not args.skip_speed:
        speed = speed_rows({"concrete-dropout": cd, "cellulus": cel})
        print(f"\n2048x2048 (4.19 MPix): seconds for network + post-processing, MPix/s; re-tune of the 512x256 sample with 8 samples")
        print(f"{'method':<18}{'1 sample':>22}{'MPix/s':>8}{'8 samples':>22}{'MPix/s':>8}{'re-tune s':>11}")
        for r in speed:
            print(f"{r['method']:<18}{r['net_1']:>12.1f} + {r['post_1']:>5.1f} s{r['mpx_1']:>8.3f}"
                  f"{r['net_8']:>12.1f} + {r['post_8']:>5.1f} s{r['mpx_8']:>8.3f}{r['retune']:>11.2f}")
        with tempfile.TemporaryDirectory() as tmp:
            folders = {"concrete-dropout": cd.save(f"{tmp}/cd"), "cellulus": cel.save(f"{tmp}/cel")}
            peaks = peak_rows(folders)
        print(f"\npeak resident memory of a fresh process segmenting one image (1 sample)")
        print(f"{'method':<18}{'side':>6}{'seconds':>9}{'after loading MB':>18}{'peak MB':>9}")
        for r in peaks:
            print(f"{r['method']:<18}{r['side']:>6}{r['seconds']:>9.1f}{r['start_mb']:>18.0f}{r['peak_mb']:>9.0f}")
        rows += speed + peaks
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
