"""Partition toolbox: plain functions that turn per-pixel predictions into label images.

- :func:`connected_components` (alias :func:`split_and_filter`), :func:`shrink`,
  :func:`label_boundaries`
- :func:`mean_shift`, :func:`meanshift_instances` (embeddings -> instances)
- :func:`hdbscan_instances` (embeddings -> instances, density-based)
- :func:`embedding_affinities`, :data:`DEFAULT_OFFSETS`, :data:`SPARSE_LONG_RANGE_OFFSETS`,
  :func:`offsets_for_object_size`
- :func:`mutex_watershed` (affinities -> instances)
- :func:`seeded_watershed` (foreground probability -> instances)
"""

from probseg.partition.affinities import (
    DEFAULT_OFFSETS,
    SPARSE_LONG_RANGE_OFFSETS,
    embedding_affinities,
    offsets_for_object_size,
)
from probseg.partition.components import connected_components, label_boundaries, shrink, split_and_filter
from probseg.partition.hdbscan import hdbscan_instances
from probseg.partition.meanshift import mean_shift, meanshift_instances
from probseg.partition.mutex import mutex_watershed
from probseg.partition.watershed import seeded_watershed

__all__ = [
    "DEFAULT_OFFSETS",
    "SPARSE_LONG_RANGE_OFFSETS",
    "connected_components",
    "embedding_affinities",
    "hdbscan_instances",
    "label_boundaries",
    "mean_shift",
    "meanshift_instances",
    "mutex_watershed",
    "offsets_for_object_size",
    "seeded_watershed",
    "shrink",
    "split_and_filter",
]
