"""Fine-tuning (train with init) and the proofreading closed loop: review labels, merge, re-rank, retrain."""

import numpy as np
import pytest
import torch

import probseg
from probseg.core.callbacks import Callbacks
from probseg.core.errors import Cancelled, InputError
from probseg.core.labels import BACKGROUND, UNLABELLED, encode_labels
from probseg.methods.spoco import model as spoco
from probseg.proofreading.queue import proofreading_queue
from probseg.proofreading.session import Session
from probseg.proofreading.retrain import (
    FINE_TUNE_STEPS,
    merge_retrained,
    reranked_queue,
    retrain_from_review,
    review_labels,
)
from probseg.evaluation.synthetic import touching_blobs

# Non-spatial: the loss of a toy network then falls steadily enough to compare starts.
TINY = dict(num_fmaps=4, embedding_dims=8, crop_size=48, batch_size=2, spatial=0.0)


@pytest.fixture(scope="module")
def blobs():
    image, truth = touching_blobs(shape=(96, 96), object_size=16, seed=3)
    ids = np.unique(truth)[1:]
    sparse = np.where(np.isin(truth, ids[::3]), truth, 0)
    return image, truth, sparse


@pytest.fixture(scope="module")
def base(blobs):
    image, _, sparse = blobs
    return probseg.train("spoco", image, sparse, config=dict(TINY, learning_rate=5e-3), steps=150, device="cpu", seed=0)


def _state(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


# -- train(init=...) -----------------------------------------------------------------------


def test_fine_tuning_starts_from_the_models_whole_state_and_leaves_it_alone(blobs, base):
    image, _, sparse = blobs
    before = _state(base)
    stopped = probseg.train("spoco", image, sparse, {"learning_rate": 1e-2}, steps=5, device="cpu", init=base,
                            callbacks=Callbacks(should_stop=lambda: True))
    state = stopped.net.state_dict()
    assert set(state) == set(before) and any(k.startswith("g.") for k in state) and "object_area" in state
    for name, value in before.items():
        assert torch.equal(state[name], value), name
    assert float(stopped.net.object_area) > 0
    assert stopped.config.num_fmaps == 4 and stopped.config.learning_rate == 1e-2  # base's network, the caller's rate

    tuned = probseg.train("spoco", image, sparse, steps=5, device="cpu", init=base, seed=1)
    assert tuned.net is not base.net and tuned.config.steps == 5
    assert any(not torch.equal(tuned.net.state_dict()[k], v) for k, v in before.items())
    for name, value in before.items():
        assert torch.equal(base.net.state_dict()[name], value), name
    origin = tuned.train_log["fine_tuned_from"]
    assert origin["steps_done"] == 150 and origin["method"] == "spoco" and len(origin["weights_sha256"]) == 64
    assert tuned.record["fine_tuned_from"] == origin


def test_fine_tuning_begins_with_a_lower_loss_than_training_from_scratch(blobs, base):
    image, _, sparse = blobs
    # A learning rate of ~0 measures each starting network on the same eight batches.
    still = {"learning_rate": 1e-7}
    scratch = probseg.train("spoco", image, sparse, config=dict(TINY, **still), steps=8, device="cpu", seed=7)
    tuned = probseg.train("spoco", image, sparse, config=still, steps=8, device="cpu", seed=7, init=base)
    assert np.mean(tuned.train_log["losses"]) < 0.85 * np.mean(scratch.train_log["losses"])


def test_fine_tuning_refuses_other_methods_networks_and_channels(blobs, base):
    image, truth, sparse = blobs
    other = probseg.train("cellulus", image, config={"object_size": 16, "num_fmaps": 4}, steps=1, device="cpu")
    cases = [
        (dict(init=other), "init must be a trained spoco model to fine-tune, got a cellulus model"),
        (dict(init=base, config={"num_fmaps": 8}), "the config changes the network of the model to fine-tune"),
        (dict(init=object()), "init must be a trained spoco model"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message) as info:
            probseg.train("spoco", image, sparse, steps=1, device="cpu", **kwargs)
        assert "\n" not in str(info.value)
    rgb = np.stack([image] * 3, axis=-1)
    with pytest.raises(InputError, match="trained on 1-channel images but these have 3") as info:
        probseg.train("spoco", rgb, sparse, steps=1, device="cpu", rgb=True, init=base)
    assert "\n" not in str(info.value)


# -- review labels and merge -------------------------------------------------------------------


def test_review_labels_codes():
    labels = np.array([[1, 1, 0, 2],
                       [0, 0, 0, 2],
                       [3, 3, 0, 0]], np.int32)
    mask = np.zeros(labels.shape, bool)
    mask[:2, :3] = True
    out = review_labels(labels, mask)
    np.testing.assert_array_equal(out, [[1, 1, 65535, 0],
                                        [65535, 65535, 65535, 0],
                                        [0, 0, 0, 0]])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(review_labels(labels, mask, background_id=9)[1], [9, 9, 9, 0])
    codes = encode_labels(out, "reviewed")
    assert (codes[mask & (labels == 0)] == BACKGROUND).all() and (codes[~mask] == UNLABELLED).all()
    for bad, message in [(np.zeros_like(mask), "nothing is reviewed yet"), (mask[:2], "reviewed mask")]:
        with pytest.raises(InputError, match=message):
            review_labels(labels, bad)
    with pytest.raises(InputError, match="already use id 1"):
        review_labels(labels, mask, background_id=1)


def test_merge_keeps_reviewed_objects_bit_for_bit_and_replaces_the_rest():
    current = np.zeros((12, 12), np.int32)
    current[1:4, 1:4] = 7      # inside the reviewed patch
    current[2:6, 4:9] = 3      # crosses the patch border: kept whole, also outside it
    current[9:12, 9:12] = 5    # outside: replaced
    mask = np.zeros(current.shape, bool)
    mask[0:5, 0:5] = True
    predicted = np.zeros_like(current)
    predicted[0:6, 0:3] = 1    # on 7 and reviewed background, except row 5
    predicted[8:12, 8:12] = 2  # replaces 5
    predicted[6:8, 0:12] = 4   # a band below object 3, nothing kept on it
    predicted[3:6, 3:10] = 6   # on 3 or reviewed, except a piece at [3:6, 9] and one pixel at [5, 3]
    out = merge_retrained(current, predicted, mask, min_size=2)
    assert out.dtype == np.int32
    keep = np.isin(current, [3, 7]) | mask
    np.testing.assert_array_equal(out[keep], current[keep])
    assert not (out == 5).any()
    # New ids start above the largest kept id (7), in raster order of the pieces.
    assert set(np.unique(out[~keep])) == {0, 8, 9, 10, 11}
    np.testing.assert_array_equal(out[3:6, 9], [8, 8, 8])       # 6's piece right of object 3 comes first
    np.testing.assert_array_equal(out[5, 0:3], [9, 9, 9])       # object 1 clipped to outside the patch
    assert out[5, 3] == 0                                        # 6's one-pixel piece dropped (min_size 2)
    assert (out[6:8] == 10).all()                                # the band
    assert (out[8:12, 8:12] == 11).all()
    with pytest.raises(InputError, match="reviewed mask"):
        merge_retrained(current, predicted[:5], mask, 0)
    with pytest.raises(InputError, match="min_size"):
        merge_retrained(current, predicted, mask, -1)


def test_merge_splits_a_predicted_object_cut_in_two_by_a_kept_one():
    current = np.zeros((5, 9), np.int32)
    current[:, 4] = 2
    mask = np.zeros(current.shape, bool)
    mask[2, 4] = True
    predicted = np.ones_like(current)
    out = merge_retrained(current, predicted, mask, 0)
    np.testing.assert_array_equal(out[:, 4], 2)
    assert (out[:, :4] == 3).all() and (out[:, 5:] == 4).all()


def test_reranked_queue_keeps_reviewed_patches_and_drops_new_ones_on_them():
    rng = np.random.default_rng(0)
    uncertainty = rng.random((64, 64)).astype(np.float32) * 0.1
    uncertainty[2:14, 2:14] = 1.0   # the top of the new ranking, inside a reviewed patch
    uncertainty[40:50, 40:50] = 0.8
    labels = np.zeros((64, 64), np.int32)
    labels[44:48, 44:48] = 4
    reviewed = (0, 0, 20, 20)
    queue = reranked_queue(uncertainty, labels, {reviewed, "not a rectangle", (0, 0, 99, 99)}, patch=16)
    rects = [e.rect for e in queue]
    assert rects.count(reviewed) == 1 and (0, 0, 99, 99) not in rects
    plain = proofreading_queue(uncertainty, labels, patch=16)
    assert max(plain[0].center) < 16 and plain[0].rect not in rects  # more than half on the reviewed patch
    scores = [e.score for e in queue]
    assert scores == sorted(scores, reverse=True)
    assert any(4 in e.labels for e in queue)


def test_session_reviewed_mask_is_the_union_of_reviewed_patches(tmp_path):
    image = np.zeros((20, 30), np.float32)
    with Session.open(tmp_path / "img.tif", image, np.ones((20, 30), np.int32)) as session:
        with pytest.raises(InputError, match="no patch is marked reviewed yet"):
            session.reviewed_mask()
        session.mark_reviewed((0, 0, 5, 10))
        session.mark_reviewed((3, 8, 20, 12))
        mask = session.reviewed_mask()
        expected = np.zeros((20, 30), bool)
        expected[0:5, 0:10] = True
        expected[3:20, 8:12] = True
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, expected)
        session.mark_reviewed("named")
        np.testing.assert_array_equal(session.reviewed_mask({"named": (19, 29, 20, 30), (0, 0, 5, 10): (0, 0, 5, 10),
                                                             (3, 8, 20, 12): (3, 8, 20, 12)})[19, 28:], [False, True])
        with pytest.raises(InputError, match="reviewed patch 'named' has no"):
            session.reviewed_mask()
        _, mask_path = session.export_reviewed(tmp_path / "reviewed.npy", patches={
            "named": (0, 0, 1, 1), (0, 0, 5, 10): (0, 0, 5, 10), (3, 8, 20, 12): (3, 8, 20, 12)})
        np.testing.assert_array_equal(np.load(mask_path), expected.astype(np.uint8))


# -- the closed loop ---------------------------------------------------------------------------


def test_retrain_from_review_keeps_corrections_and_reranks(blobs, base):
    image, truth, _ = blobs
    corrected = truth.copy()
    mask = np.zeros(truth.shape, bool)
    mask[:48, :48] = True
    rect = (0, 0, 48, 48)
    messages = []
    steps = []
    cb = Callbacks(on_progress=lambda s, t, loss: steps.append((s, t, loss)), on_message=messages.append)
    result = retrain_from_review(image, corrected, mask, base, steps=10, n_samples=2, device="cpu", callbacks=cb,
                                 patch=32, reviewed_patches=[rect])
    ids = [int(i) for i in np.unique(truth[mask]) if i > 0]
    kept = np.isin(truth, ids)
    assert result.kept == tuple(ids)
    np.testing.assert_array_equal(result.labels[kept | mask], truth[kept | mask])
    assert result.labels.dtype == np.int32 and result.labels.shape == truth.shape
    assert result.fine_tuned and result.model.train_log["steps_done"] == 10
    assert result.model.config.label_mode == "reviewed" and result.model.config.num_fmaps == 4
    assert result.uncertainty.shape == truth.shape and result.uncertainty.dtype == np.float32
    assert rect in [e.rect for e in result.queue] and result.queue
    assert any(loss is not None for _, _, loss in steps) and any(loss is None for _, _, loss in steps)
    assert any("fine-tuning SPOCO" in m for m in messages) and any("predicting" in m for m in messages)


def test_retrain_from_scratch_and_default_fine_tune_steps(blobs, monkeypatch):
    image, truth, _ = blobs
    mask = np.zeros(truth.shape, bool)
    mask[48:, 48:] = True
    result = retrain_from_review(image, truth, mask, None, steps=3, n_samples=1, device="cpu")
    assert not result.fine_tuned and "fine_tuned_from" not in result.model.train_log
    assert result.model.config.num_fmaps == spoco.Config().num_fmaps
    seen = {}
    real_train = probseg.engine.api.train

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_train(*args, **dict(kwargs, steps=1))

    monkeypatch.setattr(probseg.engine.api, "train", spy)
    retrain_from_review(image, truth, mask, result.model, n_samples=1, device="cpu")
    assert seen["steps"] == FINE_TUNE_STEPS and seen["init"] is result.model


def test_cancel_raises_and_leaves_the_model_alone(blobs, base):
    image, truth, _ = blobs
    mask = np.zeros(truth.shape, bool)
    mask[:48, :48] = True
    before = _state(base)
    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled, match="retraining cancelled after 3 of 50 steps; nothing was changed"):
        retrain_from_review(image, truth, mask, base, steps=50, device="cpu",
                            callbacks=Callbacks(should_stop=stop_after_three))
    for name, value in before.items():
        assert torch.equal(base.net.state_dict()[name], value)
    predicting = []
    cb = Callbacks(on_message=predicting.append, should_stop=lambda: any("predicting" in m for m in predicting))
    with pytest.raises(Cancelled, match="while predicting; nothing was changed"):
        retrain_from_review(image, truth, mask, base, steps=2, device="cpu", callbacks=cb)


def test_nothing_reviewed_is_one_line(blobs):
    image, truth, _ = blobs
    with pytest.raises(InputError, match="nothing is reviewed yet") as info:
        retrain_from_review(image, truth, np.zeros(truth.shape, bool), device="cpu")
    assert "\n" not in str(info.value)
    mask = np.zeros(truth.shape, bool)
    mask[0, 0] = True
    with pytest.raises(InputError, match="hold no object"):
        retrain_from_review(image, np.zeros_like(truth), mask, steps=1, device="cpu")
