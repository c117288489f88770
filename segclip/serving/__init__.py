"""Serving SegCLIP with NVIDIA Triton Inference Server.

* ``segclip.serving.repo``   model repositories generated from an export (``segclip triton-repo``)
* ``segclip.serving.server`` ``TritonServer``: start/stop/readiness (``segclip serve``)
* ``segclip.serving.env``    the server-side venv for the pip server (``segclip serve-env``)
* ``segclip.runtime.triton`` ``TritonRunner``: the client, same interface as the local runners

Triton is the engine (dynamic batching, instances, health, metrics); nothing here re-implements it.
Names are imported lazily, so ``segclip serve-env`` needs neither tritonclient nor the exporter.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ENV_VAR": "env", "create_server_env": "env", "find_server_env": "env",
    "ALL_MODELS": "repo", "MODEL_ONNX": "repo", "MODEL_PYTHON": "repo", "MODEL_TRT": "repo",
    "build_repository": "repo", "check_repository": "repo",
    "TritonServer": "server", "free_port": "server", "free_ports": "server", "serve_export": "server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)
