"""CellSegmenter: the method and its private helpers."""
