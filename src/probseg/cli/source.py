"""The model folder or raw store a command line names: read once, while the parser is built.

``probseg segment MODEL_DIR`` and ``probseg instances RAW.zarr`` offer the
post-processing settings of the method that made the folder or store as
flags, so the parser must know that method before it parses. What it read and
looked up then travels to the command in ``args._source``; the command uses it
rather than reading and looking up again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from probseg.cli.flags import add_fields, field_values
from probseg.core.errors import InputError
from probseg.engine import registry


@dataclass(frozen=True)
class Source:
    """A model folder or raw store named on the command line, as read while building the parser."""

    word: str  # as typed, to match it with the command's argument
    method: str  # the method name as the folder or store holds it
    info: registry.MethodInfo  # that method, looked up once
    meta: dict | None  # the parsed config.json of a model folder; None for a raw store


def _read(argv: list[str], command: str) -> tuple[str, str, dict | None] | None:
    """The first word after ``command`` that names a model folder or raw store: the word, its method, its config.json."""
    words = argv[argv.index(command) + 1 :] if command in argv else []
    for word in words:
        if word.startswith("-"):
            continue
        folder = Path(word)
        try:
            if (folder / "config.json").is_file():
                meta = json.loads((folder / "config.json").read_text())
                return word, str(meta.get("method")), meta
            if (folder / "zarr.json").is_file():
                from probseg.io.rawstore import store_method

                return word, store_method(folder), None
        except (OSError, ValueError, AttributeError):
            return None
    return None


def add_settings(parser, argv: list[str], command: str) -> None:
    """Flags for the post-processing settings of the method named by the model or store on the command line."""
    found = _read(argv, command)
    try:
        info = registry.get(found[1]) if found and found[1] else None
    except InputError:
        info = None
    if info is not None:
        word, method, meta = found
        flags = add_fields(parser, info.settings_class, f"{info.title} post-processing settings", "set_")
        parser.set_defaults(_flags=flags, _source=Source(word, method, info, meta))
    else:
        what = "RAW.zarr names a raw store" if command == "instances" else "MODEL_DIR names a model"
        parser.epilog = f"The post-processing settings of the method become flags once {what}."


def source_of(args, word: str) -> Source | None:
    """What the parser read of ``word`` (the command's MODEL_DIR or RAW.zarr), or None if it read nothing there."""
    source = getattr(args, "_source", None)
    return source if source is not None and source.word == word else None


def settings_of(args) -> dict:
    """The post-processing settings given as flags, converted to their types."""
    source = getattr(args, "_source", None)
    return field_values(args, source.info.settings_class, "set_") if source is not None else {}
