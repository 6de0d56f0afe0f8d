"""Device selection, one rule for every runtime: "auto" takes CUDA where the runtime sees a device,
and an explicit "cuda" without one is an error rather than a silent fall back to the CPU."""

from __future__ import annotations

from pathlib import Path

from persyn.core.errors import PersynError

CPUINFO = Path("/proc/cpuinfo")


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


def cpu_bfloat16_units(cpuinfo: str | None = None) -> str | None:
    """The CPU's native bfloat16 matrix units ("AMX", "AVX512-BF16") from /proc/cpuinfo's flags, or None.
    Without them torch emulates bfloat16 on the CPU: one training epoch measured 15-21x slower than float32
    (bench/train_bench.py on a 2-core AVX2 EPYC), so "auto" precision must not choose it there."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.is_file() else ""
    flags = next((value.split() for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())
                  if key.strip() == "flags"), [])
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


def trains_in_bfloat16(precision: str, device: str, cpu_units: str | None) -> bool:
    """Whether training autocasts to bfloat16: "auto" does on CUDA and on a CPU with native bfloat16 units."""
    if precision == "auto":
        return device == "cuda" or (device == "cpu" and cpu_units is not None)
    return precision == "bfloat16"
