"""OpenVINO runner: the same ``model.onnx`` / ``model_int8.onnx`` on OpenVINO's CPU plugin.

On x86 CPUs OpenVINO may be the fastest path (its oneDNN kernels run Q/DQ graphs as INT8 and FP32
graphs at the GEMM rate), and Triton has an OpenVINO backend for the same files.  The signature
comes from the ONNX metadata like ``OnnxRunner``.  The model is compiled for the exact input shape
of each call (static shapes run fastest; one compile per batch size, kept; a batch smaller than one
already compiled runs padded on it) with the precision hint
pinned to f32, so an FP32 graph is not silently run in bf16 on CPUs that have it.

A graph in the plugin form of the deformable attention (``model_int8_msda.onnx``) runs through segclip's
OpenVINO kernel of that op (``segclip.runtime.ov_extension``); other TensorRT plugin ops are refused.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from segclip.errors import SegclipError, one_line
from segclip.runtime.base import Runner
from segclip.runtime import ov_extension
from segclip.runtime.msda_plugin import META_PLUGINS, PLUGIN_NAME, refusal
from segclip.contract import META_PRECISION
from segclip.runtime.onnx_runner import corrupt_onnx_error, read_onnx_metadata, signature_from_onnx
from segclip.signature import SCENE_NAME, Signature


class OpenVINORunner(Runner):
    """Options: ``threads`` (inference threads), ``device`` (OpenVINO device, default "CPU"),
    ``signature`` (override the metadata), ``name``, ``precision`` (default: from metadata)."""

    backend = "openvino"

    def __init__(self, path, *, threads: Optional[int] = None, device: Optional[str] = None,
                 signature: Optional[Signature] = None, name: Optional[str] = None, precision: Optional[str] = None):
        self.path = Path(path)
        meta = read_onnx_metadata(self.path)
        if signature is None:
            signature = signature_from_onnx(self.path, meta)
        precision = precision or meta.get(META_PRECISION, "fp32")
        plugins = meta.get(META_PLUGINS)
        if plugins and plugins != PLUGIN_NAME:  # a TensorRT plugin segclip has no OpenVINO kernel of
            raise refusal(self.path, "OpenVINO", [plugins])
        # the plugin form of the deformable attention: segclip's kernel, loaded (or built) when activated
        self._extension = (ov_extension.read_record(meta) or {}) if plugins else None
        self.threads = threads
        self.ov_device = "CPU" if device in (None, "cpu") else str(device)
        super().__init__(signature, name=name or f"openvino-{precision}", precision=precision, artifact=self.path)
        self._model = None
        self._compiled = {}  # input shape -> (compiled model, infer request)

    def _activate(self) -> None:
        import openvino as ov

        self._core = ov.Core()
        if self.ov_device not in self._core.available_devices:
            raise SegclipError(f"{self.name}: OpenVINO {ov.__version__} offers {self._core.available_devices}, "
                               f"not {self.ov_device}; use device='cpu'")
        if self._extension is not None:
            if self.ov_device != "CPU":
                raise SegclipError(f"{self.path}: segclip's deformable-attention kernel runs on OpenVINO's CPU only; "
                                   f"use device='cpu', or model_int8.onnx (--format onnx_int8) on {self.ov_device}")
            ov_extension.add_to(self._core, self.path, self._extension, log=lambda s: print(f"note: {s}", file=sys.stderr))
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as e:
            raise corrupt_onnx_error(self.path, e) from None
        names = [o.get_any_name() for o in self._model.outputs]
        want = [t.name for t in self.signature.outputs]
        if sorted(names) != sorted(want):
            raise SegclipError(f"{self.path}: outputs {names} do not match the signature {want}; re-export with segclip export")

    def _config(self) -> dict:
        cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        return cfg

    def _request(self, shape: tuple):
        if shape not in self._compiled:
            m = self._model.clone()
            # static shapes for every input: the image, and the per-image scene ids of a metadata model
            m.reshape({t.name: [shape[0]] if t.name == SCENE_NAME else list(shape) for t in self.signature.inputs})
            try:
                compiled = self._core.compile_model(m, self.ov_device, self._config())
            except Exception as e:
                raise SegclipError(f"{self.path}: OpenVINO cannot compile the model for input {shape} ({one_line(e)})") from None
            self._compiled[shape] = (compiled, compiled.create_infer_request())
        return self._compiled[shape]

    def _deactivate(self) -> None:
        self._compiled = {}
        self._model = None

    def _infer(self, images: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:
        n = len(images)
        # a smaller batch (a scene's or an image's last windows) runs padded on a shape already compiled
        # for a larger one: one compile per run instead of one more per partial batch (seconds for r50)
        bigger = sorted(s[0] for s in self._compiled if s[0] > n and s[1:] == images.shape[1:])
        if bigger and tuple(images.shape) not in self._compiled:
            pad = bigger[0] - n
            images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
            if scene_ids is not None:
                scene_ids = np.concatenate([scene_ids, np.repeat(scene_ids[-1:], pad, axis=0)])
        compiled, req = self._request(tuple(images.shape))
        feed = {self.signature.inputs[0].name: images}
        if scene_ids is not None:
            feed[SCENE_NAME] = scene_ids
        req.infer(feed)
        return {o.get_any_name(): np.array(req.get_tensor(o).data)[:n] for o in compiled.outputs}

    def _device(self) -> str:
        return self.ov_device.lower()

    def _providers(self) -> list:
        return [f"openvino:{self.ov_device}"]
