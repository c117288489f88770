"""``segclip export``: checkpoint -> ONNX (FP32), FP16 ONNX, TensorRT engine, each behind a parity gate.

    from segclip.export import export, read_manifest
    manifest = export("runs/small", fp16=True)          # -> runs/small/export/{model.onnx, model_fp16.onnx, manifest.json}

This package face only re-exports names; where each one lives:

* ``exporter``       ``Exporter`` (one method per format) and ``export()``;
* ``onnx_export``    trace, simplify, check and stamp the ONNX graph;
* ``fp16``           the mixed-precision FP16 conversion;
* ``tensorrt``       the strongly typed TensorRT build and ``trtexec.sh``;
* ``parity``         the comparator (PyTorch vs every artifact), also used by ``segclip benchmark``;
* ``parity_images``  the images the parity gate runs;
* ``segclip.contract``  the manifest and what an export directory holds (read by runtime, serving,
  benchmarks without importing this package);
* ``segclip.parsers``   the ``--batch``/``--size``/``--data`` parsers shared with the CLI.
"""
from __future__ import annotations

from segclip.contract import MANIFEST_NAME, manifest_signature, read_manifest, sha256_file, write_manifest
from segclip.export.exporter import DEFAULT_SIZE, ONNX_FP16_NAME, ONNX_NAME, Exporter, default_out_dir, export
from segclip.export.parity_images import parity_images, synthetic_images
from segclip.parsers import parse_batch, parse_data, parse_size

__all__ = [
    "export", "Exporter", "default_out_dir", "read_manifest", "write_manifest", "manifest_signature", "sha256_file",
    "MANIFEST_NAME", "ONNX_NAME", "ONNX_FP16_NAME", "DEFAULT_SIZE", "parity_images", "synthetic_images",
    "parse_batch", "parse_size", "parse_data",
]
