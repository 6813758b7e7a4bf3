"""The Python API: train a method, load a model, list methods.

>>> from probseg import train, load_model
>>> model = train(list_methods()[0], image, config={"steps": 500}, out="models/nuclei")
>>> model = load_model("models/nuclei")
>>> prediction = model.predict(image, n_samples=8)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


def list_methods() -> list[str]:
    """Names of the available methods."""
    from probseg.engine import registry

    return registry.available()


def make_config(method: str, config=None):
    """A validated Config for ``method`` from a Config, a dict or None."""
    from probseg.engine import registry
    from probseg.core.config import make_config as make

    return make(registry.get(method).config_class, config)


def train(
    method: str,
    images,
    labels=None,
    config=None,
    *,
    steps: int | None = None,
    device: str = "auto",
    seed: int = 0,
    callbacks=None,
    out=None,
    checkpoint_every: int = 0,
    channel_axis: int | None = None,
    rgb: bool = False,
    init=None,
    overwrite: bool = False,
):
    """Train ``method`` on ``images`` and return the model.

    Parameters
    ----------
    method : str
        A name from :func:`list_methods`.
    images : ndarray or list of ndarray
        The images to segment; unsupervised methods learn from them alone.
    labels : ndarray or list, optional
        Instance labels, for methods that use them.
    config : Config, dict or None
        Hyperparameters; missing ones take the method's defaults (``init``'s
        when fine-tuning).
    steps : int, optional
        Overrides ``config.steps``.
    device : str
        ``"auto"`` (cuda > mps > cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
    seed : int
        Same seed and device, same model (on the CPU bit for bit).
    callbacks : probseg.core.callbacks.Callbacks, optional
        Progress, cancel, checkpoints, notices. A cancel returns the model
        as trained so far (and saves it when ``out`` is given).
    out : path, optional
        Model folder written at the end, every ``checkpoint_every`` steps and
        on cancel; a folder that holds a model already is refused unless
        ``overwrite`` is true.
    checkpoint_every : int
        0 writes only at the end; at most 10,000,000.
    channel_axis, rgb
        How to read channels, see :func:`probseg.core.inputs.to_planes`.
    init : SegmentationModel, optional
        A trained model of ``method`` to fine-tune: the network is built from
        its config updated by ``config`` (a dict changes only the fields it
        names, e.g. ``steps``, ``learning_rate``, ``label_mode``) and starts
        from a copy of its whole state dict (buffers included, e.g. a momentum
        network and the object area); the model keeps its post-processing
        settings. ``init`` itself is not changed. The images must have its
        number of channels, and ``config`` must not change the network's
        shape.
    overwrite : bool
        Replace the model in ``out`` if it holds one.

    Returns
    -------
    SegmentationModel
        ``model.train_log`` records steps, losses, time and device, and
        with ``init`` also ``fine_tuned_from`` (its folder, weights hash
        and steps).

    Raises
    ------
    InputError
        For unusable images, labels or config (a ValueError naming the
        setting), a ``checkpoint_every`` out of range, an ``out`` that is a
        file or cannot be written, or an ``init`` of another method,
        another channel count or without weights.
    TypeError
        For a ``config`` that is neither a Config, a dict nor None.
    FileExistsError
        For an ``out`` that holds a model already, without ``overwrite``.
    """
    from probseg.core.bounds import CHECKPOINT_EVERY

    # Every argument is checked before the images are read.
    checkpoint_every = CHECKPOINT_EVERY.check("checkpoint_every", checkpoint_every)
    if out is not None:
        check_model_folder(out, overwrite)
    job = prepare_training(method, config, steps=steps, device=device, seed=seed, channel_axis=channel_axis, rgb=rgb,
                           init=init, labelled=labels is not None)
    return job.run(images, labels, callbacks, out, checkpoint_every)


def prepare_training(method, config=None, *, steps: int | None = None, device: str = "auto", seed: int = 0,
                     channel_axis: int | None = None, rgb: bool = False, init=None,
                     labelled: bool = False) -> "TrainingJob":
    """Check everything :func:`train` can check before the images are read, and return the job to run.

    The one place where the method is looked up and the config validated:
    the command line calls it before it reads any image and the Train widget
    on the GUI thread, so a wrong setting is one line before any work; then
    :meth:`TrainingJob.run` trains (the widget runs it on a worker).
    Parameters as :func:`train`; ``method`` may also be a
    :class:`probseg.engine.registry.MethodInfo`, and ``labelled`` says
    whether labels will be given.

    Raises
    ------
    InputError
        For an unknown method, a wrong config, missing labels or an ``init``
        that cannot be fine-tuned.
    """
    from probseg.core.config import make_config as make
    from probseg.core.errors import InputError
    from probseg.engine import registry

    info = method if isinstance(method, registry.MethodInfo) else registry.get(method)
    if steps is not None:
        # Checked with the config's own rule for steps: numbers (numpy's too), never text or bools.
        if isinstance(config, info.config_class):
            config = dataclasses.replace(config, steps=steps)
        elif config is None or isinstance(config, dict):
            config = {**(config or {}), "steps": steps}  # anything else is refused by make_config, with a TypeError
    if init is None:
        cfg = make(info.config_class, config)
    else:
        cfg = _fine_tune_config(info, init, config)
    if info.labels == "required" and not labelled:
        raise InputError(f"{info.title} learns from labels; give a labels image")
    return TrainingJob(info, cfg, device, seed, channel_axis, rgb, init)


@dataclasses.dataclass
class TrainingJob:
    """A checked training run (see :func:`prepare_training`); :meth:`run` trains."""

    info: object
    config: object
    device: str
    seed: int
    channel_axis: int | None
    rgb: bool
    init: object

    def run(self, images, labels=None, callbacks=None, out=None, checkpoint_every: int = 0):
        """Train on ``images`` (and ``labels``) and return the model; the arguments as :func:`train`'s."""
        import contextlib

        from probseg.core.callbacks import ensure
        from probseg.core.device import describe_device, gpu_warning, resolve_device
        from probseg.io.lock import hold
        from probseg.core.errors import InputError
        from probseg.core.record import training_record
        from probseg.nn.training import seed_everything, train_loop
        from probseg.nn.trainset import training_set

        info, cfg, init, seed = self.info, self.config, self.init, self.seed
        cb = ensure(callbacks)
        if info.labels == "required" and labels is None:
            raise InputError(f"{info.title} learns from labels; give a labels image")
        if info.labels == "none" and labels is not None:
            cb.message(f"{info.title} is self-supervised; the labels are not used for training")
            labels = None
        ts = training_set(images, labels, channel_axis=self.channel_axis, rgb=self.rgb)
        if init is not None and ts.in_channels != init.in_channels:
            raise InputError(
                f"the model to fine-tune was trained on {init.in_channels}-channel images but these have {ts.in_channels}"
            )
        cfg.check_training_images([min(plane.shape[-2:]) for plane in ts.planes])
        for notice in ts.notices:
            cb.message(notice)
        dev = resolve_device(self.device)
        # Before the device and training messages, so that bad labels are the one line the user sees.
        loss_fn = info.model_class.training_loss(cfg, ts, dev)
        for notice in getattr(loss_fn, "notices", ()):
            cb.message(notice)
        warning = gpu_warning()
        if warning:
            cb.message(warning)
        cb.message(f"{'fine-tuning' if init is not None else 'training'} {info.title} on {describe_device(dev)}")
        rng = seed_everything(seed)
        net = info.model_class.build_network(cfg, ts.in_channels)
        origin = None
        if init is not None:
            origin = _start_from(net, init)
        net = net.to(dev)
        record = training_record(ts.planes, ts.labels, seed, dev)
        if origin is not None:
            record["fine_tuned_from"] = origin
        # A fine-tuned model keeps init's post-processing settings, which may have been tuned for these images.
        model = info.model_class(cfg, net, ts.in_channels, ts.normalization, device=dev, record=record,
                                 settings=init.settings if init is not None else None)

        def log_dict(log):
            out_log = dict(log.to_dict(), seed=seed)
            if origin is not None:
                out_log["fine_tuned_from"] = origin
            return out_log

        def save(log):
            model.train_log = log_dict(log)
            return model.save(Path(out))

        # The folder's lock is held for the whole run, so two trainings into one folder never both succeed.
        with hold(out, "the model folder") if out is not None else contextlib.nullcontext():
            log = train_loop(
                net, loss_fn, steps=cfg.steps, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                device=dev, rng=rng, callbacks=cb, save=save if out is not None else None,
                checkpoint_every=checkpoint_every,
            )
        model.train_log = log_dict(log)
        if log.cancelled:
            cb.message(f"training cancelled after {log.steps_done} of {log.steps_total} steps; the model so far is kept")
        return model


def check_model_files(folder: Path, name: str = "") -> None:
    """Refuse a folder standing where one of a model's files (config, weights, settings) goes in ``folder``.

    ``name`` (e.g. ``"--out M: "``) starts the message. Found before training, not when the model is saved.
    """
    from probseg.core.errors import InputError
    from probseg.engine.persistence import SETTINGS_NAME
    from probseg.io.checkpoint import CONFIG_NAME, WEIGHTS_NAME

    for file in (CONFIG_NAME, WEIGHTS_NAME, SETTINGS_NAME):
        if (folder / file).is_dir():
            raise InputError(f"{name}{folder / file} is a folder where the model's file goes; remove or rename it")


def check_model_folder(out, overwrite: bool = False) -> Path:
    """Refuse ``out`` as a model folder before any work: a file, a folder that cannot be written (or made),
    or, without ``overwrite``, one that holds a model already.

    Raises
    ------
    InputError
        For a file or a place that cannot be written.
    FileExistsError
        For a folder that holds a model, without ``overwrite``.
    """
    import os

    from probseg.core.errors import InputError
    from probseg.io.checkpoint import CONFIG_NAME

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"out {folder} is a file; give a folder for the model")
    check_model_files(folder)
    if (folder / CONFIG_NAME).exists() and not overwrite:
        raise FileExistsError(f"out {folder} holds a model already; pass overwrite=True to replace it, "
                              "or choose another folder")
    # The folder, or the nearest folder above it that exists, must let the model be written.
    place = folder
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir() or not os.access(place, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the model to {folder}: {place} is not a writable folder")
    return folder


def _fine_tune_config(info, init, config):
    """``init``'s config updated by ``config``, refusing another method or a network of another shape."""
    from probseg.core.config import make_config as make
    from probseg.core.errors import InputError

    if not isinstance(init, info.model_class) or getattr(init, "net", None) is None:
        what = getattr(init, "method", None) or type(init).__name__
        if isinstance(init, info.model_class):
            raise InputError(
                f"the {info.title} model to fine-tune has no network weights; load it from its model folder"
            )
        raise InputError(f"init must be a trained {info.name} model to fine-tune, got a {what} model")
    cfg = make(info.model_class.config_class, config, base=init.config)
    wanted = info.model_class.build_network(cfg, init.in_channels).state_dict()
    have = init.net.state_dict()
    for name in sorted(set(wanted) | set(have)):
        if name not in wanted or name not in have or tuple(wanted[name].shape) != tuple(have[name].shape):
            raise InputError(
                f"the config changes the network of the model to fine-tune ({name}); "
                "fine-tuning keeps its architecture, so leave its network fields as they are"
            )
    return cfg


def _start_from(net, init) -> dict:
    """Copy ``init``'s whole state dict into ``net``; returns what the record says about ``init``."""
    from probseg.core.record import weights_digest

    state = init.net.state_dict()
    # load_state_dict copies the values, so training never changes init's tensors.
    net.load_state_dict(state)
    return {
        "method": init.method,
        "folder": str(init.folder) if init.folder is not None else None,
        "weights_sha256": weights_digest(state),
        "steps_done": int(init.train_log.get("steps_done", 0)),
    }


def load_model(folder, device: str = "auto"):
    """Load a model folder written by ``model.save`` or ``train(..., out=...)``.

    Raises
    ------
    probseg.core.errors.CheckpointError
        Naming the file and the problem, for missing, corrupt, truncated or
        unknown models. Nothing is unpickled.
    """
    from probseg.engine import registry
    from probseg.io import checkpoint
    from probseg.core.errors import CheckpointError, InputError

    meta = checkpoint.read_config(folder)
    try:
        info = registry.get(meta["method"])
    except InputError:
        raise CheckpointError(
            f"{Path(folder) / checkpoint.CONFIG_NAME} names method {meta['method']!r}, which this probseg does not know"
        ) from None
    return info.model_class.load(folder, device=device, meta=meta)
