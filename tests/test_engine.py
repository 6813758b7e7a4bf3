"""The headless engine: config, inputs, normalisation, the OCE loss, training, prediction, devices."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from probseg.engine import api
from probseg.core.callbacks import Callbacks
from probseg.core.config import FieldSpec, TrainingConfig, config_from_dict, fields_of, parse_value, validate_config
from probseg.core.device import describe_device, gpu_warning, resolve_device
from probseg.core.errors import Cancelled, InputError
from probseg.core.inputs import MIN_SIDE, check_finite, check_labels, to_planes
from probseg.methods import cellulus
from probseg.nn.losses import oce_loss
from probseg.methods.cellulus import Config, Settings
from probseg.core.normalize import normalize_percentile, percentile_range

TINY = dict(num_fmaps=8, fmap_inc_factor=2, crop_size=48, batch_size=2, density=0.05)


def _blobs(shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 0.2 * rng.random(shape)
    for cy, cx in [(16, 16), (20, 46), (46, 24), (48, 50)]:
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def image():
    return _blobs()


@pytest.fixture(scope="module")
def model(image):
    return api.train("cellulus", image, config=TINY, steps=2, device="cpu", seed=0)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


# =============================================================================================
# config
# =============================================================================================


@pytest.mark.parametrize("cls", [TrainingConfig, Config, Settings])
def test_fields_of_lists_every_field_with_doc(cls):
    specs = fields_of(cls)
    assert [s.name for s in specs] == [f.name for f in dataclasses.fields(cls)]
    for s in specs:
        assert isinstance(s, FieldSpec)
        assert s.doc.strip(), f"{s.name} has no doc"
        assert s.type in (int, float, bool, str), s
        assert isinstance(s.default, s.type) or (s.type is float and isinstance(s.default, int))
        if s.minimum is not None:
            assert s.default >= s.minimum, s.name
        if s.maximum is not None:
            assert s.default <= s.maximum, s.name
        assert s.flag == "--" + s.name.replace("_", "-")


def test_cellulus_config_starts_with_the_training_fields():
    names = [s.name for s in fields_of(Config)]
    assert names[: len(fields_of(TrainingConfig))] == [s.name for s in fields_of(TrainingConfig)]
    assert "object_size" in names


def test_field_label_has_unit():
    spec = {s.name: s for s in fields_of(Config)}["object_size"]
    assert spec.label == "object size (px)"


def test_config_from_dict_defaults_and_values():
    cfg = config_from_dict(Config, {"object_size": 30, "steps": 7})
    assert cfg.steps == 7
    assert cfg.object_size == 30.0 and isinstance(cfg.object_size, float)  # int promoted to float
    assert config_from_dict(Config, None) == Config()


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(InputError, match="objectsize"):
        config_from_dict(Config, {"objectsize": 30})


@pytest.mark.parametrize(
    "key, value",
    [
        ("steps", 0),
        ("steps", -5),
        ("crop_size", 8),
        ("learning_rate", 2.0),
        ("object_size", 1.0),
        ("object_size", math.inf),
        ("noise_probability", 0.9),
        ("num_fmaps", 1),
    ],
)
def test_config_from_dict_rejects_out_of_range(key, value):
    with pytest.raises(InputError, match=key):
        config_from_dict(Config, {key: value})


@pytest.mark.parametrize("key, value", [("halo_shrink", 51), ("min_size", -1), ("bandwidth", -1.0), ("foreground", "dark")])
def test_settings_from_dict_rejects_out_of_range(key, value):
    with pytest.raises(InputError, match=key):
        config_from_dict(Settings, {key: value})


def test_post_processing_settings_are_not_training_config():
    training = {s.name for s in fields_of(Config)}
    assert not training & {s.name for s in fields_of(Settings)}
    with pytest.raises(InputError, match="min_size"):
        config_from_dict(Config, {"min_size": 10})


@pytest.mark.parametrize("key, value", [("steps", 2.5), ("steps", "100"), ("steps", True), ("object_size", "big"), ("object_size", None)])
def test_config_from_dict_rejects_wrong_types(key, value):
    with pytest.raises(InputError, match=key):
        config_from_dict(Config, {key: value})


@pytest.mark.parametrize("key", ["learning_rate", "object_size", "temperature"])
def test_config_rejects_nan(key):
    with pytest.raises(InputError, match=key):
        config_from_dict(Config, {key: float("nan")})


def test_make_config_accepts_config_dict_or_none_and_revalidates():
    assert api.make_config("cellulus", None) == Config()
    assert api.make_config("cellulus", {"steps": 3}).steps == 3
    bad = dataclasses.replace(Config(), steps=3)
    object.__setattr__(bad, "steps", 0)
    with pytest.raises(InputError, match="steps"):
        api.make_config("cellulus", bad)
    with pytest.raises(TypeError):
        api.make_config("cellulus", [("steps", 3)])
    with pytest.raises(InputError, match="unknown method"):
        api.make_config("nosuchmethod", None)


def _spec(name):
    return {s.name: s for s in fields_of(Config)}[name]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("steps", "250", 250),
        ("steps", " 12 ", 12),
        ("learning_rate", "1e-3", 1e-3),
        ("object_size", "17.5", 17.5),
        ("object_size", "20", 20.0),
    ],
)
def test_parse_value_numbers(name, text, expected):
    value = parse_value(_spec(name), text)
    assert value == expected
    assert type(value) is _spec(name).type


@pytest.mark.parametrize(
    "text, expected",
    [("true", True), ("Yes", True), ("1", True), ("on", True), ("false", False), ("NO", False), ("0", False), ("off", False)],
)
def test_parse_value_bool(text, expected):
    spec = FieldSpec(name="flag_thing", type=bool, default=False, doc="a switch")
    assert parse_value(spec, text) is expected


@pytest.mark.parametrize(
    "spec, text",
    [
        (_spec("steps"), "lots"),
        (_spec("steps"), "2.5"),
        (_spec("steps"), ""),
        (_spec("object_size"), "big"),
        (FieldSpec(name="flag_thing", type=bool, default=False, doc="d"), "maybe"),
    ],
)
def test_parse_value_bad_text(spec, text):
    with pytest.raises(InputError, match=spec.flag):
        parse_value(spec, text)


def test_validate_config_returns_the_config():
    cfg = Config()
    assert validate_config(cfg) is cfg


# =============================================================================================
# inputs
# =============================================================================================


def _rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def test_to_planes_2d():
    img = _rand((20, 30))
    p = to_planes(img)
    assert p.data.shape == (1, 1, 20, 30) and p.data.dtype == np.float32
    assert not p.is_stack and p.notice is None
    assert p.n_channels == 1 and p.spatial_shape == (20, 30)
    np.testing.assert_array_equal(p.data[0, 0], img)


def test_to_planes_integer_and_bool_images():
    p = to_planes(np.arange(400, dtype=np.uint16).reshape(20, 20))
    assert p.data.dtype == np.float32 and p.data[0, 0, 19, 19] == 399
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    assert to_planes(mask).data.max() == 1.0


def test_to_planes_3d_stack_with_notice():
    img = _rand((5, 20, 30))
    p = to_planes(img)
    assert p.data.shape == (5, 1, 20, 30)
    assert p.is_stack
    assert p.notice and "plane" in p.notice and "5" in p.notice
    np.testing.assert_array_equal(p.data[3, 0], img[3])


@pytest.mark.parametrize("axis", [0, 2, -1])
def test_to_planes_channels(axis):
    img = _rand((3, 20, 30))
    moved = np.moveaxis(img, 0, axis)
    p = to_planes(moved, channel_axis=axis)
    assert p.data.shape == (1, 3, 20, 30)
    assert not p.is_stack and p.n_channels == 3
    np.testing.assert_array_equal(p.data[0], img)


def test_to_planes_channel_stack():
    img = _rand((4, 2, 20, 30))  # Z, C, Y, X
    p = to_planes(np.moveaxis(img, 1, 3), channel_axis=3)
    assert p.data.shape == (4, 2, 20, 30) and p.is_stack
    np.testing.assert_array_equal(p.data, img)


@pytest.mark.parametrize("last", [3, 4])
def test_to_planes_rgb(last):
    img = (_rand((20, 30, last)) * 255).astype(np.uint8)
    p = to_planes(img, rgb=True)
    assert p.data.shape == (1, 3, 20, 30)
    assert not p.is_stack
    for c in range(3):
        np.testing.assert_array_equal(p.data[0, c], img[..., c])


@pytest.mark.parametrize(
    "image, kwargs, words",
    [
        (np.full((20, 20), np.nan), {}, "NaN"),
        (np.where(np.eye(20, dtype=bool), np.nan, _rand((20, 20), dtype=np.float64)), {}, "20 NaN"),
        (np.where(np.eye(20, dtype=bool), np.inf, _rand((20, 20), dtype=np.float64)), {}, "infinite"),
        (np.where(np.eye(20, dtype=bool), -np.inf, _rand((20, 20), dtype=np.float64)), {}, "infinite"),
        (np.zeros((0, 20)), {}, "empty"),
        (np.zeros((20, 0, 5)), {}, "empty"),
        (np.full((20, 20), 7.0), {}, "constant"),
        (np.full((20, 20), 3, np.uint8), {}, "constant"),
        (_rand((2, 3, 20, 20)), {}, "dimensions"),
        (_rand((2, 3, 4, 20, 20)), {}, "dimensions"),
        (_rand((20,)), {}, "dimensions"),
        (_rand((8, 40)), {}, str(MIN_SIDE)),
        (_rand((3, 40, 10)), {}, str(MIN_SIDE)),
        (_rand((20, 20)).astype(np.complex64) + 1j, {}, "complex"),
        (np.array([["a", "b"], ["c", "d"]]), {}, "dtype"),
        (_rand((20, 20)), {"rgb": True}, "RGB"),
        (_rand((20, 20, 5)), {"rgb": True}, "RGB"),
        (_rand((20, 20)), {"channel_axis": 0}, "channels"),
    ],
)
def test_to_planes_rejects(image, kwargs, words):
    with pytest.raises(InputError, match=words):
        to_planes(image, **kwargs)


def test_error_messages_use_the_given_name():
    with pytest.raises(InputError, match="nuclei"):
        to_planes(np.full((20, 20), 1.0), name="nuclei")


def test_check_finite_counts_bad_pixels():
    img = _rand((20, 20), dtype=np.float64)
    img[0, :3] = np.nan
    with pytest.raises(InputError, match="3 NaN"):
        check_finite(img)


def test_rgb_looking_image_without_rgb_flag_mentions_rgb():
    with pytest.raises(InputError, match="(?i)rgb"):
        to_planes(_rand((40, 40, 3)))


def test_check_labels():
    lab = np.zeros((20, 30), np.uint16)
    lab[2:5, 2:5] = 3
    out = check_labels(lab, (20, 30))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, lab)
    assert check_labels(lab.astype(np.float32), (20, 30)).dtype == np.int64


@pytest.mark.parametrize(
    "labels, shape, words",
    [
        (np.zeros((20, 30), np.int32), (30, 20), "shape"),
        (np.zeros((20, 30), np.int32), (1, 20, 30), "shape"),
        (np.full((20, 30), 1.5), (20, 30), "integer"),
        (np.full((20, 30), np.nan), (20, 30), "integer"),
        (np.full((20, 30), -1), (20, 30), "negative"),
        (np.full((20, 30), "a"), (20, 30), "dtype"),
    ],
)
def test_check_labels_rejects(labels, shape, words):
    with pytest.raises(InputError, match=words):
        check_labels(labels, shape)


# =============================================================================================
# normalize
# =============================================================================================


def test_percentile_mapping():
    img = np.arange(1000, dtype=np.float64).reshape(20, 50)
    low, high = percentile_range(img, (1.0, 99.8))
    assert low == pytest.approx(9.99) and high == pytest.approx(997.002)
    out = normalize_percentile(img, low, high)
    assert out.dtype == np.float32
    flat = out.ravel()
    assert flat[0] < 0 and flat[-1] > 1, "values outside the percentiles are not clipped"
    np.testing.assert_allclose(flat, (np.arange(1000) - 9.99) / (997.002 - 9.99), rtol=1e-5, atol=1e-6)
    # monotone and linear
    assert np.all(np.diff(flat) > 0)


def test_percentile_mapping_per_channel():
    img = np.stack([np.arange(400.0).reshape(20, 20), 10 + 5 * np.arange(400.0).reshape(20, 20)])
    low, high = percentile_range(img, (0.0, 100.0), axis=(1, 2))
    np.testing.assert_allclose(low, [0, 10])
    np.testing.assert_allclose(high, [399, 10 + 5 * 399])
    out = normalize_percentile(img, low[:, None, None], high[:, None, None])
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert out.min() == pytest.approx(0) and out.max() == pytest.approx(1)


@pytest.mark.parametrize("low, high", [(5.0, 5.0), (5.0, 4.0), ([0.0, 1.0], [1.0, 1.0])])
def test_normalize_without_contrast_is_an_error(low, high):
    with pytest.raises(InputError, match="contrast"):
        normalize_percentile(np.ones((2, 4, 4)), np.asarray(low)[..., None, None] if np.ndim(low) else low,
                             np.asarray(high)[..., None, None] if np.ndim(high) else high)


def test_nearly_constant_image_is_an_error_at_prediction(model):
    img = np.zeros((64, 64), np.float32)
    img[0, 0] = 1.0  # not constant, but the 1st and 99.8th percentiles are equal
    with pytest.raises(InputError, match="contrast"):
        model.predict(img, n_samples=1)


# =============================================================================================
# the OCE loss (contract and the one toy case; not the exact formula)
# =============================================================================================


def _loss_config(**kw):
    return {**dict(kappa=6.0, temperature=10.0, density=0.1, regularizer_weight=1e-5), **kw}


def _grid(b, h, w):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([yy, xx])[None].expand(b, 2, h, w)


def test_oce_loss_prefers_identical_embeddings():
    b, h, w = 2, 32, 32
    cfg = _loss_config()
    x = _grid(b, h, w)
    centre = torch.tensor([(h - 1) / 2, (w - 1) / 2]).view(1, 2, 1, 1)
    collapsed = centre - x  # r = c - x: every embedding x + r equals c
    zero = torch.zeros(b, 2, h, w)
    l_collapsed = oce_loss(collapsed, np.random.default_rng(0), **cfg)
    l_zero = oce_loss(zero, np.random.default_rng(0), **cfg)
    assert torch.isfinite(l_collapsed) and torch.isfinite(l_zero)
    assert float(l_collapsed) < float(l_zero)


def test_oce_loss_is_scalar_finite_with_gradients():
    g = torch.Generator().manual_seed(0)
    offsets = (3 * torch.randn(2, 2, 32, 32, generator=g)).requires_grad_(True)
    loss = oce_loss(offsets, np.random.default_rng(1), **_loss_config())
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    loss.backward()
    assert offsets.grad is not None
    assert torch.isfinite(offsets.grad).all()
    assert offsets.grad.abs().sum() > 0


def test_oce_loss_is_reproducible_with_the_same_rng_seed():
    g = torch.Generator().manual_seed(0)
    offsets = 3 * torch.randn(2, 2, 32, 32, generator=g)
    cfg = _loss_config()
    a = oce_loss(offsets, np.random.default_rng(7), **cfg)
    b = oce_loss(offsets, np.random.default_rng(7), **cfg)
    c = oce_loss(offsets, np.random.default_rng(8), **cfg)
    assert float(a) == float(b)
    assert float(a) != float(c), "the rng should drive the pair sampling"


def test_training_loss_gives_network_gradients(image):
    from probseg.nn.trainset import training_set

    cfg = Config(**TINY)
    ts = training_set(image)
    torch.manual_seed(0)
    net = cellulus.CellulusModel.build_network(cfg, 1)
    loss_fn = cellulus.CellulusModel.training_loss(cfg, ts, torch.device("cpu"))
    loss = loss_fn(net, np.random.default_rng(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0


def test_network_output_shapes():
    net = cellulus.CellulusModel.build_network(Config(num_fmaps=8), 1).eval()
    assert net.context == 8, "the mini U-Net has a 17 px field of view"
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 2, 32, 32)
        assert net.forward_same(torch.rand(1, 1, 33, 41)).shape == (1, 2, 33, 41)


# =============================================================================================
# training
# =============================================================================================


def test_training_is_bit_identical_with_the_same_seed(image):
    a = api.train("cellulus", image, config=TINY, steps=2, device="cpu", seed=11)
    b = api.train("cellulus", image, config=TINY, steps=2, device="cpu", seed=11)
    c = api.train("cellulus", image, config=TINY, steps=2, device="cpu", seed=12)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert set(wa) == set(wb) == set(wc)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert a.train_log["losses"] == b.train_log["losses"]
    assert a.train_log["seed"] == 11 and c.train_log["seed"] == 12


def test_training_changes_the_weights(image):
    torch.manual_seed(0)
    before = _weights(api.train("cellulus", image, config=TINY, steps=1, device="cpu", seed=3))
    after = _weights(api.train("cellulus", image, config=TINY, steps=3, device="cpu", seed=3))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_cancel_after_two_steps(image, tmp_path):
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > 2

    out = tmp_path / "cancelled"
    checkpoints, messages = [], []
    cb = Callbacks(should_stop=should_stop, on_checkpoint=checkpoints.append, on_message=messages.append)
    m = api.train("cellulus", image, config=TINY, steps=6, device="cpu", callbacks=cb, out=out)
    assert m.train_log["cancelled"] is True
    assert m.train_log["steps_done"] == 2
    assert m.train_log["steps_total"] == 6
    assert len(m.train_log["losses"]) == 2
    assert checkpoints and checkpoints[-1] == out
    assert any("cancel" in text for text in messages)
    loaded = api.load_model(out, device="cpu")
    assert loaded.train_log["cancelled"] is True and loaded.train_log["steps_done"] == 2
    for key, value in _weights(m).items():
        assert torch.equal(loaded.net.state_dict()[key], value)


def test_progress_callback_sees_steps_total_and_loss(image):
    events = []
    cb = Callbacks(on_progress=lambda step, total, loss: events.append((step, total, loss)))
    m = api.train("cellulus", image, config=TINY, steps=3, device="cpu", callbacks=cb)
    assert [e[0] for e in events] == [1, 2, 3]
    assert all(total == 3 for _, total, _ in events)
    assert all(isinstance(loss, float) and math.isfinite(loss) for *_, loss in events)
    assert [e[2] for e in events] == pytest.approx(m.train_log["losses"])
    assert m.train_log["steps_done"] == 3 and m.train_log["cancelled"] is False


def test_periodic_checkpoints(image, tmp_path):
    seen = []
    cb = Callbacks(on_checkpoint=seen.append)
    api.train("cellulus", image, config=TINY, steps=3, device="cpu", callbacks=cb, out=tmp_path / "m", checkpoint_every=1)
    assert len(seen) == 3  # after steps 1 and 2, and at the end
    assert api.load_model(tmp_path / "m", device="cpu").train_log["steps_done"] == 3


def test_training_reports_the_device(image):
    messages = []
    api.train("cellulus", image, config=TINY, steps=1, device="cpu", callbacks=Callbacks(on_message=messages.append))
    assert any("cpu" in text for text in messages)


def test_training_rejects_bad_images():
    with pytest.raises(InputError):
        api.train("cellulus", np.zeros((64, 64), np.float32), config=TINY, steps=1, device="cpu")
    with pytest.raises(InputError):
        api.train("cellulus", [], config=TINY, steps=1, device="cpu")
    with pytest.raises(InputError, match="steps"):
        api.train("cellulus", _blobs(), config=TINY, steps=0, device="cpu")


# =============================================================================================
# prediction
# =============================================================================================


def test_predict_shapes_and_types(model, image):
    pred = model.predict(image.copy(), n_samples=3, seed=0)
    y, x = image.shape
    assert pred.segmentation.shape == (y, x) and pred.segmentation.dtype == np.int32
    assert pred.samples.shape == (3, y, x) and np.issubdtype(pred.samples.dtype, np.integer)
    assert pred.embeddings.shape == (2, y, x) and pred.embeddings.dtype == np.float32
    assert np.isfinite(pred.embeddings).all()
    assert pred.uncertainty.shape == (y, x)
    assert np.isfinite(pred.uncertainty).all()
    assert pred.uncertainty.min() >= 0 and pred.uncertainty.max() <= 1
    assert pred.segmentation.min() >= 0 and pred.samples.min() >= 0
    # ids are sequential
    ids = np.unique(pred.segmentation)
    np.testing.assert_array_equal(ids[ids > 0], np.arange(1, len(ids[ids > 0]) + 1))


def test_predict_is_reproducible_and_segmentation_independent_of_n_samples(model, image):
    a = model.predict(image.copy(), n_samples=2, seed=4)
    b = model.predict(image.copy(), n_samples=2, seed=4)
    c = model.predict(image.copy(), n_samples=3, seed=4)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.segmentation, c.segmentation)


@pytest.mark.parametrize("shape", [(64, 64), (2, 64, 64)])
def test_predict_does_not_modify_the_input(model, shape):
    img = (100 * np.random.default_rng(0).random(shape)).astype(np.float32)
    before = img.copy()
    model.predict(img, n_samples=1)
    np.testing.assert_array_equal(img, before)


def test_predict_stack_adds_z_axes(model, image):
    stack = np.stack([image, image[::-1].copy()])
    messages = []
    pred = model.predict(stack, n_samples=2, callbacks=Callbacks(on_message=messages.append))
    assert pred.segmentation.shape == (2, 64, 64)
    assert pred.samples.shape == (2, 2, 64, 64)
    assert pred.embeddings.shape == (2, 2, 64, 64)
    assert pred.uncertainty.shape == (2, 64, 64)
    assert pred.notice and "plane" in pred.notice
    assert messages and "plane" in messages[0]
    # plane 0 of the stack is the image itself
    single = model.predict(image.copy(), n_samples=2)
    np.testing.assert_allclose(pred.embeddings[0], single.embeddings, atol=1e-5)


def test_predict_wrong_channel_count(model, image):
    two = np.stack([image, image[::-1]])
    with pytest.raises(InputError, match="channel"):
        model.predict(two, channel_axis=0)
    with pytest.raises(InputError, match="channel"):
        model.predict(np.dstack([image] * 3), rgb=True)


@pytest.mark.parametrize("n", [0, -1])
def test_predict_needs_at_least_one_sample(model, image, n):
    with pytest.raises(InputError, match="n_samples"):
        model.predict(image.copy(), n_samples=n)


def test_predict_cancel(model, image):
    with pytest.raises(Cancelled):
        model.predict(image.copy(), n_samples=1, callbacks=Callbacks(should_stop=lambda: True))


def test_predict_progress_reaches_total(model, image):
    events = []
    model.predict(image.copy(), n_samples=1, callbacks=Callbacks(on_progress=lambda d, t, loss: events.append((d, t))))
    assert events
    done, total = events[-1]
    assert done == total
    assert [d for d, _ in events] == sorted(d for d, _ in events)


def test_segment_sample_embed_helpers(model, image):
    assert model.segment(image.copy()).shape == (64, 64)
    assert model.sample(image.copy(), 2).shape == (2, 64, 64)
    assert model.predict(image.copy(), n_samples=1).embeddings.shape == (2, 64, 64)
    assert "cellulus" in model.describe()


# =============================================================================================
# device
# =============================================================================================


def test_resolve_device_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    dev = torch.device("cpu")
    assert resolve_device(dev) is dev


@pytest.mark.parametrize("name", ["bogus", "gpu", "tpu", "cpux"])
def test_resolve_device_unknown(name):
    with pytest.raises(InputError, match=name):
        resolve_device(name)


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "CUDA"])
def test_resolve_device_cuda_without_cuda(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="cuda"):
        resolve_device(name)


def test_resolve_device_auto_falls_back_to_cpu(monkeypatch):
    from probseg.core import device as device_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")


def test_resolve_device_mps_unavailable(monkeypatch):
    from probseg.core import device as device_module

    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    with pytest.raises(InputError, match="mps"):
        resolve_device("mps")


def test_describe_device_cpu():
    assert "cpu" in describe_device(torch.device("cpu")).lower()


def test_gpu_warning_is_none_when_cuda_works(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_warning() is None


def test_train_with_unavailable_cuda_is_an_input_error(monkeypatch, image):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="cuda"):
        api.train("cellulus", image, config=TINY, steps=1, device="cuda")
