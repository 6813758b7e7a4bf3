"""How :func:`probseg.consensus.soft_consensus` scales: seconds and peak memory.

Synthesises what CellSegmenter gives for a large image: random elliptical
soft blobs (about 6000 on 2048x2048, the same density at other sizes), and
for every window of ``--window`` px every ``--step`` px a soft mask per
draw, the softmax over background (logit 0) and the blobs that overlap the
window (logit ``sharpness * (1 - d^2)``, ``d`` the elliptical distance from
the blob's centre). Each draw jitters the blob centres by ``--jitter`` px, so
the draws and windows disagree near edges as posterior draws do. Windows
are made by a generator, one at a time, as a model would give them.

Prints, for one ``--size``:

* the time to make the windows alone (the generator run through once);
* the time to build the consensus (windows made again inside, so the
  build time below subtracts them), with fragment and link counts;
* one Leiden call at ``--resolution`` (CPM) on the whole image, the
  labels included, and one 256 px region built and partitioned;
* with ``--sweep``, Auto (whole image): :meth:`Consensus.sweep_windows`;
* the process's peak resident set size (``ru_maxrss``).

``python benchmarks/consensus_soft_scale.py --size 512``; try 512 first,
then 1024 and 2048. One torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

BLOBS_PER_PIXEL = 6000 / 2048**2


def make_blobs(size: int, seed: int):
    """Centres, semi-axes and angles of random ellipses covering a ``size`` square."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(BLOBS_PER_PIXEL * size * size)))
    centres = rng.uniform(0, size, size=(n, 2))
    axes = rng.uniform(5.0, 11.0, size=(n, 2))
    angles = rng.uniform(0, np.pi, size=n)
    return centres, axes, angles


def windows(size: int, blobs, window: int, step: int, draws: int, jitter: float, sharpness: float, seed: int):
    """Yield ``((y0, x0), probs)`` with ``probs`` float32 ``(draws, K+1, window, window)``."""
    centres, axes, angles = blobs
    reach = axes.max(1) + 3 * jitter + 2
    rng = np.random.default_rng(seed)
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    yy, xx = np.mgrid[0:window, 0:window].astype(np.float32)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    for y0 in starts:
        for x0 in starts:
            near = np.flatnonzero((centres[:, 0] + reach > y0) & (centres[:, 0] - reach < y0 + window)
                                  & (centres[:, 1] + reach > x0) & (centres[:, 1] - reach < x0 + window))
            logits = np.zeros((draws, near.size + 1, window, window), dtype=np.float32)
            for d in range(draws):
                c = centres[near] + rng.normal(scale=jitter, size=(near.size, 2))
                for k, b in enumerate(near):
                    dy, dx = yy + (y0 - c[k, 0]), xx + (x0 - c[k, 1])
                    u = (cos[b] * dy + sin[b] * dx) / axes[b, 0]
                    v = (-sin[b] * dy + cos[b] * dx) / axes[b, 1]
                    logits[d, k + 1] = sharpness * (1.0 - (u * u + v * v))
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(1, keepdims=True)
            yield (y0, x0), p


def peak_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    parser.add_argument("--window", type=int, default=80)
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--draws", type=int, default=1, help="posterior draws per window")
    parser.add_argument("--jitter", type=float, default=0.7, help="px of blob-centre jitter per draw")
    parser.add_argument("--sharpness", type=float, default=4.0)
    parser.add_argument("--resolution", type=float, default=3e-3, help="CPM resolution of the Leiden call")
    parser.add_argument("--radius", type=float, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also time Auto (whole image): sweep_windows()")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from probseg.consensus import soft_consensus

    blobs = make_blobs(args.size, args.seed)
    make = lambda: windows(args.size, blobs, args.window, args.step, args.draws, args.jitter, args.sharpness, args.seed)
    print(f"{args.size}x{args.size}: {blobs[0].shape[0]} blobs, {args.window} px windows every {args.step} px, "
          f"{args.draws} draw(s), radius {args.radius}, device {args.device}, {args.threads} torch thread(s)")
    print(f"peak RSS before: {peak_mb():.0f} MB")

    t = time.perf_counter()
    n_windows, channels = 0, 0
    for _, p in make():
        n_windows += 1
        channels += p.shape[1]
    t_make = time.perf_counter() - t
    print(f"windows: {n_windows}, mean K+1 {channels / n_windows:.1f}; making them alone took {t_make:.1f} s "
          f"(peak RSS {peak_mb():.0f} MB)")

    t = time.perf_counter()
    c = soft_consensus(make(), (args.size, args.size), radius=args.radius, device=args.device)
    t_build = time.perf_counter() - t
    print(f"consensus built in {t_build:.1f} s including the windows ({t_build - t_make:.1f} s without): "
          f"{c.n_layers} layers, {c.fragments.count} fragments, {len(c.graph.edges)} links; peak RSS {peak_mb():.0f} MB")

    t = time.perf_counter()
    labels = c.labels(args.resolution)
    t_leiden = time.perf_counter() - t
    print(f"Leiden (cpm {args.resolution:g}) + labels: {t_leiden:.1f} s, {int(labels.max())} objects "
          f"(truth {blobs[0].shape[0]} blobs); peak RSS {peak_mb():.0f} MB")

    side = min(256, args.size)
    y0 = (args.size - side) // 2
    t = time.perf_counter()
    region = c.region((y0, y0, y0 + side, y0 + side))
    t_region = time.perf_counter() - t
    t = time.perf_counter()
    part = c.region_labels(region, args.resolution)
    t_region_leiden = time.perf_counter() - t
    print(f"region {side}x{side}: graph {t_region:.2f} s, Leiden {t_region_leiden:.2f} s, {int(part.max())} objects")
    if args.sweep:
        t = time.perf_counter()
        sweep = c.sweep_windows()
        print(f"Auto (whole image), {len(sweep.windows)} windows x {sweep.resolutions.size} resolutions: "
              f"{time.perf_counter() - t:.1f} s, best {sweep.best:.3g} (mean NMI {sweep.nmi.max():.3f})")
    print(f"peak RSS: {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
