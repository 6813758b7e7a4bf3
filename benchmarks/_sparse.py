"""Worker side of benchmarks/spoco_sparse.py: one training per call, run in a separate process.

The functions here are what a ``ProcessPoolExecutor`` with the "spawn"
context pickles by name, so they live in a module of their own with no
torch import at the top: the thread limits below must be in place before
torch starts its thread pool.
"""

from __future__ import annotations

import os

# Two cores shared by N workers (and often by other jobs): one thread each,
# set before torch is imported anywhere in this process.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

IGNORE_ID = 65535
BLOB_SIZE = 16
BLOBS = dict(shape=(256, 256), object_size=BLOB_SIZE, background="structured", noise=0.3, density=0.6)
DATASETS = ("nuclei", "blobs")


def limit_threads() -> None:
    """Pool initializer: one torch thread in this worker."""
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def load_dataset(name: str) -> tuple:
    """``(train_image, train_labels, test_image, test_labels, object_size)`` of one dataset.

    ``"nuclei"``: the nuclei sample's top half rows (train) and bottom half
    (test), as benchmarks/accuracy.py splits it. ``"blobs"``: accuracy.py's
    touching blobs (16 px objects on a structured background, noise 0.3,
    density 0.6), seed 1 train and seed 2 test.
    """
    if name == "nuclei":
        from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE, nuclei

        image, labels = nuclei()
        h = image.shape[0] // 2
        return image[:h], labels[:h], image[h:], labels[h:], float(NUCLEI_OBJECT_SIZE)
    if name == "blobs":
        from probseg.evaluation.synthetic import touching_blobs

        train_image, train_labels = touching_blobs(**BLOBS, seed=1)
        test_image, test_labels = touching_blobs(**BLOBS, seed=2)
        return train_image, train_labels, test_image, test_labels, float(BLOB_SIZE)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def n_picked(n_objects: int, fraction: float) -> int:
    """Objects kept for a fraction: ``round(fraction * n_objects)``, at least 1."""
    return max(1, int(round(fraction * n_objects)))


def sparse_labels(labels: np.ndarray, fraction: float, draw: int) -> tuple[np.ndarray, int, int]:
    """Keep a random ``fraction`` of the objects of ``labels`` (draw ``draw``), 0 elsewhere.

    Returns the sparse labels, the number of objects kept and the number of
    objects in ``labels``. The objects are chosen with
    ``numpy.random.default_rng(draw)``, so every method of one draw sees the
    same objects.
    """
    ids = np.unique(labels)
    ids = ids[ids > 0]
    keep = np.random.default_rng(draw).choice(ids, n_picked(len(ids), fraction), replace=False)
    return np.where(np.isin(labels, keep), labels, 0), len(keep), len(ids)


def train_one(task: dict) -> dict:
    """Train one method on one sparse labelling and score it on the test image.

    ``task``: ``dataset``, ``fraction``, ``draw``, ``method`` ("spoco" or
    "concrete-dropout"), ``steps`` (None: the method's default) and
    optionally ``save``, a folder the trained model is written to.

    SPOCO gets the sparse labels in its "sparse" label mode (0 unlabelled);
    Concrete-Dropout gets the same objects with every other pixel set to
    ``IGNORE_ID`` and ``ignore_id`` configured, so neither method is told
    anything about the unlabelled pixels. Both segment the test image with
    one sample and their default post-processing.
    """
    import probseg
    from probseg.evaluation.metrics import evaluate

    train_image, train_labels, test_image, test_labels, _ = load_dataset(task["dataset"])
    sparse, n_kept, n_objects = sparse_labels(train_labels, task["fraction"], task["draw"])
    if task["method"] == "spoco":
        labels, config = sparse, {"label_mode": "sparse"}
    else:
        labels, config = np.where(sparse > 0, sparse, IGNORE_ID), {"ignore_id": IGNORE_ID}
    start = time.perf_counter()
    model = probseg.train(task["method"], train_image, labels, config, steps=task["steps"], device="cpu", seed=task["draw"])
    train_s = time.perf_counter() - start
    raw = model.predict_raw(test_image, n_samples=1)
    scores = evaluate(model.postprocess(raw).segmentation, test_labels)
    if task.get("save"):
        model.save(task["save"])
    return dict(dataset=task["dataset"], fraction=task["fraction"], draw=task["draw"], method=task["method"],
                n_labelled=n_kept, n_objects=n_objects, steps=int(model.config.steps), train_s=train_s,
                **{k: scores[k] for k in ("f1", "seg", "ap_dsb", "n_pred", "n_gt")})


def hdbscan_child(emb_path: str, out_path: str, min_size: int, max_points: int | None) -> None:
    """Run :func:`probseg.partition.hdbscan_instances` on saved embeddings and save labels and seconds.

    Runs in a process of its own so that the parent can kill it at the
    timeout; only the call itself is timed. The foreground is every pixel.
    """
    from probseg.partition import hdbscan_instances

    embeddings = np.load(emb_path)
    foreground = np.ones(embeddings.shape[1:], dtype=bool)
    start = time.perf_counter()
    labels = hdbscan_instances(embeddings, foreground, min_size, max_points=max_points)
    seconds = time.perf_counter() - start
    np.savez(out_path, labels=labels, seconds=seconds)
