"""Pick the compute device and say plainly which one is used.

Users of other plugins most often complain that a GPU sat idle without a word;
so the device is always reported, and a GPU that the installed torch build
cannot use produces a warning that says why.
"""

from __future__ import annotations

import os
import shutil

import torch

from probseg.core.errors import InputError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"`` into a device.

    ``"auto"`` prefers CUDA, then Apple's MPS, then the CPU.

    Raises
    ------
    InputError
        If a device is asked for that this machine or torch build lacks.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        index = name[len("cuda"):]
        if index and not (index.startswith(":") and index[1:].isdigit()):
            raise InputError(f"unknown device {name!r}; write cuda or cuda:N with N a GPU number, e.g. cuda:0")
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was requested but torch cannot use a CUDA GPU here; use --device cpu or auto")
        count = torch.cuda.device_count()
        if index and int(index[1:]) >= count:
            raise InputError(f"device {name!r} was requested but this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise InputError("device 'mps' was requested but is not available; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe_device(device: torch.device) -> str:
    """One line naming the device, e.g. ``cuda:0 (NVIDIA H100, 80 GB)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def gpu_warning() -> str | None:
    """A warning when an NVIDIA GPU seems present but torch cannot use it.

    Returns ``None`` when there is nothing to warn about. The check looks for
    the driver (``/proc/driver/nvidia`` or ``nvidia-smi``) without starting it.
    """
    if torch.cuda.is_available():
        return None
    driver = os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
    if not driver:
        return None
    build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
    return (
        f"an NVIDIA GPU is present but {build} cannot use it; training runs on the CPU. "
        "Install a CUDA build of torch 2.13.0 to use the GPU."
    )
