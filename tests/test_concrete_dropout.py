"""The concrete-dropout method: dropout layers, loss, draws, clustering, training, persistence, tuning."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

import probseg
from probseg import cli, methods
from probseg.core.config import fields_of
from probseg.core.errors import InputError
from probseg.methods.concrete_dropout import model as cd
from probseg.nn.layers import ConcreteDropout, dropout_layers, dropout_rates, dropout_sampling
from probseg.nn.losses import discriminative_loss
from probseg.methods.concrete_dropout.loss import class_targets, segmentation_loss
from probseg.methods.concrete_dropout.model import Config, Settings
from probseg.methods.concrete_dropout.partitions import grow_into_overlap
from probseg.engine.model import SETTINGS_NAME
from probseg.partition import mean_shift
from probseg.evaluation.synthetic import touching_blobs
from probseg.nn.training import seed_everything, train_loop

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


@pytest.fixture
def fresh(model):
    """The trained model, with settings and config of its own (tuning changes them)."""
    other = copy.copy(model)
    other.folder = None
    return other


def _config(**values):
    return probseg.engine.api.make_config("concrete-dropout", dict(TINY, **values))


def _network(**values):
    torch.manual_seed(0)
    return cd.ConcreteDropoutModel.build_network(_config(**values), 1)


# =============================================================================================
# registration and config
# =============================================================================================


def test_registered_as_a_labelled_method():
    assert "concrete-dropout" in probseg.list_methods()
    info = methods.get("concrete-dropout")
    assert info.labels == "required" and info.title == "Concrete-Dropout embeddings"
    assert "Concrete Dropout" in info.reference and info.config_class is Config
    assert info.settings_class is Settings and info.model_class is cd.ConcreteDropoutModel


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
    assert defaults.ignore_id == -1 and defaults.temperature == 0.1 and defaults.dropout_rate == 0.05


def test_cli_help_lists_the_generated_flags(capsys, model, tmp_path):
    assert cli.main(["train", "concrete-dropout", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--ignore-id INT" in text and "--dropout-regularizer" in text
    assert "advanced Concrete-Dropout embeddings settings" in text
    assert "--bandwidth" not in text and "--min-size" not in text  # post-processing, not training
    folder = copy.copy(model).save(tmp_path / "cd")
    assert cli.main(["segment", str(folder), "image.tif", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--bandwidth FLOAT" in text and "--min-size INT" in text and "--seed-threshold FLOAT" in text
    assert "--partition {watershed,meanshift" in text


def test_settings_fields_are_documented_and_in_range():
    for s in fields_of(Settings):
        assert s.doc.strip() and s.type in (int, float, bool, str), s.name
        if s.minimum is not None:
            assert s.default >= s.minimum, s.name
        if s.maximum is not None:
            assert s.default <= s.maximum, s.name
    assert Settings().partition == "watershed"
    assert not {s.name for s in fields_of(Settings)} & {s.name for s in fields_of(Config)}


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
    net = _network(embedding_dims=4).eval()
    assert len(dropout_layers(net)) == 10 and all(isinstance(m, ConcreteDropout) for m in dropout_layers(net))
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
    assert all(m.sample is None and m.generator is None for m in dropout_layers(net))  # settings restored
    assert net.context == 20 and net.align == 4
    assert net(x).shape == (1, 7, 64 - 2 * net.context, 64 - 2 * net.context)


def test_learned_dropout_rates_move_and_stay_inside_0_1(model):
    rates = np.array(dropout_rates(model.net))
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
    ts = probseg.nn.trainset.training_set(image, labels)
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
    context = _network().context
    h, w = labels.shape[0] - 2 * context, labels.shape[1] - 2 * context
    output = torch.from_numpy(rng.normal(size=(1, config.embedding_dims + 3, h, w)).astype(np.float32))
    partial = labels.copy()
    partial[:, 32:] = 65535  # the right half is not annotated
    output.requires_grad_(True)
    loss = segmentation_loss(output, partial[None], config)
    loss.backward()
    inner = np.zeros((h, w), bool)
    inner[:, 32 - context :] = True
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
    ts = probseg.nn.trainset.training_set(image, labels)
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
    assert dropout_rates(loaded.net) == dropout_rates(model.net)
    assert loaded.settings == model.settings
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


# =============================================================================================
# tuning the post-processing (probseg.tune)
# =============================================================================================

GRID = {"partition": ["meanshift"], "bandwidth": [0.5, 1.5], "min_size": [0, 30]}


def test_tune_returns_the_best_of_its_table(fresh, data):
    image, labels = data
    result = probseg.tune(fresh, image, labels, GRID, save=False)
    table = result.table
    assert [(r["partition"], r["bandwidth"], r["min_size"]) for r in table] == [
        ("meanshift", 0.5, 0), ("meanshift", 0.5, 30), ("meanshift", 1.5, 0), ("meanshift", 1.5, 30)]
    assert all(0.0 <= r["f1"] <= 1.0 and 0.0 <= r["ap_dsb"] <= 1.0 for r in table)
    best = result.best_row
    assert best in table and best["f1"] == max(r["f1"] for r in table)
    assert (best["f1"], best["ap_dsb"]) == max((r["f1"], r["ap_dsb"]) for r in table)
    assert result.saved is None
    # The complete best settings are the model's now; the rest kept their values.
    assert set(result.best) == {f.name for f in fields_of(Settings)}
    assert {k: result.best[k] for k in GRID} == {k: best[k] for k in GRID}
    assert result.best["seed_threshold"] == Settings().seed_threshold
    assert dataclasses.asdict(fresh.settings) == result.best
    # Applying the best settings reproduces its score.
    seg = fresh.predict(image, n_samples=1).segmentation
    assert probseg.metrics.f1_score(seg, labels) == pytest.approx(best["f1"])


def test_tune_default_grid_is_the_methods(fresh, data):
    image, labels = data
    result = probseg.tune(fresh, image, labels, save=False)
    grid = fresh.tune_grid()
    assert len(result.table) == int(np.prod([len(v) for v in grid.values()]))
    assert [k for k in result.table[0] if k not in ("f1", "ap_dsb")] == list(grid)


@pytest.mark.parametrize(
    "grid, words",
    [
        ({}, "empty"),
        ({"bandwidth": []}, "no values"),
        ({"min_size": [-1]}, "min_size"),
        ({"partition": ["kmeans"]}, "partition"),
        ({"no_such_setting": [1]}, "no_such_setting"),
        ({"steps": [10]}, "steps"),  # a training setting is not a post-processing one
    ],
)
def test_tune_rejects_a_bad_grid(fresh, data, grid, words):
    image, labels = data
    with pytest.raises(InputError, match=words):
        probseg.tune(fresh, image, labels, grid, save=False)


def test_tune_checks_image_and_labels(fresh, data):
    image, labels = data
    with pytest.raises(InputError, match="labels"):
        probseg.tune(fresh, image, labels[:32], GRID, save=False)
    with pytest.raises(InputError, match="3-D stack"):
        probseg.tune(fresh, np.stack([image, image]), labels, GRID, save=False)
    with pytest.raises(InputError, match="no object"):
        probseg.tune(fresh, image, np.zeros_like(labels), GRID, save=False)
    # Everything unannotated: nothing to tune on.
    fresh.config = dataclasses.replace(fresh.config, ignore_id=65535)
    with pytest.raises(InputError, match="no object"):
        probseg.tune(fresh, image, np.full_like(labels, 65535), GRID, save=False)


def test_tune_leaves_unannotated_pixels_out(fresh, data):
    image, labels = data
    partial = labels.copy()
    partial[:, 32:] = 65535  # the right half is not annotated
    fresh.config = dataclasses.replace(fresh.config, ignore_id=65535)
    result = probseg.tune(fresh, image, partial, GRID, save=False)
    raw = fresh.predict_raw(image, 1)
    ignored = partial == 65535
    truth = np.where(ignored, 0, partial)
    for row in result.table:
        seg, _ = fresh.instances(raw.planes[0], fresh.make_settings({k: row[k] for k in GRID}), 1)
        # objects lying mostly on unannotated pixels are not scored
        kept = [i for i in np.unique(seg[seg > 0]) if ignored[seg == i].mean() <= 0.5]
        scored = np.where(np.isin(seg, kept), seg, 0)
        assert row["f1"] == pytest.approx(probseg.metrics.f1_score(scored, truth))
        # ... whereas calling the right half background would count them as false positives
        if len(kept) < len(np.unique(seg[seg > 0])):
            assert row["f1"] >= probseg.metrics.f1_score(seg, truth)


def test_tuned_settings_are_stored_and_used_by_the_next_prediction(model, data, tmp_path):
    image, labels = data
    folder = copy.copy(model).save(tmp_path / "cd")
    loaded = probseg.load_model(folder, device="cpu")
    assert loaded.settings == Settings()
    grid = {"partition": ["watershed", "meanshift"], "min_size": [0, 60]}
    result = probseg.tune(loaded, image, labels, grid)
    assert result.saved == folder / SETTINGS_NAME
    stored = json.loads((folder / SETTINGS_NAME).read_text())
    assert stored == {"method": "concrete-dropout", "settings": result.best}
    again = probseg.load_model(folder, device="cpu")
    assert dataclasses.asdict(again.settings) == result.best
    pred = again.predict(image, n_samples=2, seed=3)
    assert pred.settings == again.settings
    expected = loaded.postprocess(loaded.predict_raw(image, 2, seed=3), result.best)
    np.testing.assert_array_equal(pred.segmentation, expected.segmentation)
    np.testing.assert_array_equal(pred.samples, expected.samples)
    # A dry run (save=False) leaves the stored settings alone.
    before = (folder / SETTINGS_NAME).read_bytes()
    probseg.tune(again, image, labels, {"min_size": [5]}, save=False)
    assert (folder / SETTINGS_NAME).read_bytes() == before
