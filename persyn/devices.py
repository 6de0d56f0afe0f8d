"""Device selection, one rule for every runtime: "auto" takes CUDA where the runtime sees a device,
and an explicit "cuda" without one is an error rather than a silent fall back to the CPU."""

from __future__ import annotations

from persyn.errors import PersynError


def choose(device: str, cuda_available: bool, runtime: str) -> str:
    """The device to run on, given whether `runtime` (torch, CTranslate2) sees a CUDA device."""
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    if device == "cuda" and not cuda_available:
        raise PersynError(f"device = 'cuda' but {runtime} sees no CUDA device")
    return device


def pick_device(device: str) -> str:
    """The torch device for training, embedding and the transformers engine."""
    import torch

    return choose(device, torch.cuda.is_available(), "torch")
