"""Tune a model's post-processing settings on a labelled image.

The network runs once; every combination of settings in the grid then
post-processes the same raw output and is scored against the labels. The
best settings become the model's, and are stored in its folder so that the
next prediction, in napari or on the command line, uses them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probseg.core.callbacks import Callbacks, ensure
from probseg.core.config import config_to_dict, fields_of
from probseg.core.errors import InputError
from probseg.core.inputs import check_labels, to_planes
from probseg.evaluation.metrics import ap_dsb, f1_score


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    best : dict
        The complete best settings (every field of the method's settings).
    table : list of dict
        One row per combination tried, in order: the settings that vary,
        then ``f1`` and ``ap_dsb``.
    best_row : dict
        The row of ``table`` that won.
    saved : Path or None
        The ``settings.json`` written, or None.
    """

    best: dict
    table: list
    best_row: dict
    saved: Path | None = None


def _score(row: dict) -> tuple:
    # F1 first; AP_dsb (which rewards tight outlines) breaks ties.
    return (row["f1"], row["ap_dsb"])


def _check_writable(folder: Path) -> None:
    """Refuse a model folder ``settings.json`` cannot be written in (it is written beside and renamed)."""
    import os

    from probseg.engine.persistence import SETTINGS_NAME

    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot store the tuned settings in {folder}: the folder is not writable; "
                         "make it writable, or only print the table (--dry-run, save=False)")
    if (folder / SETTINGS_NAME).is_dir():
        raise InputError(f"cannot store the tuned settings: {folder / SETTINGS_NAME} is a folder")


def check_grid(model, grid: dict | None) -> dict:
    """The grid to search: ``grid`` checked against the model's settings, or the method's default.

    Raises
    ------
    InputError
        For an unknown setting, an empty list of values, or a value the
        setting does not accept.
    """
    grid = model.tune_grid() if grid is None else grid
    if not isinstance(grid, dict) or not grid:
        raise InputError("the tuning grid is empty; give {setting: [values, ...]}")
    known = {s.name for s in fields_of(model.settings_class)}
    out = {}
    for name, values in grid.items():
        if name not in known:
            raise InputError(f"{model.method} has no setting {name!r}; its settings: {', '.join(sorted(known))}")
        values = list(np.atleast_1d(values).tolist()) if not isinstance(values, (list, tuple)) else list(values)
        if not values:
            raise InputError(f"no values to try for {name}")
        for v in values:
            model.make_settings({name: v})  # raises a one-line error for a value out of range
        out[name] = values
    return out


def tune(model, image, labels, grid: dict | None = None, *, save: bool = True, seed: int = 0, channel_axis=None,
         rgb=False, callbacks: Callbacks | None = None, foreground=None, cost_limit: bool = True) -> TuneResult:
    """Search ``model``'s post-processing settings on a labelled image.

    Parameters
    ----------
    model : SegmentationModel
    image : ndarray
        One 2-D image (channels as in ``model.predict``).
    labels : ndarray of int
        Its instance labels, same spatial shape, 0 = background. Pixels equal
        to the model's ``config.ignore_id`` (where the method has one) are
        left out: predicted objects lying mostly on them are not scored.
    grid : dict of str to list, optional
        ``{setting: [values]}``; every combination is tried. Default: the
        method's :meth:`~probseg.engine.model.SegmentationModel.tune_grid`.
        Settings not in the grid keep the model's current values.
    save : bool
        Store the best settings in the model's folder (when it has one).
    seed : int
        Seed of the network pass; the built-in methods' single pass is
        deterministic (clean input, dropout off), so it matters only for
        methods whose first pass is random.
    callbacks : Callbacks, optional
        Progress over the combinations; cancel between them.
    foreground : array-like, optional
        A foreground mask, as in :meth:`~probseg.engine.model.SegmentationModel.predict`:
        the settings are tuned for segmenting inside it.
    cost_limit : bool
        As in :meth:`~probseg.engine.model.SegmentationModel.predict`.

    Returns
    -------
    TuneResult
        ``model.settings`` is set to the best settings as well.

    Raises
    ------
    InputError
        For a 3-D stack, labels of another shape or without objects, a bad
        grid or a setting in it that cannot work for this run, or a model
        folder the settings cannot be stored in: all before the network
        runs. Also, when storing, if every setting scores F1 = 0 (no
        setting is better than another, so nothing is stored).
    """
    # Here, not at the top: ``import probseg`` stays free of torch until a model is used.
    from probseg.engine.pipeline import masked_instances

    grid = check_grid(model, grid)
    cb = ensure(callbacks)
    # Everything that can refuse the run is checked before the network runs.
    planes = to_planes(image, channel_axis=channel_axis, rgb=rgb)
    if planes.is_stack:
        raise InputError("tuning takes one 2-D image, not a 3-D stack")
    truth = check_labels(labels, planes.spatial_shape, name="labels")
    ignore_id = getattr(model.config, "ignore_id", -1)
    ignored = (truth == ignore_id) if ignore_id > 0 else np.zeros(truth.shape, bool)
    truth = np.where(ignored, 0, truth)
    if not truth.any():
        raise InputError("the labels hold no object to tune on")
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    for combo in combos:
        model.check_settings(model.make_settings(dict(zip(names, combo))), 1, foreground is not None)
    if save and model.folder is not None:
        _check_writable(Path(model.folder))
    raw = model.predict_raw(image, 1, seed=seed, channel_axis=channel_axis, rgb=rgb, foreground=foreground,
                            callbacks=Callbacks(should_stop=cb.should_stop, on_message=cb.on_message),
                            cost_limit=cost_limit)
    table = []
    for i, combo in enumerate(combos):
        cb.raise_if_stopped()
        settings = model.make_settings(dict(zip(names, combo)))
        seg, _ = masked_instances(model, raw.planes[0], settings, 1)  # cut at the foreground mask, if any
        if ignored.any():
            inside = np.bincount(seg[ignored], minlength=seg.max() + 1) / np.maximum(np.bincount(seg.ravel()), 1)
            seg = np.where(ignored | (inside[seg] > 0.5), 0, seg)
        table.append({**dict(zip(names, combo)), "f1": f1_score(seg, truth), "ap_dsb": ap_dsb(seg, truth)})
        cb.progress(i + 1, len(combos))
    if save and model.folder is not None and not any(row["f1"] > 0 for row in table):
        # No setting found a single object of the labels: a "best" would be an arbitrary first one, and storing
        # it would change every later prediction. Without storing, the table is the caller's to read.
        raise InputError(f"every one of the {len(table)} settings tried scored F1 = 0 against the labels, so none is "
                         "better than another and nothing was stored; are they the labels of this image?")
    best_row = max(table, key=_score)  # max keeps the first of equals
    model.settings = model.make_settings({n: best_row[n] for n in names})
    saved = model.save_settings() if save and model.folder is not None else None
    return TuneResult(config_to_dict(model.settings), table, best_row, saved)
