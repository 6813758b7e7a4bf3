"""Checks that a command's outputs can never destroy its inputs or earlier results.

``probseg segment MODEL img.tif --out img.tif`` once replaced the image with
its labels. Every command now checks, before any work, that no output is one
of its inputs (compared after following symbolic links, and by inode so that
hard links count too), that no output lies inside an input folder (a model
folder, a zarr store), that no two outputs are the same file, and that no
output exists already unless the user said ``--overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path

from probseg.core.errors import InputError

__all__ = ["check_outputs"]


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(path: str, folder: str) -> bool:
    return os.path.isdir(folder) and os.path.commonpath([path, folder]) == folder and path != folder


def check_outputs(inputs: dict, outputs: dict, overwrite: bool = False, *, replaceable=None) -> None:
    """Refuse outputs that would write over an input, each other, or (without ``overwrite``) an existing file.

    Parameters
    ----------
    inputs : dict of str to path or None
        What the command reads, keyed by how the user named it (``"IMAGE"``,
        ``"MODEL_DIR"``, ``"--into"``). ``None`` values are skipped.
    outputs : dict of str to path or None
        What the command writes, keyed by its flag (``"--out"``). ``None``
        values are skipped.
    overwrite : bool
        Whether existing outputs may be replaced (``--overwrite``). Inputs are
        never replaced, whatever this says.
    replaceable : callable, optional
        ``replaceable(flag, path) -> str | None``: for outputs that exist,
        a reason why this one must not be replaced even with ``overwrite``
        (e.g. a folder that is not a model folder), or None.

    Raises
    ------
    InputError
        One line naming the output, what it would destroy, and what to do.
    """
    ins = {name: (str(path), _real(path)) for name, path in inputs.items() if path is not None}
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        text, real = str(path), _real(path)
        for name, (in_text, in_real) in ins.items():
            if real == in_real or _same_file(real, in_real):
                raise InputError(
                    f"{flag} {text} is the input {name} ({in_text}); probseg never writes over its inputs: choose another name"
                )
            if _inside(real, in_real):
                raise InputError(f"{flag} {text} lies inside the input {name} ({in_text}); choose a place outside it")
        for other, other_real in seen.items():
            if real == other_real:
                raise InputError(f"{flag} and {other} both name {text}; give each output its own name")
        seen[flag] = real
        if os.path.lexists(real) or os.path.lexists(text):
            reason = replaceable(flag, Path(text)) if replaceable is not None else None
            if reason:
                raise InputError(f"{flag} {text} exists and {reason}; choose another name")
            if not overwrite:
                raise InputError(f"{flag} {text} exists; add --overwrite to replace it, or choose another name")
