"""A quick probe of SPOCO's training defaults (not the issue-10 benchmark, which is still to be written).

    OMP_NUM_THREADS=1 python benchmarks/spoco_probe.py 4000 '{"learning_rate": 1e-3}'

Trains SPOCO on a 256 x 256 touching-blobs image (object size 20, seed 0)
with a random quarter of its objects labelled (sparse mode: every other
pixel is unlabelled), then segments a second image (seed 1) and prints the
F1 at IoU 0.5 of the default post-processing and of a few other settings,
with the partition time. Arguments: steps, then optional Config changes as
JSON. One training image and one seed: the numbers show a trend, not a
spread.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import probseg
from probseg.evaluation.metrics import f1_score
from probseg.evaluation.synthetic import touching_blobs


def main(argv: list[str]) -> None:
    steps = int(argv[0]) if argv else 4000
    config = json.loads(argv[1]) if len(argv) > 1 else None
    image, labels = touching_blobs(shape=(256, 256), object_size=20, seed=0)
    test_image, test_labels = touching_blobs(shape=(256, 256), object_size=20, seed=1)
    ids = np.unique(labels)[1:]
    keep = np.random.default_rng(0).choice(ids, max(1, len(ids) // 4), replace=False)
    sparse = np.where(np.isin(labels, keep), labels, 0)
    start = time.time()
    model = probseg.train("spoco", image, sparse, config, steps=steps, device="cpu", seed=0)
    losses = model.train_log["losses"]
    print(f"{len(keep)}/{len(ids)} objects labelled; {steps} steps in {time.time() - start:.0f} s; "
          f"mean loss of the first 10 steps {np.mean(losses[:10]):.3f}, of the last 10 {np.mean(losses[-10:]):.3f}")
    raw = model.predict_raw(test_image, n_samples=1)
    n_true = len(np.unique(test_labels)) - 1
    for settings in ({}, {"bias": 0.3}, {"bias": 0.7}, {"partition": "meanshift"}):
        start = time.time()
        seg = model.postprocess(raw, settings).segmentation
        took = time.time() - start
        print(f"{settings or 'defaults'}: {seg.max()} objects ({n_true} true), F1@0.5 {f1_score(seg, test_labels):.3f}, "
              f"post-processing {took:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
