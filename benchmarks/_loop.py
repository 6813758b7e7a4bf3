"""Section 3 of benchmarks/spoco_sparse.py: the proofreading loop of issue 10, simulated.

From the same start (SPOCO trained on a few true objects of the image being
proofread), three strategies proofread ``patches`` patches a round for
``rounds`` rounds:

* ``"guided"``: the most uncertain unreviewed patches of the current queue,
  then :func:`probseg.proofreading.retrain.retrain_from_review` fine-tunes
  the model on everything reviewed so far, predicts the image again, merges
  and re-ranks;
* ``"random"``: as many random patches of the same size, then the same
  retraining;
* ``"no-retraining"``: the patches of the start's queue, in its order (the
  uncertainty never changes because the model never does), corrected but
  never retrained on.

Proofreading is simulated as a perfect proofreader would do it: every
object of the current labels touching the patch is removed, every true
object touching it is written whole with a new id, and the patch and those
objects join the reviewed pixels.

The workers (:func:`start_one`, :func:`strategy_one`) are pickled by name
into the "spawn" pool of the main script, so this module, like
benchmarks/_sparse.py, imports no torch at the top; :func:`run_loop` and
the report functions run in the main process.
"""

from __future__ import annotations

import os

# One thread per worker, set before torch is imported anywhere in the process (see _sparse.py).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import concurrent.futures as cf  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import _sparse  # noqa: E402
from probseg.proofreading.retrain import covered  # noqa: E402

# The retraining strategies first: they take far longer, so they should start first.
STRATEGIES = ("guided", "random", "no-retraining")
START_OBJECTS = 5
N_SAMPLES = 8
# Random rectangles drawn per patch before a round gives up on finding an unreviewed one.
RANDOM_TRIES = 10000


def append_log(path: str | None, row: dict) -> None:
    """Append ``row`` to the JSON-lines log ``path`` (nothing when None).

    The workers write their own rounds as they finish, so a long run that
    stops keeps every finished round; one short ``write`` per line keeps
    the lines of two workers apart.
    """
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def random_patches(shape, patch: int, k: int, reviewed_rects, rng: np.random.Generator) -> list[tuple]:
    """Up to ``k`` random ``patch x patch`` rectangles inside ``shape``, none covered more than half by another.

    Neither by a reviewed rectangle nor by one chosen before it in this
    call, the same rule the queue's non-maximum suppression applies to the
    guided patches. Gives fewer than ``k`` only when ``RANDOM_TRIES`` draws
    found no more.
    """
    height, width = shape
    chosen: list[tuple] = []
    for _ in range(RANDOM_TRIES):
        if len(chosen) == k:
            break
        y0 = int(rng.integers(0, max(1, height - patch + 1)))
        x0 = int(rng.integers(0, max(1, width - patch + 1)))
        rect = (y0, x0, min(height, y0 + patch), min(width, x0 + patch))
        if not covered(rect, list(reviewed_rects) + chosen):
            chosen.append(rect)
    return chosen


def guided_patches(queue, k: int, reviewed_rects) -> list[tuple]:
    """The rectangles of the first ``k`` entries of ``queue`` not covered more than half by a reviewed one.

    The re-ranked queue lists the reviewed patches again, so they are left
    out here.
    """
    return [e.rect for e in queue if not covered(e.rect, reviewed_rects)][:k]


def proofread(labels: np.ndarray, truth: np.ndarray, reviewed: np.ndarray, rects) -> tuple[np.ndarray, np.ndarray, set]:
    """A perfect proofreader's corrections of the patches ``rects``, one after the other.

    Every object of ``labels`` with a pixel in the patch is removed whole;
    every object of ``truth`` with a pixel in it is written whole with an id
    not in use; the patch and those objects' pixels become reviewed.
    Returns the new labels (int32), the new reviewed mask and the true ids
    written.
    """
    labels = labels.astype(np.int32, copy=True)
    reviewed = reviewed.copy()
    written: set = set()
    for y0, x0, y1, x1 in rects:
        gone = np.unique(labels[y0:y1, x0:x1])
        labels[np.isin(labels, gone[gone > 0])] = 0
        true_ids = np.unique(truth[y0:y1, x0:x1])
        true_ids = true_ids[true_ids > 0]
        next_id = int(labels.max()) + 1
        for k, true_id in enumerate(true_ids):
            obj = truth == true_id
            labels[obj] = next_id + k
            reviewed |= obj
        reviewed[y0:y1, x0:x1] = True
        written.update(int(i) for i in true_ids)
    return labels, reviewed, written


def held_out_scores(model, test_image: np.ndarray, test_labels: np.ndarray) -> dict:
    """F1 and SEG of ``model`` on the held-out image: one sample, default post-processing, as section 1 scores."""
    from probseg.evaluation.metrics import evaluate

    raw = model.predict_raw(test_image, n_samples=1)
    return evaluate(model.postprocess(raw).segmentation, test_labels)


def scores_row(image_scores: dict, held_scores: dict) -> dict:
    return dict(image_f1=image_scores["f1"], image_seg=image_scores["seg"], image_n_pred=image_scores["n_pred"],
                heldout_f1=held_scores["f1"], heldout_seg=held_scores["seg"], heldout_n_pred=held_scores["n_pred"])


def start_one(task: dict) -> dict:
    """The start all strategies share: SPOCO from scratch on ``START_OBJECTS`` true objects.

    ``task``: ``dataset``, ``seed`` (draw of the objects, training and
    prediction seed), ``steps`` (None: SPOCO's default), ``patch``,
    ``folder`` (where the model and the state are written for the
    strategies), ``log``. The objects are drawn with
    ``numpy.random.default_rng(seed)``. The image is predicted with
    ``N_SAMPLES`` samples; its labels are that prediction merged around the
    annotated objects (:func:`~probseg.proofreading.retrain.merge_retrained`),
    which are what the user has; the reviewed mask is their pixels.
    Returns the round-0 row.
    """
    import probseg
    from probseg.evaluation.metrics import evaluate
    from probseg.proofreading.retrain import merge_retrained

    image, truth, test_image, test_labels, _ = _sparse.load_dataset(task["dataset"])
    seed = task["seed"]
    ids = np.unique(truth)
    ids = ids[ids > 0]
    keep = np.random.default_rng(seed).choice(ids, START_OBJECTS, replace=False)
    sparse = np.where(np.isin(truth, keep), truth, 0)
    started = time.perf_counter()
    model = probseg.train("spoco", image, sparse, {"label_mode": "sparse"}, steps=task["steps"], device="cpu", seed=seed)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    prediction = model.predict(image, n_samples=N_SAMPLES, seed=seed, keep_raw=False)
    predict_s = time.perf_counter() - started
    reviewed = sparse > 0
    labels = merge_retrained(sparse, prediction.segmentation, reviewed, model.min_size(model.settings))
    folder = Path(task["folder"])
    model.save(folder / "model")
    np.savez(folder / "state.npz", labels=labels, uncertainty=prediction.uncertainty, reviewed=reviewed)
    row = dict(section="loop", dataset=task["dataset"], strategy="start", round=0, seed=seed, patch=task["patch"],
               n_objects=int(ids.size), shape=list(image.shape), start_objects=[int(i) for i in keep],
               steps=int(model.train_log["steps_done"]), train_s=train_s, train_loop_s=float(model.train_log["seconds"]),
               predict_s=predict_s, round_s=train_s + predict_s, proofread_objects=0, patches=[],
               **scores_row(evaluate(labels, truth), held_out_scores(model, test_image, test_labels)))
    append_log(task["log"], row)
    return row


def strategy_one(task: dict) -> list[dict]:
    """Run one strategy's rounds from the start written by :func:`start_one`; one row per round.

    ``task``: as for :func:`start_one` plus ``strategy`` (one of
    ``STRATEGIES``), ``rounds``, ``patches`` (patches a round),
    ``loop_steps`` (fine-tuning steps a round; None: the retraining's
    default). The random patches use ``numpy.random.default_rng(seed)``.
    Each row has the image F1/SEG (the current labels against the truth of
    the proofread image), the held-out F1/SEG (the current model on the
    held-out image), the distinct true objects written so far, and the
    round's seconds (choice, corrections, retraining; not the scoring).
    """
    import probseg
    from probseg.evaluation.metrics import evaluate
    from probseg.proofreading.retrain import reranked_queue, retrain_from_review

    image, truth, test_image, test_labels, _ = _sparse.load_dataset(task["dataset"])
    strategy, seed, patch, k = task["strategy"], task["seed"], task["patch"], task["patches"]
    folder = Path(task["folder"])
    model = probseg.load_model(folder / "model", device="cpu")
    with np.load(folder / "state.npz") as state:
        labels, uncertainty, reviewed = state["labels"], state["uncertainty"], state["reviewed"]
    queue = reranked_queue(uncertainty, labels, (), patch)
    rng = np.random.default_rng(seed)
    rects: list[tuple] = []
    written: set = set()
    rows = []
    for r in range(1, task["rounds"] + 1):
        started = time.perf_counter()
        if strategy == "random":
            chosen = random_patches(labels.shape, patch, k, rects, rng)
        else:
            chosen = guided_patches(queue, k, rects)
        labels, reviewed, got = proofread(labels, truth, reviewed, chosen)
        rects += chosen
        written |= got
        steps, fine_tune_s, retrain_s = 0, 0.0, 0.0
        if strategy == "no-retraining":
            # Same uncertainty, so the same ranking; re-ranking only drops the patches just reviewed.
            queue = reranked_queue(uncertainty, labels, rects, patch)
        else:
            result = retrain_from_review(image, labels, reviewed, model, steps=task["loop_steps"], n_samples=N_SAMPLES,
                                         seed=seed, device="cpu", patch=patch, reviewed_patches=rects)
            model, labels, uncertainty, queue = result.model, result.labels, result.uncertainty, result.queue
            steps, fine_tune_s, retrain_s = (int(model.train_log["steps_done"]), float(model.train_log["seconds"]),
                                             result.seconds)
        round_s = time.perf_counter() - started
        row = dict(section="loop", dataset=task["dataset"], strategy=strategy, round=r, seed=seed, patch=patch,
                   patches=[list(map(int, rect)) for rect in chosen], n_patches=len(chosen), patches_wanted=k,
                   proofread_objects=len(written), reviewed_px=int(reviewed.sum()), steps=steps,
                   fine_tune_s=fine_tune_s, retrain_s=retrain_s, round_s=round_s,
                   **scores_row(evaluate(labels, truth), held_out_scores(model, test_image, test_labels)))
        append_log(task["log"], row)
        print(f"  loop {task['dataset']} {strategy} round {r}: image F1 {row['image_f1']:.3f}, "
              f"held-out F1 {row['heldout_f1']:.3f}, {len(written)} objects proofread, {round_s:.0f} s",
              file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def run_loop(args, save_dir: str) -> list[dict]:
    """Every dataset's start, then its three strategies, in ``args.jobs`` one-thread worker processes.

    A dataset's strategies are submitted as soon as its start is done, so
    one dataset's strategies run while the other's start trains.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    rows: list[dict] = []
    with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_sparse.limit_threads) as pool:
        pending = {}
        for dataset in args.loop_datasets:
            folder = Path(save_dir) / f"loop_{dataset}"
            folder.mkdir(parents=True, exist_ok=True)
            task = dict(dataset=dataset, seed=args.loop_seed, steps=args.loop_start_steps, folder=str(folder),
                        patch=args.loop_patch_size or patch_side(dataset), rounds=args.loop_rounds,
                        patches=args.loop_patches, loop_steps=args.loop_steps, log=args.log)
            pending[pool.submit(start_one, task)] = task
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                if "strategy" not in task:
                    row = future.result()
                    rows.append(row)
                    print(f"  loop {row['dataset']} start: {row['steps']} steps {row['train_s']:.0f} s, image F1 "
                          f"{row['image_f1']:.3f}, held-out F1 {row['heldout_f1']:.3f}", file=sys.stderr, flush=True)
                    for strategy in STRATEGIES:
                        mine = dict(task, strategy=strategy)
                        pending[pool.submit(strategy_one, mine)] = mine
                else:
                    rows.extend(future.result())
                    print(f"  loop {task['dataset']} {task['strategy']} done", file=sys.stderr, flush=True)
    return rows


def patch_side(dataset: str) -> int:
    """The default patch side: twice the typical object size (nuclei 24 px, blobs 16 px)."""
    if dataset == "blobs":
        return 2 * _sparse.BLOB_SIZE
    from probseg.evaluation.datasets import NUCLEI_OBJECT_SIZE

    return 2 * int(NUCLEI_OBJECT_SIZE)


def _get(rows: list[dict], dataset: str, strategy: str, r: int) -> dict | None:
    if r == 0:
        strategy = "start"
    return next((x for x in rows if x["dataset"] == dataset and x["strategy"] == strategy and x["round"] == r), None)


def loop_table(dataset: str, rows: list[dict]) -> str:
    """Markdown table of one dataset: a row per round, image and held-out F1 / SEG of each strategy."""
    cols = (["round"] + [f"{s} image F1 / SEG" for s in STRATEGIES] + [f"{s} held-out F1 / SEG" for s in STRATEGIES]
            + ["objects proofread (g / r / n)", "round s (g / r / n)"])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rounds = sorted({x["round"] for x in rows if x["dataset"] == dataset})
    for r in rounds:
        got = [_get(rows, dataset, s, r) for s in STRATEGIES]
        cells = [str(r)]
        for key in ("image", "heldout"):
            cells += ["—" if g is None else f"{g[key + '_f1']:.3f} / {g[key + '_seg']:.3f}" for g in got]
        if r == 0:
            cells += ["0 (start)", f"{got[0]['round_s']:.0f} (start: train + predict)"]
        else:
            cells.append(" / ".join("—" if g is None else str(g["proofread_objects"]) for g in got))
            cells.append(" / ".join("—" if g is None else f"{g['round_s']:.0f}" for g in got))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(dataset: str, rows: list[dict]) -> list[str]:
    """The issue's target for each round: guided ahead of random and of no-retraining, image and held-out F1 apart."""
    out = []
    rounds = sorted({x["round"] for x in rows if x["dataset"] == dataset and x["round"] > 0})
    for r in rounds:
        guided, random, none = (_get(rows, dataset, s, r) for s in STRATEGIES)
        for key, what in (("image_f1", "image F1"), ("heldout_f1", "held-out F1")):
            if guided is None or random is None or none is None:
                out.append(f"- round {r}, {what}: not measured (a strategy did not finish)")
                continue
            g, a, b = guided[key], random[key], none[key]
            margin = min(g - a, g - b)
            out.append(f"- round {r}, {what}: guided {g:.3f} vs random {a:.3f} ({g - a:+.3f}) and no-retraining "
                       f"{b:.3f} ({g - b:+.3f}): " + ("met" if margin > 0 else f"missed by {abs(margin):.3f}"))
    return out


def report(dataset: str, rows: list[dict]) -> str:
    """Section 3 of one dataset: what was run, the table and the targets."""
    start = _get(rows, dataset, "start", 0)
    if start is None:
        return f"\n## The loop, simulated: {dataset}\n\nnot measured (the start did not finish)"
    later = [x for x in rows if x["dataset"] == dataset and x["round"] > 0 and x["steps"]]
    fine = sorted({x["steps"] for x in later})
    per_step = [x["fine_tune_s"] / x["steps"] for x in later]
    predict = [x["retrain_s"] - x["fine_tune_s"] for x in later]
    wanted = sorted({x["patches_wanted"] for x in rows if x["dataset"] == dataset and x["round"] > 0})
    short = [x for x in rows if x["dataset"] == dataset and x["round"] > 0 and x["n_patches"] < x["patches_wanted"]]
    lines = [
        f"\n## The loop, simulated: {dataset} ({start['shape'][0]} x {start['shape'][1]} proofread image, "
        f"{start['n_objects']} objects)\n",
        f"Start: {START_OBJECTS} true objects (numpy.random.default_rng({start['seed']})), SPOCO from scratch in sparse "
        f"mode, {start['steps']} steps ({start['train_s']:.0f} s, {start['train_loop_s'] / start['steps']:.3f} s a step), "
        f"{N_SAMPLES}-sample prediction ({start['predict_s']:.0f} s). Each round: {'/'.join(map(str, wanted))} patches "
        f"of {start['patch']} px proofread (objects touching a patch replaced by the true ones), then guided and random "
        f"fine-tune {'/'.join(map(str, fine)) or '—'} steps"
        + (f" ({np.mean(per_step):.3f} s a step, {np.mean(predict):.0f} s to predict {N_SAMPLES} samples, merge and "
           f"re-rank)" if later else "")
        + ". Image = the proofread image's current labels against its truth; held-out = the current model on the "
        "held-out image, 1 sample, default post-processing; round s = choice, corrections and retraining.\n",
        loop_table(dataset, rows),
    ]
    if short:
        # The queue leaves out patches of zero uncertainty, so a guided round can run out of patches.
        lines.append("\nFewer patches than asked: " + "; ".join(
            f"{x['strategy']} round {x['round']} {x['n_patches']} of {x['patches_wanted']}"
            + (" (no more unreviewed queue entries with uncertainty > 0)" if x["strategy"] != "random" else
               f" (no more unreviewed places in {RANDOM_TRIES} draws)")
            for x in sorted(short, key=lambda x: (x["round"], STRATEGIES.index(x["strategy"])))) + ".")
    lines.append("\nTarget (issue 10): guided ahead of random and of no-retraining in every round.\n")
    lines += target_lines(dataset, rows)
    return "\n".join(lines)
