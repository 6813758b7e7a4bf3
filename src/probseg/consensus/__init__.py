"""Consensus of many segmentations: same-objectness graph and Leiden.

Every model yields several segmentations of an image (samples), and tiled
inference yields overlapping windows. The consensus links nearby pixels by how
often the labelings put them in one object and splits that graph into
objects with Leiden community detection; the resolution decides how finely.

>>> from probseg.consensus import Consensus
>>> c = Consensus.from_samples(samples)          # (n, Y, X) labels
>>> sweep = c.sweep()                            # proposes a resolution
>>> labels = c.labels(sweep.best)
>>> labels = c.update_region(labels, (0, 0, 256, 256), 2 * sweep.best)
>>> c = soft_consensus(((origin, probs) for ...), shape)  # soft masks of many windows
"""

from probseg.consensus.engine import DEFAULT_OBJECTIVE, Consensus, Region, Sweep, check_rect, write_region
from probseg.consensus.fragments import Fragments, Layer, fragments
from probseg.consensus.graph import DEFAULT_MIN_WEIGHT, DEFAULT_RADIUS, Graph, fragment_graph, pixel_graph, soft_pixel_graph
from probseg.consensus.leiden import BACKENDS, OBJECTIVES, leiden, quality
from probseg.consensus.soft import soft_consensus
from probseg.consensus.stitch import Stitched, segment_stitched, segment_windows, window_origins

__all__ = [
    "Consensus", "Region", "Sweep", "Layer", "Fragments", "Graph", "fragments", "fragment_graph", "pixel_graph",
    "soft_pixel_graph", "leiden", "quality", "check_rect", "write_region", "OBJECTIVES", "DEFAULT_OBJECTIVE",
    "DEFAULT_RADIUS", "DEFAULT_MIN_WEIGHT", "BACKENDS", "Stitched", "segment_stitched", "segment_windows", "window_origins",
    "soft_consensus",
]
