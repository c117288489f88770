"""The benchmark's backends as data: how each one's runner is made, nothing else.

Measurement code loops over runners and never asks which backend it holds (Polygraphy style).  A
backend that cannot be created here (no GPU, tensorrt not installed, no Triton server) becomes a
row whose status says why (Ultralytics style), never a crash.

Every spec names where its runner comes from:

* ``checkpoint``: the PyTorch reference (``SegCLIPInference``, the module that is exported);
* ``artifact``: an artifact of the export directory (``manifest.json`` key: onnx, onnx_fp16,
  onnx_int8, onnx_int8_cpu, onnx_int8_msda, tensorrt), through ``segclip.runtime.load_runner(export_dir, format=...)``
  (``runtime="openvino"`` in the options for the OpenVINO rows);
* ``triton``: a model URL on a Triton server (``grpc://`` or ``http://``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from segclip.contract import tensorrt_unavailable_reason
from segclip.errors import SegclipError
from segclip.parsers import split_device, split_list, unique


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
    if split_device(ctx.device)[1] is not None:
        return {"device": ctx.device, "threads": ctx.threads}
    return {"providers": "cpu" if ctx.device == "cpu" else None, "threads": ctx.threads}


def _torch_compile_opts(ctx) -> dict:
    return {**_torch_opts(ctx), "compile": True, "name": "torch-compile"}


def _openvino_opts(ctx) -> dict:
    return {"runtime": "openvino", "threads": ctx.threads}


def _openvino_probe(ctx) -> Optional[str]:
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'segclip[openvino]')"
    if ctx.device != "cpu":
        return "segclip's OpenVINO rows run on the CPU; benchmark with --device cpu"
    return None


def _torch_compile_probe(ctx) -> Optional[str]:
    import shutil

    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        return "torch.compile (inductor) needs a C/C++ compiler on the CPU and none is on PATH"
    return None


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
    # INT8 Q/DQ: the uint8-activation graph ONNX Runtime runs fastest on x86; OpenVINO runs the symmetric one
    "onnxruntime-int8": BackendSpec("onnxruntime-int8", "artifact", artifact="onnx_int8_cpu", options=_ort_opts),
    "openvino": BackendSpec("openvino", "artifact", artifact="onnx", options=_openvino_opts, probe=_openvino_probe),
    "openvino-int8": BackendSpec("openvino-int8", "artifact", artifact="onnx_int8", options=_openvino_opts,
                                 probe=_openvino_probe),
    # the same INT8 graph with segclip's fused deformable-attention kernel instead of GridSample
    "openvino-int8-msda": BackendSpec("openvino-int8-msda", "artifact", artifact="onnx_int8_msda", options=_openvino_opts,
                                      probe=_openvino_probe),
    # torch.compile (inductor) FP32: what a PyTorch user would try instead of exporting
    "torch-compile": BackendSpec("torch-compile", "checkpoint", options=_torch_compile_opts, probe=_torch_compile_probe),
    "tensorrt": BackendSpec("tensorrt", "artifact", artifact="tensorrt", options=_trt_opts, probe=_trt_probe),
    "triton-grpc": BackendSpec("triton-grpc", "triton", protocol="grpc", options=_triton_opts),
    "triton-http": BackendSpec("triton-http", "triton", protocol="http", options=_triton_opts),
}
DEFAULT_BACKENDS = tuple(BACKENDS)
QUICK_BACKENDS = ("torch", "onnxruntime", "onnxruntime-fp16")
REFERENCE = "torch"
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ort-fp16": "onnxruntime-fp16", "onnx-fp16": "onnxruntime-fp16",
           "onnx_fp16": "onnxruntime-fp16", "trt": "tensorrt", "pytorch": "torch", "triton": "triton-grpc",
           "ort-int8": "onnxruntime-int8", "onnx-int8": "onnxruntime-int8", "onnx_int8": "onnxruntime-int8",
           "ov": "openvino", "ov-int8": "openvino-int8", "ov-int8-msda": "openvino-int8-msda", "compile": "torch-compile"}


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
