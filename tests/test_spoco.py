"""The SPOCO method: loss terms on toy embeddings, label modes, the momentum network, training and segmenting."""

import json

import numpy as np
import pytest
import tifffile
import torch

import probseg
from probseg import cli, methods
from probseg.nn import losses
from probseg.core.errors import InputError
from probseg.evaluation.metrics import evaluate
from probseg.core.labels import BACKGROUND, encode_labels, reviewed_labels
from probseg.methods.spoco import model as spoco
from probseg.methods.spoco.foreground import FROM_BACKGROUND, FROM_UNLABELLED
from probseg.methods.spoco.loss import foreground_loss, spoco_terms
from probseg.methods.spoco.net import add_coordinates, dihedral
from probseg.evaluation.synthetic import touching_blobs

from test_cli import assert_one_line_error, run_cli

TINY = dict(num_fmaps=4, embedding_dims=8, crop_size=48, batch_size=2)


@pytest.fixture(scope="module")
def data():
    image, labels = touching_blobs(shape=(64, 64), object_size=12, seed=0)
    ids = np.unique(labels)[1:]
    sparse = np.where(np.isin(labels, ids[:3]), labels, 0)  # three objects, the rest unlabelled
    return image, labels, sparse


@pytest.fixture(scope="module")
def model(data):
    image, _, sparse = data
    return probseg.train("spoco", image, sparse, config=TINY, steps=8, device="cpu", seed=0)


def test_registered_with_one_line():
    info = methods.get("spoco")
    assert info.labels == "required" and info.model_class is spoco.SpocoModel
    assert "spoco" in methods.available()


def test_paper_defaults():
    cfg = spoco.Config()
    assert (cfg.delta_v, cfg.delta_d, cfg.embedding_dims, cfg.kernel_threshold, cfg.weight_decay) == (0.5, 2.0, 16, 0.9, 1e-5)
    assert cfg.label_mode == "sparse" and spoco.Settings().partition == "mutex"


# -- loss terms -----------------------------------------------------------------------------


def _perfect_embedding(labels, spacing=10.0, dims=3):
    """Every object at its own point, far apart: a perfect embedding of ``labels``."""
    emb = np.zeros((dims,) + labels.shape, np.float32)
    for i in np.unique(labels):
        emb[i % dims, labels == i] = spacing * (1 + i // dims)
    return torch.from_numpy(emb)


def test_soft_mask_of_a_perfect_embedding_is_the_object(data):
    _, labels, _ = data
    emb = _perfect_embedding(labels)
    for obj in np.unique(labels)[1:4]:
        y, x = np.argwhere(labels == obj)[0]
        mask = losses.soft_mask(emb, emb[:, y, x], delta_v=0.5).numpy()
        np.testing.assert_allclose(mask, (labels == obj).astype(np.float32), atol=1e-6)
    anchors = torch.tensor([[obj, *np.argwhere(labels == obj)[0]] for obj in np.unique(labels)[1:4]])
    assert float(losses.single_object_loss(emb, torch.from_numpy(labels), anchors, 0.5)) < 1e-5


@pytest.mark.parametrize("t", [0.5, 0.9])
def test_soft_mask_kernel_is_t_at_delta_v(t):
    emb = torch.tensor([[0.0, 0.5, 1.0]])
    mask = losses.soft_mask(emb, torch.tensor([0.0]), delta_v=0.5, threshold=t)
    np.testing.assert_allclose(mask.numpy(), [1.0, t, t**4], rtol=1e-6)


def test_push_is_zero_for_far_apart_means_and_positive_for_close_ones():
    far = torch.tensor([[0.0, 0.0], [4.5, 0.0], [0.0, 4.5]])
    assert float(losses.mean_push(far, delta_d=2.0)) == 0.0
    close = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert float(losses.mean_push(close, delta_d=2.0)) == pytest.approx(9.0, rel=1e-4)  # (2*2 - 1)^2
    unl = torch.tensor([[3.0, 10.0], [0.0, 0.0]])  # unlabelled pixels at distance 3 and 10 from mean (0, 0)
    assert float(losses.unlabelled_push(torch.zeros(1, 2), unl, delta_d=2.0)) == 0.0
    assert float(losses.unlabelled_push(torch.zeros(1, 2), torch.tensor([[1.0], [0.0]]), delta_d=2.0)) == pytest.approx(1.0, rel=1e-4)


def test_hinged_pull_ignores_pixels_within_delta_v():
    emb = torch.tensor([[0.0, 0.4, 10.0, 12.0]])
    ids = torch.tensor([1, 1, 2, 2])
    # object 1 lies within delta_v of its mean; object 2 has both pixels 1 from it: (0 + (1 - 0.5)^2) / 2
    assert float(losses.hinged_pull(emb, ids, 0.5)) == pytest.approx(0.125, rel=1e-4)
    assert float(losses.hinged_pull(emb[:, :2], ids[:2], 0.5)) == 0.0


def test_consistency_is_zero_for_equal_embeddings_and_covers_the_region(data):
    _, labels, _ = data
    emb = _perfect_embedding(labels)
    region = labels == 0
    rng = np.random.default_rng(0)
    assert float(losses.consistency_loss(emb, emb.clone(), region, 0.5, rng, 8)) < 1e-5
    other = emb.clone()
    other[:, labels == 0] += 5.0 * torch.randn(other.shape[0], int(region.sum()), generator=torch.Generator().manual_seed(0))
    assert float(losses.consistency_loss(emb, other, region, 0.5, rng, 8)) > 0.1


# -- label modes ----------------------------------------------------------------------------


def test_encode_labels_modes():
    lab = np.array([[0, 3], [65535, 5]])
    np.testing.assert_array_equal(encode_labels(lab, "sparse"), [[0, 4], [65536, 6]])
    np.testing.assert_array_equal(encode_labels(lab, "dense"), [[1, 4], [65536, 6]])
    np.testing.assert_array_equal(encode_labels(lab, "reviewed", 65535), [[0, 4], [1, 6]])


def test_reviewed_labels_from_the_proofreading_export():
    labels = np.array([[0, 2, 0], [0, 0, 7]])
    mask = np.array([[1, 1, 0], [0, 1, 1]], np.uint8)
    out = reviewed_labels(labels, mask, background_id=9)
    np.testing.assert_array_equal(out, [[9, 2, 0], [0, 9, 7]])
    with pytest.raises(InputError, match="shape"):
        reviewed_labels(labels, mask[:1])
    with pytest.raises(InputError, match="already use id 7"):
        reviewed_labels(labels, mask, background_id=7)


def _terms(emb, labels, mode):
    codes = encode_labels(labels, mode)
    return spoco_terms(emb, emb.detach().clone(), codes, spoco.Config(), np.random.default_rng(0))


def test_sparse_mode_never_treats_zero_as_background(data):
    _, labels, sparse = data
    rng = np.random.default_rng(1)
    emb = torch.from_numpy(rng.normal(size=(4,) + labels.shape).astype(np.float32))
    changed = emb.clone()
    changed[:, sparse == 0] = torch.from_numpy(rng.normal(size=(4, int((sparse == 0).sum()))).astype(np.float32))
    # The supervised terms see only labelled pixels; 0 is not a background instance in sparse mode ...
    for name in ("pull", "push"):
        assert float(_terms(emb, sparse, "sparse")[name]) == pytest.approx(float(_terms(changed, sparse, "sparse")[name]), abs=1e-6)
    # ... but it is in dense mode, where changing those pixels changes the terms.
    assert float(_terms(emb, sparse, "dense")["pull"]) != pytest.approx(float(_terms(changed, sparse, "dense")["pull"]), abs=1e-6)
    assert (encode_labels(sparse, "sparse") != BACKGROUND).all()
    # Unlabelled pixels feed only the unlabelled terms, which dense mode has none of.
    dense = _terms(emb, sparse, "dense")
    assert float(dense["unlabelled_push"]) == 0.0 and float(dense["consistency"]) == 0.0
    assert float(_terms(emb, sparse, "sparse")["consistency"]) > 0.0


# -- momentum network -----------------------------------------------------------------------


def _g_state(model):
    return {k: v.clone() for k, v in model.net.g.state_dict().items()}


def test_momentum_network_moves_with_training_only(model, data):
    image = data[0]
    f, g = model.net.f.state_dict(), model.net.g.state_dict()
    # g trails f after training: 0.999 of the way back towards the initial weights.
    assert any(not torch.equal(f[k], g[k]) for k in f)
    before = _g_state(model)
    model.predict(image, n_samples=3, seed=0)
    after = model.net.g.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_momentum_update_rule():
    net = spoco.SpocoModel.build_network(spoco.Config(num_fmaps=2, embedding_dims=2), 1)
    g0 = _g_state(type("M", (), {"net": net})())
    with torch.no_grad():
        for p in net.f.parameters():
            p.add_(1.0)
    net.update_momentum(0.9)
    for (name, g1), f in zip(net.g.state_dict().items(), net.f.state_dict().values()):
        torch.testing.assert_close(g1, 0.9 * g0[name] + 0.1 * f)


def test_momentum_network_is_saved_and_loaded(model, tmp_path):
    before = _g_state(model)
    model.save(tmp_path / "m")
    loaded = probseg.load_model(tmp_path / "m", device="cpu")
    assert all(torch.equal(before[k], v) for k, v in loaded.net.g.state_dict().items())


# -- training and segmenting ----------------------------------------------------------------


def test_train_and_segment_through_the_api(model, data):
    image = data[0]
    pred = model.predict(image, n_samples=4, seed=0)
    assert pred.segmentation.shape == image.shape and pred.segmentation.dtype == np.int32
    assert pred.samples.shape == (4,) + image.shape
    assert pred.embeddings.shape == (8,) + image.shape
    assert pred.uncertainty.shape == image.shape
    again = model.predict(image, n_samples=4, seed=0)
    np.testing.assert_array_equal(pred.segmentation, again.segmentation)
    np.testing.assert_array_equal(pred.samples, again.samples)
    # The draws are test-time augmentations, so they differ from the clean pass.
    assert not np.allclose(pred.raw.planes[0]["embeddings"][0], pred.raw.planes[0]["embeddings"][1])
    meanshift = model.postprocess(pred.raw, {"partition": "meanshift", "background": "none"})
    assert meanshift.segmentation.shape == image.shape


def test_test_time_augmentation_is_undone():
    """A network that outputs its input's coordinates in the image frame gives the same map for every draw."""
    model = probseg.train("spoco", *touching_blobs(shape=(48, 48), object_size=12, seed=1), config=TINY, steps=1,
                          device="cpu", seed=0)
    model.config = spoco.Config(**{**TINY, "intensity_scale": 0.0, "intensity_shift": 0.0, "spatial": 0.0})
    plane = np.random.default_rng(0).random((1, 40, 56)).astype(np.float32)

    def echo(x):  # embeddings = the (transformed) input, repeated
        return x.repeat(1, model.config.embedding_dims + 1, 1, 1)

    model.net.forward_same = echo
    raw = model.raw(plane, 8, np.random.default_rng(0), probseg.core.callbacks.ensure(None))
    for k in range(9):
        np.testing.assert_allclose(raw["embeddings"][k], raw["embeddings"][0], atol=1e-6)


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_displacement_channels_turn_with_the_image(k, flip):
    """Displacements towards one point, seen in a turned image and turned back, point at the point again."""
    h = w = 7
    point = (2, 5)
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    field = np.stack([point[0] - ys, point[1] - xs, ys * 0])
    image = np.zeros((h, w))
    image[point] = 1
    seen_y, seen_x = np.argwhere(dihedral(image, k, flip) == 1)[0]
    seen = np.stack([seen_y - ys, seen_x - xs, ys * 0])
    np.testing.assert_allclose(dihedral(seen, k, flip, inverse=True, vectors=True), field)
    np.testing.assert_allclose(dihedral(torch.from_numpy(field), k, flip, vectors=True).numpy(), seen)
    centre = add_coordinates(field, 1.0)
    assert (centre[0] == point[0]).all() and (centre[1] == point[1]).all()


def test_loss_decreases_over_training(data):
    image, _, sparse = data
    m = probseg.train("spoco", image, sparse, config=dict(TINY, learning_rate=3e-3), steps=40, device="cpu", seed=0)
    losses_ = m.train_log["losses"]
    assert np.mean(losses_[-10:]) < np.mean(losses_[:10])


def test_dense_and_reviewed_modes_train(data):
    image, labels, sparse = data
    probseg.train("spoco", image, labels, config=dict(TINY, label_mode="dense"), steps=2, device="cpu", seed=0)
    mask = np.zeros(labels.shape, np.uint8)
    mask[:32] = 1
    reviewed = reviewed_labels(sparse, mask)
    probseg.train("spoco", image, reviewed, config=dict(TINY, label_mode="reviewed"), steps=2, device="cpu", seed=0)


def test_bad_sparse_labels_raise_one_clear_error(data):
    image, labels, _ = data
    with pytest.raises(InputError, match="no object"):
        probseg.train("spoco", image, np.zeros_like(labels), config=TINY, steps=1, device="cpu")
    only_background = np.full_like(labels, 65535)
    with pytest.raises(InputError, match="no object other than the background id 65535"):
        probseg.train("spoco", image, only_background, config=dict(TINY, label_mode="reviewed"), steps=1, device="cpu")
    with pytest.raises(InputError, match="shape"):
        probseg.train("spoco", image, labels[:40], config=TINY, steps=1, device="cpu")
    with pytest.raises(InputError, match="learns from labels"):
        probseg.train("spoco", image, None, config=TINY, steps=1, device="cpu")


@pytest.mark.parametrize("labels, words", [("zeros", "no object"), ("small", "shape")])
def test_cli_bad_sparse_labels_one_line(tmp_path, capsys, data, labels, words):
    image, lab, _ = data
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", np.zeros_like(lab) if labels == "zeros" else lab[:40])
    code = cli.main(["train", "spoco", str(tmp_path / "image.tif"), "--labels", str(tmp_path / "labels.tif"),
                     "--out", str(tmp_path / "m"), "--device", "cpu", "--steps", "1"])
    assert code != 0
    line = assert_one_line_error(capsys.readouterr().err)
    assert words in line


def test_cli_train_sparse_and_segment(tmp_path, data):
    image, _, sparse = data
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "sparse.tif", sparse.astype(np.uint16))
    fast = ["--steps", "3", "--crop-size", "48", "--batch-size", "2", "--num-fmaps", "4", "--embedding-dims", "8"]
    result = run_cli("train", "spoco", "image.tif", "--labels", "sparse.tif", "--label-mode", "sparse", "--out", "model",
                     "--device", "cpu", *fast, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["method"] == "spoco" and meta["config"]["label_mode"] == "sparse"
    result = run_cli("segment", "model", "image.tif", "--out", "labels.tif", "--samples", "2",
                     "--uncertainty-out", "unc.tif", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tifffile.imread(tmp_path / "labels.tif").shape == image.shape
    assert tifffile.imread(tmp_path / "unc.tif").shape == image.shape


def test_object_area_sets_the_default_min_size_and_persists(model, data, tmp_path):
    _, _, sparse = data
    areas = np.unique(sparse[sparse > 0], return_counts=True)[1]
    assert model.object_area() == pytest.approx(float(np.median(areas)))
    assert model.min_size(model.settings) == int(0.25 * np.median(areas))
    assert model.min_size(model.make_settings({"min_size": 7})) == 7
    model.save(tmp_path / "m")
    assert probseg.load_model(tmp_path / "m", device="cpu").object_area() == model.object_area()
    weightless = spoco.SpocoModel.for_postprocessing(model.meta())
    assert weightless.min_size(weightless.settings) == model.min_size(model.settings)


def test_reviewed_mode_learns_known_background_and_leaves_zero_unlabelled(data):
    _, _, sparse = data
    mask = np.zeros(sparse.shape, np.uint8)
    mask[:32] = 1
    reviewed = reviewed_labels(sparse, mask)
    known, unknown = reviewed == 65535, reviewed == 0
    assert known.any() and unknown.any()
    rng = np.random.default_rng(2)
    emb = torch.from_numpy(rng.normal(size=(4,) + sparse.shape).astype(np.float32))

    def terms(where):
        changed = emb.clone()
        changed[:, where] += 3.0
        codes = encode_labels(reviewed, "reviewed", 65535)
        return spoco_terms(changed, changed.clone(), codes, spoco.Config(), np.random.default_rng(0))

    base = terms(np.zeros(sparse.shape, bool))
    assert float(terms(unknown)["pull"]) == pytest.approx(float(base["pull"]), abs=1e-6)
    assert float(terms(unknown)["push"]) == pytest.approx(float(base["push"]), abs=1e-6)
    assert float(terms(known)["push"]) != pytest.approx(float(base["push"]), abs=1e-6)


def test_cli_trains_in_reviewed_mode(tmp_path, data):
    image, _, sparse = data
    mask = np.zeros(sparse.shape, np.uint8)
    mask[:32] = 1
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "reviewed.tif", reviewed_labels(sparse, mask).astype(np.uint16))
    code = cli.main(["train", "spoco", str(tmp_path / "image.tif"), "--labels", str(tmp_path / "reviewed.tif"),
                     "--label-mode", "reviewed", "--out", str(tmp_path / "m"), "--device", "cpu", "--steps", "2",
                     "--crop-size", "48", "--num-fmaps", "4"])
    assert code == 0
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["label_mode"] == "reviewed" and meta["config"]["background_id"] == 65535


def test_foreground_head_knows_what_it_learned_from(model, data):
    image, labels, sparse = data
    assert model.foreground_kind() == FROM_UNLABELLED and model.raw_maps == ("embeddings", "foreground")
    headless = probseg.train("spoco", image, sparse, config=dict(TINY, foreground_weight=0.0), steps=2, device="cpu")
    assert not headless.has_foreground() and headless.raw_maps == ("embeddings",)
    assert "foreground" not in headless.predict_raw(image, 1).planes[0]
    with pytest.raises(InputError, match="no foreground head"):
        headless.postprocess(headless.predict_raw(image, 1), {"background": "foreground"})
    dense = probseg.train("spoco", image, labels, config=dict(TINY, label_mode="dense", learning_rate=3e-3), steps=60,
                          device="cpu", seed=0)
    assert dense.foreground_kind() == FROM_BACKGROUND
    raw = dense.predict_raw(image, 2)
    fg = raw.planes[0]["foreground"]
    assert fg.shape == (3,) + image.shape and 0.0 <= fg.min() and fg.max() <= 1.0
    # After sixty steps of a tiny network the head already leans the right way.
    assert fg[0][labels > 0].mean() > fg[0][labels == 0].mean() + 0.05
    assert dense.foreground_cut(fg[0], dense.settings) == 0.5
    seg = dense.postprocess(raw, {"foreground_threshold": 0.99}).segmentation
    assert not seg[fg[0] < 0.99].any()


def test_positive_unlabelled_foreground_is_cut_at_otsu(model):
    scores = np.concatenate([np.full(50, 0.1), np.full(50, 0.4)]).astype(np.float32).reshape(10, 10)
    cut = model.foreground_cut(scores, model.settings)
    assert 0.05 <= cut < 0.2  # half of Otsu between the two levels
    assert model.foreground_cut(scores, model.make_settings({"foreground_threshold": 0.3})) == 0.3


def test_foreground_loss_is_balanced_and_weighs_unlabelled_as_asked():
    codes = np.zeros((4, 4), int)
    codes[0, 0] = BACKGROUND
    codes[1:, 1:] = 5  # one object, nine pixels; the rest unlabelled
    logits = torch.zeros(4, 4)
    assert float(foreground_loss(logits, codes)) == pytest.approx(np.log(2.0))
    logits[0, 0], logits[1:, 1:] = -20.0, 20.0
    logits[0, 1:] = 20.0  # unlabelled pixels: any value unless they are weighed
    assert float(foreground_loss(logits, codes)) < 1e-6
    # Weighed as background at 0.5: three unlabelled logits of 20 and three of 0, against weights 1 + 1 + 0.5.
    unlabelled = (3 * 20.0 + 3 * np.log(2.0)) / 6
    assert float(foreground_loss(logits, codes, 0.5)) == pytest.approx(0.5 * unlabelled / 2.5, rel=1e-3)


def test_learned_facts_reach_a_raw_store(model, data, tmp_path):
    image, _, _ = data
    raw = model.predict_raw(image, 1)
    weightless = spoco.SpocoModel.for_postprocessing(model.meta())
    assert weightless.learned() == model.learned() == {"object_area": model.object_area(),
                                                          "foreground_kind": FROM_UNLABELLED}
    np.testing.assert_array_equal(weightless.postprocess(raw).segmentation, model.postprocess(raw).segmentation)


def test_hdbscan_partition_recovers_well_separated_embeddings(data):
    from probseg.partition import hdbscan_instances

    _, labels, _ = data
    emb = _perfect_embedding(labels).numpy()
    found = hdbscan_instances(emb, labels > 0, min_size=10)
    assert evaluate(found, labels)["f1"] == 1.0
    sub = hdbscan_instances(emb, labels > 0, min_size=10, max_points=500)
    assert evaluate(sub, labels)["f1"] == 1.0
    with pytest.raises(InputError, match="at least 2 pixels"):
        hdbscan_instances(emb, labels > 0, min_size=1)


def test_hdbscan_is_a_partition_setting(model, data):
    image, _, _ = data
    seg = model.postprocess(model.predict_raw(image, 1), {"partition": "hdbscan"}).segmentation
    assert seg.shape == image.shape and seg.dtype == np.int32


def test_positive_unlabelled_head_keeps_whole_segments_by_their_mean_score(model):
    labels = np.zeros((8, 8), np.int32)
    labels[:4, :4], labels[:4, 4:], labels[4:, :] = 1, 2, 3
    scores = np.full((8, 8), 0.05, np.float32)  # segment 3: background
    scores[:4, :4] = 0.8
    scores[:4, :2] = 0.1  # half of object 1 scores low: its mean (0.45) still keeps all of it
    scores[:4, 4:] = 0.03  # background
    kept = model.keep_foreground(labels, scores, model.settings)
    np.testing.assert_array_equal(kept, np.where(labels == 1, 1, 0))
    # A threshold the user sets applies pixel by pixel.
    np.testing.assert_array_equal(model.keep_foreground(labels, scores, model.make_settings({"foreground_threshold": 0.5})),
                                  np.where(scores >= 0.5, labels, 0))


def test_cli_trains_from_the_proofreading_export_with_its_reviewed_mask(tmp_path, data):
    image, _, sparse = data
    mask = np.zeros(sparse.shape, np.uint8)
    mask[:32] = 1
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "sparse.tif", np.where(mask > 0, sparse, 0).astype(np.int32))
    tifffile.imwrite(tmp_path / "sparse_reviewed.tif", mask)
    args = ["train", "spoco", str(tmp_path / "image.tif"), "--labels", str(tmp_path / "sparse.tif"), "--reviewed",
            str(tmp_path / "sparse_reviewed.tif"), "--out", str(tmp_path / "m"), "--device", "cpu", "--steps", "2",
            "--crop-size", "48", "--num-fmaps", "4"]
    assert cli.main(args) == 0
    model = probseg.load_model(tmp_path / "m", device="cpu")
    assert model.config.label_mode == "reviewed" and model.foreground_kind() == FROM_BACKGROUND


@pytest.mark.parametrize("extra, words", [
    (["--label-mode", "dense"], "--label-mode dense would ignore"),
    (["--reviewed", "a.tif", "b.tif"], "one mask per labels file"),
])
def test_cli_reviewed_mask_mistakes_are_one_line(tmp_path, capsys, data, extra, words):
    image, _, sparse = data
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "sparse.tif", sparse.astype(np.int32))
    tifffile.imwrite(tmp_path / "a.tif", np.ones(sparse.shape, np.uint8))
    tifffile.imwrite(tmp_path / "b.tif", np.ones(sparse.shape, np.uint8))
    if "--reviewed" not in extra:
        extra = extra + ["--reviewed", "a.tif"]
    extra = [str(tmp_path / e) if e.endswith(".tif") else e for e in extra]
    code = cli.main(["train", "spoco", str(tmp_path / "image.tif"), "--labels", str(tmp_path / "sparse.tif"),
                     "--out", str(tmp_path / "m"), "--device", "cpu", "--steps", "1", *extra])
    assert code != 0
    assert words in assert_one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


def test_sparse_training_says_how_many_objects_it_learns_from(data):
    image, labels, sparse = data
    told = []
    cb = probseg.core.callbacks.Callbacks(on_message=told.append)
    probseg.train("spoco", image, sparse, config=TINY, steps=1, device="cpu", callbacks=cb)
    assert any("learns from 3 labelled object(s)" in m for m in told)
    told.clear()
    probseg.train("spoco", image, labels, config=dict(TINY, label_mode="dense"), steps=1, device="cpu", callbacks=cb)
    assert not any("labelled object(s)" in m for m in told)
