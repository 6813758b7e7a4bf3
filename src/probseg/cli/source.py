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

from probseg.cli.errors import PROG, UsageError
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
    """The post-processing settings given as flags, converted to their types and checked on their own.

    Raises
    ------
    UsageError
        For a value that is not of the flag's type or out of its range (exit
        status 2, like every malformed command line).
    """
    source = getattr(args, "_source", None)
    if source is None:
        return {}
    return flag_values(args, source.info.settings_class, "set_")


def flag_values(args, config_class, dest: str) -> dict:
    """The fields of ``config_class`` given as flags, converted and checked against the defaults of the others.

    Raises
    ------
    UsageError
        Naming the flag's field, for a value of the wrong type or out of range.
    """
    from probseg.core.config import config_from_dict, fields_of

    try:
        values = field_values(args, config_class, dest)
        config_from_dict(config_class, values)
    except InputError as exc:
        message = str(exc)
        for spec in fields_of(config_class):  # "min_size must ..." reads "--min-size must ..." here
            if message.startswith(f"{spec.name} must "):
                message = spec.flag + message[len(spec.name):]
        raise usage(args, message) from None
    return values


def usage(args, exc: Exception) -> UsageError:
    """``exc`` about a value on the command line, as the usage error (exit status 2) it is."""
    return UsageError(f"{exc} (see '{getattr(args, '_prog', PROG)} --help')")
