"""A fingerprint of every method's outputs, to check that a refactor changes nothing.

Trains each registered method for a few steps on a small crop of the nuclei
sample (fixed seeds, one thread), predicts with 1 and 3 samples through both
the kept-raw and the draw-by-draw paths, and prints one SHA-256 per output
array. Run it before and after a change and compare the lines:

    python benchmarks/fingerprints.py > before.txt
    ... change ...
    python benchmarks/fingerprints.py > after.txt && diff before.txt after.txt

The figures are not accuracies; identical lines mean the same bits on the same
machine and torch build.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import torch

import probseg
from probseg import datasets, methods

STEPS = 6
CONFIGS = {
    "cellulus": {"object_size": 24},
}


def digest(array) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str((array.dtype, array.shape)).encode() + array.tobytes()).hexdigest()[:16]


def main() -> None:
    torch.set_num_threads(1)
    image, labels = datasets.nuclei()
    train_image, train_labels = image[:128, :128], labels[:128, :128]
    test_image = image[256:352, :96]
    only = sys.argv[1:]
    for name in methods.available():
        if only and name not in only:
            continue
        info = methods.get(name)
        lab = None if info.labels == "none" else [train_labels]
        model = probseg.train(name, [train_image], labels=lab, config=CONFIGS.get(name, {}), steps=STEPS, seed=0,
                              device="cpu")
        weights = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in model.net.state_dict().values()))
        print(f"{name} weights {weights.hexdigest()[:16]}", flush=True)
        for n in (1, 3):
            for keep in (True, False):
                pred = model.predict(test_image, n_samples=n, seed=1, keep_raw=keep)
                parts = {"segmentation": pred.segmentation, "samples": pred.samples,
                         "uncertainty": pred.uncertainty, "probability": pred.probability}
                if keep:
                    for key, value in pred.raw.planes[0].items():
                        parts[f"raw.{key}"] = value
                line = " ".join(f"{k}={digest(v)}" for k, v in sorted(parts.items()))
                print(f"{name} n={n} keep_raw={keep} {line}", flush=True)
        stack = np.stack([test_image, test_image[::-1]])
        pred = model.predict(stack, n_samples=2, seed=2)
        if model.has_features:
            table = model.features(model.predict(test_image, n_samples=2, seed=3))
            print(f"{name} features " + " ".join(f"{k}={digest(v)}" for k, v in table.items()), flush=True)
        print(f"{name} stack seg={digest(pred.segmentation)} smp={digest(pred.samples)}", flush=True)


if __name__ == "__main__":
    main()
