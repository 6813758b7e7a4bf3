"""How much the training seed moves each method's accuracy, with default settings.

Trains Concrete-Dropout on the nuclei sample's top half (scored on the bottom
half) and Cellulus on the whole sample (scored on it; its labels are never
used) once per seed, and prints F1 / SEG / AP_dsb per seed with the mean and
spread, next to Voronoi-Otsu.

    python benchmarks/seed_spread.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import probseg
from probseg.evaluation.baseline import default_sigmas, voronoi_otsu_labeling
from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE, nuclei
from probseg.evaluation.metrics import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    image, truth = nuclei()
    top, bottom = (image[:256], truth[:256]), (image[256:], truth[256:])
    cases = {
        "concrete-dropout, bottom half": lambda seed: (probseg.train("concrete-dropout", top[0], top[1], device="cpu", seed=seed), bottom),
        "cellulus, whole sample": lambda seed: (
            probseg.train("cellulus", image, config={"object_size": float(NUCLEI_OBJECT_SIZE)}, device="cpu", seed=seed), (image, truth)),
    }
    sigmas = default_sigmas(NUCLEI_OBJECT_SIZE)
    print(f"{'case':<32}{'seed':>5}{'F1':>7}{'SEG':>7}{'AP_dsb':>8}{'train s':>9}")
    for name, make in cases.items():
        scores = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            model, (test_image, test_truth) = make(seed)
            seconds = time.perf_counter() - t0
            s = evaluate(model.segment(test_image), test_truth)
            scores.append([s["f1"], s["seg"], s["ap_dsb"]])
            print(f"{name:<32}{seed:>5}{s['f1']:>7.3f}{s['seg']:>7.3f}{s['ap_dsb']:>8.3f}{seconds:>9.1f}", flush=True)
        mean, sd = np.mean(scores, axis=0), np.std(scores, axis=0)
        print(f"{name:<32}{'mean':>5}" + "".join(f"{m:>7.3f}" for m in mean)
              + f"   (sd {', '.join(f'{d:.3f}' for d in sd)}; lowest F1 {min(r[0] for r in scores):.3f})")
        test_image, test_truth = bottom if "bottom" in name else (image, truth)
        base = evaluate(voronoi_otsu_labeling(test_image.astype(np.float32), *sigmas), test_truth)
        print(f"{'  Voronoi-Otsu on the same image':<37}{base['f1']:>7.3f}{base['seg']:>7.3f}{base['ap_dsb']:>8.3f}")


if __name__ == "__main__":
    main()
