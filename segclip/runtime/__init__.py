"""Runners: one interface over PyTorch, ONNX Runtime, TensorRT and Triton.

``load_runner(path_or_url, **opts)`` picks the backend from what it is given:

* a checkpoint file (``.pt``/``.pth``) or a training run directory -> ``TorchRunner``
  (``device="cpu"|"cuda"``, ``precision``, ``scores``, ``size``);
* an ``.onnx`` file -> ``OnnxRunner`` (``providers="cpu"|"cuda"|"tensorrt"|[...]``, ``threads``), or with
  ``runtime="openvino"`` -> ``OpenVINORunner`` (OpenVINO CPU, ``threads``); a ``model_geodeep.onnx`` (metadata
  ``segclip.artifact`` = geodeep) -> ``GeoDeepRunner``; a file inside an export folder is held to its manifest entry;
* a TensorRT engine ``.plan``/``.engine`` -> ``TensorRTRunner`` (``device``);
* an export directory (has ``manifest.json``, see ``segclip.contract``) -> the artifact named by ``format``
  (a key of ``contract.FORMATS``: "onnx", "onnx_fp16", "onnx_int8", "onnx_int8_cpu", "onnx_int8_msda", "tensorrt", "geodeep", ...);
  default: ``contract.choose_artifact``'s choice -- the fastest gated artifact and runtime measured on this
  CPU, else ``tensorrt`` when built and usable here, else ``onnx``, else ``onnx_fp16`` (``runner.choice``
  says which and why); the ONNX ones on OpenVINO with ``runtime="openvino"``;
  an artifact that failed its parity gate is refused unless ``allow_failed=True``;
* ``grpc://host:port/model`` or ``http://host:port/model`` -> ``segclip.runtime.triton.TritonRunner``.

No runner imports open_clip: the text side is baked into every artifact.
"""
from __future__ import annotations

from segclip.contract import FORMATS, MANIFEST_NAME
from segclip.runtime.base import Runner
from segclip.runtime.loader import load_runner, runner_from_export_dir

__all__ = ["Runner", "load_runner", "runner_from_export_dir", "FORMATS", "MANIFEST_NAME"]
