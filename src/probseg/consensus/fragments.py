"""Fragments: the finest common refinement of a set of labelings.

Two pixels that share a label in every labeling that covers them (and are
covered by the same labelings) can never be told apart by the consensus, so
they are merged into one fragment before any graph is built. A labeling may
cover the whole image (a sample) or one window of it (tiled inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import label as connected_components

from probseg.core.errors import InputError
from probseg.core.inputs import check_label_stack as check_labelings

# Codes are products of label ranges; compact them before they could overflow.
_CODE_LIMIT = 2**62


@dataclass(frozen=True)
class Layer:
    """One labeling of the image or of a window of it.

    Attributes
    ----------
    labels : ndarray of int, shape (h, w)
        Instance ids, 0 for background.
    origin : (int, int)
        Row and column of ``labels[0, 0]`` in the image.
    """

    labels: np.ndarray
    origin: tuple[int, int] = (0, 0)

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of the covered rectangle."""
        y0, x0 = self.origin
        h, w = self.labels.shape
        return y0, x0, y0 + h, x0 + w


@dataclass
class Fragments:
    """The fragments of an image and what each labeling says about them.

    Attributes
    ----------
    map : ndarray of int32, shape (Y, X)
        Fragment id of every pixel; -1 where every covering labeling says
        background (such pixels have no edges in the graph).
    signatures : ndarray of int32, shape (F, J)
        Label of each fragment in each of the J layers; -1 where the layer
        does not cover it.
    sizes : ndarray of int64, shape (F,)
        Pixels per fragment.
    """

    map: np.ndarray
    signatures: np.ndarray
    sizes: np.ndarray

    @property
    def count(self) -> int:
        return int(self.sizes.size)

    @property
    def foreground(self) -> np.ndarray:
        """Fraction of the covering layers that call each fragment foreground."""
        covered = (self.signatures >= 0).sum(axis=1)
        return (self.signatures > 0).sum(axis=1) / np.maximum(covered, 1)


def _refine(stack: list[np.ndarray]) -> np.ndarray:
    """Connected regions whose labels agree in every array of ``stack``.

    Returns int labels, 0 where every array is 0, and 1..k for the regions.
    """
    code = np.zeros(stack[0].shape, dtype=np.int64)
    top = 0
    for labels in stack:
        span = int(labels.max()) + 1
        if (top + 1) * span >= _CODE_LIMIT:
            code = connected_components(code, background=0, connectivity=1)
            top = int(code.max())
        code = code * span + labels
        top = top * span + span - 1
    return connected_components(code, background=0, connectivity=1)


def _cuts(layers: list[Layer], size: int, axis: int) -> list[int]:
    edges = {0, size}
    for layer in layers:
        b = layer.bounds
        edges.update((min(max(b[axis], 0), size), min(max(b[axis + 2], 0), size)))
    return sorted(edges)


def fragments(layers: list[Layer], shape: tuple[int, int]) -> Fragments:
    """The fragments of ``shape`` under ``layers``.

    The image is cut along every window edge into cells covered by one fixed
    set of layers; within a cell, a fragment is a 4-connected region whose
    pixels carry the same label in each covering layer. Fragments never
    cross cells, so every fragment has one covering set.

    Parameters
    ----------
    layers : list of Layer
        Labelings; windows must lie inside the image.
    shape : (int, int)
        Image size.

    Returns
    -------
    Fragments
    """
    height, width = shape
    for layer in layers:
        y0, x0, y1, x1 = layer.bounds
        if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
            raise InputError(f"a window at {layer.origin} of size {layer.labels.shape} reaches outside the {height}x{width} image")
    ys, xs = _cuts(layers, height, 0), _cuts(layers, width, 1)
    frag_map = np.full(shape, -1, dtype=np.int32)
    blocks = []  # (first id, covering layer indices, (k, len(cover)) labels)
    next_id = 0
    for i in range(len(ys) - 1):
        for k in range(len(xs) - 1):
            cy0, cy1, cx0, cx1 = ys[i], ys[i + 1], xs[k], xs[k + 1]
            cover = [j for j, l in enumerate(layers) if l.bounds[0] <= cy0 and cy1 <= l.bounds[2] and l.bounds[1] <= cx0 and cx1 <= l.bounds[3]]
            if not cover:
                continue
            views = []
            for j in cover:
                oy, ox = layers[j].origin
                views.append(layers[j].labels[cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox])
            parts = _refine(views)
            n_parts = int(parts.max())
            if n_parts == 0:
                continue
            flat = parts.ravel()
            # Any pixel of a fragment represents it: all carry the same labels.
            rep = np.empty(n_parts + 1, dtype=np.int64)
            rep[flat] = np.arange(flat.size)
            values = np.stack([v.ravel()[rep[1:]] for v in views], axis=1)
            frag_map[cy0:cy1, cx0:cx1] = np.where(parts > 0, parts + (next_id - 1), -1)
            blocks.append((next_id, cover, values))
            next_id += n_parts
    signatures = np.full((next_id, len(layers)), -1, dtype=np.int32)
    for first, cover, values in blocks:
        signatures[first : first + len(values)][:, cover] = values
    valid = frag_map.ravel()
    sizes = np.bincount(valid[valid >= 0], minlength=next_id).astype(np.int64)
    return Fragments(frag_map, signatures, sizes)


def sample_layers(samples) -> tuple[list[Layer], tuple[int, int]]:
    """Whole-image samples ``(n, Y, X)`` as layers, and the image shape."""
    arr = check_labelings(samples)
    return [Layer(s) for s in arr], arr.shape[1:]
