"""The Python API: train a method, load a model, list methods.

>>> from probseg import train, load_model
>>> model = train("cellulus", image, config={"object_size": 24, "steps": 500}, out="models/nuclei")
>>> model = load_model("models/nuclei")
>>> prediction = model.predict(image, n_samples=8)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


def list_methods() -> list[str]:
    """Names of the available methods."""
    from probseg import methods

    return methods.available()


def make_config(method: str, config=None):
    """A validated Config for ``method`` from a Config, a dict or None."""
    from probseg import methods
    from probseg.config import make_config as make

    return make(methods.get(method).config_class, config)


def _check_object_size(cfg, ts) -> None:
    """Refuse an object size no training image can show, before hours of training find nothing."""
    from probseg.errors import InputError

    size = getattr(cfg, "object_size", None)
    if size is None or not ts.planes:
        return
    side = min(min(plane.shape[-2:]) for plane in ts.planes)
    if size > side / 2:
        raise InputError(
            f"object_size {size:g} px is more than half the smallest training image side ({side} px); "
            f"give the typical object diameter, at most {side // 2} px here"
        )


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
        Hyperparameters; missing ones take the method's defaults.
    steps : int, optional
        Overrides ``config.steps``.
    device : str
        ``"auto"`` (cuda > mps > cpu), ``"cuda"``, ``"mps"`` or ``"cpu"``.
    seed : int
        Same seed and device, same model (on the CPU bit for bit).
    callbacks : probseg.callbacks.Callbacks, optional
        Progress, cancel, checkpoints, notices. A cancel returns the model
        as trained so far (and saves it when ``out`` is given).
    out : path, optional
        Model folder written at the end, every ``checkpoint_every`` steps and
        on cancel.
    checkpoint_every : int
        0 writes only at the end.
    channel_axis, rgb
        How to read channels, see :func:`probseg.inputs.to_planes`.

    Returns
    -------
    SegmentationModel
        ``model.train_log`` records steps, losses, time and device.
    """
    from probseg import methods
    from probseg.callbacks import ensure
    from probseg.device import describe_device, gpu_warning, resolve_device
    from probseg.errors import InputError
    from probseg.record import training_record
    from probseg.trainset import training_set
    from probseg.training import seed_everything, train_loop

    info = methods.get(method)
    cfg = make_config(method, config)
    if steps is not None:
        cfg = make_config(method, dataclasses.replace(cfg, steps=int(steps)))
    cb = ensure(callbacks)
    if info.labels == "required" and labels is None:
        raise InputError(f"{info.title} learns from labels; give a labels image")
    if info.labels == "none" and labels is not None:
        cb.message(f"{info.title} is self-supervised; the labels are not used for training")
        labels = None
    ts = training_set(images, labels, channel_axis=channel_axis, rgb=rgb)
    _check_object_size(cfg, ts)
    for notice in ts.notices:
        cb.message(notice)
    dev = resolve_device(device)
    # Before the device and training messages, so that bad labels are the one line the user sees.
    loss_fn = info.model_class.training_loss(cfg, ts, dev)
    warning = gpu_warning()
    if warning:
        cb.message(warning)
    cb.message(f"training {info.title} on {describe_device(dev)}")
    rng = seed_everything(seed)
    net = info.model_class.build_network(cfg, ts.in_channels).to(dev)
    model = info.model_class(cfg, net, ts.in_channels, ts.normalization, device=dev,
                             record=training_record(ts.planes, ts.labels, seed, dev))

    def save(log):
        model.train_log = dict(log.to_dict(), seed=seed)
        return model.save(Path(out))

    log = train_loop(
        net, loss_fn, steps=cfg.steps, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        device=dev, rng=rng, callbacks=cb, save=save if out is not None else None, checkpoint_every=checkpoint_every,
    )
    model.train_log = dict(log.to_dict(), seed=seed)
    if log.cancelled:
        cb.message(f"training cancelled after {log.steps_done} of {log.steps_total} steps; the model so far is kept")
    return model


def load_model(folder, device: str = "auto"):
    """Load a model folder written by ``model.save`` or ``train(..., out=...)``.

    Raises
    ------
    probseg.errors.CheckpointError
        Naming the file and the problem, for missing, corrupt, truncated or
        unknown models. Nothing is unpickled.
    """
    from probseg import checkpoint, methods
    from probseg.errors import CheckpointError, InputError

    meta = checkpoint.read_config(folder)
    try:
        info = methods.get(meta["method"])
    except InputError:
        raise CheckpointError(
            f"{Path(folder) / checkpoint.CONFIG_NAME} names method {meta['method']!r}, which this probseg does not know"
        ) from None
    return info.model_class.load(folder, device=device)
