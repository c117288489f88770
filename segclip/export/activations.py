"""Passes over a graph's intermediate activations (the FP16 range pass, the INT8 sensitivity
ranking): the tensors are exposed as graph outputs of a CPU session with graph optimisation off,
fed one image at a time.  The range pass exposes every float tensor, in groups of at most
``budget`` bytes per image (one session per group), so a large model at a large size never holds
all its activations at once; the sensitivity ranking exposes only the Conv/MatMul inputs and
outputs, in one session per graph (grouping measured 3.2x slower for 30% less memory at 1024 px).
Holding every image's activations at once took 11.4 GiB for segclip-r50 at 512 px; one image at a
time 4.0 GiB."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from segclip.runtime.msda_plugin import plugin_ops, reference_session, register_onnx_schema
from segclip.signature import INPUT_NAME, SCENE_NAME

PASS_BUDGET = 2 << 30  # bytes of exposed activations per session and image


def float_tensors(model) -> list:
    """The float32 intermediate tensors and outputs of ``model`` (ValueInfos from shape inference)."""
    import onnx
    from onnx import TensorProto

    if plugin_ops(model):  # shape inference through TensorRT's plugin node (the plugin form's FP16 range pass)
        register_onnx_schema()
    inferred = onnx.shape_inference.infer_shapes(model)
    names, seen = [], set()
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT and vi.name not in seen:
            seen.add(vi.name)
            names.append(vi)
    return names


def nbytes(vi) -> int:
    """float32 bytes of a ValueInfo for one image (unknown dims count as 1)."""
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
    return int(np.prod(dims, dtype=np.int64)) * 4


def exposed_session(model, outputs: Sequence):
    """An ONNX Runtime CPU session of ``model`` whose outputs are exactly ``outputs`` (ValueInfos, or
    tensor names, exposed as float), with graph optimisation off: the tensors are the graph's own,
    not a fused kernel's."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(o if not isinstance(o, str) else helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                          for o in outputs)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if plugin_ops(m):  # the TensorRT plugin form: its plugin op runs on the CPU reference of the plugin
        return reference_session(m, so)
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def image_feeds(images: np.ndarray, scene_ids=None) -> Iterator[dict]:
    """One feed per image (batch 1), with its scene id for a graph with metadata prompts."""
    for j, img in enumerate(images):
        feed = {INPUT_NAME: np.ascontiguousarray(img[None], dtype=np.uint8)}
        if scene_ids is not None:
            feed[SCENE_NAME] = np.asarray(scene_ids[j:j + 1], np.int32)
        yield feed


def tensor_groups(model, budget: int = PASS_BUDGET) -> list:
    """Every float tensor of ``model`` (ValueInfos), in graph order, cut into groups whose activations
    fit ``budget`` per image (a tensor larger than the budget gets a group of its own)."""
    groups, cur, total = [], [], 0
    for vi in float_tensors(model):
        b = nbytes(vi)
        if cur and total + b > budget:
            groups.append(cur)
            cur, total = [], 0
        cur.append(vi)
        total += b
    return groups + [cur] if cur else groups
