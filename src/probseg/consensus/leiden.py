"""Leiden community detection on a same-objectness graph.

Two implementations of the same algorithm and objectives: leidenalg (the
reference) and igraph's own C implementation, which is several times faster
on our fragment graphs (benchmarks/consensus.py measures both) and is the
default, so that a resolution slider can follow the mouse. Both are seeded.
"""

from __future__ import annotations

import random
import threading

import numpy as np

from probseg.core.bounds import check_seed
from probseg.consensus.graph import Graph
from probseg.core.errors import InputError, ProbsegError

OBJECTIVES = ("rb", "cpm")
BACKENDS = ("igraph", "leidenalg")
DEFAULT_BACKEND = "igraph"
# igraph draws from one process-wide generator; the lock keeps a seeded run
# from interleaving with another thread's.
_IGRAPH_RNG_LOCK = threading.Lock()
OBJECTIVE_HELP = {
    "rb": "modularity with a resolution (Reichardt-Bornholdt): objects are compared with what the whole graph would predict",
    "cpm": "constant Potts model: an object holds together when its pixel pairs agree more often than the resolution",
}


def check_objective(objective: str) -> str:
    name = str(objective).strip().lower()
    if name not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return name


def _libraries():
    try:
        import igraph
        import leidenalg
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise ProbsegError(f"the consensus needs leidenalg and igraph ({exc}); pip install leidenalg igraph") from None
    return igraph, leidenalg


def to_igraph(graph: Graph):
    """An ``igraph.Graph`` with a ``weight`` edge attribute; self-loops kept."""
    igraph, _ = _libraries()
    loop_nodes = np.flatnonzero(graph.loops > 0)
    edges = np.concatenate([graph.edges.reshape(-1, 2), np.stack([loop_nodes, loop_nodes], 1)])
    weights = np.concatenate([graph.weights, graph.loops[loop_nodes]])
    return igraph.Graph(n=graph.n_nodes, edges=edges, edge_attrs={"weight": weights})


def check_backend(backend: str) -> str:
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise InputError(f"unknown Leiden backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return name


def leiden(graph: Graph, resolution: float, objective: str = "rb", seed: int = 0, n_iterations: int = 2, ig=None,
           backend: str = DEFAULT_BACKEND) -> np.ndarray:
    """Partition ``graph`` with the Leiden algorithm.

    Parameters
    ----------
    graph : Graph
    resolution : float
        ``gamma`` of the objective, > 0; higher splits more.
    objective : {"rb", "cpm"}
        "rb": modularity with resolution (``RBConfigurationVertexPartition``);
        "cpm": constant Potts model with node sizes in pixels
        (``CPMVertexPartition``), so a fragment weighs as its pixels do.
    seed : int
        Same graph, same seed: same partition.
    n_iterations : int
        Leiden iterations; negative runs until nothing changes.
    ig : igraph.Graph, optional
        ``to_igraph(graph)``, when the caller keeps it across calls.
    backend : {"igraph", "leidenalg"}
        igraph's C implementation (fast) or leidenalg (the reference).

    Returns
    -------
    ndarray of int64, shape (N,)
        Community of each node, ``0..K-1``.
    """
    objective = check_objective(objective)
    backend = check_backend(backend)
    seed = check_seed(seed)
    resolution = float(resolution)
    if not np.isfinite(resolution) or resolution <= 0:
        raise InputError(f"the resolution must be a positive number, got {resolution}")
    if graph.n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    igraph, leidenalg = _libraries()
    g = ig if ig is not None else to_igraph(graph)
    if backend == "igraph":
        with _IGRAPH_RNG_LOCK:
            igraph.set_random_number_generator(random.Random(int(seed)))
            try:
                if objective == "rb":
                    part = g.community_leiden("modularity", weights="weight", resolution=resolution, n_iterations=int(n_iterations))
                else:
                    part = g.community_leiden(
                        "CPM", weights="weight", resolution=resolution, n_iterations=int(n_iterations), node_weights=graph.sizes.tolist()
                    )
            finally:
                igraph.set_random_number_generator(random)
        return np.asarray(part.membership, dtype=np.int64)
    if objective == "rb":
        part = leidenalg.find_partition(
            g, leidenalg.RBConfigurationVertexPartition, weights="weight",
            resolution_parameter=resolution, seed=int(seed), n_iterations=int(n_iterations),
        )
    else:
        part = leidenalg.find_partition(
            g, leidenalg.CPMVertexPartition, weights="weight", node_sizes=graph.sizes.tolist(),
            resolution_parameter=resolution, seed=int(seed), n_iterations=int(n_iterations),
        )
    return np.asarray(part.membership, dtype=np.int64)


def quality(graph: Graph, membership, resolution: float, objective: str = "rb") -> float:
    """The objective's value for a given partition (for tests and diagnostics)."""
    objective = check_objective(objective)
    _, leidenalg = _libraries()
    g = to_igraph(graph)
    if objective == "rb":
        part = leidenalg.RBConfigurationVertexPartition(g, initial_membership=list(membership), weights="weight", resolution_parameter=resolution)
    else:
        part = leidenalg.CPMVertexPartition(
            g, initial_membership=list(membership), weights="weight", node_sizes=graph.sizes.tolist(), resolution_parameter=resolution
        )
    return float(part.quality())
