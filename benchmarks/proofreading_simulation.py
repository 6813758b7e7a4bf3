"""Does uncertainty point at the mistakes? Simulated proofreading, guided against random.

Trains the Concrete-Dropout model on one part of an image (with its labels),
predicts the other part with Monte-Carlo dropout draws, ranks patches by the
entropy of the agglomerated draws (probseg.proofreading.proofreading_queue),
and "corrects" the top k patches the way the paper's Table 2 does: the
predicted objects touching a patch are replaced by the true objects touching
it. The same with k random patches (mean over 10 draws). Prints F1 and
AP_dsb after each k, for the nuclei sample and for synthetic touching blobs,
plus training time and inference speed; saves the PAvPU curves as a PNG.

    python benchmarks/proofreading_simulation.py [--steps N (default: the method's)] [--devices cpu cuda] [--png docs/images/pavpu.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import probseg
from probseg.consensus.agglomerate import agglomerate
from probseg.evaluation.datasets import nuclei
from probseg.evaluation.metrics import evaluate
from probseg.proofreading import proofreading_queue
from probseg.evaluation.synthetic import touching_blobs
from probseg.consensus.uncertainty import patch_uncertainty_metrics

KS = (0, 5, 10, 20)
RANDOM_REPEATS = 10
N_DRAWS = 8


def correct(pred: np.ndarray, truth: np.ndarray, rects) -> np.ndarray:
    """Replace the predicted objects touching each rectangle by the true ones touching it."""
    out = pred.astype(np.int64).copy()
    for y0, x0, y1, x1 in rects:
        gone = np.unique(out[y0:y1, x0:x1])
        out[np.isin(out, gone[gone > 0])] = 0
        true_ids = np.unique(truth[y0:y1, x0:x1])
        true_ids = true_ids[true_ids > 0]
        if true_ids.size:
            lut = np.zeros(int(truth.max()) + 1, dtype=np.int64)
            lut[true_ids] = out.max() + 1 + np.arange(true_ids.size)
            paste = lut[truth]
            out = np.where(paste > 0, paste, out)
    return out


def random_rects(shape, patch: int, k: int, rng) -> list:
    ys = rng.integers(0, max(1, shape[0] - patch + 1), k)
    xs = rng.integers(0, max(1, shape[1] - patch + 1), k)
    return [(int(y), int(x), int(y) + patch, int(x) + patch) for y, x in zip(ys, xs)]


def run(name, train_image, train_labels, test_image, test_truth, object_size, steps, device, seed=0) -> dict:
    t0 = time.perf_counter()
    config = {} if steps is None else {"steps": steps}
    model = probseg.train("concrete-dropout", train_image, train_labels, config=config, device=device, seed=seed)
    train_s = time.perf_counter() - t0
    model.predict(test_image[:64, :64], n_samples=1)  # warm-up
    t0 = time.perf_counter()
    pred = model.predict(test_image, n_samples=N_DRAWS, seed=seed)
    infer_s = time.perf_counter() - t0
    agg = agglomerate(pred.samples)
    entropy = agg.entropy()
    labels = pred.segmentation
    patch = int(2 * object_size)
    queue = proofreading_queue(entropy, labels, patch=patch, max_entries=max(KS))
    rows = []
    rng = np.random.default_rng(seed)
    for k in KS:
        guided = evaluate(correct(labels, test_truth, [e.rect for e in queue[:k]]), test_truth)
        randoms = [evaluate(correct(labels, test_truth, random_rects(labels.shape, patch, k, rng)), test_truth)
                   for _ in range(RANDOM_REPEATS if k else 1)]
        rows.append(dict(k=k, guided_f1=guided["f1"], guided_ap=guided["ap_dsb"],
                         random_f1=float(np.mean([r["f1"] for r in randoms])),
                         random_ap=float(np.mean([r["ap_dsb"] for r in randoms]))))
    metrics = patch_uncertainty_metrics(entropy, labels, test_truth, patch=4)
    return dict(name=name, device=device, train_s=train_s, infer_s=infer_s, pixels=test_image.size, patch=patch,
                queue=len(queue), rows=rows, metrics=metrics, sample_f1=float(np.mean([evaluate(s, test_truth)["f1"] for s in pred.samples])))


def save_png(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        m = r["metrics"]
        ax.plot(m.thresholds, m.pavpu, label="PAvPU", linewidth=2)
        ax.plot(m.thresholds, m.p_accurate_given_certain, label="p(accurate | certain)")
        ax.plot(m.thresholds, m.p_uncertain_given_inaccurate, label="p(uncertain | inaccurate)")
        ax.set_xlabel("entropy threshold (bits, mean over a 4x4 patch)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{r['name']} ({r['device']})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the method's)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--png", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images" / "pavpu.png")
    args = parser.parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"# {torch.get_num_threads()} torch threads, torch {torch.__version__}, {args.steps or 'default'} steps, {N_DRAWS} draws")

    image, truth = nuclei()
    half = image.shape[0] // 2
    _, blobs_train = touching_blobs((256, 256), object_size=16, seed=1)
    blobs_train_image, _ = touching_blobs((256, 256), object_size=16, seed=1)
    blobs_test_image, blobs_test = touching_blobs((256, 256), object_size=16, seed=2)
    results = []
    for device in devices:
        results.append(run("nuclei: train top half, test bottom half", image[:half], truth[:half], image[half:], truth[half:],
                           24, args.steps, device))
        results.append(run("touching blobs: train one image, test another", blobs_train_image, blobs_train,
                           blobs_test_image, blobs_test, 16, args.steps, device))

    for r in results:
        print(f"\n## {r['name']} ({r['device']}): train {r['train_s']:.0f} s, inference {r['infer_s']:.2f} s "
              f"for {r['pixels'] / 1e6:.3f} MPx with {N_DRAWS} draws; patch {r['patch']} px; "
              f"mean sample F1 {r['sample_f1']:.3f}")
        print("| k patches corrected | guided F1 | random F1 | guided AP_dsb | random AP_dsb |")
        print("|---:|---:|---:|---:|---:|")
        for row in r["rows"]:
            print(f"| {row['k']} | {row['guided_f1']:.3f} | {row['random_f1']:.3f} | {row['guided_ap']:.3f} | {row['random_ap']:.3f} |")
        m = r["metrics"]
        best = int(np.nanargmax(m.pavpu))
        print(f"best PAvPU {m.pavpu[best]:.3f} at entropy threshold {m.thresholds[best]:.3f}")
    save_png(results, args.png)


if __name__ == "__main__":
    main()
