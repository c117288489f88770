"""Model FLOPs, counted two independent ways.

``onnx_flops`` (the one the targets use) reads the exported graph: shape inference at a concrete
batch and size (ONNX Runtime's symbolic shape inference, which follows the attention reshapes that
plain ``onnx.shape_inference`` loses; the latter is the fallback), then 2 x multiply-accumulates of every Conv,
ConvTranspose, MatMul, Gemm and Einsum node.  Element-wise ops, normalisation, softmax, resize and
GridSample are not counted (a few percent at most here), so the count - and the effective FLOP
rate derived from it - errs on the low side.

``torch_flops`` is the cross-check: ``torch.utils.flop_counter.FlopCounterMode`` around one eager
forward of the same ``SegCLIPInference`` module (it counts aten mm/bmm/addmm/conv/SDPA the same way,
2 x MACs).
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Optional

import numpy as np

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")


def _dims(vi) -> Optional[list]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            return None
    return out


def _fix_input_dims(model, batch: int, height: Optional[int], width: Optional[int]) -> None:
    """Set the symbolic batch (and, for a dynamic-size graph, H and W) of the NHWC image input."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for i, v in ((0, batch), (1, height), (2, width)):
        if i >= len(dims) or v is None:
            continue
        d = dims[i]
        if i == 0 or not (d.HasField("dim_value") and d.dim_value > 0):
            d.Clear()
            d.dim_value = int(v)


def _einsum_macs(eq: str, shapes: list) -> Optional[int]:
    lhs = eq.replace(" ", "").split("->")[0]
    terms = lhs.split(",")
    if len(terms) != len(shapes) or "..." in lhs:
        return None
    size = {}
    for term, shp in zip(terms, shapes):
        if shp is None or len(term) != len(shp):
            return None
        for c, n in zip(term, shp):
            size[c] = max(size.get(c, 1), n)
    return int(np.prod(list(size.values()), dtype=np.int64))


def onnx_flops(model_or_path, batch: int = 1, height: Optional[int] = None, width: Optional[int] = None) -> dict:
    """FLOPs of an ONNX graph at a given batch (and size, for a dynamic-size graph)."""
    import onnx

    model = onnx.load(str(model_or_path), load_external_data=False) if isinstance(model_or_path, (str, Path)) else model_or_path
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _fix_input_dims(m, batch, height, width)
    how = "onnxruntime symbolic shape inference"
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        m = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
    except Exception:  # older/odd onnxruntime: ONNX's own inference (may leave attention shapes unknown)
        how = "onnx.shape_inference (data_prop)"
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        shapes[vi.name] = _dims(vi)
    for t in m.graph.initializer:
        shapes[t.name] = [int(d) for d in t.dims]

    macs = collections.Counter()
    nodes = collections.Counter()
    unknown = []
    for n in m.graph.node:
        if n.op_type not in COUNTED_OPS:
            continue
        ins = [shapes.get(i) for i in n.input]
        out = shapes.get(n.output[0])
        k = None
        try:
            if n.op_type == "Conv" and out and ins[1]:
                k = int(np.prod(out, dtype=np.int64)) * int(np.prod(ins[1][1:], dtype=np.int64))
            elif n.op_type == "ConvTranspose" and ins[0] and ins[1]:
                k = int(np.prod(ins[0], dtype=np.int64)) * int(np.prod(ins[1][1:], dtype=np.int64))
            elif n.op_type == "MatMul" and out and ins[0]:
                k = int(np.prod(out, dtype=np.int64)) * int(ins[0][-1])
            elif n.op_type == "Gemm" and out and ins[0]:
                trans_a = next((a.i for a in n.attribute if a.name == "transA"), 0)
                k = int(np.prod(out, dtype=np.int64)) * int(ins[0][0] if trans_a else ins[0][-1])
            elif n.op_type == "Einsum":
                eq = next(a.s.decode() for a in n.attribute if a.name == "equation")
                k = _einsum_macs(eq, ins)
        except (IndexError, TypeError, StopIteration):
            k = None
        if k is None:
            unknown.append(n.name or n.op_type)
            continue
        macs[n.op_type] += k
        nodes[n.op_type] += 1
    total = sum(macs.values())
    return {
        "method": f"onnx graph: 2 x MACs of Conv/ConvTranspose/MatMul/Gemm/Einsum, shapes from {how}",
        "batch": batch,
        "flops": 2 * total,
        "gflops": round(2 * total / 1e9, 3),
        "by_op_gflops": {k: round(2 * v / 1e9, 3) for k, v in macs.most_common()},
        "nodes_counted": dict(nodes),
        "nodes_unknown_shape": unknown[:20],
        "num_unknown": len(unknown),
    }


def torch_flops(module, height: int, width: int, batch: int = 1) -> dict:
    """FLOPs of one eager forward of ``module`` (uint8 NHWC input) with FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.from_numpy(np.random.default_rng(0).integers(1, 256, (batch, height, width, 3), dtype=np.uint8))
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        module(x)
    total = int(fc.get_total_flops())
    by_op = collections.Counter()
    for op, n in fc.get_flop_counts().get("Global", {}).items():
        parts = str(op).split(".")
        by_op[parts[1] if len(parts) > 1 else parts[0]] += int(n)
    return {"method": "torch.utils.flop_counter.FlopCounterMode, one eager forward (aten mm/bmm/addmm/conv/SDPA, 2 x MACs)",
            "batch": batch, "flops": total, "gflops": round(total / 1e9, 3),
            "by_op_gflops": {k: round(v / 1e9, 3) for k, v in by_op.most_common()}}
