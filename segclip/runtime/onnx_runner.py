"""ONNX Runtime runner: CPU, CUDA or TensorRT execution provider.

The signature comes from the model's own metadata (``segclip.signature``, written by
``segclip export``), so a bare ``.onnx`` file is self-describing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from segclip.contract import META_PRECISION, META_SIGNATURE
from segclip.errors import SegclipError, one_line
from segclip.parsers import split_device
from segclip.signature import SCENE_NAME, Signature
from segclip.runtime.base import Runner
from segclip.runtime.msda_plugin import META_PLUGINS, reference_session, refusal

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def corrupt_onnx_error(path, e: BaseException) -> SegclipError:
    return SegclipError(
        f"{path}: cannot load ONNX model ({one_line(e, 120)}): the file is truncated or corrupt; re-export with segclip export"
    )


def read_onnx_metadata(path) -> dict:
    """``metadata_props`` of an ONNX file as a dict (one-line error for a missing/corrupt file)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise SegclipError(f"{p}: no such ONNX file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise corrupt_onnx_error(p, e) from None
    if len(model.graph.node) == 0 or not model.graph.input:
        raise corrupt_onnx_error(p, ValueError("empty graph"))
    return {m.key: m.value for m in model.metadata_props}


def signature_from_onnx(path, meta: Optional[dict] = None) -> Signature:
    meta = read_onnx_metadata(path) if meta is None else meta
    if META_SIGNATURE not in meta:
        raise SegclipError(f"{path}: no '{META_SIGNATURE}' in the ONNX metadata: not a segclip export; export it with segclip export")
    try:
        return Signature.from_json(meta[META_SIGNATURE])
    except (ValueError, TypeError, KeyError) as e:
        raise SegclipError(f"{path}: unreadable '{META_SIGNATURE}' metadata ({one_line(e)}); re-export with segclip export") from None


# What each GPU provider loads when a session is created -- ONNX Runtime's requirement tables: the CUDA EP
# of onnxruntime-gpu >= 1.19 needs CUDA 12.x and cuDNN 9 (onnxruntime.ai/docs/execution-providers/
# CUDA-ExecutionProvider.html#requirements); its TensorRT EP is built with TensorRT 10.x (1.18: 10.0 ...
# 1.22: 10.9, TensorRT-ExecutionProvider.html#requirements), i.e. it loads libnvinfer.so.10.
GPU_PROVIDER_LIBS = {"CUDAExecutionProvider": ("libcudart.so.12", "libcublasLt.so.12", "libcudnn.so.9"),
                     "TensorrtExecutionProvider": ("libnvinfer.so.10", "libnvonnxparser.so.10")}


def _unloadable(libs) -> list:
    import ctypes

    out = []
    for lib in libs:
        try:
            ctypes.CDLL(lib)
        except OSError:
            out.append(lib)
    return out


def check_providers(session, requested, where) -> None:
    """A session that was asked for a GPU provider and did not get it is an error, never a silent CPU
    run: ONNX Runtime drops a provider whose libraries fail to load with only a log warning (and
    segclip's sessions log errors only), so a "cuda" benchmark row could be CPU."""
    import onnxruntime as ort

    got = list(session.get_providers())
    names = [p[0] if isinstance(p, tuple) else p for p in requested]
    missing = [n for n in names if n in GPU_PROVIDER_LIBS and n not in got]
    if not missing:
        return
    why = []
    for n in missing:
        libs = _unloadable(GPU_PROVIDER_LIBS[n])
        why.append(f"{n} needs {', '.join(GPU_PROVIDER_LIBS[n])}" + (f" and {', '.join(libs)} cannot be loaded here" if libs else ""))
    if "TensorrtExecutionProvider" in missing:
        try:
            import tensorrt as trt

            why.append(f"tensorrt {trt.__version__} is installed (onnxruntime's TensorRT EP is built for TensorRT 10)")
        except ImportError:
            why.append("the tensorrt package is not installed")
    raise SegclipError(f"{where}: ONNX Runtime {ort.__version__} was asked for {', '.join(missing)} and runs on "
                       f"{', '.join(got)} instead ({'; '.join(why)}): install segclip[gpu] with a matching CUDA/cuDNN/"
                       f"TensorRT, or ask for providers='cpu'")


def resolve_providers(providers=None, device_id: int = 0, cache_dir: Optional[str] = None) -> list:
    """"cpu" | "cuda" | "tensorrt" | list of names/(name, options) -> ORT providers list, checked
    against what this onnxruntime build offers.  ``None``: CUDA when available, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        providers = ["cuda"] if "CUDAExecutionProvider" in available else ["cpu"]
    if isinstance(providers, (str, tuple)):
        providers = [providers]
    out = []
    for p in providers:
        name, opts = (p if isinstance(p, tuple) else (p, None))
        name = _PROVIDER_ALIASES.get(str(name).lower(), name)
        if name not in available:
            hint = "install onnxruntime-gpu (pip install segclip[gpu])" if name != "CPUExecutionProvider" else ""
            raise SegclipError(f"onnxruntime {ort.__version__} here offers {available}, not {name}; {hint or 'use providers=cpu'}")
        if opts is None:
            if name == "CUDAExecutionProvider":
                opts = {"device_id": device_id}
            elif name == "TensorrtExecutionProvider":
                opts = {"device_id": device_id, "trt_engine_cache_enable": True, "trt_timing_cache_enable": True}
                if cache_dir:
                    opts.update(trt_engine_cache_path=cache_dir, trt_timing_cache_path=cache_dir)
        out.append((name, opts) if opts else name)
    names = [p[0] if isinstance(p, tuple) else p for p in out]
    # GPU providers fall back node by node: keep CUDA behind TensorRT and CPU last.
    if "TensorrtExecutionProvider" in names and "CUDAExecutionProvider" not in names and "CUDAExecutionProvider" in available:
        out.append(("CUDAExecutionProvider", {"device_id": device_id}))
        names.append("CUDAExecutionProvider")
    if "CPUExecutionProvider" not in names:
        out.append("CPUExecutionProvider")
    return out


class OnnxRunner(Runner):
    """Options: ``providers`` ("cpu", "cuda", "tensorrt" or an ORT providers list; default CUDA when
    available else CPU), ``threads`` (intra-op threads), ``device_id``, ``signature`` (override the
    metadata), ``name``, ``precision`` (default: from metadata), ``optimization`` ("all", "extended",
    "basic", "disable"), ``device`` ("cpu"/"cuda[:i]", shorthand for ``providers``), ``memory_arena``
    (default True; False returns activation memory to the system after each run -- ORT's CPU arena
    grows in powers of two and keeps its peak, about 2x the model's need for 1024 px batches),
    ``reference_ops`` (run a TensorRT plugin graph on the CPU through segclip's reference of the plugin op,
    ``segclip.runtime.msda_plugin``; without it such a graph is refused by name)."""

    backend = "onnxruntime"

    def __init__(self, path, *, providers=None, threads: Optional[int] = None, device_id: int = 0,
                 signature: Optional[Signature] = None, name: Optional[str] = None, precision: Optional[str] = None,
                 optimization: str = "all", device: Optional[str] = None, memory_arena: bool = True,
                 reference_ops: bool = False):
        self.path = Path(path)
        if providers is None and device is not None:  # the generic option of load_runner/predict
            kind, index = split_device(device)
            providers = kind
            device_id = device_id if index is None else index
        self.meta = meta = read_onnx_metadata(self.path)  # kept: subclasses read their keys without another parse
        if signature is None:
            signature = signature_from_onnx(self.path, meta)  # one parse of the file, not two
        precision = precision or meta.get(META_PRECISION, "fp32")
        self.reference_ops = bool(reference_ops)
        if meta.get(META_PLUGINS) and not self.reference_ops:
            raise refusal(self.path, "ONNX Runtime", [meta[META_PLUGINS]])
        self.providers = resolve_providers(providers, device_id, cache_dir=str(self.path.parent / "ort_trt_cache"))
        self.threads = threads
        self.optimization = optimization
        self.memory_arena = memory_arena
        super().__init__(signature, name=name or f"onnx-{precision}", precision=precision, artifact=self.path)
        self._session = None
        self._outputs = None

    def _activate(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        so.graph_optimization_level = levels[self.optimization]
        so.enable_cpu_mem_arena = bool(self.memory_arena)
        try:
            if self.reference_ops:  # the TensorRT plugin graph, on the CPU reference of its plugin op
                sess = reference_session(self.path, so, providers=["CPUExecutionProvider"])
            else:
                sess = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers)
        except SegclipError:
            raise
        except Exception as e:
            raise corrupt_onnx_error(self.path, e) from None
        if not self.reference_ops:  # a reference-op session runs on the CPU by design
            check_providers(sess, self.providers, self.path)  # here, not in _check_io: subclasses replace that
        self._session, self._outputs = sess, self._check_io(sess)

    def _check_io(self, sess) -> list:
        """The session's output names, after checking its inputs and outputs against the signature."""
        got = {i.name: i.type for i in sess.get_inputs()}
        want = {t.name: f"tensor({t.dtype})" for t in self.signature.inputs}
        if got != want:
            raise SegclipError(f"{self.path}: inputs {got} do not match the signature {want}; re-export with segclip export")
        outs = [o.name for o in sess.get_outputs()]
        want = [t.name for t in self.signature.outputs]
        if sorted(outs) != sorted(want):
            raise SegclipError(f"{self.path}: outputs {outs} do not match the signature {want}; re-export with segclip export")
        return outs

    def _deactivate(self) -> None:
        self._session = None

    def _infer(self, images: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:
        feed = {self.signature.inputs[0].name: images}
        if scene_ids is not None:
            feed[SCENE_NAME] = scene_ids
        res = self._session.run(self._outputs, feed)
        return dict(zip(self._outputs, res))

    def _providers(self) -> list:
        if self._session is not None:
            return list(self._session.get_providers())
        return [p[0] if isinstance(p, tuple) else p for p in self.providers]

    def _device(self) -> str:
        provs = self._providers()
        if provs and provs[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            return "cuda"
        return "cpu"
