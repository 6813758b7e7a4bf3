"""The method contract: what a method supplies, and the model every method shares.

A method is one module (or one folder) that defines a model class deriving
from :class:`SegmentationModel` and a :class:`probseg.engine.registry.MethodInfo`
named ``METHOD``; adding it to ``probseg.methods.BUILTIN`` is the one other
line. The engine (:mod:`probseg.engine.pipeline`) owns the draw loop, planes,
progress, stacking, samples, masks, agglomeration, uncertainty, saving and
loading; a method supplies only what is its own.

What a method supplies
----------------------
``config_class`` and ``settings_class``
    Training hyperparameters (a dataclass of :func:`probseg.core.config.param`
    fields deriving from :class:`probseg.core.config.TrainingConfig`) and
    post-processing settings, declared the same way. The Train and Predict
    widgets' forms and the ``probseg train`` / ``segment`` / ``instances``
    flags are generated from them; :func:`probseg.tune` searches the settings.
    Rules that only hold for one method live in its config's ``check``.
``build_network(config, in_channels)``
    The ``torch.nn.Module``.
``training_loss(config, training_set, device)``
    A ``loss_fn(net, rng)`` for :func:`probseg.nn.training.train_loop`.
``draw(state, k, rng, callbacks)``
    Draw ``k`` of one plane: a dict of named float32 maps, the only network
    call. Maps of the draw have a first axis of 1 (``"embeddings"``
    ``(1, D, Y, X)``, ``"classes"`` ``(1, K, Y, X)``, affinities, object
    tables); maps of the plane have no draw axis (``"intensity"`` ``(Y, X)``).
    The engine stacks draws into ``(draws, ...)`` arrays, so every map of
    three or more axes has the draws first. ``state`` is what
    :meth:`~SegmentationModel.begin_plane` made (by default the normalised
    ``(C, Y, X)`` plane); ``callbacks`` report the draw's own progress and
    are polled for cancel. Draw 0 is the segmentation's: noise-free where the
    method has noise.
``partition(maps, settings, context)``
    One draw's labels ``(Y, X)`` int32 from its maps (draw maps with a first
    axis of 1), no network. ``context`` is what
    :meth:`~SegmentationModel.plane_context` computed once for the plane.
    Where the user gave a foreground mask, the maps hold ``"mask"`` ``(Y, X)``
    (1 inside); a method that reads it sets ``uses_mask``, any other has its
    objects cut at the mask afterwards.

Optional hooks and declared capabilities
----------------------------------------
``raw_maps``
    Names of the maps, known before the network runs (a property where they
    depend on what the model learned); a raw store lacking one is refused.
``table_maps``
    Those of them that are per-object tables rather than images (their last
    two axes are not the plane's), so a raw store's shapes can be checked.
``nan_maps``
    Those of them that hold NaN on purpose (no value at that pixel); NaN in
    any other map of a raw store is refused as damage.
``n_draws(n_samples)``
    Draws a plane needs: by default 1 for one sample, else ``1 + n_samples``
    (draw 0 then the samples).
``begin_plane(plane, n_draws, rng)`` and ``end_plane(state, maps)``
    Work shared by the draws of a plane before them (rescaling, drawing every
    draw's seeds at once) and after them (maps that need every draw, e.g. a
    draw 0 that is the draws' mean).
``plane_context(maps, settings)``
    Post-processing shared by every draw of a plane (a foreground mask, a
    smoothed image), computed once per plane.
``segmentation_draws``
    ``"first"`` (default): the segmentation partitions draw 0; ``"all"``: it
    partitions every draw together (a method that fuses its draws).
``draws_independent(settings)``
    True where each draw can be post-processed alone under ``settings``; then
    ``keep_raw=False`` post-processes each draw as it comes, so one draw's
    maps are in memory at a time. Only for methods without ``end_plane``.
``min_size(settings)``
    The smallest object kept, in pixels (default: the ``min_size`` setting).
``uncertainty(samples, agglomeration)``, ``tune_grid()``, ``display_maps(maps)``, ``object_features(maps, labels)``
    Per-pixel uncertainty (default: the samples' disagreement); the settings
    :func:`probseg.tune` tries; ``(Y, X)`` maps worth showing as layers; a
    per-object table (``"label"`` first) for the layer's features and
    ``--features-out``.
``check_settings(settings, n_samples, has_mask)``
    Refuse, with a one-line :class:`~probseg.core.errors.InputError`,
    settings that cannot work for this run (a foreground that needs a mask
    when none was given, one that needs several samples when one is asked
    for). The engine calls it before the network runs (:meth:`predict`,
    :meth:`postprocess`, :func:`probseg.tune` for every setting it tries),
    so such a mistake costs no network pass; by default it accepts everything.
``estimate_seconds(shape, n_samples)`` and ``cost_hint``
    The predicted time of one ``(Y, X)`` plane on the model's device, or
    None (the default) where the method cannot tell; what to change to make
    it faster. :mod:`probseg.engine.cost` warns above a minute and refuses
    above an hour unless the caller passes ``cost_limit=False``.
``uses_mask``, ``learns_from_reviewed_objects``, ``default_tile_size``
    Capabilities the engine, the proofreading loop and the widgets read
    instead of a method's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from probseg.consensus.agglomerate import Agglomeration
from probseg.consensus.uncertainty import pixel_disagreement
from probseg.core.bounds import check_seed
from probseg.core.callbacks import Callbacks, ensure
from probseg.core.config import make_config
from probseg.core.device import resolve_device
from probseg.core.errors import InputError
from probseg.core.inputs import Planes, to_planes
from probseg.core.normalize import DEFAULT_PERCENTILES, normalize_percentile, percentile_range
from probseg.core.results import Prediction, Raw
from probseg.engine import pipeline
from probseg.engine.cost import check_cost
from probseg.engine.persistence import SETTINGS_NAME, Persistent, read_settings, stored_config  # noqa: F401
from probseg.nn.tiling import tiled_apply
from probseg.partition.foreground import MASK, plane_masks


class SegmentationModel(Persistent):
    """Base class of trained models; see the module docstring for the contract."""

    method: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    settings_class: ClassVar[type] = object
    #: Names of the maps :meth:`draw` returns.
    raw_maps: ClassVar[tuple] = ()
    #: Maps of :attr:`raw_maps` that are per-object tables, not images: their last two axes are not the plane's.
    table_maps: ClassVar[tuple] = ()
    #: Maps of :attr:`raw_maps` that hold NaN on purpose (no value there); NaN in any other is damage.
    nan_maps: ClassVar[tuple] = ()
    #: Side of the inference windows unless the user picks another.
    default_tile_size: ClassVar[int] = 512
    #: Whether :meth:`partition` applies a foreground mask (``maps["mask"]``) itself.
    uses_mask: ClassVar[bool] = False
    #: Whether the proofreading loop can train it on reviewed patches (labels in the ``"reviewed"`` encoding of
    #: :mod:`probseg.core.labels`: reviewed 0 is known background, everything else unlabelled) and fine-tune it.
    learns_from_reviewed_objects: ClassVar[bool] = False
    #: ``"first"``: the segmentation is draw 0's partition; ``"all"``: the partition of every draw together.
    segmentation_draws: ClassVar[str] = "first"
    #: What makes a prediction faster, named in the notice of :mod:`probseg.engine.cost` ("" : generic words).
    cost_hint: ClassVar[str] = ""

    def __init__(self, config, net: torch.nn.Module | None, in_channels: int, normalization: dict, device="auto",
                 train_log: dict | None = None, settings=None, record: dict | None = None):
        self.config = config
        self.net = net
        self.in_channels = in_channels
        self.normalization = dict(normalization)
        self.device = resolve_device(device)
        if self.net is not None:
            self.net.to(self.device).eval()
        self.train_log = train_log or {}
        self.settings = self.make_settings(settings)
        #: Facts about how the model was made (see :mod:`probseg.core.record`).
        self.record = dict(record or {})
        #: Training-data facts of a model without weights (see :meth:`learned`).
        self.learned_record: dict = {}
        #: The folder it was loaded from or saved to, where tuned settings go.
        self.folder: Path | None = None
        # Inference window; the widgets and CLI expose it so large images fit in memory.
        self.tile_size = self.default_tile_size

    # -- what a method supplies ---------------------------------------------------------
    @classmethod
    def build_network(cls, config, in_channels: int) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def training_loss(cls, config, training_set, device: torch.device):  # pragma: no cover - abstract
        """``loss_fn(net, rng) -> Tensor`` for :func:`probseg.nn.training.train_loop`."""
        raise NotImplementedError

    def draw(self, state, k: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:  # pragma: no cover - abstract
        """Draw ``k`` of one plane: named float32 maps (draw maps with a first axis of 1); the only network call."""
        raise NotImplementedError

    def partition(self, maps: dict, settings, context) -> np.ndarray:  # pragma: no cover - abstract
        """One draw's labels ``(Y, X)`` int32 from its maps; no network."""
        raise NotImplementedError

    # -- optional hooks -----------------------------------------------------------------
    def n_draws(self, n_samples: int) -> int:
        """Draws a plane needs for ``n_samples`` samples: draw 0, then one per sample (one draw for one sample)."""
        return 1 if n_samples == 1 else 1 + n_samples

    def begin_plane(self, plane: np.ndarray, n_draws: int, rng: np.random.Generator):
        """What the draws of one normalised ``(C, Y, X)`` plane share; by default the plane itself."""
        return plane

    def end_plane(self, state, maps: dict) -> dict:
        """One plane's stacked draws, completed with the maps that need every draw; unchanged by default."""
        return maps

    def plane_context(self, maps: dict, settings):
        """Post-processing shared by every draw of one plane, passed to :meth:`partition`; None by default."""
        return None

    def min_size(self, settings) -> int:
        """Smallest object kept under ``settings``, in pixels: the ``min_size`` setting, else 0.

        Methods whose 0 means "from the object size" override it; the
        proofreading loop drops smaller pieces when it merges a retrained result.
        """
        return int(getattr(settings, "min_size", 0))

    def draws_independent(self, settings) -> bool:
        """Whether each draw can be post-processed alone under ``settings``; False, always safe, by default."""
        return False

    def uncertainty(self, samples: np.ndarray, agglomeration: Agglomeration) -> np.ndarray:
        """Per-pixel uncertainty ``(Y, X)`` float32 in 0..1 of one plane's samples; their disagreement by default."""
        return pixel_disagreement(samples)

    def tune_grid(self) -> dict:
        """Settings :func:`probseg.tune` tries by default: ``{name: [values]}``."""
        return {}

    def check_settings(self, settings, n_samples: int, has_mask: bool) -> None:
        """Refuse ``settings`` that cannot work for a run of ``n_samples`` samples, with or without a foreground mask.

        Called before the network runs; raise a one-line InputError. Accepts everything by default.
        """

    def estimate_seconds(self, shape: tuple, n_samples: int) -> float | None:
        """Predicted seconds of one plane of spatial ``shape`` ``(Y, X)`` with ``n_samples`` samples; None: unknown."""
        return None

    def display_maps(self, maps: dict) -> dict:
        """Named ``(Y, X)`` float32 maps of one plane worth showing as image layers; none by default."""
        return {}

    def object_features(self, maps: dict, labels: np.ndarray) -> dict | None:
        """Per-object columns of one plane's ``labels`` from its maps (no network), ``"label"`` first; none by default."""
        return None

    # -- what the engine does for every method ------------------------------------------
    def raw(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:
        """Every draw of one normalised ``(C, Y, X)`` plane, stacked (maps of three or more axes have draws first)."""
        return pipeline.plane_raw(self, plane, n_samples, rng, callbacks)

    def raw_draws(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks):
        """The maps of :meth:`raw`, one draw at a time (draw maps with a first axis of 1), consuming ``rng`` alike."""
        if type(self).end_plane is SegmentationModel.end_plane:
            yield from pipeline.plane_draws(self, plane, n_samples, rng, callbacks)
        else:  # the plane's maps need every draw
            yield from pipeline.split_draws(self.raw(plane, n_samples, rng, callbacks))

    def instances(self, maps: dict, settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """``(segmentation (Y, X), samples (n, Y, X))`` int32 of one plane's maps; no network."""
        return pipeline.plane_instances(self, maps, settings, n_samples)

    def apply_network(self, forward, plane: np.ndarray, channels: int, *, net=None, overlap: int | None = None,
                      callbacks: Callbacks | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """``forward`` over ``plane`` ``(C, Y, X)`` in windows of :attr:`tile_size` on the model's device.

        ``net`` (default: the model's network) gives the context (the margin
        cut from each window) and the size windows are aligned to; windows
        overlap by ``overlap`` px (default twice the context plus 8).
        """
        net = self.net if net is None else net
        context = net.context
        return tiled_apply(forward, plane, channels, tile=self.tile_size,
                           overlap=2 * context + 8 if overlap is None else overlap, margin=context,
                           align=net.align, device=self.device, callbacks=callbacks, out=out)

    def shown_maps(self, prediction: Prediction) -> dict:
        """The :meth:`display_maps` of ``prediction``, ``(Y, X)`` each, or ``(Z, Y, X)`` for a stack."""
        per_plane = [self.display_maps(plane) for plane in prediction.raw.planes]
        names = [name for name in per_plane[0] if all(name in maps for maps in per_plane)]
        out = {}
        for name in names:
            stacked = np.stack([np.asarray(maps[name], dtype=np.float32) for maps in per_plane])
            out[name] = stacked if prediction.raw.is_stack else stacked[0]
        return out

    @property
    def has_features(self) -> bool:
        """Whether the method makes an object table (overrides :meth:`object_features`)."""
        return type(self).object_features is not SegmentationModel.object_features

    def features(self, prediction: Prediction) -> dict | None:
        """The object table of ``prediction``'s segmentation, or None if the method has none.

        Columns of equal length from :meth:`object_features`; a stack's
        planes are concatenated with a ``"plane"`` column in front.
        """
        seg = prediction.segmentation
        planes = seg if prediction.raw.is_stack else seg[None]
        if len(prediction.raw.planes) != len(planes):
            return None
        tables = []
        for z, (maps, labels) in enumerate(zip(prediction.raw.planes, planes)):
            table = self.object_features(maps, labels)
            if table is None:
                return None
            if prediction.raw.is_stack:
                n = len(next(iter(table.values()))) if table else 0
                table = {"plane": np.full(n, z, dtype=np.int64), **table}
            tables.append(table)
        return {name: np.concatenate([t[name] for t in tables]) for name in tables[0]}

    def make_settings(self, settings=None):
        """A validated settings object from None (the model's), a dict of changes or an instance."""
        return make_config(self.settings_class, settings, getattr(self, "settings", None), what="settings")

    def prepare(self, image, channel_axis=None, rgb=False) -> Planes:
        """Check and normalise ``image`` into ``(Z, C, Y, X)`` planes."""
        planes = to_planes(image, channel_axis=channel_axis, rgb=rgb)
        if planes.n_channels != self.in_channels:
            raise InputError(
                f"the model was trained on {self.in_channels}-channel images but this image has {planes.n_channels}"
            )
        lo, hi = self.normalization.get("percentiles", DEFAULT_PERCENTILES)
        for z in range(planes.data.shape[0]):
            plane = planes.data[z]
            low, high = percentile_range(plane, (lo, hi), axis=(1, 2))
            planes.data[z] = normalize_percentile(plane, low[:, None, None], high[:, None, None])
        return planes

    def predict_raw(self, image, n_samples: int = 8, *, seed: int = 0, channel_axis=None, rgb=False,
                    callbacks: Callbacks | None = None, foreground=None, cost_limit: bool = True) -> Raw:
        """Run the network on ``image``; turn the result into labels with :meth:`postprocess`.

        Parameters as :meth:`predict`; a ``foreground`` mask becomes each
        plane's ``"mask"`` map.
        """
        n_samples, planes, rng, cb, masks = self._start(image, n_samples, seed, channel_axis, rgb, callbacks, foreground,
                                                        cost_limit=cost_limit)
        return pipeline.predict_raw(self, planes, n_samples, rng, cb, masks, self.run_attrs(seed))

    def _start(self, image, n_samples, seed, channel_axis, rgb, callbacks, foreground=None, settings=None,
               cost_limit: bool = True):
        """What every network run begins with: checked arguments, normalised planes, the generator,
        callbacks, and each plane's foreground mask (None without one).

        Everything that can refuse the run is checked here, before the
        network runs: the arguments, the ``settings`` for this run (when
        given), the image, the mask and the predicted cost.
        """
        n_samples = _check_samples(n_samples)
        seed = check_seed(seed)
        if self.net is None:
            raise InputError("this model has no network weights; load it from its model folder to segment images")
        if settings is not None:
            self.check_settings(settings, n_samples, foreground is not None)
        cb = ensure(callbacks)
        planes = self.prepare(image, channel_axis, rgb)
        shape = (planes.data.shape[0],) + planes.spatial_shape if planes.is_stack else planes.spatial_shape
        masks = plane_masks(foreground, shape) if foreground is not None else None
        check_cost(self, shape, n_samples, cb, cost_limit)
        if planes.notice:
            cb.message(planes.notice)
        return n_samples, planes, np.random.default_rng(seed), cb, masks

    def run_attrs(self, seed: int) -> dict:
        """The facts a raw output records about the run that made it."""
        return {"method": self.method, "seed": int(seed), "model": str(self.folder) if self.folder else None,
                "weights_sha256": self.record.get("weights_sha256")}

    def postprocess(self, raw: Raw, settings=None, callbacks: Callbacks | None = None) -> Prediction:
        """Labels, samples, uncertainty and probability from raw maps; the network does not run.

        Parameters
        ----------
        raw : Raw
            From :meth:`predict_raw` or :func:`probseg.io.rawstore.load_raw`.
        settings : settings object or dict, optional
            Post-processing settings; None uses the model's (tuned ones when
            :func:`probseg.tune` stored some).
        """
        checked = self.make_settings(settings)
        self.check_settings(checked, raw.n_samples, bool(raw.planes) and MASK in raw.planes[0])
        return pipeline.postprocess(self, raw, checked, ensure(callbacks))

    def predict(self, image, n_samples: int = 8, *, seed: int = 0, settings=None, channel_axis=None, rgb=False,
                callbacks: Callbacks | None = None, keep_raw: bool = True, on_draw=None, foreground=None,
                cost_limit: bool = True) -> Prediction:
        """Segment ``image`` and draw ``n_samples`` segmentations from the model.

        Parameters
        ----------
        image : ndarray
            ``(Y, X)``, a ``(Z, Y, X)`` stack (plane by plane), or channels via
            ``channel_axis`` / ``rgb``.
        n_samples : int
            Number of samples, at least 1; one sample costs one network pass
            where the method allows it.
        seed : int
            Same seed, same samples.
        settings : settings object or dict, optional
            Post-processing settings; None uses the model's.
        callbacks : Callbacks, optional
            Progress, cancel and notices.
        keep_raw : bool
            False: where the method allows it (:meth:`draws_independent`),
            each draw is post-processed as soon as the network made it and
            its maps are dropped, so memory holds one draw's maps rather
            than all of them (the results are the same). The returned
            ``raw`` then holds draw 0 only (``n_samples`` 1): enough for
            the embeddings, not for post-processing the samples again.
        on_draw : callable, optional
            Called as ``on_draw(z, k, draw)`` with the maps of draw ``k`` of
            plane ``z`` (draw maps with a first axis of 1, as
            :meth:`raw_draws` yields them), every draw in order, e.g.
            :meth:`probseg.io.rawstore.RawWriter.add` to store them as they come.
        foreground : array-like, optional
            Where objects may be (see :func:`probseg.partition.foreground.as_mask`):
            ``(Y, X)``, or ``(Z, Y, X)`` for a stack, where a ``(Y, X)``
            mask applies to every plane. It is checked before the network
            runs and kept in the raw maps as ``"mask"``; nothing is
            segmented outside it.
        cost_limit : bool
            Refuse (InputError) a prediction the method estimates to take
            more than an hour (:mod:`probseg.engine.cost`); False runs it
            anyway, after a notice.

        Raises
        ------
        InputError
            For unusable arguments, image, mask or settings, and a run
            predicted to take too long; all before the network runs.

        Returns
        -------
        Prediction
            Its ``raw`` can be post-processed again with other settings
            (:meth:`postprocess`) without running the network.
        """
        checked = self.make_settings(settings)
        n_samples, planes, rng, cb, masks = self._start(image, n_samples, seed, channel_axis, rgb, callbacks, foreground,
                                                        checked, cost_limit)
        if not keep_raw and self.draws_independent(checked):
            return pipeline.predict_draw_by_draw(self, planes, n_samples, rng, cb, masks, self.run_attrs(seed), checked,
                                                 on_draw)
        raw = pipeline.predict_raw(self, planes, n_samples, rng, cb, masks, self.run_attrs(seed))
        if on_draw is not None:
            for z, plane in enumerate(raw.planes):
                for k, draw in enumerate(pipeline.split_draws(plane)):
                    on_draw(z, k, draw)
        return pipeline.postprocess(self, raw, checked, cb)

    def predict_plane(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks,
                      settings=None) -> tuple[np.ndarray, np.ndarray]:
        """``(segmentation, samples)`` of one normalised ``(C, Y, X)`` plane (used by window stitching)."""
        return self.instances(self.raw(plane, n_samples, rng, callbacks), self.make_settings(settings), n_samples)

    def segment(self, image, **kwargs) -> np.ndarray:
        """The model's single best segmentation of ``image`` (int32 labels)."""
        return self.predict(image, n_samples=1, **kwargs).segmentation

    def sample(self, image, n: int, **kwargs) -> np.ndarray:
        """``n`` instance segmentations of ``image``, shape ``(n, Y, X)``."""
        return self.predict(image, n_samples=n, **kwargs).samples


def _check_samples(n_samples) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or int(n_samples) < 1:
        raise InputError(f"n_samples must be a whole number of at least 1, got {n_samples!r}")
    return int(n_samples)
