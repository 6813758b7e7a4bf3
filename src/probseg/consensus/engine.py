"""One consensus segmentation from many: the :class:`Consensus` object.

Build it once from samples (or windows); then ask for labels at any
resolution, re-run Leiden inside a rectangle, or sweep resolutions. The graph
is built once, so moving the resolution only re-runs Leiden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probseg.core.callbacks import Callbacks, ensure
from probseg.consensus.fragments import Fragments, Layer, check_labelings, fragments, sample_layers
from probseg.consensus.graph import DEFAULT_MIN_WEIGHT, DEFAULT_RADIUS, Graph, fragment_graph
from probseg.consensus.leiden import DEFAULT_BACKEND, check_backend, check_objective, leiden, to_igraph
from probseg.consensus.nmi import Reference
from probseg.core.errors import InputError
from probseg.partition import split_and_filter

DEFAULT_OBJECTIVE = "cpm"
# CPM's resolution is a weight per pixel pair: above 1 nothing holds together,
# and below 1e-5 even objects of tens of thousands of pixels stay merged.
CPM_RANGE = (1e-5, 1.0)
SWEEP_POINTS = 21
# A whole-image Auto sweeps a few windows instead of the whole graph: eight
# windows of 256 px hold a few hundred typical cells, enough for the curve's
# peak, and cost about as much as one 724x724 image whatever the image size.
AUTO_WINDOW = 256
AUTO_WINDOWS = 8


@dataclass
class Sweep:
    """What :meth:`Consensus.sweep` measured.

    Attributes
    ----------
    resolutions : ndarray
        The log grid.
    nmi : ndarray
        Mean normalised mutual information between the consensus and each
        labeling, over the pixels some labeling calls foreground.
    n_objects : ndarray of int
        Objects per resolution, counted as :meth:`Consensus.labels` (or
        :meth:`Consensus.region_labels`) returns them at that resolution:
        each connected part of a community kept as foreground, after
        ``min_size``. Counted in the swept area: the whole image, the
        region, or the sampled windows together.
    best : float
        The proposed resolution: the middle of the run of grid points within
        1e-4 of the highest NMI.
    objective : {"cpm", "rb"}
    min_size : int
        The ``min_size`` the objects were counted with.
    windows : tuple of (y0, x0, y1, x1)
        The rectangles swept: one for a region, the sampled windows for
        :meth:`Consensus.sweep_windows`, empty for the whole image.
    """

    resolutions: np.ndarray
    nmi: np.ndarray
    n_objects: np.ndarray
    best: float
    objective: str = "cpm"
    min_size: int = 0
    windows: tuple = ()

    @property
    def best_index(self) -> int:
        return int(np.argmin(np.abs(self.resolutions - self.best)))


@dataclass
class Region:
    """The subgraph inside a rectangle, kept while the resolution moves."""

    rect: tuple[int, int, int, int]
    graph: Graph
    rb_scale: float
    _ig: object = field(default=None, repr=False)

    def igraph(self):
        if self._ig is None:
            self._ig = to_igraph(self.graph)
        return self._ig


def check_rect(rect, shape) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` clipped to ``shape``; an empty rectangle is an error."""
    try:
        y0, x0, y1, x1 = (int(round(float(v))) for v in rect)
    except (TypeError, ValueError):
        raise InputError(f"a region is four numbers y0,x0,y1,x1, got {rect!r}") from None
    y0, y1 = sorted((y0, y1))
    x0, x1 = sorted((x0, x1))
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(shape[0], y1), min(shape[1], x1)
    if y1 - y0 < 1 or x1 - x0 < 1:
        raise InputError(f"the region {tuple(rect)} does not overlap the {shape[0]}x{shape[1]} image")
    return y0, x0, y1, x1


class Consensus:
    """The same-objectness graph of a set of labelings, ready for Leiden.

    Parameters
    ----------
    layers : list of Layer
        Labelings of the whole image or of windows of it.
    shape : (int, int)
        Image size.
    radius : float
        Cutoff distance ``d_c`` in pixels.
    min_weight : float
        ``E_min``: pixel-pair weights below it are dropped.
    min_foreground : float
        A consensus object's fragments must be called foreground by at least
        this fraction of the labelings covering them; the rest is background.
    device : str
        Where the graph is built; ``"auto"`` uses the GPU when there is one.
    backend : {"igraph", "leidenalg"}
        Leiden implementation; see :mod:`probseg.consensus.leiden`.
    """

    def __init__(self, layers: list[Layer], shape, *, radius: float = DEFAULT_RADIUS, min_weight: float = DEFAULT_MIN_WEIGHT,
                 min_foreground: float = 0.5, device="auto", backend: str = DEFAULT_BACKEND):
        if not layers:
            raise InputError("the consensus needs at least one labeling")
        self._configure(shape, radius, min_weight, min_foreground, device, backend)
        frags = fragments(layers, self.shape)
        self._attach(frags, fragment_graph(frags, self.radius, self.min_weight, device=device), len(layers))

    def _attach(self, frags: Fragments, graph: Graph, n_layers: int, region_graph=None, references=None) -> None:
        """Hold the fragments and their graph; the hooks as :meth:`from_graph` describes them."""
        self.n_layers = int(n_layers)
        self.fragments: Fragments = frags
        self.graph: Graph = graph
        self._keep = np.asarray(frags.foreground) >= self.min_foreground - 1e-12
        self._ig = None
        self._region_graph = region_graph
        self._layer_references = references

    def _configure(self, shape, radius, min_weight, min_foreground, device, backend) -> None:
        if not 0.0 <= float(min_foreground) <= 1.0:
            raise InputError(f"min_foreground must be between 0 and 1, got {min_foreground}")
        if not 0.0 < float(min_weight) <= 1.0:
            raise InputError(f"min_weight must be in (0, 1], got {min_weight}")
        self.shape = tuple(int(s) for s in shape)
        self.radius = float(radius)
        self.min_weight = float(min_weight)
        self.min_foreground = float(min_foreground)
        self.device = device
        self.backend = check_backend(backend)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_samples(cls, samples, **kwargs) -> "Consensus":
        """From ``(n, Y, X)`` label images of the whole image."""
        layers, shape = sample_layers(samples)
        return cls(layers, shape, **kwargs)

    @classmethod
    def from_windows(cls, windows, shape, **kwargs) -> "Consensus":
        """From ``[(origin, labels), ...]``; ``labels`` is ``(h, w)`` or ``(n, h, w)``."""
        layers = []
        for origin, labels in windows:
            arr = check_labelings(labels, "window labels")
            layers.extend(Layer(a, (int(origin[0]), int(origin[1]))) for a in arr)
        return cls(layers, shape, **kwargs)

    @classmethod
    def from_graph(cls, frags: Fragments, graph: Graph, shape, *, n_layers: int, region_graph=None, references=None,
                   radius: float = DEFAULT_RADIUS, min_weight: float = DEFAULT_MIN_WEIGHT, min_foreground: float = 0.5,
                   device="auto", backend: str = DEFAULT_BACKEND) -> "Consensus":
        """A consensus over fragments and a graph built elsewhere (e.g. from soft masks).

        Parameters
        ----------
        frags : Fragments
            Only ``map``, ``sizes`` and ``foreground`` are used.
        graph : Graph
            The whole image's graph over ``frags``.
        shape : (int, int)
        n_layers : int
            How many labelings the graph was built from.
        region_graph : callable((y0, x0, y1, x1)) -> Graph, optional
            The graph inside a rectangle, for :meth:`region`; default: the
            hard :func:`fragment_graph` of ``frags``, which needs signatures.
        references : callable(Graph) -> list of (ndarray, Reference), optional
            For :meth:`sweep`: per labeling, the graph's nodes it covers and
            its labels of them; default: from ``frags.signatures``.
        radius, min_weight, min_foreground, device, backend
            As the constructor's; ``radius`` and ``min_weight`` should be
            those the graph was built with.
        """
        self = cls.__new__(cls)
        self._configure(shape, radius, min_weight, min_foreground, device, backend)
        self._attach(frags, graph, n_layers, region_graph, references)
        return self

    # -- resolutions --------------------------------------------------------------------
    def _rb_per_cpm(self) -> float:
        """Factor turning a CPM resolution into an RB one of similar effect.

        RB's null model expects ``gamma k_i k_j / 2m`` between two pixels; with
        the mean pixel strength ``k`` that is a CPM resolution of
        ``gamma k / N``.
        """
        pixels = float(self.graph.sizes.sum())
        two_m = 2.0 * self.graph.total_weight
        if pixels == 0 or two_m == 0:
            return 1.0
        return pixels * pixels / two_m

    def resolution_range(self, objective: str = DEFAULT_OBJECTIVE) -> tuple[float, float]:
        """Resolutions from "merge whatever any labeling joined" to "every fragment alone"."""
        lo, hi = CPM_RANGE
        if check_objective(objective) == "rb":
            f = self._rb_per_cpm()
            return lo * f, hi * f
        return lo, hi

    def sweep_grid(self, objective: str = DEFAULT_OBJECTIVE, points: int = SWEEP_POINTS) -> np.ndarray:
        lo, hi = self.resolution_range(objective)
        return np.geomspace(lo, hi, int(points))

    # -- whole image --------------------------------------------------------------------
    def _igraph(self):
        if self._ig is None:
            self._ig = to_igraph(self.graph)
        return self._ig

    def _node_labels(self, graph: Graph, membership: np.ndarray) -> np.ndarray:
        return np.where(self._keep[graph.nodes], membership + 1, 0)

    def _pixels(self, graph: Graph, node_labels: np.ndarray, rect=None) -> np.ndarray:
        lut = np.zeros(self.fragments.count + 1, dtype=np.int64)  # index -1: background
        lut[graph.nodes] = node_labels
        fmap = self.fragments.map if rect is None else self.fragments.map[rect[0] : rect[2], rect[1] : rect[3]]
        return lut[fmap]

    def partition(self, resolution: float, objective: str = DEFAULT_OBJECTIVE, seed: int = 0) -> np.ndarray:
        """Leiden membership of every fragment node of the whole graph."""
        return leiden(self.graph, resolution, objective, seed, ig=self._igraph(), backend=self.backend)

    def labels(self, resolution: float, objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0) -> np.ndarray:
        """The consensus of the whole image.

        Parameters
        ----------
        resolution : float
            Leiden's resolution; see :meth:`resolution_range`.
        objective : {"cpm", "rb"}
        seed : int
        min_size : int
            Objects with fewer pixels become background.

        Returns
        -------
        ndarray of int32, shape (Y, X)
            Sequential ids; a community that falls apart in the image gives
            one object per connected part.
        """
        node_labels = self._node_labels(self.graph, self.partition(resolution, objective, seed))
        return split_and_filter(self._pixels(self.graph, node_labels), int(min_size))

    # -- region -------------------------------------------------------------------------
    def region(self, rect) -> Region:
        """The subgraph inside ``rect = (y0, x0, y1, x1)``; keep it while the resolution moves."""
        rect = check_rect(rect, self.shape)
        if self._region_graph is not None:
            graph = self._region_graph(rect)
        else:
            graph = fragment_graph(self.fragments, self.radius, self.min_weight, region=rect, device=self.device)
        total = self.graph.total_weight
        # RB compares each pair with the whole graph's total weight; scaling the
        # resolution by the region's share keeps that reference, so a value
        # tried on a region means the same on the whole image.
        scale = graph.total_weight / total if total > 0 else 1.0
        return Region(rect, graph, scale)

    def region_labels(self, region: Region, resolution: float, objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0) -> np.ndarray:
        """Leiden inside ``region`` alone; ``(y1 - y0, x1 - x0)`` sequential labels."""
        objective = check_objective(objective)
        gamma = float(resolution) * (region.rb_scale if objective == "rb" else 1.0)
        if region.graph.n_nodes == 0:
            y0, x0, y1, x1 = region.rect
            return np.zeros((y1 - y0, x1 - x0), dtype=np.int32)
        membership = leiden(region.graph, max(gamma, 1e-300), objective, seed, ig=region.igraph(), backend=self.backend)
        node_labels = self._node_labels(region.graph, membership)
        return split_and_filter(self._pixels(region.graph, node_labels, region.rect), int(min_size))

    def update_region(self, labels, region, resolution: float, objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0) -> np.ndarray:
        """``labels`` with the rectangle replaced by a fresh consensus of it.

        Nothing outside the rectangle changes. An object cut by the border
        keeps one id: the new object inside takes the id of the outside
        object it touches most along the border (each id used once); other
        new objects get ids above every id outside.

        Parameters
        ----------
        labels : ndarray of int, shape (Y, X), or None
            The current consensus (None: empty).
        region : Region or (y0, x0, y1, x1)

        Returns
        -------
        ndarray of int32
            A new array; ``labels`` is not modified.
        """
        if not isinstance(region, Region):
            region = self.region(region)
        if labels is None:
            out = np.zeros(self.shape, dtype=np.int32)
        else:
            out = np.array(labels, dtype=np.int32, copy=True)
            if out.shape != self.shape:
                raise InputError(f"the labels are {out.shape} but the samples are {self.shape}")
        new = self.region_labels(region, resolution, objective, seed, min_size)
        write_region(out, new, region.rect)
        return out

    # -- resolution sweep ---------------------------------------------------------------
    def sweep(self, resolutions=None, objective: str = DEFAULT_OBJECTIVE, seed: int = 0, region=None, min_size: int = 0,
              callbacks: Callbacks | None = None) -> Sweep:
        """Consensus at each resolution and its agreement with the labelings.

        Parameters
        ----------
        resolutions : sequence of float, optional
            Default: :data:`SWEEP_POINTS` points on a log grid over
            :meth:`resolution_range`.
        objective : {"cpm", "rb"}
        seed : int
        region : Region or (y0, x0, y1, x1), optional
            Sweep inside this rectangle only (fast); RB resolutions keep the
            whole-image meaning.
        min_size : int
            Objects with fewer pixels are not counted, as :meth:`labels`
            drops them.
        callbacks : Callbacks, optional
            Progress per resolution; cancel between resolutions.

        Returns
        -------
        Sweep
            ``best`` maximises the mean NMI between consensus and labelings;
            ``n_objects`` is what :meth:`labels` (or :meth:`region_labels`
            for a region) gives at each resolution with this ``min_size``.
        """
        objective = check_objective(objective)
        cb = ensure(callbacks)
        grid = self._check_grid(objective, resolutions)
        if region is not None and not isinstance(region, Region):
            region = self.region(region)
        nmi, count = self._sweep_one(region, grid, objective, seed, int(min_size), cb, 0, grid.size)
        windows = () if region is None else (region.rect,)
        return Sweep(grid, nmi, count, _plateau_middle(grid, nmi), objective, int(min_size), windows)

    def sweep_windows(self, window: int = AUTO_WINDOW, max_windows: int = AUTO_WINDOWS, resolutions=None,
                      objective: str = DEFAULT_OBJECTIVE, seed: int = 0, min_size: int = 0,
                      callbacks: Callbacks | None = None) -> Sweep:
        """A whole-image sweep on a subsample of windows spread over the image.

        A resolution picked on one small region fits that region's cells; this
        sweeps up to ``max_windows`` windows taken evenly, in raster order,
        from the non-overlapping ``window`` grid (windows without foreground
        left out) and adds their curves, each window's NMI weighted by its
        foreground pixels. An image no larger than one window is swept
        whole, as :meth:`sweep` does.

        Parameters
        ----------
        window : int
            Window side in pixels, at least 16.
        max_windows : int
            How many windows at most, at least 1.
        resolutions : sequence of float, optional
            Default: the grid of :meth:`sweep`.
        objective : {"cpm", "rb"}
        seed : int
        min_size : int
            Objects with fewer pixels are not counted.
        callbacks : Callbacks, optional
            Progress per window and resolution; cancel between them.

        Returns
        -------
        Sweep
            ``n_objects`` counts the objects inside the sampled windows
            (``windows``), not in the whole image.

        Raises
        ------
        InputError
            For a window under 16 px or fewer than one window.
        """
        objective = check_objective(objective)
        cb = ensure(callbacks)
        if not (isinstance(window, (int, np.integer)) and int(window) >= 16):
            raise InputError(f"the Auto window must be a whole number of pixels, at least 16, got {window!r}")
        if not (isinstance(max_windows, (int, np.integer)) and int(max_windows) >= 1):
            raise InputError(f"Auto needs at least 1 window, got {max_windows!r}")
        grid = self._check_grid(objective, resolutions)
        rects = self._auto_windows(int(window), int(max_windows))
        if not rects:
            return self.sweep(grid, objective, seed, None, min_size, callbacks)
        total = len(rects) * grid.size
        nmi = np.zeros(grid.size)
        count = np.zeros(grid.size, dtype=np.int64)
        weight = 0.0
        for k, rect in enumerate(rects):
            cb.raise_if_stopped()
            region = self.region(rect)
            w = float(region.graph.sizes.sum())
            part, n = self._sweep_one(region, grid, objective, seed, int(min_size), cb, k * grid.size, total)
            nmi += w * part
            count += n
            weight += w
        nmi = nmi / weight if weight > 0 else nmi
        return Sweep(grid, nmi, count, _plateau_middle(grid, nmi), objective, int(min_size), tuple(rects))

    def _auto_windows(self, window: int, max_windows: int) -> list:
        """The windows :meth:`sweep_windows` sweeps; empty when the whole image is swept instead."""
        height, width = self.shape
        if height <= window and width <= window:
            return []
        fmap = self.fragments.map
        keep = np.append(self._keep, False)  # index -1: pixels of no fragment
        foreground = keep[fmap]
        ys = np.unique(np.minimum(np.arange(0, height, window), max(0, height - window)))
        xs = np.unique(np.minimum(np.arange(0, width, window), max(0, width - window)))
        rects = [(int(y), int(x), int(min(height, y + window)), int(min(width, x + window))) for y in ys for x in xs]
        rects = [r for r in rects if foreground[r[0] : r[2], r[1] : r[3]].any()]
        if len(rects) > max_windows:
            # Evenly over the raster order, so the sample spans the image
            # instead of crowding one corner.
            picks = np.unique(np.round(np.linspace(0, len(rects) - 1, max_windows)).astype(int))
            rects = [rects[i] for i in picks]
        return rects

    def _check_grid(self, objective: str, resolutions) -> np.ndarray:
        grid = self.sweep_grid(objective) if resolutions is None else np.asarray(resolutions, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or np.any(~np.isfinite(grid)) or np.any(grid <= 0):
            raise InputError("resolutions to sweep must be positive numbers")
        return grid

    def _sweep_one(self, region, grid, objective, seed, min_size, cb, done, total):
        """NMI and object count per resolution on the whole graph (``region`` None) or a region."""
        graph = self.graph if region is None else region.graph
        rect = None if region is None else region.rect
        scale = region.rb_scale if (region is not None and objective == "rb") else 1.0
        ig = self._igraph() if region is None else region.igraph()
        references = self._references(graph)
        nmi = np.zeros(grid.size)
        count = np.zeros(grid.size, dtype=np.int64)
        for i, gamma in enumerate(grid):
            cb.raise_if_stopped()
            if graph.n_nodes:
                membership = leiden(graph, max(gamma * scale, 1e-300), objective, seed, ig=ig, backend=self.backend)
                node_labels = self._node_labels(graph, membership)
                # Counted as labels()/region_labels() make them: a community in
                # several pieces is several objects, and small ones are dropped.
                count[i] = int(split_and_filter(self._pixels(graph, node_labels, rect), min_size).max())
                scores = [ref.nmi(node_labels[covered]) for covered, ref in references]
                nmi[i] = np.mean(scores) if scores else 0.0
            cb.progress(done + i + 1, total)
        return nmi, count

    def _references(self, graph: Graph) -> list:
        """Per labeling: the nodes of ``graph`` it covers and its labels of them, ready for NMI."""
        if self._layer_references is not None:
            return self._layer_references(graph)
        sig = self.fragments.signatures[graph.nodes]
        references = []
        for j in range(sig.shape[1]):
            covered = np.flatnonzero(sig[:, j] >= 0)
            if covered.size:
                references.append((covered, Reference(sig[covered, j], graph.sizes[covered])))
        return references


def _plateau_middle(grid: np.ndarray, nmi: np.ndarray) -> float:
    """The middle of the run of grid points within 1e-4 of the highest NMI."""
    top = np.flatnonzero(nmi >= nmi.max() - 1e-4)
    return float(grid[top[top.size // 2]])


def write_region(out: np.ndarray, new: np.ndarray, rect) -> None:
    """Write region labels ``new`` into ``out[rect]`` in place; see :meth:`Consensus.update_region`."""
    y0, x0, y1, x1 = rect
    height, width = out.shape
    outside = out.copy()
    outside[y0:y1, x0:x1] = 0
    base = int(outside.max()) + 1
    inner, outer = [], []
    if y0 > 0:
        inner.append(new[0, :]), outer.append(out[y0 - 1, x0:x1])
    if y1 < height:
        inner.append(new[-1, :]), outer.append(out[y1, x0:x1])
    if x0 > 0:
        inner.append(new[:, 0]), outer.append(out[y0:y1, x0 - 1])
    if x1 < width:
        inner.append(new[:, -1]), outer.append(out[y0:y1, x1])
    n_new = int(new.max())
    lut = np.zeros(n_new + 1, dtype=np.int64)
    if inner:
        a = np.concatenate(inner).astype(np.int64)
        b = np.concatenate(outer).astype(np.int64)
        touch = (a > 0) & (b > 0)
        pairs, counts = np.unique(np.stack([a[touch], b[touch]], 1), axis=0, return_counts=True)
        used_new, used_old = set(), set()
        for k in np.argsort(-counts, kind="stable"):
            i, old = int(pairs[k, 0]), int(pairs[k, 1])
            if i not in used_new and old not in used_old:
                lut[i] = old
                used_new.add(i)
                used_old.add(old)
    fresh = np.flatnonzero(lut[1:] == 0) + 1
    lut[fresh] = base + np.arange(fresh.size)
    out[y0:y1, x0:x1] = lut[new]
