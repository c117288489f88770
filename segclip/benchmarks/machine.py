"""What the numbers were measured on: CPU, cores, GPU, load and library versions.

Every benchmark report carries this block, so two ``benchmark.json`` files can be compared (or
refused as incomparable) without guessing.
"""
from __future__ import annotations

import os
import platform
import subprocess
from typing import Optional

from segclip.cpu import int8_isa

# distribution name -> import name; version from importlib.metadata first (no import needed)
PACKAGES = {
    "segclip": "segclip",
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime",
    "tensorrt": "tensorrt",
    "tritonclient": "tritonclient",
    "numpy": "numpy",
}


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    from segclip.cpu import cpu_model as model

    return model()


def cpu_counts() -> dict:
    """Logical CPUs of the machine, CPUs this process may run on (affinity / container limit) and,
    when cgroup v2 says so, the CPU quota."""
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    quota = None
    try:
        q, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if q != "max":
            quota = round(int(q) / int(period), 2)
    except (OSError, ValueError):
        pass
    physical = None
    try:
        cores = set()
        phys_id = core_id = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys_id = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core_id = line.split(":")[1].strip()
                elif not line.strip() and core_id is not None:
                    cores.add((phys_id, core_id))
                    phys_id = core_id = None
        physical = len(cores) or None
    except OSError:
        pass
    return {"logical": logical, "usable": usable, "physical": physical, "cgroup_quota": quota}


def cpu_flags() -> list:
    """The SIMD flags that decide CPU kernel speed (AVX2/AVX-512/AMX/VNNI), as ``segclip.cpu`` reads them."""
    from segclip.cpu import isa_info

    return isa_info()["flags"]


def memory_gb() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def gpus() -> list:
    """[{name, memory_gb, driver, compute_capability}] from torch (no CUDA init if none is visible)."""
    out = []
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                            "compute_capability": f"{p.major}.{p.minor}"})
    except Exception:
        pass
    if out:
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.split()
            for g, d in zip(out, drv):
                g["driver"] = d
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def versions() -> dict:
    v = {"python": platform.python_version()}
    for dist in PACKAGES:
        ver = _version(dist)
        if ver is not None or dist != "onnxruntime-gpu":
            v[dist] = ver
    try:
        import torch

        v["torch_cuda"] = torch.version.cuda
        v["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    except Exception:
        pass
    try:
        import onnxruntime as ort

        v["onnxruntime_providers"] = list(ort.get_available_providers())
    except Exception:
        v["onnxruntime_providers"] = []
    return v


def machine_info(threads: Optional[int] = None) -> dict:
    """The ``machine`` block of the report."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    g = gpus()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_model(),
        "cpu_cores": cpu_counts(),
        "cpu_flags": cpu_flags(),
        # INT8 speed and accuracy depend on it (VNNI or not): a report names it, and compares only within one
        "int8_isa": int8_isa(),
        "memory_gb": memory_gb(),
        "gpu": g[0]["name"] if g else None,
        "gpus": g,
        "threads": threads,
        "load_average": load,
        "versions": versions(),
    }


def describe(m: dict) -> str:
    """One line for the terminal and RESULTS.md."""
    c = m["cpu_cores"]
    gpu = m.get("gpu") or "no GPU"
    v = m["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tritonclient", "segclip")
                     if v.get(k))
    load = f", load {m['load_average'][0]}" if m.get("load_average") else ""
    isa = f", INT8 ISA {m['int8_isa']}" if m.get("int8_isa") else ""
    return (f"{m['cpu']} ({c['usable']} usable of {c['logical']} logical CPUs{load}{isa}), {m['memory_gb']} GB RAM, {gpu}; "
            f"{m.get('threads')} threads; {libs}")
