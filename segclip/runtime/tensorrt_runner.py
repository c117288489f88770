"""TensorRT engine runner: ``execute_async_v3`` with torch CUDA tensors as buffers (no pycuda).

It enqueues on its own CUDA stream, created on its own device (TensorRT warns that the default stream
adds synchronisations), and makes that device current while it runs.  Tensor dtypes map by TensorRT
``DataType`` name; an unknown one is an error, never a silent float32.

The engine's manifest entry (``manifest.json`` beside it, read through ``segclip.contract``, written by ``segclip export --trt``) is
checked *before* deserialising: an engine built for another GPU architecture or TensorRT version
gives a clear error saying how to rebuild, never a crash inside TensorRT.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from segclip.contract import (MANIFEST_NAME, TRTEXEC_NAME, artifact_changed, artifact_for_file, manifest_path, manifest_signature,
                              read_manifest)
from segclip.errors import SegclipError, one_line
from segclip.parsers import split_device
from segclip.signature import SCENE_NAME, Signature
from segclip.runtime.base import Runner
from segclip.runtime.msda_plugin import init_trt_plugins

_LOGGER = None


def trt_logger():
    """The process's one TensorRT logger, shared by every builder and runtime: TensorRT considers the
    logger a singleton, "multiple instances of IRuntime and/or IBuilder must all use the same logger"
    (nvinfer1::ILogger, TensorRT C++ API reference, 8.0).  WARNING: builds report rejected tactics
    and fallbacks; nothing below it."""
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


# tensorrt.DataType member name -> torch dtype name
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                 "INT64": "int64", "UINT8": "uint8", "BOOL": "bool"}


def torch_dtype(trt_dtype, where: str = "tensor"):
    """torch dtype of a ``tensorrt.DataType`` (by its member name); SegclipError for any other."""
    import torch

    name = getattr(trt_dtype, "name", None)
    if name not in _TORCH_DTYPES:
        raise SegclipError(f"{where}: TensorRT type {trt_dtype!r} has no torch buffer type here "
                           f"(supported: {', '.join(_TORCH_DTYPES)}); re-export with segclip export")
    return getattr(torch, _TORCH_DTYPES[name])


def _manifest_entry(path: Path):
    """(signature, entry) from the export manifest beside the engine; (None, None) when there is none."""
    if not manifest_path(path).is_file():
        return None, None
    m = read_manifest(path)
    found = artifact_for_file(m, path)
    return manifest_signature(m), (found[1] if found else None)


def _rebuild_hint(path: Path) -> str:
    script = path.parent / TRTEXEC_NAME
    alt = f" or run sh {script}" if script.is_file() else ""
    return f"rebuild the engine on this machine with `segclip export <run dir> --trt`{alt}"


class TensorRTRunner(Runner):
    """Options: ``device`` (CUDA index, default 0), ``signature`` / ``manifest_entry`` (default: from
    ``manifest.json`` beside the engine), ``name``."""

    backend = "tensorrt"

    def __init__(self, path, *, device: int = 0, signature: Optional[Signature] = None,
                 manifest_entry: Optional[dict] = None, name: Optional[str] = None, precision: Optional[str] = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise SegclipError(f"{self.path}: no such TensorRT engine file")
        if signature is None or manifest_entry is None:
            msig, entry = _manifest_entry(self.path)
            if signature is None and msig is None:
                raise SegclipError(f"{self.path}: no {MANIFEST_NAME} beside the engine to say what it computes; "
                                   f"keep the engine in its export directory (segclip export --trt)")
            signature = signature or msig
            manifest_entry = manifest_entry if manifest_entry is not None else entry
        self.entry = manifest_entry or {}
        if isinstance(device, int) or str(device).isdigit():  # a CUDA index (the exporter passes one)
            self.device_index = int(device)
        else:
            kind, index = split_device(device or "cuda")
            if kind != "cuda":
                raise SegclipError(f"{self.path}: a TensorRT engine runs on an NVIDIA GPU, not on {device!r}; give --device "
                                   f"cuda or cuda:N, or use the ONNX artifact on CPU (--format onnx)")
            self.device_index = int(index or 0)
        prof = self.entry.get("profile") or {}
        max_batch = prof.get("max", [None])[0] if prof else None
        self.min_batch = int(prof.get("min", [1])[0] or 1) if prof else 1
        precision = precision or self.entry.get("precision", "fp16" if "fp16" in str(self.entry.get("onnx", "")) else "fp32")
        super().__init__(signature, name=name or f"tensorrt-{precision}", precision=precision, artifact=self.path,
                         max_batch=max_batch)
        self._engine = self._context = self._stream = None

    # ---- compatibility -------------------------------------------------------------------------
    def rebuilt(self) -> bool:
        """Whether the engine file is not the one the manifest describes (``trtexec.sh`` rebuilt it on
        the target): then the recorded TensorRT version and GPU are the old engine's, not this one's."""
        return artifact_changed(self.entry, self.path)

    def check_compatible(self, trt_version: str, compute_capability: str, gpu: str) -> None:
        if self.rebuilt():  # deserialising tells whether it fits this TensorRT
            return
        want_v = self.entry.get("tensorrt_version")
        want_cc = self.entry.get("compute_capability")
        problems = []
        if want_v and want_v.split(".")[:3] != trt_version.split(".")[:3]:
            problems.append(f"TensorRT {want_v} (here {trt_version})")
        if want_cc and want_cc != compute_capability:
            problems.append(f"compute capability {want_cc} / {self.entry.get('gpu', '?')} (here {compute_capability} / {gpu})")
        if problems:
            raise SegclipError(f"{self.path}: engine built for {' and '.join(problems)}; TensorRT engines are tied to the GPU "
                               f"architecture and TensorRT version: {_rebuild_hint(self.path)}")

    def _activate(self) -> None:
        try:
            import tensorrt as trt
        except ImportError:
            raise SegclipError(f"{self.path}: the tensorrt Python package is not installed; pip install 'segclip[gpu]' "
                               f"(or use the ONNX artifact: load_runner(dir, format='onnx'))") from None
        import torch

        if not torch.cuda.is_available():
            raise SegclipError(f"{self.path}: TensorRT engines need an NVIDIA GPU and none is visible here; "
                               f"use the ONNX artifact on CPU (format='onnx')")
        from segclip.parsers import check_device

        check_device(f"cuda:{self.device_index}", flag=f"{self.path}: device")  # an index this machine has
        cc = torch.cuda.get_device_capability(self.device_index)
        self.check_compatible(trt.__version__, f"{cc[0]}.{cc[1]}", torch.cuda.get_device_name(self.device_index))
        data = self.path.read_bytes()
        logger = trt_logger()  # one per process (TensorRT treats the logger as a singleton)
        init_trt_plugins(trt, logger)  # an engine of the plugin form holds MultiscaleDeformableAttnPlugin_TRT
        self._trt_runtime = trt.Runtime(logger)
        try:
            with torch.cuda.device(self.device_index):  # the engine's memory lives on the runner's device
                engine = self._trt_runtime.deserialize_cuda_engine(data)
        except Exception as e:
            engine = None
            err = one_line(e)
        else:
            err = "deserialize_cuda_engine returned None"
        if engine is None:
            raise SegclipError(f"{self.path}: cannot load TensorRT engine ({err}): the file is truncated, corrupt or built by "
                               f"another TensorRT version; {_rebuild_hint(self.path)}")
        self._engine = engine
        with torch.cuda.device(self.device_index):
            self._context = engine.create_execution_context()
            self._stream = torch.cuda.Stream(device=self.device_index)
        if self._context is None:  # TensorRT returns None (no exception) when the activation memory does not fit
            raise SegclipError(f"{self.path}: TensorRT could not create an execution context on cuda:{self.device_index} "
                               f"(out of GPU memory?); free GPU memory or re-export with a smaller --batch maximum")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        want = {t.name: t.dtype for t in self.signature.inputs}  # image (+ scene_id)
        want_in = self.signature.inputs[0].name
        if sorted(self._inputs) != sorted(want):
            raise SegclipError(f"{self.path}: engine inputs {self._inputs} do not match the signature {sorted(want)}; re-export")
        self._dtypes = {n: torch_dtype(engine.get_tensor_dtype(n), f"{self.path}: tensor '{n}'") for n in names}
        for n, dt in want.items():
            if self._dtypes[n] != getattr(torch, dt):
                raise SegclipError(f"{self.path}: engine input '{n}' is {self._dtypes[n]}, not {dt}; re-export with segclip export")
        try:
            _, _, mx = engine.get_tensor_profile_shape(want_in, 0)
            self.max_batch = int(mx[0])
        except Exception:
            pass

    def _deactivate(self) -> None:
        self._context = None
        self._engine = None
        self._stream = None

    def _infer(self, images: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:
        import torch

        dev = torch.device("cuda", self.device_index)
        feed = {self.signature.inputs[0].name: images}
        if scene_ids is not None:
            feed[SCENE_NAME] = scene_ids
        n = images.shape[0]
        if n < self.min_batch:  # a profile of --batch 2:4:8 takes no batch of 1: pad with the last image, drop after
            feed = {k: np.concatenate([a, np.repeat(a[-1:], self.min_batch - n, axis=0)]) for k, a in feed.items()}
        ctx, stream = self._context, self._stream
        with torch.cuda.device(dev), torch.cuda.stream(stream):  # own device and stream for copies and enqueue
            keep = []  # device buffers must outlive execute_async_v3
            for name_in, arr in feed.items():
                x = torch.from_numpy(arr).to(dev, non_blocking=True)
                if not ctx.set_input_shape(name_in, tuple(x.shape)):
                    raise SegclipError(f"{self.name}: input '{name_in}' shape {tuple(x.shape)} is outside the engine's "
                                       f"optimisation profile; re-export with a matching --batch/--size")
                ctx.set_tensor_address(name_in, x.data_ptr())
                keep.append(x)
            outs = {}
            for n in self._outputs:
                t = torch.empty(tuple(ctx.get_tensor_shape(n)), dtype=self._dtypes[n], device=dev)
                ctx.set_tensor_address(n, t.data_ptr())
                outs[n] = t
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise SegclipError(f"{self.name}: TensorRT execution failed (execute_async_v3 returned False)")
            res = {n: (t.float() if t.dtype == torch.bfloat16 else t).to("cpu", non_blocking=True) for n, t in outs.items()}
        stream.synchronize()
        return {k: t.numpy()[:n] for k, t in res.items()}

    def _device(self) -> str:
        try:
            import torch

            return f"cuda:{self.device_index} ({torch.cuda.get_device_name(self.device_index)})"
        except Exception:
            return f"cuda:{self.device_index}"

    def describe(self) -> dict:
        d = super().describe()
        d["tensorrt_version"] = self.entry.get("tensorrt_version")
        d["compute_capability"] = self.entry.get("compute_capability")
        return d
