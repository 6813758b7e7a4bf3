"""``probseg info``: describe a model folder from its ``config.json``, without loading the weights."""

from __future__ import annotations

import json
from pathlib import Path

from probseg.cli.flags import number
from probseg.core.errors import InputError
from probseg.engine import registry


def add_parser(sub) -> None:
    parser = sub.add_parser("info", help="describe a saved model", description="Describe a model folder without loading its weights.")
    parser.add_argument("model", metavar="MODEL_DIR", help="model folder")
    parser.add_argument("--json", action="store_true", help="print the model's config.json instead")
    parser.set_defaults(handler=run, _prog=parser.prog)


def _describe_settings(info, config: dict) -> tuple[list[str], list[str]]:
    """``name=value unit`` strings: main settings, and advanced ones that differ from the default.

    ``info`` is the model's method, or None when this probseg does not know it.
    """
    from probseg.core.config import fields_of

    specs = {s.name: s for s in fields_of(info.config_class)} if info is not None else {}
    # Declaration order (the form's order) beats config.json's sorted keys.
    names = [n for n in specs if n in config] + sorted(n for n in config if n not in specs)
    main, changed = [], []
    for name in names:
        value, spec = config[name], specs.get(name)
        text = f"{name}={number(value)}" + (f" {spec.unit}" if spec is not None and spec.unit else "")
        if spec is None or not spec.advanced:
            main.append(text)
        elif value != spec.default:
            changed.append(text)
    return main, changed


def _describe_post_settings(folder) -> list[tuple[str, str]]:
    """The post-processing line of ``probseg info``: tuned settings if the folder has them."""
    from probseg.engine.persistence import SETTINGS_NAME

    path = Path(folder) / SETTINGS_NAME
    if not path.is_file():
        return [("post-processing", "the method's defaults (run 'probseg tune' to fit them to labelled data)")]
    try:
        values = json.loads(path.read_text())["settings"]
        return [("post-processing", ", ".join(f"{k}={number(v)}" for k, v in values.items()) + f" ({SETTINGS_NAME})")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [("post-processing", f"{SETTINGS_NAME} is unreadable")]


def _per_channel(values) -> str:
    """``12.5`` for one channel, ``[12.5, 3.1]`` for several."""
    if isinstance(values, list) and len(values) == 1:
        values = values[0]
    return number(values) if isinstance(values, (int, float)) else str(values)


def _describe_training(training: dict) -> list[tuple[str, str]]:
    """The training and final-loss lines, from config.json's training log."""
    if not training:
        return [("training", "no record")]
    text = (
        f"{training.get('steps_done', '?')} of {training.get('steps_total', '?')} steps in "
        f"{number(training.get('seconds', '?'))} s on {training.get('device', '?')}"
    )
    if "seed" in training:
        text += f", seed {training['seed']}"
    if training.get("cancelled"):
        text += ", cancelled before the end"
    lines = [("training", text)]
    losses = training.get("losses") or []
    if losses:
        lines.append(("final loss", f"{losses[-1]:.4g}"))
    return lines


def _describe_record(record: dict) -> list[tuple[str, str]]:
    """What the model was trained on and made with, from config.json's reproducibility record."""
    if not record:
        return []
    data = record.get("training_data") or {}
    shapes = ", ".join("x".join(map(str, s)) for s in data.get("shapes", []))
    lines = [("trained on", f"{shapes or '?'} (sha256 {str(data.get('sha256', '?'))[:12]})"
              + (f", labels sha256 {data['labels_sha256'][:12]}" if data.get("labels_sha256") else ""))]
    versions = record.get("versions") or {}
    lines.append(("made with", ", ".join(f"{k} {v}" for k, v in versions.items()) + f" on {record.get('device', '?')}"
                  + (f", seed {record['seed']}" if "seed" in record else "")))
    if record.get("weights_sha256"):
        lines.append(("weights sha256", record["weights_sha256"]))
    return lines


def _describe_normalisation(norm: dict) -> list[tuple[str, str]]:
    if not norm:
        return []
    lo, hi = (list(norm.get("percentiles", [])) + ["?", "?"])[:2]
    text = f"{norm.get('mode', 'per-image')} percentiles {number(lo)} to {number(hi)}"
    if "train_low" in norm and "train_high" in norm:
        text += f"; training images span {_per_channel(norm['train_low'])} to {_per_channel(norm['train_high'])}"
    return [("normalisation", text)]


def _field(meta: dict, key: str) -> dict:
    """``meta[key]`` if it is a dict, else an empty one: a hand-edited config.json still gets described."""
    return meta.get(key) if isinstance(meta.get(key), dict) else {}


def run(args) -> int:
    """Print what MODEL_DIR holds, one ``key: value`` line each (or its config.json with --json)."""
    from probseg.io.checkpoint import WEIGHTS_NAME, read_config

    meta = read_config(args.model)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    method = meta["method"]
    try:
        info = registry.get(method)
    except InputError:
        info = None
    title = info.title if info is not None else "not known to this probseg"
    main, changed = _describe_settings(info, _field(meta, "config"))
    lines = [
        ("model", str(args.model)),
        ("method", f"{method} ({title})"),
        ("format", f"{meta['format']} version {meta['format_version']}"),
    ]
    lines += _describe_training(_field(meta, "training"))
    lines.append(("settings", ", ".join(main) or "none"))
    if changed:
        lines.append(("advanced", ", ".join(changed)))
    lines += _describe_post_settings(args.model)
    lines += _describe_record(_field(meta, "record"))
    lines.append(("input channels", str(meta.get("in_channels", "?"))))
    lines += _describe_normalisation(_field(meta, "normalization"))
    weights = Path(args.model) / WEIGHTS_NAME
    lines.append(("weights", f"{weights.name}, {weights.stat().st_size / 1024:.1f} KiB" if weights.is_file() else f"{weights.name} MISSING"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0
