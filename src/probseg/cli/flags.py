"""Flags generated from a config or settings dataclass, and the values given back as a dict.

Each field made with :func:`probseg.core.config.param` becomes one flag
(``object_size`` -> ``--object-size``) whose help shows its doc, unit, range
and default; advanced fields go to a group of their own. A new field needs no
CLI code.
"""

from __future__ import annotations

from probseg.core.config import fields_of, parse_value


def number(value) -> str:
    """``0.5`` as ``0.5``, ``24.0`` as ``24``: numbers as a user would type them."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _field_help(spec) -> str:
    """Help text of a config field: doc, unit, range, default."""
    details = []
    if spec.unit:
        details.append(spec.unit)
    if spec.minimum is not None and spec.maximum is not None:
        details.append(f"{number(spec.minimum)} to {number(spec.maximum)}")
    elif spec.minimum is not None:
        details.append(f"at least {number(spec.minimum)}")
    elif spec.maximum is not None:
        details.append(f"at most {number(spec.maximum)}")
    default = str(spec.default).lower() if spec.type is bool else number(spec.default)
    details.append(f"default {default}")
    # argparse %-formats help strings; a literal % in a doc would break it.
    return f"{spec.doc} ({'; '.join(details)})".replace("%", "%%")


def _field_metavar(spec) -> str:
    if spec.type is bool:
        return "{true,false}"
    if spec.choices:
        return "{" + ",".join(map(str, spec.choices)) + "}"
    return spec.type.__name__.upper()


def add_fields(parser, config_class, title: str, dest: str) -> list[str]:
    """Add one flag per field of ``config_class`` to ``parser``, in groups titled ``title``; return the flags.

    Each value is stored as ``args.<dest><field name>``.
    """
    basic = parser.add_argument_group(title)
    advanced = parser.add_argument_group(f"advanced {title}")
    flags = []
    for spec in fields_of(config_class):
        group = advanced if spec.advanced else basic
        # Values stay strings here and are converted by probseg.core.config.parse_value
        # after parsing, so type errors read the same as in the napari widget.
        group.add_argument(
            spec.flag,
            dest=f"{dest}{spec.name}",
            metavar=_field_metavar(spec),
            choices=[str(c) for c in spec.choices] if spec.choices else None,
            default=None,
            help=_field_help(spec),
        )
        flags.append(spec.flag)
    return flags


def field_values(args, config_class, dest: str) -> dict:
    """The fields of ``config_class`` given on the command line, converted to their types."""
    values = {}
    for spec in fields_of(config_class):
        text = getattr(args, f"{dest}{spec.name}", None)
        if text is not None:
            values[spec.name] = parse_value(spec, text)
    return values
