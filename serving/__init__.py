"""Serving SegCLIP with NVIDIA Triton Inference Server.

* ``segclip.serving.repo``   model repositories generated from an export (``segclip triton-repo``)
* ``segclip.serving.server`` ``TritonServer``: start/stop/readiness (``segclip serve``)
* ``segclip.serving.env``    the server-side venv for the pip server (``segclip serve-env``)
* ``segclip.runtime.triton`` ``TritonRunner``: the client, same interface as the local runners

Triton is the engine (dynamic batching, instances, health, metrics); nothing here re-implements it.
"""
from .env import ENV_VAR, create_server_env, find_server_env
from .repo import ALL_MODELS, MODEL_ONNX, MODEL_PYTHON, MODEL_TRT, build_repository, check_repository
from .server import TritonServer, free_port

__all__ = [
    "ALL_MODELS", "ENV_VAR", "MODEL_ONNX", "MODEL_PYTHON", "MODEL_TRT", "TritonServer", "build_repository",
    "check_repository", "create_server_env", "find_server_env", "free_port",
]
