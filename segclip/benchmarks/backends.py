"""The benchmark's backends as data: how each one's runner is made, nothing else.

Measurement code loops over runners and never asks which backend it holds (Polygraphy style).  A
backend that cannot be created here (no GPU, tensorrt not installed, no Triton server) becomes a
row whose status says why (Ultralytics style), never a crash.

Every spec names where its runner comes from:

* ``checkpoint``: the PyTorch reference (``SegCLIPInference``, the module that is exported);
* ``artifact``: an artifact of the export directory (``manifest.json`` key: onnx, onnx_fp16,
  tensorrt), through ``segclip.runtime.load_runner(export_dir, format=...)``;
* ``triton``: a model URL on a Triton server (``grpc://`` or ``http://``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from segclip.errors import SegclipError


@dataclass(frozen=True)
class BackendSpec:
    name: str
    source: str  # "checkpoint" | "artifact" | "triton"
    artifact: Optional[str] = None  # manifest artifacts key, for source == "artifact"
    protocol: Optional[str] = None  # for source == "triton"
    options: Callable = field(default=lambda ctx: {})  # ctx -> load_runner options
    cpu_threads: bool = False  # runs on this host's CPU with the benchmark's thread count
    probe: Optional[Callable] = None  # ctx -> None, or why this backend cannot run on this machine at all
    description: str = ""


def _torch_opts(ctx) -> dict:
    return {"device": ctx.device, "threads": ctx.threads, "scores": ctx.scores, "name": "torch-fp32"}


def _ort_opts(ctx) -> dict:
    # cpu: CPU only; cuda: CUDA when this onnxruntime build has it, else CPU (the row's device says which)
    # cuda:N: that GPU's CUDA provider
    if ctx.device.startswith("cuda:"):
        return {"device": ctx.device, "threads": ctx.threads}
    return {"providers": "cpu" if ctx.device == "cpu" else None, "threads": ctx.threads}


def _trt_opts(ctx) -> dict:
    return {"device": ctx.device} if ctx.device.startswith("cuda") else {}


def _trt_probe(ctx) -> Optional[str]:
    from segclip.export.tensorrt import trt_unavailable_reason

    return trt_unavailable_reason()


def _triton_opts(ctx) -> dict:
    return {"shm": ctx.triton_shm}


BACKENDS = {
    "torch": BackendSpec("torch", "checkpoint", options=_torch_opts, cpu_threads=True,
                         description="PyTorch eager FP32 (the reference every other row is compared with)"),
    "onnxruntime": BackendSpec("onnxruntime", "artifact", artifact="onnx", options=_ort_opts, cpu_threads=True,
                               description="ONNX Runtime, FP32 model.onnx"),
    "onnxruntime-fp16": BackendSpec("onnxruntime-fp16", "artifact", artifact="onnx_fp16", options=_ort_opts, cpu_threads=True,
                                    description="ONNX Runtime, mixed-precision FP16 model_fp16.onnx"),
    "tensorrt": BackendSpec("tensorrt", "artifact", artifact="tensorrt", options=_trt_opts, probe=_trt_probe,
                            description="TensorRT engine (NVIDIA GPU)"),
    "triton-grpc": BackendSpec("triton-grpc", "triton", protocol="grpc", options=_triton_opts,
                               description="Triton Inference Server over gRPC"),
    "triton-http": BackendSpec("triton-http", "triton", protocol="http", options=_triton_opts,
                               description="Triton Inference Server over HTTP"),
}
DEFAULT_BACKENDS = tuple(BACKENDS)
QUICK_BACKENDS = ("torch", "onnxruntime", "onnxruntime-fp16")
REFERENCE = "torch"


def parse_backends(value) -> list:
    """"torch,onnxruntime" / list / None -> validated list of names (order kept, duplicates dropped)."""
    if value is None:
        return list(DEFAULT_BACKENDS)
    if isinstance(value, str):
        value = [value]
    names = []
    for v in value:
        for n in str(v).split(","):
            n = n.strip().lower()
            if not n:
                continue
            n = {"ort": "onnxruntime", "onnx": "onnxruntime", "ort-fp16": "onnxruntime-fp16", "onnx-fp16": "onnxruntime-fp16",
                 "onnx_fp16": "onnxruntime-fp16", "trt": "tensorrt", "pytorch": "torch", "triton": "triton-grpc"}.get(n, n)
            if n not in BACKENDS:
                raise SegclipError(f"--backends: unknown backend {n!r}; choose from {', '.join(BACKENDS)}")
            if n not in names:
                names.append(n)
    if not names:
        raise SegclipError("--backends: no backend given")
    return names


def artifact_problem(manifest: Optional[dict], key: str) -> Optional[str]:
    """Why an export's artifact cannot be used, from its manifest entry (None if it looks usable)."""
    if manifest is None:
        return None
    art = (manifest.get("artifacts") or {}).get(key)
    if not isinstance(art, dict):
        flag = {"onnx_fp16": " --fp16", "tensorrt": " --trt"}.get(key, "")
        return f"the export has no {key} artifact (re-export with segclip export{flag}, or benchmark the run directory)"
    status = str(art.get("status", "ok"))
    if status in ("ok", "passed", "failed"):  # failed parity: measured anyway, flagged in the notes
        return None
    reason = art.get("reason") or art.get("error") or status
    return f"{key} {status}: {reason}"
