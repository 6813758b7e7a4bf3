"""The draw loop every method shares.

A method supplies one draw of one plane (:meth:`~probseg.engine.model.SegmentationModel.draw`,
the only network call) and one partition of one draw's maps
(:meth:`~probseg.engine.model.SegmentationModel.partition`, no network). This
module does everything around them, once for every method:

- the planes of a stack, one at a time, each with its foreground mask;
- the draws of a plane: how many, per-draw progress, stacking each draw into
  arrays allocated once, the plane's maps that need every draw;
- "draw 0 is the segmentation, draws 1..n are the samples", partitioning each
  draw (or, for a method that fuses its draws, all of them for the segmentation);
- objects cut at a foreground mask for methods that do not read it;
- agglomeration, uncertainty and probability of each plane's samples;
- post-processing each draw as soon as it is made, where the draws are
  independent, so that one draw's maps are in memory at a time.

Nothing here knows which method it runs, or whether a plane is a whole
image, a tile of a slide or one plane of a volume.
"""

from __future__ import annotations

import numpy as np

from probseg.consensus.agglomerate import agglomerate
from probseg.core.callbacks import Callbacks
from probseg.core.results import Prediction, Raw
from probseg.partition.foreground import MASK


# -- the draws of one plane ---------------------------------------------------------------
def draw_callbacks(callbacks: Callbacks, k: int, n_draws: int) -> Callbacks:
    """``callbacks`` for draw ``k`` of ``n_draws``: a draw's ``(done, total)`` becomes the plane's progress."""
    return Callbacks(
        on_progress=lambda done, total, _loss=None: callbacks.progress(k * total + done, n_draws * total),
        should_stop=callbacks.should_stop,
        on_message=callbacks.on_message,
    )


def plane_draws(model, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks):
    """One-draw dicts of one normalised ``(C, Y, X)`` plane, in order (draw maps with a first axis of 1)."""
    n_draws = model.n_draws(n_samples)
    state = model.begin_plane(plane, n_draws, rng)
    for k in range(n_draws):
        yield model.draw(state, k, rng, draw_callbacks(callbacks, k, n_draws))


def plane_raw(model, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
    """Every draw of one plane stacked (draws first), plus the maps that need every draw."""
    n_draws = model.n_draws(n_samples)
    state = model.begin_plane(plane, n_draws, rng)
    draws = (model.draw(state, k, rng, draw_callbacks(callbacks, k, n_draws)) for k in range(n_draws))
    return model.end_plane(state, stack_draws(draws, n_draws))


def stack_draws(draws, n_draws: int) -> dict:
    """One dict from one-draw dicts: each draw map (three or more axes) written into an array allocated once."""
    out = {}
    for k, draw in enumerate(draws):
        for name, array in draw.items():
            if array.ndim >= 3:
                if k == 0:
                    out[name] = np.empty((n_draws,) + array.shape[1:], dtype=np.float32)
                out[name][k] = array[0]
            elif k == 0:
                out[name] = array
    return out


def count_draws(maps: dict) -> int:
    """Draws held by one plane's maps (maps of three or more axes have the draws first)."""
    return max((a.shape[0] for a in maps.values() if a.ndim >= 3), default=1)


def select_draws(maps: dict, start: int, stop: int) -> dict:
    """``maps`` with only draws ``start:stop`` of each draw map (plane maps unchanged)."""
    return {name: a[start:stop] if a.ndim >= 3 else a for name, a in maps.items()}


def split_draws(maps: dict):
    """One-draw dicts of one plane's stacked maps."""
    for k in range(count_draws(maps)):
        yield select_draws(maps, k, k + 1)


# -- the labels of one plane ----------------------------------------------------------------
def plane_instances(model, maps: dict, settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(segmentation (Y, X), samples (n, Y, X))`` of one plane's maps; no network.

    The segmentation partitions draw 0 (or every draw, for a method whose
    ``segmentation_draws`` is ``"all"``); sample ``k`` partitions draw
    ``k + 1``. With one draw (a method that cannot sample, or one sample),
    every sample is the segmentation.
    """
    context = model.plane_context(maps, settings)
    n_draws = count_draws(maps)
    first = maps if model.segmentation_draws == "all" else select_draws(maps, 0, 1)
    segmentation = model.partition(first, settings, context)
    if n_draws == 1:
        return segmentation, segmentation[None] if n_samples == 1 else np.repeat(segmentation[None], n_samples, axis=0)
    # Filled draw by draw: a list of draws and its stack would hold them twice.
    samples = np.empty((min(n_samples, n_draws - 1),) + segmentation.shape, dtype=np.int32)
    for k in range(len(samples)):
        samples[k] = model.partition(select_draws(maps, 1 + k, 2 + k), settings, context)
    return segmentation, samples


def masked_instances(model, maps: dict, settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`~probseg.engine.model.SegmentationModel.instances`, with objects cut at the foreground mask
    for methods that do not read it themselves (``uses_mask``)."""
    seg, smp = model.instances(maps, settings, n_samples)
    if MASK not in maps or model.uses_mask:
        return seg, smp
    outside = np.asarray(maps[MASK]) < 0.5
    return _consecutive(_cut(seg, outside)), _cut(smp, outside)


# -- whole images ---------------------------------------------------------------------------
def predict_raw(model, planes, n_samples: int, rng, callbacks: Callbacks, masks, attrs: dict) -> Raw:
    """The network's maps of every plane of ``planes`` (:class:`probseg.core.inputs.Planes`), recording ``attrs``."""
    maps = []
    for z in range(planes.data.shape[0]):
        plane = model.raw(planes.data[z], n_samples, rng, callbacks)
        if masks is not None:
            plane[MASK] = masks[z]
        maps.append(plane)
    return Raw(maps, n_samples, planes.is_stack, planes.notice, attrs)


def postprocess(model, raw: Raw, settings, callbacks: Callbacks) -> Prediction:
    """Labels, samples, uncertainty and probability of every plane of ``raw``; no network."""
    n_planes = len(raw.planes)
    results = PlaneResults(n_planes, raw.is_stack)
    for z, plane in enumerate(raw.planes):
        callbacks.raise_if_stopped()
        seg, smp = masked_instances(model, plane, settings, raw.n_samples)
        results.add(model, z, seg, smp)
        del seg, smp
        callbacks.progress(z + 1, n_planes)
    return results.prediction(raw, settings)


def predict_draw_by_draw(model, planes, n_samples: int, rng, callbacks: Callbacks, masks, attrs: dict, settings,
                         on_draw=None) -> Prediction:
    """:func:`postprocess` of :func:`predict_raw`, each draw partitioned as soon as it is made.

    Only for methods whose draws are independent under ``settings``. The
    returned raw holds draw 0 of each plane (enough for the embeddings).
    """
    n_planes = planes.data.shape[0]
    firsts = []  # draw 0's maps of each plane, kept for the embeddings; later draws are dropped
    results = PlaneResults(n_planes, planes.is_stack)
    for z in range(n_planes):
        seg = smp = None
        for k, draw in enumerate(model.raw_draws(planes.data[z], n_samples, rng, callbacks)):
            if masks is not None:
                draw = {**draw, MASK: masks[z]}  # stored with each draw and kept with draw 0
            if on_draw is not None:
                on_draw(z, k, draw)
            labels, _ = masked_instances(model, draw, settings, 1)
            if k == 0:
                seg = labels
                firsts.append(draw)
                # With one draw the segmentation is also the sample; with more, draws 1..n are.
                smp = np.empty((n_samples,) + labels.shape, dtype=np.int32)
                if n_samples == 1:
                    smp[0] = labels
            else:
                smp[k - 1] = labels
            del draw, labels
        results.add(model, z, seg, smp)
        del seg, smp
        callbacks.raise_if_stopped()
    raw = Raw(firsts, 1, planes.is_stack, planes.notice, attrs)
    return results.prediction(raw, settings)


class PlaneResults:
    """Each plane's segmentation, samples, uncertainty and probability, gathered as the planes finish.

    A stack's planes are written into ``(Z, ...)`` arrays allocated at the
    first plane, so no plane's results are held twice; a single plane's
    arrays are kept as they are (converted only where a method returned
    another dtype).
    """

    def __init__(self, n_planes: int, is_stack: bool):
        self.n_planes, self.is_stack = n_planes, is_stack
        self.arrays = None  # segmentation, samples, uncertainty, probability

    def add(self, model, z: int, seg, smp) -> None:
        """Plane ``z``'s labels, with the uncertainty and probability of its agglomerated samples."""
        agg = agglomerate(smp)
        unc, prob = model.uncertainty(smp, agg), agg.probability
        if not self.is_stack:
            seg, smp = np.asarray(seg, dtype=np.int32), np.asarray(smp, dtype=np.int32)
            if np.shares_memory(seg, smp):
                # One draw: the segmentation is the sample; painting one layer must not change the other.
                seg = seg.copy()
            self.arrays = [seg, smp, np.asarray(unc, dtype=np.float32), np.asarray(prob, dtype=np.float32)]
            return
        if self.arrays is None:
            shape = (self.n_planes,) + np.shape(seg)
            self.arrays = [np.empty(shape, np.int32), np.empty((len(smp),) + shape, np.int32),
                           np.empty(shape, np.float32), np.empty(shape, np.float32)]
        out_seg, out_smp, out_unc, out_prob = self.arrays
        out_seg[z], out_smp[:, z], out_unc[z], out_prob[z] = seg, smp, unc, prob

    def prediction(self, raw: Raw, settings) -> Prediction:
        seg, smp, unc, prob = self.arrays
        return Prediction(seg, smp, unc, prob, raw, settings, raw.notice)


def _cut(labels: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """``labels`` (``(Y, X)`` or ``(n, Y, X)``) set to 0 where ``outside``.

    In place where it can be: partitions make new labels on every call, and
    the samples of a large image are too big to copy.
    """
    if not outside.any():
        return labels
    labels = labels if labels.flags.writeable else labels.copy()
    labels[..., outside] = 0
    return labels


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered 1..n where objects wholly outside the mask left gaps (counts read the largest label)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0 or ids[-1] == ids.size:
        return labels
    lut = np.zeros(int(ids[-1]) + 1, dtype=labels.dtype)
    lut[ids] = np.arange(1, ids.size + 1, dtype=labels.dtype)
    return lut[labels]
