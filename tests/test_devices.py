"""Device and precision rules: "auto" must never pick a path the hardware only emulates."""

from __future__ import annotations

import pytest

from persyn.core.devices import choose, cpu_bfloat16_units, trains_in_bfloat16
from persyn.core.errors import PersynError

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.mark.parametrize(("cpuinfo", "units"), [(AVX2_ONLY, None), (AVX512_BF16, "AVX512-BF16"), (AMX, "AMX"), ("", None)])
def test_bfloat16_units_come_from_the_cpu_flags(cpuinfo: str, units: str | None) -> None:
    assert cpu_bfloat16_units(cpuinfo) == units


def test_a_flag_named_in_another_field_does_not_count() -> None:
    assert cpu_bfloat16_units("model name\t: amx_bf16 lookalike\nflags\t\t: fpu avx2\n") is None


@pytest.mark.parametrize(("precision", "device", "units", "bf16"), [
    ("auto", "cuda", None, True),
    ("auto", "cpu", "AMX", True),
    ("auto", "cpu", "AVX512-BF16", True),
    ("auto", "cpu", None, False),       # emulated bfloat16 measured 15-21x slower than float32
    ("bfloat16", "cpu", None, True),    # asked for explicitly: kept, with a warning from train()
    ("float32", "cuda", None, False),
    ("float32", "cpu", "AMX", False),
])
def test_auto_precision_takes_bfloat16_only_where_it_is_native(precision: str, device: str, units: str | None,
                                                              bf16: bool) -> None:
    assert trains_in_bfloat16(precision, device, units) is bf16


def test_an_explicit_cuda_without_a_device_is_an_error() -> None:
    assert choose("auto", False, "torch") == "cpu"
    with pytest.raises(PersynError, match="sees no CUDA device"):
        choose("cuda", False, "torch")
