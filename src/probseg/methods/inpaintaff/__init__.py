"""InpaintAff: the method and its private helpers."""
