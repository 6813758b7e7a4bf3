"""Run records: what a model was made from, and what a labels file came from.

A model folder's ``config.json`` holds a ``record``: the training data's
shapes and hash, the seed, the versions of probseg and torch, the device and
the sha256 of the weights. Every labels file the command line writes gets a
small JSON beside it (``labels.tif.json``) naming the model, its weights'
hash and the settings, so a result can always be traced back.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np


def array_digest(arrays) -> str:
    """sha256 over the shapes, dtypes and bytes of one array or a list of arrays."""
    h = hashlib.sha256()
    for a in arrays if isinstance(arrays, (list, tuple)) else [arrays]:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def weights_digest(state_dict: dict) -> str:
    """sha256 of a network's weights, independent of their device (names in sorted order)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        # numpy has no bfloat16; its bytes are the same through an int16 view.
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def training_record(planes, labels, seed: int, device) -> dict:
    """The ``record`` of a model trained on ``planes`` (and ``labels``)."""
    import torch

    from probseg.core import __version__

    record = {
        "training_data": {
            "shapes": [list(p.shape) for p in planes],
            "sha256": array_digest(list(planes)),
        },
        "seed": int(seed),
        "versions": {"probseg": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": str(device),
    }
    if labels is not None and any(lab is not None for lab in labels):
        record["training_data"]["labels_sha256"] = array_digest([lab for lab in labels if lab is not None])
    return record


def labels_sidecar(path) -> Path:
    """Where the JSON describing a labels file goes: ``labels.tif`` -> ``labels.tif.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")
