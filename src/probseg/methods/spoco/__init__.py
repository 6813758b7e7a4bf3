"""SPOCO: the method (``model.py``) and its private helpers."""
