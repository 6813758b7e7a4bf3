"""Concrete-Dropout embeddings: the method and its private helpers."""
