"""Consensus speed and quality: fragment graph + Leiden against the naive pixel graph.

Synthetic touching blobs with known truth; every sample is the truth with a
few random splits, merges and one-pixel outline shifts
(:func:`probseg.evaluation.synthetic.perturbed_samples`). Cases:

* ``512 samples`` / ``2048 samples``: 16 whole-image samples;
* ``2048 windows``: windows of 512 px every 128 px (inner pixels covered 16
  times), each window labelled by its own perturbed crop of the truth.

For each: graph build, Leiden (igraph and leidenalg backends, each timing
including the conversion to an igraph graph), whole-image total, region update latency for a 256x256 region (median over slider
moves, region graph cached as in the widget; plus the first move, which
builds the region graph), and F1 against the truth. On the 512 case the naive
pipeline (pixel graph straight into leidenalg) runs too, with the adjusted
Rand index between the two results. One run, one table.

    python benchmarks/consensus.py [--devices cpu cuda] [--skip-naive] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from probseg.consensus import Consensus, leiden, pixel_graph
from probseg.consensus.engine import CPM_RANGE
from probseg.evaluation.metrics import f1_score
from probseg.partition import split_and_filter
from probseg.evaluation.synthetic import perturbed_samples, touching_blobs

OBJECT_SIZE = 24
N_SAMPLES = 16
RESOLUTION = float(np.sqrt(CPM_RANGE[0] * CPM_RANGE[1]))  # the widget's starting point, CPM
REGION = 256
SLIDER_MOVES = 21


def make_samples(size: int, seed: int = 0):
    _, truth = touching_blobs((size, size), object_size=OBJECT_SIZE, density=0.5, seed=seed)
    return truth, perturbed_samples(truth, N_SAMPLES, split=0.1, merge=0.1, seed=seed + 1)


def make_windows(truth, window: int = 512, step: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    size = truth.shape[0]
    for y in range(0, size - window + 1, step):
        for x in range(0, size - window + 1, step):
            crop = truth[y : y + window, x : x + window]
            out.append(((y, x), perturbed_samples(crop, 1, split=0.1, merge=0.1, seed=int(rng.integers(2**31)))))
    return out


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def region_latency(c: Consensus, size: int) -> tuple[float, float]:
    """(first move incl. region graph, median of later moves) in seconds."""
    y0 = x0 = (size - REGION) // 2
    rect = (y0, x0, y0 + REGION, x0 + REGION)
    labels = c.labels(RESOLUTION)
    (region, first) = timed(lambda: c.region(rect))
    _, t_first = timed(lambda: c.update_region(labels, region, RESOLUTION))
    times = []
    for r in np.geomspace(1e-4, 3e-2, SLIDER_MOVES):
        _, t = timed(lambda r=r: c.update_region(labels, region, r))
        times.append(t)
    return first + t_first, statistics.median(times)


def run_case(name: str, truth, build, device: str) -> dict:
    c, t_build = timed(build)
    # Both Leiden timings include turning the graph into an igraph.Graph, as the naive one does.
    labels, t_leiden = timed(lambda: c.labels(RESOLUTION))
    c_ref = copy.copy(c)  # the same graph, Leiden by leidenalg, its own igraph.Graph
    c_ref.backend, c_ref._ig = "leidenalg", None
    ref_labels, t_leidenalg = timed(lambda: c_ref.labels(RESOLUTION))
    first, median = region_latency(c, truth.shape[0])
    sweep, t_sweep = timed(lambda: c.sweep())
    auto = c.labels(sweep.best)
    return dict(
        case=name, device=device, pixels=int(truth.size), fragments=c.fragments.count, links=int(len(c.graph.edges)),
        build_s=t_build, leiden_igraph_s=t_leiden, leiden_leidenalg_s=t_leidenalg, total_s=t_build + t_leiden,
        region_first_ms=1000 * first, region_median_ms=1000 * median, sweep_s=t_sweep, auto_resolution=sweep.best,
        f1=f1_score(labels, truth), f1_leidenalg=f1_score(ref_labels, truth), f1_auto=f1_score(auto, truth),
        labels=labels,
    )


def run_naive(truth, samples, device: str) -> dict:
    g, t_build = timed(lambda: pixel_graph(samples, device=device))
    membership, t_leiden = timed(lambda: leiden(g, RESOLUTION, "cpm", backend="leidenalg"))
    fg = (samples > 0).mean(0).ravel()[g.nodes] >= 0.5
    flat = np.zeros(truth.size, dtype=np.int64)
    flat[g.nodes] = np.where(fg, membership + 1, 0)
    labels = split_and_filter(flat.reshape(truth.shape), 0)
    return dict(build_s=t_build, leiden_s=t_leiden, total_s=t_build + t_leiden, edges=int(len(g.edges)), labels=labels,
                f1=f1_score(labels, truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive pixel graph (minutes)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, CPM resolution {RESOLUTION:.4g}, radius 4, {N_SAMPLES} samples")

    # Import igraph and leidenalg now, so no timing below pays for it.
    import igraph  # noqa: F401
    import leidenalg  # noqa: F401

    truth512, samples512 = make_samples(512, seed=0)
    truth2k, samples2k = make_samples(2048, seed=10)
    windows2k = make_windows(truth2k, seed=20)
    rows = []
    for device in devices:
        rows.append(run_case("512 samples", truth512, lambda: Consensus.from_samples(samples512, device=device), device))
        rows.append(run_case("2048 samples", truth2k, lambda: Consensus.from_samples(samples2k, device=device), device))
        rows.append(run_case("2048 windows", truth2k, lambda: Consensus.from_windows(windows2k, truth2k.shape, device=device), device))

    header = ("case", "device", "fragments", "links", "build s", "Leiden s (igraph)", "Leiden s (leidenalg)", "total s",
              "region 1st ms", "region median ms", "sweep s", "F1", "F1 auto")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['case']} | {r['device']} | {r['fragments']} | {r['links']} | {r['build_s']:.2f} | {r['leiden_igraph_s']:.2f} | "
              f"{r['leiden_leidenalg_s']:.2f} | {r['total_s']:.2f} | {r['region_first_ms']:.0f} | {r['region_median_ms']:.0f} | "
              f"{r['sweep_s']:.1f} | {r['f1']:.3f} | {r['f1_auto']:.3f} |")
    sample_f1 = [f1_score(s, truth512) for s in samples512]
    print(f"\n512 samples: F1 of the individual samples {np.mean(sample_f1):.3f} mean, {np.max(sample_f1):.3f} best")

    if not args.skip_naive:
        naive = run_naive(truth512, samples512, "cpu")
        ours = next(r for r in rows if r["case"] == "512 samples" and r["device"] == "cpu")
        ari = adjusted_rand_score(naive["labels"].ravel(), ours["labels"].ravel())
        print("\n| 512x512, CPU | graph | nodes | edges | build s | Leiden s | total s | F1 |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| naive | pixels | {int((samples512 > 0).any(0).sum())} | {naive['edges']} | {naive['build_s']:.2f} | "
              f"{naive['leiden_s']:.1f} | {naive['total_s']:.1f} | {naive['f1']:.3f} |")
        for backend, key in (("igraph", "leiden_igraph_s"), ("leidenalg", "leiden_leidenalg_s")):
            total = ours["build_s"] + ours[key]
            print(f"| ours, {backend} | fragments | {ours['fragments']} | {ours['links']} | {ours['build_s']:.2f} | "
                  f"{ours[key]:.2f} | {total:.2f} | {ours['f1'] if backend == 'igraph' else ours['f1_leidenalg']:.3f} |")
        print(f"\nspeed-up over naive: {naive['total_s'] / ours['total_s']:.0f}x (igraph), "
              f"{naive['total_s'] / (ours['build_s'] + ours['leiden_leidenalg_s']):.0f}x (leidenalg); "
              f"adjusted Rand index naive vs ours (igraph): {ari:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: v for k, v in r.items() if k != "labels"} for r in rows], fh, indent=1)


if __name__ == "__main__":
    main()
