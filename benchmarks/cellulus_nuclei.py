"""Cellulus against the classical Voronoi-Otsu baseline on the nuclei sample.

Trains Cellulus on the image it segments (that is the point of a
self-supervised method), segments it, and prints one table: F1 at IoU 0.5,
CTC SEG, AP_dsb, object counts, training time and inference speed, for every
device asked for (``--devices cpu cuda``; default: cpu, plus cuda when
available).

    python benchmarks/cellulus_nuclei.py [--steps 2000] [--devices cpu cuda] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

import probseg
from probseg.evaluation.baseline import default_sigmas, voronoi_otsu_labeling
from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE, nuclei
from probseg.evaluation.metrics import evaluate


def run_cellulus(image, truth, device: str, steps: int, seed: int, samples: int) -> dict:
    t0 = time.perf_counter()
    model = probseg.train("cellulus", image, config={"object_size": float(NUCLEI_OBJECT_SIZE), "steps": steps}, device=device, seed=seed)
    train_s = time.perf_counter() - t0
    model.predict(image[:128, :128], n_samples=1)  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    result = model.predict(image, n_samples=samples, seed=seed)
    infer_s = time.perf_counter() - t0
    scores = evaluate(result.segmentation, truth)
    sample_f1 = [evaluate(s, truth)["f1"] for s in result.samples]
    return dict(
        method=f"cellulus ({device})", train_s=train_s, infer_s=infer_s,
        mpx_per_s=image.size / 1e6 / infer_s, sample_f1_mean=float(np.mean(sample_f1)),
        mean_uncertainty=float(result.uncertainty.mean()), **scores,
    )


def run_baseline(image, truth) -> dict:
    spot, outline = default_sigmas(NUCLEI_OBJECT_SIZE)
    t0 = time.perf_counter()
    labels = voronoi_otsu_labeling(image.astype(np.float32), spot_sigma=spot, outline_sigma=outline)
    infer_s = time.perf_counter() - t0
    return dict(method="voronoi-otsu", train_s=0.0, infer_s=infer_s, mpx_per_s=image.size / 1e6 / infer_s, **evaluate(labels, truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    image, truth = nuclei()
    rows = [run_baseline(image, truth)]
    for device in devices:
        rows.append(run_cellulus(image, truth, device, args.steps, args.seed, args.samples))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"nuclei sample {image.shape[0]}x{image.shape[1]}, {int(truth.max())} nuclei; {args.steps} training steps; "
          f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; GPU: {gpu}; torch {torch.__version__}")
    header = f"{'method':<20}{'F1':>7}{'SEG':>7}{'AP_dsb':>8}{'n_pred':>8}{'n_gt':>6}{'train s':>9}{'infer s':>9}{'MPx/s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['method']:<20}{r['f1']:>7.3f}{r['seg']:>7.3f}{r['ap_dsb']:>8.3f}{r['n_pred']:>8d}{r['n_gt']:>6d}"
              f"{r['train_s']:>9.1f}{r['infer_s']:>9.2f}{r['mpx_per_s']:>8.3f}")
    for r in rows:
        if "sample_f1_mean" in r:
            print(f"{r['method']}: mean F1 of the {args.samples} individual samples {r['sample_f1_mean']:.3f}, "
                  f"mean pixel uncertainty {r['mean_uncertainty']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
