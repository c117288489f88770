"""The TensorRT API as the code uses it: every name listed in ``TRT_NAMES`` exists in the installed
``tensorrt`` (where it is importable), and the code uses no ``trt.`` name or TensorRT method outside
that list (checked here on any machine by reading the source)."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from segclip.export.tensorrt import TRT_NAMES

SOURCES = [Path(__file__).resolve().parents[1] / "segclip" / p for p in ("export/tensorrt.py", "runtime/tensorrt_runner.py")]
# methods called on TensorRT objects (builder, config, network parser, engine, context, ...) in those files
TRT_OBJECTS = {"builder": "Builder", "config": "IBuilderConfig", "parser": "OnnxParser", "profile": "IOptimizationProfile",
               "engine": "ICudaEngine", "ctx": "IExecutionContext", "_trt_runtime": "Runtime", "cache": "ITimingCache"}


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _names_in_source() -> set:
    used = set()
    for src in SOURCES:
        for node in ast.walk(ast.parse(src.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            d = _dotted(node)
            if not d:
                continue
            head, _, rest = d.partition(".")
            head = head.lstrip("_") if head == "_trt_runtime" else head
            if head == "trt" and rest:
                used.add(rest)
            elif head == "self" and rest.startswith("_trt_runtime."):
                used.add("Runtime." + rest.split(".", 1)[1])
            elif head in TRT_OBJECTS and rest:
                used.add(f"{TRT_OBJECTS[head]}.{rest.split('.')[0]}")
    return used


def test_code_uses_only_listed_tensorrt_names():
    used = _names_in_source()
    assert {"BuilderFlag.TF32", "IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address"} <= used
    assert used - set(TRT_NAMES) == set(), "TensorRT names used but not in TRT_NAMES"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt not installed (checked on GPU machines)")
def test_listed_names_exist_in_installed_tensorrt():
    import tensorrt as trt

    missing = []
    for name in TRT_NAMES:
        obj = trt
        for part in name.split("."):
            if not hasattr(obj, part):
                missing.append(name)
                break
            obj = getattr(obj, part)
    assert not missing, f"tensorrt {trt.__version__} lacks {missing}"
    from segclip.runtime.tensorrt_runner import _TORCH_DTYPES

    assert set(_TORCH_DTYPES) <= set(trt.DataType.__members__)


def test_dtype_map_by_name_raises_on_unknown():
    import enum

    import torch

    from segclip.errors import SegclipError
    from segclip.runtime.tensorrt_runner import torch_dtype

    DataType = enum.Enum("DataType", "FLOAT HALF UINT8 FP8 INT4")  # stands in for tensorrt.DataType's member names
    assert torch_dtype(DataType.FLOAT) is torch.float32 and torch_dtype(DataType.HALF) is torch.float16
    assert torch_dtype(DataType.UINT8) is torch.uint8
    with pytest.raises(SegclipError, match="TensorRT type .*FP8.* has no torch buffer type"):
        torch_dtype(DataType.FP8, "engine")
