"""The methods: one module (or one folder) per published method, and the list of them.

A method module defines a model class deriving from
:class:`probseg.engine.model.SegmentationModel` (the contract is written down
there) and a :class:`MethodInfo` named ``METHOD``. Adding a method is that
module plus one line in ``BUILTIN`` (or one call to :func:`register` for a
method that lives outside probseg). Modules are imported on first use so that
listing methods costs nothing.
"""

from __future__ import annotations

from probseg.engine.registry import MethodInfo, available, get, register, unregister  # noqa: F401

# name -> module, in menu order; a new method is one line here plus its module.
BUILTIN = {
    "cellulus": "probseg.methods.cellulus",
    "concrete-dropout": "probseg.methods.concrete_dropout.model",
    "spoco": "probseg.methods.spoco.model",
    "cellsegmenter": "probseg.methods.cellsegmenter.model",
    "inpaintaff": "probseg.methods.inpaintaff.model",
}
