"""The method contract, and the work every trained model shares.

A method is one module that defines a model class deriving from
:class:`SegmentationModel` and a :class:`probseg.methods.MethodInfo` named
``METHOD``. The class supplies:

``config_class``
    Training hyperparameters, a dataclass of :func:`probseg.core.config.param`
    fields deriving from :class:`probseg.core.config.TrainingConfig`. The Train
    widget's form and ``probseg train METHOD`` flags are generated from it.
``settings_class``
    Post-processing settings (foreground threshold, bandwidth, minimum size,
    ...), declared the same way. The Predict widget's form and ``probseg
    segment`` / ``probseg instances`` flags are generated from it, and
    :func:`probseg.tune` searches it.
``build_network(config, in_channels)``
    The ``torch.nn.Module``.
``training_loss(config, training_set, device)``
    A ``loss_fn(net, rng)`` for :func:`probseg.nn.training.train_loop`.
``raw(plane, n_samples, rng, callbacks)`` and ``raw_maps``
    The only place the network runs. Takes one normalised ``(C, Y, X)``
    plane and returns named float32 maps, whatever the method has:
    ``"embeddings"`` ``(draws, D, Y, X)``, ``"foreground"`` ``(Y, X)``,
    ``"classes"`` ``(draws, K, Y, X)``, affinities, soft masks; a map of three
    or more axes has the draws first, draw 0 being the segmentation's. Nothing is
    mandatory, but ``"embeddings"``, when present, is shown as a layer. One
    sample should cost one network pass where the method allows it.
    ``raw_maps`` names the maps, so callers know them before the network runs
    (a property where they depend on what the model learned, as SPOCO's
    foreground head).
``instances(raw, settings, n_samples)``
    Post-processing, no network: the raw maps of one plane become the
    segmentation ``(Y, X)`` and ``n_samples`` samples ``(n, Y, X)``. Where
    the user gave a foreground mask (:mod:`probseg.partition.foreground`), ``raw``
    also holds ``"mask"``, float32 ``(Y, X)``, 1 inside.
``uses_mask``
    Optional, default False: whether :meth:`~SegmentationModel.instances`
    reads ``raw["mask"]`` itself. Where it does not, objects are cut at the
    mask afterwards (segmentation and samples set to 0 outside it), so a
    foreground mask works with every method.
``uncertainty(samples, agglomeration)``
    Optional: the default is the samples' pixel disagreement.
``tune_grid()``
    Optional: the settings :func:`probseg.tune` tries by default.
``draws_independent(settings)``
    Optional, default False: True where, under ``settings``, ``instances``
    of a raw holding only draw ``k`` (draw maps with a first axis of 1, the
    other maps unchanged) gives draw ``k``'s segmentation, and the
    segmentation is draw 0's alone. Then ``probseg segment`` without sample
    outputs draws one sample, and :meth:`~SegmentationModel.predict` with
    ``keep_raw=False`` post-processes each draw as it comes, so the raw maps
    of only one draw are ever in memory.
``display_maps(raw)``
    Optional: named ``(Y, X)`` float32 maps of one plane worth showing as
    image layers, computed from its raw maps and no network (e.g. a map a
    setting acts on). The default has none;
    :meth:`~SegmentationModel.shown_maps` gathers them over a prediction's planes,
    and the Predict widget shows each as a hidden layer.
``object_features(raw, labels)``
    Optional: facts about each object of one plane's labels from its raw
    maps, no network (CellSegmenter's latent codes, boxes, presence):
    columns of equal length, ``"label"`` first. They become the
    segmentation layer's features in napari and ``--features-out`` CSV.
``raw_draws(plane, n_samples, rng, callbacks)``
    Optional: :meth:`~SegmentationModel.raw` one draw at a time, a generator
    of one-draw dicts as above, consuming ``rng`` as ``raw`` does. The
    default slices the result of ``raw``; a method that computes its draws
    in turn should override it, since only then does ``keep_raw=False``
    save memory.

Input checking, stacks, normalisation, agglomeration, saving and loading
live here, written once.
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from probseg.io import checkpoint
from probseg.consensus.agglomerate import Agglomeration, agglomerate
from probseg.core.bounds import check_seed
from probseg.core.callbacks import Callbacks, ensure
from probseg.core.config import config_from_dict, config_to_dict, make_config
from probseg.core.device import resolve_device
from probseg.core.errors import CheckpointError, InputError
from probseg.partition.foreground import MASK, plane_masks
from probseg.core.inputs import Planes, to_planes
from probseg.core.normalize import DEFAULT_PERCENTILES, normalize_percentile, percentile_range
from probseg.consensus.uncertainty import pixel_disagreement
from probseg.core.results import Prediction, Raw  # noqa: F401  (re-exported: the contract's types)


class SegmentationModel:
    """Base class of trained models; see the module docstring for the contract."""

    method: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    settings_class: ClassVar[type] = object
    #: Names of the maps :meth:`raw` returns.
    raw_maps: ClassVar[tuple] = ()
    #: Side of the inference windows unless the user picks another.
    default_tile_size: ClassVar[int] = 512
    #: Whether :meth:`instances` applies a foreground mask (``raw["mask"]``) itself; see the module docstring.
    uses_mask: ClassVar[bool] = False
    #: Whether the proofreading loop can train it on reviewed patches (labels in the ``"reviewed"`` encoding of
    #: :mod:`probseg.core.labels`: reviewed 0 is known background, everything else unlabelled) and fine-tune it.
    learns_from_reviewed_objects: ClassVar[bool] = False

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

    # -- what methods implement ---------------------------------------------------------
    @classmethod
    def build_network(cls, config, in_channels: int) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def training_loss(cls, config, training_set, device: torch.device):  # pragma: no cover - abstract
        """``loss_fn(net, rng) -> Tensor`` for :func:`probseg.nn.training.train_loop`."""
        raise NotImplementedError

    def raw(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks) -> dict:  # pragma: no cover - abstract
        """Named float32 maps of one normalised ``(C, Y, X)`` plane; the only network call."""
        raise NotImplementedError

    def instances(self, raw: dict, settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """``(segmentation (Y, X), samples (n, Y, X))`` int32 from one plane's raw maps; no network."""
        raise NotImplementedError

    def uncertainty(self, samples: np.ndarray, agglomeration: Agglomeration) -> np.ndarray:
        """Per-pixel uncertainty ``(Y, X)`` float32 in 0..1 of one plane's samples.

        The default is :func:`probseg.consensus.uncertainty.pixel_disagreement`.
        """
        return pixel_disagreement(samples)

    def tune_grid(self) -> dict:
        """Settings :func:`probseg.tune` tries by default: ``{name: [values]}``."""
        return {}

    def display_maps(self, raw: dict) -> dict:
        """Named ``(Y, X)`` float32 maps of one plane's raw maps worth showing as image layers; none by default."""
        return {}

    def shown_maps(self, prediction: "Prediction") -> dict:
        """The :meth:`display_maps` of ``prediction``, ``(Y, X)`` each, or ``(Z, Y, X)`` for a stack."""
        per_plane = [self.display_maps(plane) for plane in prediction.raw.planes]
        names = [name for name in per_plane[0] if all(name in maps for maps in per_plane)]
        out = {}
        for name in names:
            stacked = np.stack([np.asarray(maps[name], dtype=np.float32) for maps in per_plane])
            out[name] = stacked if prediction.raw.is_stack else stacked[0]
        return out

    def object_features(self, raw: dict, labels: np.ndarray) -> dict | None:
        """Per-object columns of one plane's ``labels`` from its raw maps (no network), or None.

        The default has none; see the module docstring.
        """
        return None

    @property
    def has_features(self) -> bool:
        """Whether the method makes an object table (overrides :meth:`object_features`)."""
        return type(self).object_features is not SegmentationModel.object_features

    def features(self, prediction: "Prediction") -> dict | None:
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

    def draws_independent(self, settings) -> bool:
        """Whether each draw can be post-processed alone under ``settings`` (see the module docstring).

        The default, False, is always safe: callers then draw and keep every sample.
        """
        return False

    def raw_draws(self, plane: np.ndarray, n_samples: int, rng: np.random.Generator, callbacks: Callbacks):
        """The maps of :meth:`raw`, one draw at a time: dicts whose draw maps have a first axis of 1.

        This default computes :meth:`raw` first; methods that compute their
        draws in turn override it so that one draw is in memory at a time.
        """
        full = self.raw(plane, n_samples, rng, callbacks)
        yield from _split_draws(full)

    def _stack_draws(self, draws, n_draws: int) -> dict:
        """:meth:`raw`'s result from :meth:`raw_draws`: each draw written into arrays allocated once."""
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

    # -- settings -----------------------------------------------------------------------
    def make_settings(self, settings=None):
        """A validated settings object from None (the model's), a dict of changes or an instance."""
        return make_config(self.settings_class, settings, getattr(self, "settings", None), what="settings")

    # -- shared -------------------------------------------------------------------------
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
                    callbacks: Callbacks | None = None, foreground=None) -> Raw:
        """Run the network on ``image``; turn the result into labels with :meth:`postprocess`.

        Parameters as :meth:`predict`; a ``foreground`` mask becomes each
        plane's ``"mask"`` map.
        """
        n_samples, planes, rng, cb, masks = self._start(image, n_samples, seed, channel_axis, rgb, callbacks, foreground)
        maps = []
        for z in range(planes.data.shape[0]):
            plane = self.raw(planes.data[z], n_samples, rng, cb)
            if masks is not None:
                plane[MASK] = masks[z]
            maps.append(plane)
        return Raw(maps, n_samples, planes.is_stack, planes.notice, self._run_attrs(seed))

    def _start(self, image, n_samples, seed, channel_axis, rgb, callbacks, foreground=None):
        """What every network run begins with: checked arguments, normalised planes, the generator,
        callbacks, and each plane's foreground mask (None without one)."""
        n_samples = _check_samples(n_samples)
        seed = check_seed(seed)
        if self.net is None:
            raise InputError("this model has no network weights; load it from its model folder to segment images")
        cb = ensure(callbacks)
        planes = self.prepare(image, channel_axis, rgb)
        # Checked here, so a bad mask fails before the network runs.
        shape = (planes.data.shape[0],) + planes.spatial_shape if planes.is_stack else planes.spatial_shape
        masks = plane_masks(foreground, shape) if foreground is not None else None
        if planes.notice:
            cb.message(planes.notice)
        return n_samples, planes, np.random.default_rng(seed), cb, masks

    def _run_attrs(self, seed: int) -> dict:
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
        settings = self.make_settings(settings)
        cb = ensure(callbacks)
        n_planes = len(raw.planes)
        results = _PlaneResults(n_planes, raw.is_stack)
        for z, plane in enumerate(raw.planes):
            cb.raise_if_stopped()
            plane_seg, plane_smp = self._instances(plane, settings, raw.n_samples)
            agg = agglomerate(plane_smp)
            results.add(z, plane_seg, plane_smp, self.uncertainty(plane_smp, agg), agg.probability)
            del plane_seg, plane_smp, agg
            cb.progress(z + 1, n_planes)
        seg, smp, unc, prob = results.arrays
        return Prediction(seg, smp, unc, prob, raw, settings, raw.notice)

    def _instances(self, raw: dict, settings, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`instances`, with objects cut at the foreground mask for methods that ignore it (see ``uses_mask``)."""
        seg, smp = self.instances(raw, settings, n_samples)
        if MASK not in raw or self.uses_mask:
            return seg, smp
        outside = np.asarray(raw[MASK]) < 0.5
        return _consecutive(_cut(seg, outside)), _cut(smp, outside)

    def predict(self, image, n_samples: int = 8, *, seed: int = 0, settings=None, channel_axis=None, rgb=False,
                callbacks: Callbacks | None = None, keep_raw: bool = True, on_draw=None, foreground=None) -> Prediction:
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

        Returns
        -------
        Prediction
            Its ``raw`` can be post-processed again with other settings
            (:meth:`postprocess`) without running the network.
        """
        if not keep_raw and self.draws_independent(self.make_settings(settings)):
            return self._predict_draw_by_draw(image, n_samples, seed, settings, channel_axis, rgb, callbacks, on_draw,
                                              foreground)
        raw = self.predict_raw(image, n_samples, seed=seed, channel_axis=channel_axis, rgb=rgb, callbacks=callbacks,
                               foreground=foreground)
        if on_draw is not None:
            for z, plane in enumerate(raw.planes):
                for k, draw in enumerate(_split_draws(plane)):
                    on_draw(z, k, draw)
        return self.postprocess(raw, settings, callbacks)

    def _predict_draw_by_draw(self, image, n_samples, seed, settings, channel_axis, rgb, callbacks, on_draw,
                              foreground=None) -> Prediction:
        """:meth:`predict` post-processing each draw as it comes; see ``keep_raw``."""
        settings = self.make_settings(settings)
        n_samples, planes, rng, cb, masks = self._start(image, n_samples, seed, channel_axis, rgb, callbacks, foreground)
        n_planes = planes.data.shape[0]
        firsts = []  # draw 0's maps of each plane, kept for the embeddings; later draws are dropped
        results = _PlaneResults(n_planes, planes.is_stack)
        for z in range(n_planes):
            plane_seg = plane_smp = None
            for k, draw in enumerate(self.raw_draws(planes.data[z], n_samples, rng, cb)):
                if masks is not None:
                    draw = {**draw, MASK: masks[z]}  # stored with each draw and kept with draw 0
                if on_draw is not None:
                    on_draw(z, k, draw)
                labels, _ = self._instances(draw, settings, 1)
                if k == 0:
                    plane_seg = labels
                    firsts.append(draw)
                    # With one draw the segmentation is also the sample; with more, draws 1..n are.
                    plane_smp = np.empty((n_samples,) + labels.shape, dtype=np.int32)
                    if n_samples == 1:
                        plane_smp[0] = labels
                else:
                    plane_smp[k - 1] = labels
                del draw, labels
            agg = agglomerate(plane_smp)
            results.add(z, plane_seg, plane_smp, self.uncertainty(plane_smp, agg), agg.probability)
            del plane_seg, plane_smp, agg
            cb.raise_if_stopped()
        seg, smp, unc, prob = results.arrays
        raw = Raw(firsts, 1, planes.is_stack, planes.notice, self._run_attrs(seed))
        return Prediction(seg, smp, unc, prob, raw, settings, planes.notice)

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

    # -- persistence --------------------------------------------------------------------
    def save(self, folder) -> Path:
        """Write ``config.json``, ``weights.safetensors`` and ``settings.json`` into ``folder``."""
        from probseg.core.record import weights_digest

        if self.net is None:
            raise InputError("this model has no network weights to save")
        state = self.net.state_dict()
        self.record["weights_sha256"] = weights_digest(state)
        extra = {
            "in_channels": self.in_channels,
            "normalization": self.normalization,
            "training": self.train_log,
            "record": self.record,
        }
        folder = checkpoint.save_checkpoint(folder, self.method, config_to_dict(self.config), state, extra)
        self.folder = Path(folder)
        # Default settings stay implicit, so a later release's better defaults
        # reach models that were never tuned.
        if config_to_dict(self.settings) != config_to_dict(self.settings_class()):
            self.save_settings()
        else:
            (self.folder / SETTINGS_NAME).unlink(missing_ok=True)
        return self.folder

    def save_settings(self, folder=None) -> Path:
        """Write the post-processing settings to ``settings.json`` (the next prediction uses them)."""
        from probseg.io.atomic import write_json

        folder = Path(folder) if folder is not None else self.folder
        if folder is None:
            raise InputError("the model has no folder yet; save it first")
        path = folder / SETTINGS_NAME
        write_json(path, {"method": self.method, "settings": config_to_dict(self.settings)})
        return path

    @classmethod
    def load(cls, folder, device="auto") -> "SegmentationModel":
        """Load a model folder written by :meth:`save` (no unpickling)."""
        meta, state = checkpoint.load_checkpoint(folder, expected_method=cls.method or None)
        path = Path(folder) / checkpoint.CONFIG_NAME
        try:
            config = config_from_dict(cls.config_class, meta["config"])
            in_channels = int(meta["in_channels"])
            normalization = dict(meta.get("normalization", {}))
        except (InputError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} has invalid settings: {exc}") from None
        net = cls.build_network(config, in_channels)
        checkpoint.load_weights_into(net, state, Path(folder) / checkpoint.WEIGHTS_NAME)
        settings = read_settings(folder, cls)
        record = meta.get("record") if isinstance(meta.get("record"), dict) else {}
        model = cls(config, net, in_channels, normalization, device=device, train_log=meta.get("training"),
                    settings=settings, record=record)
        model.folder = Path(folder)
        return model

    def meta(self) -> dict:
        """What ``config.json`` holds about the model (method, config, channels, normalisation, learned facts)."""
        return {"method": self.method, "config": config_to_dict(self.config), "in_channels": self.in_channels,
                "normalization": self.normalization, "settings": config_to_dict(self.settings),
                "learned": self.learned()}

    def learned(self) -> dict:
        """Facts from the training data that post-processing needs (JSON values); none by default.

        A model with weights may keep them in its network's buffers; a model
        made by :meth:`for_postprocessing` (post-processing a raw store, which
        has no weights) reads them back from ``meta["learned"]`` into
        ``self.learned_record``.
        """
        return dict(self.learned_record)

    @classmethod
    def for_postprocessing(cls, meta: dict, settings=None) -> "SegmentationModel":
        """A model without weights, from :meth:`meta`, that can only post-process raw maps.

        ``settings`` (a dict of changes) applies on top of the settings in ``meta``.
        """
        config = config_from_dict(cls.config_class, meta["config"])
        model = cls(config, None, int(meta.get("in_channels", 1)), meta.get("normalization", {}), device="cpu",
                    settings=meta.get("settings"))
        learned = meta.get("learned", {})
        model.learned_record = dict(learned) if isinstance(learned, dict) else {}
        model.settings = model.make_settings(settings)
        return model

    def describe(self) -> str:
        """A short human summary: method, device, key settings, training."""
        steps = self.train_log.get("steps_done", "?")
        return f"{self.method} model, {self.in_channels} channel(s), trained {steps} steps, on {self.device}"


SETTINGS_NAME = "settings.json"


def read_settings(folder, cls) -> object | None:
    """The settings stored in ``folder/settings.json`` for model class ``cls``, or None if there are none.

    Raises
    ------
    CheckpointError
        If the file is not valid JSON or holds settings the method does not know.
    """
    path = Path(folder) / SETTINGS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return config_from_dict(cls.settings_class, data["settings"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a valid settings file ({exc}); delete it to use the defaults") from None
    except InputError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


class _PlaneResults:
    """Each plane's segmentation, samples, uncertainty and probability, gathered as the planes finish.

    A stack's planes are written into ``(Z, ...)`` arrays allocated at the
    first plane, so no plane's results are held twice; a single plane's
    arrays are kept as they are (converted only where a method returned
    another dtype).
    """

    def __init__(self, n_planes: int, is_stack: bool):
        self.n_planes, self.is_stack = n_planes, is_stack
        self.arrays = None  # segmentation, samples, uncertainty, probability

    def add(self, z: int, seg, smp, unc, prob) -> None:
        if not self.is_stack:
            seg, smp = np.asarray(seg, dtype=np.int32), np.asarray(smp, dtype=np.int32)
            if np.shares_memory(seg, smp):
                # One draw: methods return the segmentation as the sample;
                # painting one layer must not change the other.
                seg = seg.copy()
            self.arrays = [seg, smp, np.asarray(unc, dtype=np.float32), np.asarray(prob, dtype=np.float32)]
            return
        if self.arrays is None:
            shape = (self.n_planes,) + np.shape(seg)
            self.arrays = [np.empty(shape, np.int32), np.empty((len(smp),) + shape, np.int32),
                           np.empty(shape, np.float32), np.empty(shape, np.float32)]
        out_seg, out_smp, out_unc, out_prob = self.arrays
        out_seg[z], out_smp[:, z], out_unc[z], out_prob[z] = seg, smp, unc, prob


def _split_draws(full: dict):
    """One-draw dicts of a :meth:`SegmentationModel.raw` result (maps of three or more axes have the draws first)."""
    n_draws = max((a.shape[0] for a in full.values() if a.ndim >= 3), default=1)
    for k in range(n_draws):
        yield {name: a[k : k + 1] if a.ndim >= 3 else a for name, a in full.items()}


def _cut(labels: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """``labels`` (``(Y, X)`` or ``(n, Y, X)``) set to 0 where ``outside``.

    In place where it can be: :meth:`SegmentationModel.instances` makes new
    labels on every call, and the samples of a large image are too big to copy.
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


def _check_samples(n_samples) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or int(n_samples) < 1:
        raise InputError(f"n_samples must be a whole number of at least 1, got {n_samples!r}")
    return int(n_samples)
