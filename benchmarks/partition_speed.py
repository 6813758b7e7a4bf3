"""Time the partition toolbox on a 512 x 512 synthetic image.

    OMP_NUM_THREADS=1 python benchmarks/partition_speed.py

Affinities (8 offsets, :data:`probseg.partition.DEFAULT_OFFSETS`) come from a
2-D embedding of the touching-blobs labelling (each pixel's object centroid
plus Gaussian noise of 1.5 px), so the mutex watershed and mean-shift see the
same realistic input. Prints the median of ``--repeat`` runs for each step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

from probseg.partition import DEFAULT_OFFSETS, embedding_affinities, mean_shift, mutex_watershed
from probseg.evaluation.synthetic import touching_blobs


def _median_time(fn, repeat: int) -> tuple:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="also time mean_shift's torch backend on this device (e.g. cuda)")
    args = parser.parse_args()

    _, labels = touching_blobs((args.size, args.size), object_size=20, density=0.5, seed=args.seed)
    foreground = labels > 0
    n = int(labels.max())
    centroids = np.array(ndi.center_of_mass(foreground, labels, np.arange(1, n + 1)))
    rng = np.random.default_rng(args.seed)
    embeddings = np.zeros((2,) + labels.shape, dtype=np.float32)
    embeddings[:, foreground] = (centroids[labels[foreground] - 1] + rng.normal(0, 1.5, (foreground.sum(), 2))).T
    points = embeddings[:, foreground].T

    print(f"{args.size} x {args.size} image, {n} objects, {foreground.sum()} foreground pixels, {len(DEFAULT_OFFSETS)} offsets")
    t, affinities = _median_time(lambda: embedding_affinities(embeddings, DEFAULT_OFFSETS, delta=8.0), args.repeat)
    print(f"{'embedding_affinities':<42} {t:7.3f} s")
    for label, kwargs in [
        ("mutex_watershed, mask, default strides", {"mask": foreground}),
        ("mutex_watershed, mask, strides=1", {"mask": foreground, "strides": 1}),
        ("mutex_watershed, no mask, default strides", {}),
    ]:
        t, result = _median_time(lambda: mutex_watershed(affinities, DEFAULT_OFFSETS, **kwargs), args.repeat)
        print(f"{label:<42} {t:7.3f} s  ({result.max()} objects)")
    runs = [("numpy", None), ("grid", None)] + ([("torch", args.device)] if args.device else [])
    for backend, device in runs:
        t, ids = _median_time(lambda: mean_shift(points, 6.0, backend=backend, device=device), args.repeat)
        print(f"{'mean_shift, backend=' + backend:<42} {t:7.3f} s  ({ids.max() + 1} modes, {len(points)} points)")


if __name__ == "__main__":
    main()
