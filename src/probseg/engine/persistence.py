"""Saving and loading a model: the model folder's files, read back and checked, never unpickled.

:class:`Persistent` is the part of :class:`probseg.engine.model.SegmentationModel`
that writes ``config.json``, ``weights.safetensors`` and ``settings.json``
(:mod:`probseg.io.checkpoint`) and builds a model from them again, the same for
every method.
"""

from __future__ import annotations

import json
from pathlib import Path

from probseg.core.config import config_from_dict, config_to_dict
from probseg.core.errors import CheckpointError, InputError
from probseg.io import checkpoint


class Persistent:
    """Save, load and describe a model; mixed into :class:`~probseg.engine.model.SegmentationModel`."""

    def save(self, folder) -> Path:
        """Write ``config.json``, ``weights.safetensors`` and ``settings.json`` into ``folder``.

        The folder's lock (:func:`probseg.io.lock.hold`) is held during the
        save, so another process saving there is refused (``LockHeld``,
        naming it) rather than mixing its files with these; the files are
        renamed into place together once all are written.
        """
        from probseg.core.record import weights_digest
        from probseg.io.atomic import remove_file, replace_on_success
        from probseg.io.lock import hold

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
        folder = Path(folder)
        with hold(folder, "the model folder"), replace_on_success():
            checkpoint.save_checkpoint(folder, self.method, config_to_dict(self.config), state, extra)
            # Default settings stay implicit, so a later release's better defaults
            # reach models that were never tuned.
            if config_to_dict(self.settings) != config_to_dict(self.settings_class()):
                self.save_settings(folder)
            else:
                remove_file(folder / SETTINGS_NAME)
        self.folder = folder
        return self.folder

    def save_settings(self, folder=None) -> Path:
        """Write the post-processing settings to ``settings.json`` (the next prediction uses them), under the folder's lock."""
        from probseg.io.atomic import write_json
        from probseg.io.lock import hold

        folder = Path(folder) if folder is not None else self.folder
        if folder is None:
            raise InputError("the model has no folder yet; save it first")
        path = folder / SETTINGS_NAME
        with hold(folder, "the model folder"):
            write_json(path, {"method": self.method, "settings": config_to_dict(self.settings)})
        return path

    @classmethod
    def load(cls, folder, device="auto", meta: dict | None = None) -> "Persistent":
        """Load a model folder written by :meth:`save` (no unpickling); ``meta``: its ``config.json`` if read already."""
        meta, state = checkpoint.load_checkpoint(folder, expected_method=cls.method or None, meta=meta)
        path = Path(folder) / checkpoint.CONFIG_NAME
        if "in_channels" not in meta:
            raise CheckpointError(f"{path} lacks the field 'in_channels'; the file was edited or damaged")
        try:
            config = stored_config(cls.config_class, meta["config"])
            in_channels = int(meta["in_channels"])
            normalization = dict(meta.get("normalization", {}))
        except (InputError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        net = cls.build_network(config, in_channels)
        checkpoint.load_weights_into(net, state, Path(folder) / checkpoint.WEIGHTS_NAME)
        # After load_weights_into, whose messages say more about a damaged file than a differing hash.
        checkpoint.check_weights(meta, state, Path(folder) / checkpoint.WEIGHTS_NAME)
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
    def for_postprocessing(cls, meta: dict, settings=None) -> "Persistent":
        """A model without weights, from :meth:`meta`, that can only post-process raw maps.

        ``settings`` (a dict of changes) applies on top of the settings in ``meta``.
        """
        config = stored_config(cls.config_class, meta["config"])
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

    The file must be an object whose ``"method"`` is ``cls``'s and whose
    ``"settings"`` the method knows; settings another method wrote would
    otherwise be applied to this one's model.

    Raises
    ------
    CheckpointError
        If the path is a folder, the file is not valid JSON, names another
        method or holds settings the method does not know.
    """
    path = Path(folder) / SETTINGS_NAME
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a settings file; remove it to use the defaults")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid settings file ({exc}); delete it to use the defaults") from None
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise CheckpointError(f"{path} is not a valid settings file (no \"settings\" object); "
                              "delete it to use the defaults")
    method = data.get("method")
    if cls.method and method != cls.method:
        raise CheckpointError(f"{path} holds settings for method {method!r}, not for this {cls.method!r} model; "
                              "delete it to use the defaults")
    try:
        return config_from_dict(cls.settings_class, data["settings"])
    except (InputError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def stored_config(config_class: type, values) -> object:
    """The training config read back from a file: every field must be there.

    A field missing from a stored config would silently take this release's
    default, which need not be what the weights were trained with.

    Raises
    ------
    InputError
        Naming the missing fields, or as :func:`~probseg.core.config.config_from_dict`.
    """
    import dataclasses

    if not isinstance(values, dict):
        raise InputError(f"config must be an object, got {type(values).__name__}")
    missing = [f.name for f in dataclasses.fields(config_class) if f.name not in values]
    if missing:
        raise InputError(f"config lacks {', '.join(missing)}; a stored config names every field, "
                         "so it was edited or damaged")
    return config_from_dict(config_class, values)
