"""``segclip export``: checkpoint -> ONNX (FP32), FP16, INT8, GeoDeep ONNX, TensorRT engine, each behind a parity gate.

    from segclip.export import export
    manifest = export("runs/small", fp16=True)          # -> runs/small/export/{model.onnx, model_fp16.onnx, manifest.json}

One import path per name: what an export directory holds is read through ``segclip.contract``
(``read_manifest``, ``manifest_signature``), the ``--batch``/``--size``/``--data`` parsers are
``segclip.parsers``; this face re-exports only names of this package.

This package face only re-exports names; where each one lives:

* ``exporter``       ``Exporter`` (one method per format) and ``export()``;
* ``onnx_export``    trace, simplify, check and stamp the ONNX graph;
* ``fp16``           the mixed-precision FP16 conversion;
* ``tensorrt``       the strongly typed TensorRT build and ``trtexec.sh``;
* ``parity_images``  the images the parity gate runs (compared by ``segclip.inference.compare``);
* ``int8``           calibrated Q/DQ INT8 graphs; ``activations`` the passes over exposed activations;
* ``trt_check``      the graph's ops against TensorRT's documented ONNX support;
* ``msda``           the TensorRT graph's deformable attention: plugin or GridSample form;
* ``geodeep``        the GIS tools' contract (GeoDeep, QGIS Deepness): ``model_geodeep.onnx``.
"""
from __future__ import annotations

from segclip.export.exporter import DEFAULT_SIZE, ONNX_FP16_NAME, ONNX_NAME, Exporter, default_out_dir, export
from segclip.export.parity_images import parity_images, synthetic_images

__all__ = [
    "export", "Exporter", "default_out_dir", "ONNX_NAME", "ONNX_FP16_NAME", "DEFAULT_SIZE", "parity_images",
    "synthetic_images",
]
