"""The CPU's 8-bit dot-product instructions: what decides whether an INT8 graph is exact here.

x86 CPUs without VNNI multiply uint8 x int8 with VPMADDUBSW, which adds pairs of products into a
*16-bit* lane and saturates (255 * 127 * 2 > 32767); ONNX Runtime uses it for every u8s8/s8s8 Conv
and MatMul on AVX2 and on AVX-512 without VNNI.  VNNI (VPDPBUSD, AVX512_VNNI or AVX_VNNI), AMX and
Arm's dot-product instructions accumulate in 32 bits and do not saturate.  Weights quantized to 7
bits (``reduce_range``, |w| <= 64) keep every pair below 2**15 (255 * 64 * 2 = 32640).  Sources: ONNX Runtime's
quantization guide (microsoft/onnxruntime docs/performance/model-optimizations/quantization.md,
"When and why do I need to try U8U8?", "When to use reduce-range") and OpenVINO's "Saturation
(overflow) issue" page.

Read from /proc/cpuinfo (Linux x86 flags, Arm ``Features``) or sysctl (macOS); no cpuid of our own.
"""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache

# what ``int8_isa`` reports, best first; the saturating ones are x86 without 32-bit 8-bit dot products
ISAS = ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm_dotprod", "arm", "other")
SATURATING = ("avx512", "avx2")
# how the export's gate ran an INT8 graph (manifest ``int8.gate_kernels``): ONNX Runtime's int8 kernels of
# this CPU, or float arithmetic on the dequantized values (no Q/DQ fusion; what TensorRT computes)
GATE_CPU_KERNELS, GATE_DEQUANTIZED = "onnxruntime-int8-kernels", "dequantized-float"
# x86 SIMD flags worth recording with a measurement (kernel choice, speed)
X86_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "avx_vnni",
             "amx_tile", "amx_int8", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU feature flags the OS reports (x86 ``flags`` / Arm ``Features`` of /proc/cpuinfo; on
    macOS the ``hw.optional`` sysctls that say the same); empty when unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        try:  # Apple M1 and later: FEAT_DotProd
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_DotProd"], capture_output=True, text=True, timeout=5)
            return frozenset({"asimddp"} if out.stdout.strip() == "1" else {"asimd"})
        except (OSError, subprocess.SubprocessError):
            pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo ``model name``; else what ``platform`` says): with
    ``int8_isa`` what a speed measurement is matched on (``segclip.contract.this_machine``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_isa(flags=None, machine: str | None = None) -> str:
    """The best 8-bit dot-product instruction set of this CPU (``flags``/``machine``: another's), one of ``ISAS``."""
    f = cpu_flags() if flags is None else frozenset(flags)
    m = (machine or platform.machine()).lower()
    if m in ("aarch64", "arm64") or m.startswith("arm"):
        return "arm_dotprod" if "asimddp" in f else "arm"
    if "amx_int8" in f:
        return "amx"
    if "avx512_vnni" in f:
        return "avx512_vnni"
    if "avx_vnni" in f:
        return "avx_vnni"
    if "avx512bw" in f:
        return "avx512"
    if "avx2" in f:
        return "avx2"
    return "other"


def saturates(isa: str) -> bool:
    """True where ONNX Runtime's u8 x s8 kernels add products in saturating 16-bit lanes (x86 without VNNI)."""
    return isa in SATURATING


def isa_info() -> dict:
    """What a manifest or a CI log records about this CPU's INT8 arithmetic."""
    isa = int8_isa()
    flags = cpu_flags()
    return {"isa": isa, "int8_saturates": saturates(isa), "machine": platform.machine(),
            "flags": [x for x in X86_FLAGS if x in flags] or sorted(x for x in flags if x in ("asimd", "asimddp"))}


def int8_warning(file: str, record: dict, isa: str | None = None, regate: str = "") -> str | None:
    """One line when an INT8 graph (manifest ``int8`` ``record``) runs on this CPU's saturating 16-bit
    arithmetic without the gate having measured that arithmetic; None when the gate's result holds here.

    It holds where products cannot saturate (VNNI, AMX, Arm), for 7-bit weights anywhere, and for an
    artifact gated through ONNX Runtime's int8 kernels on a CPU that saturates the same way."""
    isa = isa or int8_isa()
    if not saturates(isa) or int(record.get("weight_bits", 8)) <= 7:
        return None
    gated = (record.get("isa") or {}).get("isa")
    if gated is not None and saturates(gated) and record.get("gate_kernels") == GATE_CPU_KERNELS:
        return None
    return (f"warning: {file} has 8-bit weights and was gated on {gated or 'a CPU it did not record'}; this CPU "
            f"({isa}, no VNNI) adds u8 x s8 products in 16-bit lanes that saturate, so its classes may differ from "
            f"the gate's: re-gate it here{' with ' + regate if regate else ''} (export --int8 on this CPU quantizes "
            f"the CPU flavour to 7-bit weights)")


def describe() -> str:
    """One line, e.g. 'avx512_vnni (x86_64; avx2 fma ... avx512_vnni)' or 'avx2 (...; 8-bit products saturate)'."""
    info = isa_info()
    sat = "; u8 x s8 products saturate in 16 bits" if info["int8_saturates"] else ""
    return f"{info['isa']} ({info['machine']}: {' '.join(info['flags']) or 'no SIMD flags read'}{sat})"


if __name__ == "__main__":  # CI prints it: python -m segclip.cpu
    print(f"int8 isa: {describe()}")
