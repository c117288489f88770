"""``DIR/manifest.json``: what an export directory holds, for runners, Triton and people.

Schema (``format_version`` 1)::

    {
      "format": "segclip-export", "format_version": 1,
      "segclip_version": "0.1.0", "created": "2026-11-21T05:40:00Z",
      "status": "ok" | "failed",                 # failed: some artifact failed its parity gate
      "source": {"checkpoint": path, "sha256": ..., "dataset": ..., "model_config": {...}},
      "signature": Signature.to_dict(),          # the same for every artifact of the directory
      "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "height": H|null, "width": W|null,
                "dynamic_size": bool, "batch": {"min": 1, "opt": 1, "max": 8},
                "normalization": {"mean": [...], "std": [...], "scale": "0..255", "inside_graph": true}},
      "classes": [...], "palette": [[r, g, b], ...],
      "opset": 17,
      "parity": {"images": N, "source": "sample:..."|"data:..."|"synthetic", "labels": bool,
                 "reference": {"name": "torch-fp32", "miou": ...}, "table": "<the printed table>"},
      "artifacts": {
        "onnx":      {"file": "model.onnx", "format": "onnx", "precision": "fp32", "status": "ok",
                      "sha256": <file bytes>, "graph_sha256": <sha256 of the serialised GraphProto>,
                      "size_bytes": ..., "opset": 17, "ops": {"Conv": 26, ...}, "export_seconds": ...,
                      "parity": {"pixel_agreement": ..., "max_abs_diff": ..., "mean_abs_diff": ...,
                                 "miou": ..., "miou_delta": ..., "threshold": 0.999, "status": "ok"}},
        "onnx_fp16": {..., "precision": "fp16", "fp16": {"fp32_nodes": [{"name", "op_type", "reason"}], ...}},
        "tensorrt":  {"file": "model.plan", "precision": ..., "onnx": "model_fp16.onnx", "onnx_sha256": ...,
                      "tensorrt_version": ..., "gpu": ..., "compute_capability": "8.7",
                      "profile": {"min": [...], "opt": [...], "max": [...]}, "timing_cache": "timing.cache",
                      "strongly_typed": true}
                   | {"status": "not_built", "reason": ..., "trtexec": "trtexec.sh"}
      },
      "trtexec": "trtexec.sh"                    # when --trt was asked for
    }

Hashes: ``sha256`` is the sha256 of the artifact file as written (check it with ``sha256sum``).
``graph_sha256`` is the sha256 of ``model.graph.SerializeToString(deterministic=True)``: nodes and
weights without the metadata, so it is also stored *inside* the ONNX metadata
(``segclip.graph_sha256``) and identifies the computation independently of the metadata.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from segclip.errors import SegclipError
from segclip.atomic import atomic_write_text

MANIFEST_NAME = "manifest.json"
FORMAT = "segclip-export"
FORMAT_VERSION = 1


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory, manifest: dict) -> Path:
    return atomic_write_text(Path(directory) / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(directory) -> dict:
    """The manifest of an export directory (or of the directory holding a given artifact file)."""
    d = Path(directory)
    path = d if d.name == MANIFEST_NAME else (d / MANIFEST_NAME if d.is_dir() else d.parent / MANIFEST_NAME)
    if not path.is_file():
        raise SegclipError(f"{d}: no {MANIFEST_NAME}; is this a segclip export directory (made by segclip export)?")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SegclipError(f"{path}: unreadable export manifest ({type(e).__name__}: {str(e).splitlines()[0][:100]}); re-export with segclip export") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise SegclipError(f"{path}: not a segclip export manifest (no '{FORMAT}' marker)")
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise SegclipError(f"{path}: export manifest v{m['format_version']} is newer than this segclip reads (v{FORMAT_VERSION}); upgrade segclip")
    return m


def manifest_signature(manifest: dict):
    from segclip.signature import Signature

    try:
        return Signature.from_dict(manifest["signature"])
    except (KeyError, TypeError, ValueError) as e:
        raise SegclipError(f"export manifest: unreadable signature ({type(e).__name__}: {e}); re-export with segclip export") from None
