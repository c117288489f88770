"""segclip.cpu: the INT8 instruction set read from CPU flags, and when an INT8 graph's gate holds on this CPU."""
from __future__ import annotations

import pytest

from segclip import cpu

HASWELL = {"sse4_2", "avx", "avx2", "fma", "f16c"}
SKYLAKE_X = HASWELL | {"avx512f", "avx512bw", "avx512vl"}


@pytest.mark.parametrize("flags, machine, isa", [
    (HASWELL, "x86_64", "avx2"),
    (SKYLAKE_X, "x86_64", "avx512"),  # AVX-512 without VNNI: VPMADDUBSW, saturating like AVX2
    (SKYLAKE_X | {"avx512_vnni"}, "x86_64", "avx512_vnni"),
    (HASWELL | {"avx_vnni"}, "x86_64", "avx_vnni"),  # Alder Lake and later client CPUs
    (SKYLAKE_X | {"avx512_vnni", "amx_tile", "amx_int8"}, "x86_64", "amx"),
    ({"sse4_2"}, "x86_64", "other"),
    ({"fp", "asimd", "asimddp"}, "aarch64", "arm_dotprod"),
    ({"fp", "asimd"}, "aarch64", "arm"),
])
def test_int8_isa_from_flags(flags, machine, isa):
    assert cpu.int8_isa(flags, machine) == isa
    assert cpu.saturates(isa) == (isa in ("avx2", "avx512"))


def test_this_cpu_is_described():
    info = cpu.isa_info()
    assert info["isa"] in cpu.ISAS and info["int8_saturates"] == cpu.saturates(info["isa"])
    assert cpu.describe().startswith(info["isa"])


@pytest.mark.parametrize("record, host, warns", [
    ({"weight_bits": 8, "isa": {"isa": "avx512_vnni"}, "gate_kernels": cpu.GATE_CPU_KERNELS}, "avx2", True),
    ({"weight_bits": 8, "isa": {"isa": "avx512_vnni"}, "gate_kernels": cpu.GATE_CPU_KERNELS}, "avx512_vnni", False),
    ({"weight_bits": 8, "isa": {"isa": "avx512_vnni"}, "gate_kernels": cpu.GATE_CPU_KERNELS}, "arm", False),
    ({"weight_bits": 7, "isa": {"isa": "avx2"}, "gate_kernels": cpu.GATE_CPU_KERNELS}, "avx2", False),
    # gated through this kind of CPU's own saturating kernels: the gate measured what runs here
    ({"weight_bits": 8, "isa": {"isa": "avx2"}, "gate_kernels": cpu.GATE_CPU_KERNELS}, "avx512", False),
    # TensorRT's graph, gated as float on the dequantized values: on a saturating CPU it is not what ran
    ({"weight_bits": 8, "isa": {"isa": "avx2"}, "gate_kernels": cpu.GATE_DEQUANTIZED}, "avx2", True),
    ({}, "avx2", True),  # an export from before the ISA was recorded
])
def test_int8_warning_only_where_the_gate_does_not_hold(record, host, warns):
    line = cpu.int8_warning("model_int8_cpu.onnx", record, isa=host, regate="segclip export ck.pt --int8")
    assert bool(line) == warns
    if warns:
        assert "\n" not in line and line.startswith("warning: model_int8_cpu.onnx") and "segclip export ck.pt --int8" in line
