"""The concrete-dropout method: dropout layers, loss, draws, clustering, training, persistence."""

import dataclasses

import numpy as np
import pytest
import torch

import probseg
from probseg import cli, methods
from probseg.config import fields_of
from probseg.errors import InputError
from probseg.methods import concrete_dropout as cd
from probseg.methods.concrete_dropout import (
    CONTEXT,
    Config,
    ConcreteDropout,
    DropoutUNet,
    class_targets,
    discriminative_loss,
    dropout_sampling,
    grid_search,
    grow_into_overlap,
    mean_shift,
    segmentation_loss,
)
from probseg.synthetic import touching_blobs
from probseg.training import seed_everything, train_loop

# A network small enough for about 30 ms a step on one CPU thread.
TINY = dict(num_fmaps=4, crop_size=64, batch_size=2, learning_rate=5e-3)
STEPS = 30


@pytest.fixture(scope="module")
def data():
    return touching_blobs(shape=(64, 64), object_size=12, seed=0)


@pytest.fixture(scope="module")
def model(data):
    image, labels = data
    return probseg.train("concrete-dropout", image, labels, config=TINY, steps=STEPS, device="cpu", seed=0)


def _config(**values):
    return probseg.api.make_config("concrete-dropout", dict(TINY, **values))


# =============================================================================================
# registration and config
# =============================================================================================


def test_registered_as_a_labelled_method():
    assert "concrete-dropout" in probseg.list_methods()
    info = methods.get("concrete-dropout")
    assert info.labels == "required" and info.title == "Concrete-Dropout embeddings"
    assert "Concrete Dropout" in info.reference and info.config_class is Config


def test_config_fields_are_documented_and_in_range():
    specs = fields_of(Config)
    names = [s.name for s in specs]
    assert names[:5] == ["steps", "batch_size", "crop_size", "learning_rate", "weight_decay"]
    for s in specs:
        assert s.doc.strip() and s.type in (int, float, bool, str), s.name
        if s.minimum is not None:
            assert s.default >= s.minimum, s.name
        if s.maximum is not None:
            assert s.default <= s.maximum, s.name
    defaults = Config()
    assert defaults.ignore_id == -1 and defaults.temperature == 0.1 and defaults.dropout_rate == 0.1


def test_cli_help_lists_the_generated_flags(capsys):
    assert cli.main(["train", "concrete-dropout", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--ignore-id INT" in text and "--bandwidth FLOAT" in text and "--min-size INT" in text
    assert "--dropout-regularizer" in text and "advanced Concrete-Dropout embeddings settings" in text


# =============================================================================================
# Concrete Dropout layers
# =============================================================================================


def test_dropout_layer_regularizer_matches_the_formula():
    conv = torch.nn.Conv2d(3, 2, 1)
    layer = ConcreteDropout(conv, 3, init_rate=0.2)
    p = 0.2
    square = sum(float((w.detach() ** 2).sum()) for w in conv.parameters())
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    expected = 0.5 * square / (2 * (1 - p)) - 2.0 * 3 * entropy
    assert float(layer.regularization(0.5, 2.0).detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InputError, match="dropout rate"):
        ConcreteDropout(conv, 3, init_rate=1.0)


def test_draws_differ_with_dropout_on_and_coincide_with_it_off():
    torch.manual_seed(0)
    net = DropoutUNet(1, 7, num_fmaps=4).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # eval mode: off
        with dropout_sampling(net, True):
            a, b = net(x), net(x)
        assert not torch.allclose(a, b)
        with dropout_sampling(net, True, torch.Generator().manual_seed(3)) as same:
            c = same(x)
        with dropout_sampling(net, True, torch.Generator().manual_seed(3)):
            assert torch.equal(c, net(x))  # one seed, one draw
        net.train()
        with dropout_sampling(net, False):
            assert torch.equal(net(x), net(x))  # forced off even in training mode
    assert all(m.sample is None and m.generator is None for m in net.dropout_layers())  # settings restored
    assert net(x).shape == (1, 7, 64 - 2 * CONTEXT, 64 - 2 * CONTEXT)


def test_learned_dropout_rates_move_and_stay_inside_0_1(model):
    rates = np.array(model.net.dropout_rates())
    assert len(rates) == 10
    assert np.all((rates > 0) & (rates < 1))
    assert np.abs(rates - model.config.dropout_rate).max() > 1e-3


# =============================================================================================
# loss
# =============================================================================================


def test_class_targets_mark_overlap_between_objects_only():
    labels = np.zeros((12, 16), np.int64)
    labels[2:10, 2:8] = 1
    labels[2:10, 8:14] = 2
    classes = class_targets(labels, overlap_width=2)
    assert set(np.unique(classes[labels == 0])) == {0}
    assert np.all(classes[2:10, 6:10] == 2)  # two pixels either side of the shared edge
    assert np.all(classes[2:10, 2:6] == 1) and np.all(classes[2:10, 10:14] == 1)
    # A neighbour that is not annotated is no object, so it makes no overlap.
    partly = labels.copy()
    partly[labels == 2] = 65535
    classes = class_targets(partly, overlap_width=2, ignore_id=65535)
    assert np.all(classes[labels == 1] == 1) and np.all(classes[labels == 2] == -1)


def test_discriminative_loss_terms():
    # Two tight, distant objects: only the small centre term is left.
    emb = torch.tensor([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    ids = torch.tensor([1, 1, 2, 2])
    assert float(discriminative_loss(emb, ids, delta_d=3.0, center_weight=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(discriminative_loss(emb, ids, delta_d=3.0, center_weight=1.0)) == pytest.approx(2.5, abs=1e-3)
    # The variance term has no hinge: any spread costs its squared distance.
    spread = torch.tensor([[-0.1, 0.1, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    assert float(discriminative_loss(spread, ids, 3.0, 0.0)) == pytest.approx(0.01 / 2, rel=1e-3)
    # Means 1 apart with delta_d 3 are pushed: (3 - 1)^2.
    close = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert float(discriminative_loss(close, ids, 3.0, 0.0)) == pytest.approx(4.0, rel=1e-3)


def test_loss_is_finite_and_decreases(model, data):
    losses = np.array(model.train_log["losses"])
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    assert losses[-10:].mean() < losses[:10].mean()
    # On one fixed batch (dropout still drawing) the descent is clear.
    image, labels = data
    config = _config()
    ts = probseg.trainset.training_set(image, labels)
    rng = seed_everything(0)
    net = cd.ConcreteDropoutModel.build_network(config, 1)
    loss_fn = cd.ConcreteDropoutModel.training_loss(config, ts, torch.device("cpu"))
    log = train_loop(
        net, lambda n, _rng: loss_fn(n, np.random.default_rng(0)), steps=STEPS, learning_rate=5e-3,
        device=torch.device("cpu"), rng=rng,
    )
    fixed = np.array(log.losses)
    assert np.all(np.isfinite(fixed)) and fixed[-5:].mean() < 0.8 * fixed[:5].mean()


def test_ignored_pixels_do_not_contribute(data):
    _, labels = data
    config = _config(ignore_id=65535)
    rng = np.random.default_rng(0)
    h, w = labels.shape[0] - 2 * CONTEXT, labels.shape[1] - 2 * CONTEXT
    output = torch.from_numpy(rng.normal(size=(1, config.embedding_dims + 3, h, w)).astype(np.float32))
    partial = labels.copy()
    partial[:, 32:] = 65535  # the right half is not annotated
    output.requires_grad_(True)
    loss = segmentation_loss(output, partial[None], config)
    loss.backward()
    inner = np.zeros((h, w), bool)
    inner[:, 32 - CONTEXT :] = True
    assert torch.isfinite(loss) and float(output.grad.abs()[0][:, inner].max()) == 0.0
    assert float(output.grad.abs()[0][:, ~inner].max()) > 0.0
    # Whatever the network says there, the loss stays the same.
    changed = output.detach().clone()
    changed[0][:, inner] = torch.from_numpy(rng.normal(size=(changed.shape[1], int(inner.sum()))).astype(np.float32))
    assert float(segmentation_loss(changed, partial[None], config)) == pytest.approx(float(loss.detach()), rel=1e-6)
    # Nothing annotated at all: zero, not NaN.
    nothing = np.full_like(labels, 65535)
    assert float(segmentation_loss(output.detach(), nothing[None], config)) == 0.0


def test_training_loss_sees_ignored_and_padded_pixels_as_unannotated(data, monkeypatch):
    image, labels = data
    image, labels = image[:48, :48], labels[:48, :48].copy()  # smaller than the crop: padded
    labels[:, 24:] = 65535
    seen = []

    def spy(output, crop_labels, config):
        seen.append(crop_labels.numpy().copy())
        return segmentation_loss(output, crop_labels, config)

    monkeypatch.setattr(cd, "segmentation_loss", spy)
    config = _config(ignore_id=65535)
    ts = probseg.trainset.training_set(image, labels)
    net = cd.ConcreteDropoutModel.build_network(config, 1)
    loss_fn = cd.ConcreteDropoutModel.training_loss(config, ts, torch.device("cpu"))
    assert np.isfinite(float(loss_fn(net, np.random.default_rng(0)).detach()))
    crops = seen[0]
    assert crops.shape == (config.batch_size, 64, 64)
    assert 65535 not in crops and crops.min() == -1
    # Annotated pixels are about a quarter of each padded crop: half the plane, a bit over half its area.
    annotated = (crops >= 0).mean()
    assert 0.15 < annotated < 0.35


# =============================================================================================
# clustering
# =============================================================================================


def test_mean_shift_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0, 0, 0], [4, 0, 0, 0], [0, 4, 0, 0]])
    truth = rng.integers(3, size=3000)
    points = centres[truth] + rng.normal(0, 0.2, (3000, 4))
    ids = mean_shift(points, bandwidth=1.5)
    assert ids.max() == 2
    assert all(len(np.unique(ids[truth == k])) == 1 for k in range(3))
    assert len(mean_shift(np.zeros((0, 4)), 1.0)) == 0
    with pytest.raises(InputError, match="bandwidth"):
        mean_shift(points, 0.0)


def test_overlap_pixels_join_the_object_they_belong_to():
    labels = np.zeros((10, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[2:8, 12:18] = 2
    overlap = np.zeros_like(labels, bool)
    overlap[2:8, 8:12] = True  # the gap between the two objects
    overlap[0, 0] = True  # a stray overlap pixel touching nothing
    emb = np.zeros((2,) + labels.shape)
    emb[0, labels == 2] = 5.0
    emb[0, 2:8, 10:12] = 5.0  # the right half of the gap looks like object 2
    out = grow_into_overlap(labels, overlap, emb)
    assert np.all(out[2:8, 8:10] == 1) and np.all(out[2:8, 10:12] == 2)
    assert out[0, 0] == 0 and np.array_equal(out[labels > 0], labels[labels > 0])


# =============================================================================================
# training, prediction, persistence
# =============================================================================================


def test_train_predict_shapes_and_reproducibility(model, data):
    image, _ = data
    pred = model.predict(image, n_samples=3, seed=1)
    assert pred.samples.shape == (3, 64, 64) and pred.samples.dtype == np.int32
    assert pred.segmentation.shape == (64, 64) and pred.segmentation.dtype == np.int32
    assert pred.embeddings.shape == (model.config.embedding_dims, 64, 64) and pred.embeddings.dtype == np.float32
    again = model.predict(image, n_samples=3, seed=1)
    assert np.array_equal(pred.samples, again.samples) and np.array_equal(pred.segmentation, again.segmentation)
    # Draws are different networks; dropout off is one deterministic network.
    plane = model.prepare(image).data[0]
    assert not np.allclose(model.maps(plane, seed=1), model.maps(plane, seed=2))
    assert np.array_equal(model.maps(plane), model.maps(plane))
    assert model.segment(image).shape == (64, 64)


def test_tiled_draws_match_whole_image(model):
    image, _ = touching_blobs(shape=(90, 100), object_size=12, seed=3)
    plane = model.prepare(image).data[0]
    whole = {seed: model.maps(plane, seed) for seed in (None, 5)}
    model.tile_size = 56
    try:
        for seed, expected in whole.items():
            np.testing.assert_allclose(model.maps(plane, seed), expected, atol=1e-4)
    finally:
        model.tile_size = 512


def test_save_load_round_trip(model, data, tmp_path):
    image, _ = data
    model.save(tmp_path)
    loaded = probseg.load_model(tmp_path, device="cpu")
    assert isinstance(loaded, cd.ConcreteDropoutModel) and loaded.config == model.config
    assert loaded.net.dropout_rates() == model.net.dropout_rates()
    a, b = model.predict(image, n_samples=2, seed=4), loaded.predict(image, n_samples=2, seed=4)
    assert np.array_equal(a.segmentation, b.segmentation) and np.array_equal(a.embeddings, b.embeddings)
    assert np.array_equal(a.samples, b.samples)


def test_bad_training_inputs_raise_input_error(data):
    image, labels = data
    with pytest.raises(InputError, match="learns from labels"):
        probseg.train("concrete-dropout", image, config=TINY, steps=1, device="cpu")
    with pytest.raises(InputError, match="no annotated object"):
        probseg.train("concrete-dropout", image, np.zeros_like(labels), config=TINY, steps=1, device="cpu")
    with pytest.raises(InputError, match="ignore_id 0 is the background"):
        probseg.train("concrete-dropout", image, labels, config=dict(TINY, ignore_id=0), steps=1, device="cpu")
    with pytest.raises(InputError, match="every training image"):
        probseg.train("concrete-dropout", [image, image], [labels, None], config=TINY, steps=1, device="cpu")
    with pytest.raises(InputError, match="ignore_id must be at least -1"):
        probseg.train("concrete-dropout", image, labels, config=dict(TINY, ignore_id=-2), steps=1, device="cpu")


def test_grid_search_returns_the_best_of_its_table(model, data):
    image, labels = data
    best, table = grid_search(model, image, labels, bandwidths=(0.5, 1.5), min_sizes=(0, 30))
    assert len(table) == 4
    assert [(r["bandwidth"], r["min_size"]) for r in table] == [(0.5, 0), (0.5, 30), (1.5, 0), (1.5, 30)]
    assert best in table and best["f1"] == max(r["f1"] for r in table)
    assert all(0.0 <= r["f1"] <= 1.0 for r in table)
    # Applying the best setting reproduces its score.
    tuned = dataclasses.replace(model.config, bandwidth=best["bandwidth"], min_size=best["min_size"])
    plane = model.prepare(image).data[0]
    old = model.config
    try:
        model.config = tuned
        seg = model.instances(model.maps(plane))
    finally:
        model.config = old
    assert probseg.metrics.f1_score(seg, labels) == pytest.approx(best["f1"])


def test_grid_search_ignores_unannotated_pixels_and_checks_inputs(model, data):
    image, labels = data
    with pytest.raises(InputError, match="bandwidths is empty"):
        grid_search(model, image, labels, bandwidths=())
    with pytest.raises(InputError, match="min_sizes must hold"):
        grid_search(model, image, labels, min_sizes=(-1,))
    with pytest.raises(InputError, match="labels has shape"):
        grid_search(model, image, labels[:32])
    with pytest.raises(InputError, match="3-D stack"):
        grid_search(model, np.stack([image, image]), labels)
    # Everything unannotated: no object anywhere, so every setting scores 1.
    old = model.config
    try:
        model.config = dataclasses.replace(old, ignore_id=65535)
        best, table = grid_search(model, image, np.full_like(labels, 65535), bandwidths=(1.0,), min_sizes=(0,))
    finally:
        model.config = old
    assert table == [best] and best["f1"] == 1.0
