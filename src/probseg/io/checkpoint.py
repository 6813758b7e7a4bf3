"""Model folders: ``config.json`` + ``weights.safetensors``, never pickles.

A model folder is what a user saves and sends to a colleague, so loading it
must be safe (safetensors holds tensors only) and every failure must name the
file and the problem. A save writes both files beside their targets and
renames them into place together, weights first and ``config.json`` last
(see :func:`probseg.io.atomic.replace_on_success`), so an interrupted or
failed save leaves the old model as it was. ``config.json`` records the
weights' sha256 (``record.weights_sha256``); a load that meets a save between
reading the two files finds that they do not match and reads them again
(:func:`read_saved_pair`), so it never pairs one save's config with
another's weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from probseg.io.atomic import atomic_write, replace_on_success, write_bytes
from probseg.core.errors import CheckpointError

FORMAT = "probseg-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"


def save_checkpoint(folder, method: str, config: dict, state_dict: dict, extra: dict | None = None) -> Path:
    """Write a model folder.

    Parameters
    ----------
    folder : path
        Created when missing; the two files are replaced together, only
        once both are written (config.json last).
    method : str
        Registered method name (``probseg.methods.available()``).
    config : dict
        The method's hyperparameters (JSON-serialisable).
    state_dict : dict of str to Tensor
        Network weights.
    extra : dict, optional
        More JSON metadata: normalisation statistics, channels, training log.

    Returns
    -------
    Path
        The folder.
    """
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": method, "config": config}
    meta.update(extra or {})
    text = json.dumps(meta, indent=2, sort_keys=True)
    folder.mkdir(parents=True, exist_ok=True)
    with replace_on_success():
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}), by_name=True)
        write_bytes(folder / CONFIG_NAME, text.encode())
    return folder


def read_config(folder) -> dict:
    """Read and check ``config.json`` of a model folder (weights untouched).

    Raises
    ------
    CheckpointError
        If the folder or file is missing, not JSON, or not a probseg model of
        a format version this release understands.
    """
    folder = Path(folder)
    if not folder.exists():
        from probseg.io.images import missing

        raise CheckpointError(f"model folder {missing(folder)}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; a model is a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; is {folder} a probseg model folder?")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is corrupt or truncated") from None
    return check_config(meta, folder)


def check_config(meta, folder) -> dict:
    """Check ``meta``, the parsed ``config.json`` of the model folder ``folder``, as :func:`read_config` does.

    Returns
    -------
    dict
        ``meta``.

    Raises
    ------
    CheckpointError
        If ``meta`` is not a probseg model description of a format version
        this release understands.
    """
    path = Path(folder) / CONFIG_NAME
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a probseg model description (no \"format\": \"{FORMAT}\")")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{path} has format version {version!r}, which no probseg writes (1 to {FORMAT_VERSION}); "
            "the file was edited or damaged"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version!r}; this probseg reads up to {FORMAT_VERSION}: update probseg"
        )
    for key in ("method", "config"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks the field {key!r}")
    if not isinstance(meta["method"], str) or not meta["method"]:
        raise CheckpointError(f"{path}: method must be a method name, got {meta['method']!r}")
    if not isinstance(meta["config"], dict):
        raise CheckpointError(f"{path}: config must be an object, got {type(meta['config']).__name__}")
    for key in ("record", "training"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise CheckpointError(f"{path}: {key} must be an object, got {type(meta[key]).__name__}")
    _check_channels_and_normalization(meta, path)
    return meta


def check_weights(meta: dict, state: dict, path) -> None:
    """Refuse weights that are not the ones ``config.json`` records.

    Models saved by this probseg record the sha256 of their weights
    (``record.weights_sha256``, see :func:`probseg.core.record.weights_digest`);
    a folder whose ``weights.safetensors`` was replaced by another model's, or
    whose files come from two saves, is refused. A folder without the record
    (written by hand with :func:`save_checkpoint`, or by an older release) is
    accepted unchecked: there is nothing to check against.

    Parameters
    ----------
    meta : dict
        The checked ``config.json``.
    state : dict of str to Tensor
        The weights as loaded from ``path``.
    path : path
        The weights file, for the message.

    Raises
    ------
    CheckpointError
        When the recorded hash is malformed or differs from the weights'.
    """
    from probseg.core.record import weights_digest

    expected = (meta.get("record") or {}).get("weights_sha256")
    if expected is None:
        return
    path = Path(path)
    config = path.with_name(CONFIG_NAME)
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(f"{config}: record.weights_sha256 must be a sha256 in hex, got {expected!r}")
    if weights_digest(state) != expected:
        raise CheckpointError(
            f"{path} is not the one {config.name} records (sha256 differs); the folder mixes files of "
            "different models or saves: save the model again or restore both files"
        )


MAX_CHANNELS = 64


def _check_channels_and_normalization(meta: dict, path: Path) -> None:
    """Refuse values that would otherwise fail later with an error blaming the image."""
    if "in_channels" in meta:
        channels = meta["in_channels"]
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
            raise CheckpointError(f"{path}: in_channels must be a whole number from 1 to {MAX_CHANNELS}, got {channels!r}")
    norm = meta.get("normalization")
    if norm is None:
        return
    if not isinstance(norm, dict):
        raise CheckpointError(f"{path}: normalization must be an object, got {norm!r}")
    if "percentiles" in norm:
        pct = norm["percentiles"]
        numbers = isinstance(pct, list) and len(pct) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in pct
        )
        if not numbers or not 0 <= pct[0] < pct[1] <= 100:
            raise CheckpointError(
                f"{path}: normalization percentiles must be two increasing numbers from 0 to 100, got {pct!r}; "
                "the model folder was edited or damaged"
            )


def load_checkpoint(folder, expected_method: str | None = None, meta: dict | None = None) -> tuple[dict, dict]:
    """Read a model folder without unpickling anything.

    Parameters
    ----------
    folder : path
    expected_method : str, optional
        When given, a model of another method is an error.
    meta : dict, optional
        ``config.json`` as parsed already; it is checked, not read again.

    Returns
    -------
    meta : dict
        Contents of ``config.json``.
    state_dict : dict of str to Tensor
        On the CPU.

    Raises
    ------
    CheckpointError
        Naming the file and what is wrong with it.
    """
    folder = Path(folder)

    def read(meta):
        meta = read_config(folder) if meta is None else check_config(meta, folder)
        if expected_method is not None and meta["method"] != expected_method:
            raise CheckpointError(
                f"{folder / CONFIG_NAME} describes a {meta['method']!r} model, not {expected_method!r}"
            )
        return meta, _read_weights(folder / WEIGHTS_NAME)

    return read_saved_pair(folder, read, meta)


#: How often a load reads a model folder again whose config.json and weights came from two saves.
READ_TRIES = 8


def read_saved_pair(folder, read, meta: dict | None = None) -> tuple[dict, dict]:
    """``read(meta)`` again while ``config.json`` and the weights it returns are of two saves.

    A save replaces the weights and then ``config.json``; a load between
    the two (``probseg train --checkpoint-every`` saving while a model is
    loaded) gets the config of one save and the weights of another. The
    config's ``record.weights_sha256`` tells: on a mismatch the folder is
    read again, after a short pause, up to :data:`READ_TRIES` times. A
    mismatch that stays is not a save in progress; the last pair is
    returned, for the checks of the weights themselves (dtype, NaN, shapes:
    :func:`load_weights_into`) and then :func:`check_weights` to
    name what is wrong. Models without the record are returned as read.

    Parameters
    ----------
    folder : Path
        The model folder.
    read : callable
        ``read(meta) -> (meta, state)``; ``meta`` is the config as parsed
        already, or None to read it from the folder (every try after the first).
    meta : dict, optional
        The config as parsed already.

    Returns
    -------
    meta, state : dict, dict
    """
    for attempt in range(READ_TRIES):
        before = _stamps(folder)
        try:
            meta, state = read(meta)
        except CheckpointError:
            # A file that changed while it was read (a save renamed a new one
            # in) is read again; a damaged file that stays as it is, is not.
            if attempt + 1 < READ_TRIES and _stamps(folder) != before:
                meta = None
                time.sleep(0.01 * (attempt + 1))
                continue
            raise
        if _record_mismatch(meta, state) is None or attempt + 1 == READ_TRIES:
            return meta, state
        meta = None  # read config.json again too
        time.sleep(0.01 * (attempt + 1))
    return meta, state


def _record_mismatch(meta: dict, state: dict) -> tuple[str, str] | None:
    """``(found, recorded)`` sha256 of the weights where they differ; None where they agree or nothing is recorded."""
    from probseg.core.record import weights_digest

    record = meta.get("record")
    expected = record.get("weights_sha256") if isinstance(record, dict) else None
    if not isinstance(expected, str):
        return None
    found = weights_digest(state)
    return None if found == expected else (found, expected)


def _stamps(folder) -> tuple:
    """Identity and age of the model files (inode, size, mtime), to see that a save replaced them."""
    out = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            st = (Path(folder) / name).stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _read_weights(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the model folder is incomplete")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is corrupt or truncated ({reason})") from None


def load_weights_into(module: torch.nn.Module, state: dict, path) -> None:
    """Copy ``state`` into ``module``, naming missing, extra or misshapen tensors.

    Raises
    ------
    CheckpointError
        When the weights do not fit the network the config describes.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or extra or shaped):
        # A weights file edited to another dtype or to NaN would load and
        # silently change the result; it must hold what save_checkpoint wrote.
        for key, value in own.items():
            if state[key].dtype != value.dtype:
                raise CheckpointError(
                    f"{path}: tensor {key} is {str(state[key].dtype).replace('torch.', '')}, expected "
                    f"{str(value.dtype).replace('torch.', '')}; the weights were not written by probseg"
                )
            if value.is_floating_point() and not bool(torch.isfinite(state[key]).all()):
                raise CheckpointError(f"{path}: tensor {key} holds NaN or infinite values; the weights are damaged")
    if missing or extra or shaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s) e.g. {extra[0]}")
        if shaped:
            k = shaped[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}")
        raise CheckpointError(f"{path} does not match its config.json: " + "; ".join(parts))
    module.load_state_dict(state)
