"""Which consensus resolution to apply to a whole image: the region's Auto pick, or a whole-image Auto.

Issue 9 saw a resolution that Auto picked on a small region give 158 objects
on the whole nuclei image, where the truth has 73. This trains Cellulus on
the nuclei sample, draws samples, builds the consensus and compares, on the
whole image, the labels at:

* the Consensus widget's starting resolution (the middle of the CPM range);
* Auto on each of a few small regions (the slider's value after Auto there),
  applied to the whole image as the Apply button does;
* whole-image Auto on a subsample of windows (``Consensus.sweep_windows``,
  the widget's "Auto (whole image)");
* Auto over the whole graph (``Consensus.sweep``, what ``probseg consensus``
  does).

Objects, F1 at IoU 0.5 and seconds per pick, in one table. The resolution is
not tuned on the truth anywhere: every pick uses the samples alone.

    python benchmarks/auto_resolution.py [--steps 2000] [--samples 8] [--region 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch

import probseg
from probseg.consensus import Consensus
from probseg.consensus.engine import CPM_RANGE
from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE, nuclei
from probseg.evaluation.metrics import f1_score


def region_rects(shape, side: int, count: int, seed: int) -> list[tuple[int, int, int, int]]:
    """``count`` random square regions of ``side`` px inside ``shape``, the size a user draws around a few cells."""
    rng = np.random.default_rng(seed)
    height, width = shape
    ys = rng.integers(0, height - side, count)
    xs = rng.integers(0, width - side, count)
    return [(int(y), int(x), int(y) + side, int(x) + side) for y, x in zip(ys, xs)]


def row(name: str, consensus: Consensus, resolution: float, truth: np.ndarray, seconds: float) -> list[str]:
    labels = consensus.labels(resolution)
    n = int(np.count_nonzero(np.unique(labels)))
    return [name, f"{resolution:.4g}", str(n), f"{f1_score(labels, truth):.3f}", f"{seconds:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--region", type=int, default=64, help="side of the small regions, px")
    parser.add_argument("--regions", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    image, truth = nuclei()
    start = time.perf_counter()
    model = probseg.train("cellulus", image, config={"object_size": float(NUCLEI_OBJECT_SIZE), "steps": args.steps},
                          device="cpu", seed=args.seed)
    train_s = time.perf_counter() - start
    samples = model.predict(image, n_samples=args.samples, seed=args.seed).samples
    consensus = Consensus.from_samples(samples, device="cpu")

    rows = []
    middle = math.sqrt(CPM_RANGE[0] * CPM_RANGE[1])
    rows.append(row("starting value (middle of the CPM range)", consensus, middle, truth, 0.0))
    for rect in region_rects(truth.shape, args.region, args.regions, args.seed):
        t = time.perf_counter()
        sweep = consensus.sweep(region=consensus.region(rect))
        rows.append(row(f"Auto on region {','.join(map(str, rect))}", consensus, sweep.best, truth, time.perf_counter() - t))
    t = time.perf_counter()
    sweep = consensus.sweep_windows()
    where = f"{len(sweep.windows)} windows" if sweep.windows else "the whole image"
    rows.append(row(f"Auto (whole image), swept on {where}", consensus, sweep.best, truth, time.perf_counter() - t))
    t = time.perf_counter()
    sweep = consensus.sweep()
    rows.append(row("Auto over the whole graph (probseg consensus)", consensus, sweep.best, truth, time.perf_counter() - t))

    print(f"Cellulus, {args.steps} steps ({train_s:.0f} s), {args.samples} samples of the {image.shape[0]}x{image.shape[1]} "
          f"nuclei image, {int(truth.max())} true nuclei; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = ["resolution picked by", "resolution", "objects", "F1", "pick s"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
