"""Proofreading edits on a 2-D label image, as reversible records.

Every function here reads a label image and returns an :class:`Edit`: the
flat indices of the pixels it would change with their values before and
after. None of them modifies its input; :meth:`Edit.apply` and
:meth:`Edit.revert` do, in place, touching only the changed pixels, which is
what makes undo and redo cheap and what the session store writes to disk.

Label images hold instance ids: 0 is background, objects are 1, 2, ...
Any integer dtype works; new ids that the dtype cannot hold are an error
rather than a silent wrap-around.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from probseg.core.errors import InputError

__all__ = ["KINDS", "Edit", "merge", "split_line", "delete", "paint", "replace_region", "diff", "check_rect",
           "object_under_line"]

KINDS = ("merge", "split", "delete", "paint", "replace")


@dataclass(eq=False)
class Edit:
    """One change to a label image, reversible.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    params : dict
        JSON-serialisable description (ids, points, rectangle...), kept in
        the session log for people and for provenance; never needed to undo.
    index : ndarray of int64
        Flat (row-major) indices of the changed pixels, ascending.
    before, after : ndarray
        Values at ``index`` before and after the edit, in the label image's
        dtype; ``before[i] != after[i]`` for every ``i``.
    shape : (int, int)
        Shape of the label image the edit was made for; flat indices mean
        nothing on another shape.
    """

    kind: str
    params: dict
    index: np.ndarray
    before: np.ndarray
    after: np.ndarray
    shape: tuple

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown edit kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(self.params, dict):
            raise InputError(f"edit params must be a dict, got {type(self.params).__name__}")
        self.shape = tuple(int(s) for s in self.shape)
        self.index = np.asarray(self.index, dtype=np.int64).reshape(-1)
        self.before = np.asarray(self.before).reshape(-1)
        self.after = np.asarray(self.after).reshape(-1)
        if not (self.index.size == self.before.size == self.after.size):
            raise InputError(
                f"a {self.kind} edit needs as many before and after values as indices, got "
                f"{self.index.size}, {self.before.size} and {self.after.size}"
            )
        size = int(np.prod(self.shape))
        if self.index.size and (self.index.min() < 0 or self.index.max() >= size):
            raise InputError(f"a {self.kind} edit has pixel indices outside its {self.shape} image")

    @property
    def size(self) -> int:
        """Number of changed pixels."""
        return int(self.index.size)

    def apply(self, labels: np.ndarray, check: bool = True) -> None:
        """Write ``after`` into ``labels`` in place.

        Parameters
        ----------
        labels : ndarray
            The label image, of :attr:`shape`.
        check : bool
            Refuse (InputError, ``labels`` unchanged) when the pixels do not
            hold ``before``: applying an edit to a state it was not made for
            would silently corrupt the labels.
        """
        _put(self, labels, self.before, self.after, check, "apply")

    def revert(self, labels: np.ndarray, check: bool = True) -> None:
        """Write ``before`` back into ``labels`` in place (the undo of :meth:`apply`).

        ``check`` as in :meth:`apply`, against ``after``.
        """
        _put(self, labels, self.after, self.before, check, "revert")


def _put(edit: Edit, labels, expected, values, check: bool, verb: str) -> None:
    if not isinstance(labels, np.ndarray) or labels.shape != edit.shape:
        got = getattr(labels, "shape", type(labels).__name__)
        raise InputError(f"cannot {verb} a {edit.kind} edit made for a {edit.shape} image on {got}")
    if not labels.flags.writeable:
        raise InputError(f"cannot {verb} a {edit.kind} edit: the label array is read-only")
    if not edit.size:
        return
    _check_fits(values, labels.dtype, f"cannot {verb} the {edit.kind} edit")
    # flat indexing works on any memory layout, including views napari hands out.
    if check and not np.array_equal(labels.flat[edit.index], expected):
        raise InputError(
            f"cannot {verb} the {edit.kind} edit: the labels were changed since it was made "
            "(its pixels do not hold the values it expects)"
        )
    labels.flat[edit.index] = values


# -- argument checks -------------------------------------------------------------------


def _as_labels(labels, name: str = "labels") -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2-D label image, got {array.ndim}-D with shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} has dtype {array.dtype}; expected integer instance ids")
    return array


def _as_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be an integer id, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an integer id, got {value!r}") from None
    if number != value:
        raise InputError(f"{name} must be an integer id, got {value!r}")
    return number


def _object(labels: np.ndarray, value, name: str = "object") -> tuple[int, np.ndarray]:
    """Checked id and the flat indices of its pixels."""
    obj = _as_int(value, name)
    if obj <= 0:
        raise InputError(f"{name} must be an object id (1 or more; 0 is background), got {obj}")
    index = np.flatnonzero(labels == obj)
    if not index.size:
        raise InputError(f"there is no object {obj} in the labels")
    return obj, index


def _check_fits(values, dtype, context: str) -> None:
    values = np.asarray(values)
    if not values.size or not np.issubdtype(dtype, np.integer):
        return
    info = np.iinfo(dtype)
    low, high = int(values.min()), int(values.max())
    if low < info.min or high > info.max:
        raise InputError(f"{context}: ids up to {high} do not fit the labels' {np.dtype(dtype)} (max {info.max})")


def _point(value, name: str) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a (row, col) pair of numbers, got {value!r}") from None
    if not (np.isfinite(row) and np.isfinite(col)):
        raise InputError(f"{name} must be finite, got {value!r}")
    return row, col


def check_rect(rect, shape) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` as ints, non-empty and inside ``shape``; else InputError.

    Rows ``y0..y1-1`` and columns ``x0..x1-1``. Unlike the consensus
    engine's clipping version, a rectangle reaching outside is an error:
    here it must match an array of exactly its size.
    """
    try:
        values = [float(v) for v in rect]
    except (TypeError, ValueError):
        raise InputError(f"a rectangle is four integers y0, x0, y1, x1, got {rect!r}") from None
    if len(values) != 4 or not all(np.isfinite(values)) or any(v != int(v) for v in values):
        raise InputError(f"a rectangle is four integers y0, x0, y1, x1, got {rect!r}")
    y0, x0, y1, x1 = (int(v) for v in values)
    height, width = shape
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise InputError(f"the rectangle {(y0, x0, y1, x1)} is empty or outside the {height}x{width} image")
    return y0, x0, y1, x1


def _make(kind: str, params: dict, labels: np.ndarray, index: np.ndarray, after) -> Edit:
    before = np.asarray(labels.flat[index])
    after = np.broadcast_to(np.asarray(after, dtype=labels.dtype), index.shape).copy()
    return Edit(kind, params, index.astype(np.int64), before, after, labels.shape)


# -- the edits ---------------------------------------------------------------------------


def merge(labels, a, b) -> Edit:
    """Merge object ``b`` into object ``a``: every pixel of ``b`` takes id ``a``.

    Raises
    ------
    InputError
        If either id is 0, missing from the labels, or both are the same.
    """
    labels = _as_labels(labels)
    a_id, b_id = _as_int(a, "the object to keep"), _as_int(b, "the object to merge")
    if a_id == b_id:
        raise InputError(f"cannot merge object {a_id} with itself; pick two different objects")
    a_id, _ = _object(labels, a_id, "the object to keep")
    b_id, index = _object(labels, b_id, "the object to merge")
    return _make("merge", {"keep": a_id, "merged": b_id}, labels, index, a_id)


def delete(labels, obj) -> Edit:
    """Turn object ``obj`` into background."""
    labels = _as_labels(labels)
    obj, index = _object(labels, obj)
    return _make("delete", {"object": obj}, labels, index, 0)


def paint(labels, mask, value) -> Edit:
    """Set the pixels of ``mask`` to ``value`` (0 erases).

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
    mask : ndarray of bool, shape (Y, X)
    value : int
        0 or more; may be a new id.

    Returns
    -------
    Edit
        Only pixels that change are recorded, so painting an object over
        itself gives an empty edit.
    """
    labels = _as_labels(labels)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != labels.shape:
        raise InputError(
            f"the paint mask must be a boolean array of the labels' shape {labels.shape}, got {mask.dtype} {mask.shape}"
        )
    value = _as_int(value, "the paint value")
    if value < 0:
        raise InputError(f"the paint value must be 0 (background) or an object id, got {value}")
    _check_fits([value], labels.dtype, "cannot paint")
    index = np.flatnonzero(mask & (labels != value))
    return _make("paint", {"value": value, "pixels": int(mask.sum())}, labels, index, value)


def replace_region(labels, rect, new_region, stitch: bool = False) -> Edit:
    """Replace the rectangle ``rect`` by ``new_region``, e.g. a fresh consensus of a patch.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
    rect : (y0, x0, y1, x1)
        Inside the image; see :func:`check_rect`.
    new_region : ndarray of int, shape (y1 - y0, x1 - x0)
        Labels for the rectangle.
    stitch : bool
        False: the ids of ``new_region`` are written as they are (they must
        already be ids of the whole image, as from
        ``Consensus.update_region(labels, rect)[y0:y1, x0:x1]``). True: they
        are local ids (as from ``Consensus.region_labels``) and are renumbered
        the way the consensus engine does: an object cut by the border takes
        the id of the outside object it touches most, others get unused ids.
    """
    labels = _as_labels(labels)
    y0, x0, y1, x1 = check_rect(rect, labels.shape)
    new = _as_labels(new_region, "the new region")
    if new.shape != (y1 - y0, x1 - x0):
        raise InputError(f"the new region has shape {new.shape} but the rectangle {(y0, x0, y1, x1)} is {(y1 - y0, x1 - x0)}")
    if new.size and new.min() < 0:
        raise InputError("the new region contains negative ids; background is 0 and objects are 1, 2, ...")
    if stitch:
        # Imported here: the engine pulls in the graph code, which plain edits do not need.
        from probseg.consensus.engine import write_region

        whole = labels.astype(np.int64)
        write_region(whole, new.astype(np.int64), (y0, x0, y1, x1))
        new = whole[y0:y1, x0:x1]
    _check_fits(new, labels.dtype, "cannot replace the region")
    old = labels[y0:y1, x0:x1]
    rows, cols = np.nonzero(old != new)
    index = np.ravel_multi_index((rows + y0, cols + x0), labels.shape)
    params = {"rect": [y0, x0, y1, x1], "stitched": bool(stitch)}
    return _make("replace", params, labels, index, new[rows, cols])


def diff(old, new, kind: str = "paint", params: dict | None = None) -> Edit:
    """The edit that turns ``old`` into ``new``, for changes made elsewhere.

    Use it for napari's own brush, fill and eraser, which write into the
    layer's array directly: keep a copy from before and diff it afterwards.

    Parameters
    ----------
    old, new : ndarray of int, shape (Y, X)
    kind : str
        One of :data:`KINDS`; ``"paint"`` fits the brush tools.
    params : dict, optional
        JSON-serialisable description to log.
    """
    old = _as_labels(old, "the old labels")
    new = _as_labels(new, "the new labels")
    if old.shape != new.shape:
        raise InputError(f"cannot compare labels of shapes {old.shape} and {new.shape}")
    index = np.flatnonzero(old != new)
    after = new.reshape(-1)[index]
    if after.size and after.min() < 0:
        raise InputError("the new labels contain negative ids; background is 0 and objects are 1, 2, ...")
    _check_fits(after, old.dtype, f"cannot record the {kind} edit")
    return _make(kind, dict(params or {}), old, index, after)


def split_line(labels, obj, p0, p1, width: float = 1.0) -> Edit:
    """Cut object ``obj`` in two (or more) along the segment ``p0`` → ``p1``.

    Pixels of the object whose centres lie within ``max(width, 1) / 2`` of
    the segment form the cut; what remains falls apart into 4-connected
    parts. Within each piece of the object the line actually cuts, the
    largest part keeps ``obj`` and the others get new ids above every id in
    the image (largest first); pieces the line misses keep ``obj``. Cut
    pixels then join the nearest part, so no pixel becomes background.

    A band at least one pixel wide always separates 4-connected parts, so a
    one-pixel diagonal line cuts as well as a straight one.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
    obj : int
    p0, p1 : (float, float)
        End points as (row, col) in pixel coordinates (pixel centres are
        integers). Draw from background to background across the object.
    width : float
        Width of the cut in pixels.

    Raises
    ------
    InputError
        If the line does not separate the object into parts.
    """
    labels = _as_labels(labels)
    obj, _ = _object(labels, obj)
    start, end = _point(p0, "the line start"), _point(p1, "the line end")
    width = float(width)
    if not (np.isfinite(width) and width > 0):
        raise InputError(f"the cut width must be a positive number of pixels, got {width}")
    rows, cols = np.nonzero(labels == obj)
    y0, x0 = rows.min(), cols.min()
    box = (slice(y0, rows.max() + 1), slice(x0, cols.max() + 1))
    inside = labels[box] == obj
    cut = inside & _near_segment(inside.shape, (y0, x0), start, end, max(width, 1.0) / 2)
    parts, ids = _cut_parts(inside, cut)
    if parts is None:
        raise InputError(
            f"the line from {_fmt(start)} to {_fmt(end)} does not cut object {obj} into separate parts; "
            "draw it across the whole object, from background to background"
        )
    base = int(labels.max()) + 1
    new_ids = list(range(base, base + int((ids > 0).sum())))
    _check_fits([new_ids[-1]], labels.dtype, "cannot split")
    lut = np.full(ids.size, obj, dtype=np.int64)
    lut[0] = 0
    lut[ids > 0] = base + ids[ids > 0] - 1
    result = lut[parts]
    # Cut pixels take the label of the nearest remaining part.
    _, (near_r, near_c) = ndimage.distance_transform_edt(parts == 0, return_indices=True)
    result[cut] = lut[parts[near_r[cut], near_c[cut]]]
    changed_r, changed_c = np.nonzero(inside & (result != obj))
    index = np.ravel_multi_index((changed_r + y0, changed_c + x0), labels.shape)
    params = {"object": obj, "p0": list(start), "p1": list(end), "width": width, "new_ids": new_ids}
    return _make("split", params, labels, index, result[changed_r, changed_c])


def object_under_line(labels, p0, p1) -> int:
    """The object the segment ``p0`` → ``p1`` crosses most, the one :func:`split_line` would cut.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
    p0, p1 : (float, float)
        End points as (row, col) in pixel coordinates; points outside the
        image count as its nearest border pixel.

    Returns
    -------
    int
        The id met at most of ``2 * max(|dy|, |dx|) + 2`` points evenly
        spaced along the segment (the smallest id of a tie); 0 if the
        segment crosses no object.
    """
    labels = np.asarray(labels)
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) * 2 + 2
    ys = np.clip(np.rint(np.linspace(p0[0], p1[0], n)).astype(int), 0, labels.shape[0] - 1)
    xs = np.clip(np.rint(np.linspace(p0[1], p1[1], n)).astype(int), 0, labels.shape[1] - 1)
    values = labels[ys, xs]
    values = values[values > 0]
    return int(np.bincount(values).argmax()) if values.size else 0


def _fmt(point) -> str:
    return f"({point[0]:g}, {point[1]:g})"


def _near_segment(shape, origin, start, end, radius: float) -> np.ndarray:
    """Pixels of a ``shape`` box at ``origin`` whose centres are within ``radius`` of a segment."""
    rr = np.arange(shape[0], dtype=np.float64)[:, None] + origin[0]
    cc = np.arange(shape[1], dtype=np.float64)[None, :] + origin[1]
    dr, dc = end[0] - start[0], end[1] - start[1]
    length2 = dr * dr + dc * dc
    if length2 == 0:
        t = 0.0
    else:
        t = np.clip(((rr - start[0]) * dr + (cc - start[1]) * dc) / length2, 0.0, 1.0)
    dist2 = (rr - start[0] - t * dr) ** 2 + (cc - start[1] - t * dc) ** 2
    # The epsilon keeps pixels exactly on the band's edge in the cut despite rounding.
    return dist2 <= (radius + 1e-9) ** 2


def _cut_parts(inside: np.ndarray, cut: np.ndarray):
    """Parts left after the cut, and which of them get new ids.

    Returns
    -------
    parts : ndarray of int or None
        4-connected parts of ``inside & ~cut`` numbered 1..n; None when the
        cut separates nothing.
    ids : ndarray of int, length n + 1
        0 for parts keeping the object's id, else the rank (1, 2, ...) of
        the part among those getting new ids.
    """
    pieces, n_pieces = ndimage.label(inside)
    parts, n_parts = ndimage.label(inside & ~cut)
    if n_parts < 2:
        return None, None
    index = np.arange(1, n_parts + 1)
    piece_of = ndimage.maximum(pieces, parts, index).astype(np.int64)
    sizes = ndimage.sum_labels(np.ones_like(parts), parts, index).astype(np.int64)
    per_piece = np.bincount(piece_of, minlength=n_pieces + 1)
    cut_part = per_piece[piece_of] >= 2
    if not cut_part.any():
        return None, None
    # Largest first; ties by position so the result does not depend on sort internals.
    order = [k for k in np.lexsort((index, -sizes)) if cut_part[k]]
    ids = np.zeros(n_parts + 1, dtype=np.int64)
    for rank, k in enumerate(order[1:], start=1):
        ids[k + 1] = rank
    return parts, ids
