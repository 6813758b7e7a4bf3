"""SPOCO: the method and its private helpers.

``SpocoModel`` and ``reviewed_labels`` stay importable from here: the
proofreading loop and the user guide name them as ``probseg.methods.spoco``.
"""

from probseg.core.labels import reviewed_labels  # noqa: F401
from probseg.methods.spoco.model import SpocoModel  # noqa: F401
