"""Tiled inference: window placement, exact blending, cancel and progress."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probseg.core.callbacks import Callbacks
from probseg.core.errors import Cancelled
from probseg import methods
from probseg.nn.tiling import tiled_apply, window_starts

SMALL = {"cellulus": dict(num_fmaps=8), "concrete-dropout": dict(num_fmaps=4), "spoco": dict(num_fmaps=4)}


@pytest.fixture(scope="module", params=sorted(SMALL))
def unet(request):
    """Each built-in method's network (one valid-convolution U-Net class), random weights, eval mode."""
    info = methods.get(request.param)
    torch.manual_seed(0)
    return info.model_class.build_network(info.config_class(**SMALL[request.param]), 1).eval()


def _tiled(net, image, margin=None):
    """Tiled like the methods do: margin = the network's context, overlap above twice that."""
    margin = net.context if margin is None else margin
    return tiled_apply(net.forward_same, image, _out(net), tile=64 + 2 * net.context, overlap=2 * net.context + 16, margin=margin, align=net.align)


def _out(net):
    with torch.no_grad():
        return net.forward_same(torch.zeros(1, 1, 16, 16)).shape[1]


def _image(shape, channels=1, seed=0):
    return np.random.default_rng(seed).random((channels,) + tuple(shape)).astype(np.float32)


def _whole(net, image):
    with torch.no_grad():
        return net.forward_same(torch.from_numpy(image)[None])[0].numpy()


# -- window_starts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, tile, overlap",
    [(100, 32, 8), (170, 64, 32), (65, 64, 32), (64, 64, 16), (1000, 512, 48), (97, 30, 29), (33, 8, 7)],
)
def test_window_starts_cover_axis_and_end_at_size(size, tile, overlap):
    starts = window_starts(size, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + tile == size
    assert starts == sorted(set(starts)), "starts must be strictly increasing"
    covered = np.zeros(size, bool)
    for s in starts:
        assert 0 <= s and s + tile <= size
        covered[s : s + tile] = True
    assert covered.all()
    # neighbouring windows overlap by at least `overlap`
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap


@pytest.mark.parametrize("size", [1, 20, 64])
def test_window_starts_single_window_when_image_fits(size):
    assert window_starts(size, 64, 16) == [0]


def test_window_starts_count_is_minimal_for_simple_case():
    # 0, 24, 48 and the last one at 100 - 32 = 68
    assert window_starts(100, 32, 8) == [0, 24, 48, 68]


# -- pointwise functions are reproduced exactly ------------------------------------------


@pytest.mark.parametrize("shape", [(70, 90), (65, 33), (16, 200)])
def test_identity_fn_returns_the_input(shape):
    image = _image(shape, channels=3)
    out = tiled_apply(lambda x: x, image, 3, tile=32, overlap=16, margin=4)
    assert out.shape == image.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, image, atol=1e-6)


def test_identity_fn_with_alignment_padding_on_odd_sizes():
    image = _image((51, 77), channels=2)
    out = tiled_apply(lambda x: x, image, 2, tile=32, overlap=16, margin=4, align=4)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, image, atol=1e-6)


def test_pointwise_fn_changing_channel_count():
    image = _image((60, 80), channels=1)

    def fn(x):
        return torch.cat([3 * x**2, -x], dim=1)

    out = tiled_apply(fn, image, 2, tile=32, overlap=12, margin=2)
    np.testing.assert_allclose(out[0], 3 * image[0] ** 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], -image[0], atol=1e-6)


def test_local_filter_has_no_seams():
    """A 5x5 box filter (context 2) with zero padding: tiled == whole image everywhere."""
    image = _image((90, 110))
    kernel = torch.ones(1, 1, 5, 5) / 25.0

    def fn(x):
        return F.conv2d(x, kernel, padding=2)

    with torch.no_grad():
        whole = fn(torch.from_numpy(image)[None])[0].numpy()
    out = tiled_apply(fn, image, 1, tile=32, overlap=12, margin=2)
    np.testing.assert_allclose(out, whole, atol=1e-5)
    # ... and a margin smaller than the context does show seams, so the test can fail
    seamy = tiled_apply(fn, image, 1, tile=32, overlap=12, margin=0)
    assert np.abs(seamy - whole).max() > 1e-3


# -- the methods' networks ------------------------------------------------------------------


def test_unet_tiled_equals_whole_image(unet):
    image = _image((150, 170))
    whole = _whole(unet, image)
    out = _tiled(unet, image)
    assert out.shape == whole.shape == (_out(unet), 150, 170)
    assert np.isfinite(out).all()
    assert np.abs(whole).mean() > 1e-2, "random weights should give non-trivial offsets"
    np.testing.assert_allclose(out, whole, atol=1e-4)


def test_unet_tiling_needs_the_margin(unet):
    """With margin 0, windows' padded borders leak into the blend: the comparison above can fail."""
    image = _image((150, 170))
    whole = _whole(unet, image)
    out = _tiled(unet, image, margin=0)
    assert np.abs(out - whole).max() > 1e-3


@pytest.mark.parametrize("shape", [(151, 171), (97, 130)])
def test_unet_tiled_has_no_seams_on_odd_sizes(unet, shape):
    """Away from the bottom/right image edge odd sizes match (the whole image is checked below)."""
    image = _image(shape, seed=1)
    whole = _whole(unet, image)
    out = _tiled(unet, image)
    assert out.shape == whole.shape
    edge = unet.context + 2
    np.testing.assert_allclose(out[:, :-edge, :-edge], whole[:, :-edge, :-edge], atol=1e-4)


@pytest.mark.parametrize("shape", [(151, 171), (63, 63)])
def test_unet_tiled_equals_whole_image_on_odd_sizes(unet, shape):
    image = _image(shape, seed=1)
    whole = _whole(unet, image)
    out = _tiled(unet, image)
    np.testing.assert_allclose(out, whole, atol=1e-4)


# -- cancel, progress, arguments -------------------------------------------------------------


def test_cancel_raises_cancelled():
    calls = []

    def fn(x):
        calls.append(1)
        return x

    with pytest.raises(Cancelled):
        tiled_apply(fn, _image((80, 80)), 1, tile=32, overlap=16, margin=4, callbacks=Callbacks(should_stop=lambda: True))
    assert calls == [], "no window should run after a cancel request"


def test_cancel_midway_stops_between_windows():
    seen = []
    cb = Callbacks(on_progress=lambda d, t, loss: seen.append(d), should_stop=lambda: len(seen) >= 2)
    with pytest.raises(Cancelled):
        tiled_apply(lambda x: x, _image((80, 80)), 1, tile=32, overlap=16, margin=4, callbacks=cb)
    assert seen == [1, 2]


def test_progress_reaches_total():
    events = []
    cb = Callbacks(on_progress=lambda d, t, loss: events.append((d, t, loss)))
    image = _image((100, 70))
    tiled_apply(lambda x: x, image, 1, tile=32, overlap=8, margin=2, callbacks=cb)
    n_windows = len(window_starts(100, 32, 8)) * len(window_starts(70, 32, 8))
    assert len(events) == n_windows > 1
    assert [e[0] for e in events] == list(range(1, n_windows + 1))
    assert all(t == n_windows for _, t, _ in events)
    assert all(loss is None for *_, loss in events)


@pytest.mark.parametrize("overlap, margin", [(16, 8), (10, 8), (0, 0)])
def test_overlap_not_above_twice_margin_is_rejected(overlap, margin):
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(lambda x: x, _image((40, 40)), 1, tile=32, overlap=overlap, margin=margin)
