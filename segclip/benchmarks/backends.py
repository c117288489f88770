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

from segclip.contract import tensorrt_unavailable_reason
from segclip.errors import SegclipError
from segclip.parsers import split_list, unique


@dataclass(frozen=True)
class BackendSpec:
    name: str
    source: str  # "checkpoint" | "artifact" | "triton"
    artifact: Optional[str] = None  # manifest artifacts key, for source == "artifact"
    protocol: Optional[str] = None  # for source == "triton"
    options: Callable = field(default=lambda ctx: {})  # ctx -> load_runner options
    probe: Optional[Callable] = None  # ctx -> None, or why this backend cannot run on this machine at all


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
    return tensorrt_unavailable_reason()


def _triton_opts(ctx) -> dict:
    return {"shm": ctx.triton_shm}


BACKENDS = {
    # PyTorch eager FP32: the reference every other row is compared with
    "torch": BackendSpec("torch", "checkpoint", options=_torch_opts),
    "onnxruntime": BackendSpec("onnxruntime", "artifact", artifact="onnx", options=_ort_opts),
    "onnxruntime-fp16": BackendSpec("onnxruntime-fp16", "artifact", artifact="onnx_fp16", options=_ort_opts),
    "tensorrt": BackendSpec("tensorrt", "artifact", artifact="tensorrt", options=_trt_opts, probe=_trt_probe),
    "triton-grpc": BackendSpec("triton-grpc", "triton", protocol="grpc", options=_triton_opts),
    "triton-http": BackendSpec("triton-http", "triton", protocol="http", options=_triton_opts),
}
DEFAULT_BACKENDS = tuple(BACKENDS)
QUICK_BACKENDS = ("torch", "onnxruntime", "onnxruntime-fp16")
REFERENCE = "torch"
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ort-fp16": "onnxruntime-fp16", "onnx-fp16": "onnxruntime-fp16",
           "onnx_fp16": "onnxruntime-fp16", "trt": "tensorrt", "pytorch": "torch", "triton": "triton-grpc"}


def parse_backends(value) -> list:
    """"torch,onnxruntime" / list / None -> validated list of names (order kept, duplicates dropped)."""
    if value is None:
        return list(DEFAULT_BACKENDS)
    names = [ALIASES.get(str(n).lower(), str(n).lower()) for n in split_list(value)]
    for n in names:
        if n not in BACKENDS:
            raise SegclipError(f"--backends: unknown backend {n!r}; choose from {', '.join(BACKENDS)}")
    names = unique(names)
    if not names:
        raise SegclipError("--backends: no backend given")
    return names
