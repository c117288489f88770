"""FP16 in the graph: a strongly typed FP16 ONNX (``model_fp16.onnx``) for TensorRT >= 10 and ORT.

TensorRT 11 dropped the weakly typed ``--fp16`` builder flag: precision now lives in the graph.  The
FP32 graph is converted with ``onnxconverter_common.float16.convert_float_to_float16`` with
``keep_io_types=True`` (uint8 ``image`` in, uint8/int32 ``mask`` out, ``scores`` stay FP32), and
these nodes stay FP32:

* by op type (``FP32_OP_TYPES``): normalisations (LayerNormalization, InstanceNormalization -- the
  GroupNorm of the pixel decoder --, ReduceMean), Softmax (attention and class probabilities),
  ArgMax (the class decision), plus the converter's own block list (Resize, Range, TopK, ...);
* by measurement: an activation-range pass runs the FP32 graph in ONNX Runtime on the calibration
  images with every intermediate float tensor exposed; a tensor whose finite values exceed
  ``OVERFLOW_LIMIT`` (3e4, about half of FP16's 65504 so one more add cannot overflow) keeps its
  producer *and all its consumers* in FP32 (a consumer in FP16 would read the value cast to FP16).

Underflow is accepted: values below FP16's smallest subnormal (6e-8) flush to zero.  Such tensors
are listed in the report (``underflow_tensors``) but not kept in FP32: they occur after ReLU/sigmoid
where values that small carry no information downstream, and everything that divides by or takes
the root of a small statistic (the norms) is already FP32.  ``-inf`` attention masks are not an
overflow (they saturate to -65504 and softmax, FP32, gives 0 either way).

GridSample (deformable attention) runs in FP16: its grid is in [-1, 1] where FP16 resolves 1e-3,
i.e. < 0.1 feature pixel at the stride-8 level of a 1024 px input; the parity gate checks it.

Two converter bugs are worked around: initializers shared by a blocked and a converted node are
duplicated first (onnxslim de-duplicates e.g. zero biases), and original ``Cast(to=FLOAT)`` nodes
that were converted get ``to=FLOAT16`` (the converter retypes their outputs but not the attribute);
a blocked node that produces a graph output gets its output cast back to FP32 removed.
"""
from __future__ import annotations

import collections
import time
import warnings
from typing import Iterable, Optional

import numpy as np

from segclip.errors import SegclipError
from segclip.export.activations import PASS_BUDGET, exposed_session, image_feeds, tensor_groups

OVERFLOW_LIMIT = 3.0e4
FP16_TINY = 5.96e-8  # smallest FP16 subnormal

FP32_OP_TYPES = {
    "LayerNormalization": "normalisation: mean/variance reductions lose precision and can overflow in FP16",
    "InstanceNormalization": "normalisation (GroupNorm): variance reduction over whole feature maps",
    "ReduceMean": "normalisation statistic (reduction)",
    "Softmax": "softmax after attention / class logits: exp and sum need FP32 range",
    "ArgMax": "class decision: keep ties resolved as in FP32",
}


def default_block_ops() -> dict:
    from onnxconverter_common import float16 as f16

    ops = {op: "converter default block list (no FP16 kernel or index/shape semantics)" for op in f16.DEFAULT_OP_BLOCK_LIST}
    ops.update(FP32_OP_TYPES)
    return ops


def activation_ranges(model, images: np.ndarray, budget_bytes: int = PASS_BUDGET, scene_ids=None) -> dict:
    """Run the FP32 graph on ``images`` (N x H x W x 3 uint8, one at a time) with every intermediate
    float tensor exposed; per tensor: max |finite value|, smallest non-zero |value|, has -/+inf.

    The exposed tensors are split into groups of at most ``budget_bytes`` per image (one ORT session
    per group), so a large model at a large size never holds all its activations at once."""
    groups = tensor_groups(model, budget=budget_bytes)
    stats = {vi.name: {"max_abs": 0.0, "min_nonzero": float("inf"), "inf": False, "nan": False, "tiny_fraction": 0.0}
             for group in groups for vi in group}
    for group in groups:
        sess = exposed_session(model, group)
        names = [o.name for o in sess.get_outputs()]
        # metadata prompts: each image under its scene, so every scene's range counts
        for feed in image_feeds(images, scene_ids):
            for n, a in zip(names, sess.run(names, feed)):
                if a.dtype != np.float32 or a.size == 0:
                    continue
                _update(stats[n], a)
        del sess
    return stats


def _update(s: dict, a: np.ndarray) -> None:
    fin = np.isfinite(a)
    if not fin.all():
        s["inf"] |= bool(np.isinf(a).any())
        s["nan"] |= bool(np.isnan(a).any())
        a = a[fin]
        if a.size == 0:
            return
    absa = np.abs(a)
    s["max_abs"] = max(s["max_abs"], float(absa.max()))
    nz = absa[absa > 0]
    if nz.size:
        s["min_nonzero"] = min(s["min_nonzero"], float(nz.min()))
        s["tiny_fraction"] = max(s["tiny_fraction"], float((nz < FP16_TINY).mean()))


def _unshare_initializers(model, blocked: set) -> int:
    from onnx import TensorProto

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    users = collections.defaultdict(list)
    for n in g.node:
        for i, x in enumerate(n.input):
            if x in inits:
                users[x].append((n, i))
    copies = 0
    for name, us in users.items():
        b = [u for u in us if u[0].name in blocked]
        if b and len(b) < len(us) and inits[name].data_type == TensorProto.FLOAT:
            c = TensorProto()
            c.CopyFrom(inits[name])
            c.name = name + "__fp32"
            g.initializer.append(c)
            for n, i in b:
                n.input[i] = c.name
            copies += 1
    return copies


def choose_fp32_nodes(model, ranges: Optional[dict], overflow: float = OVERFLOW_LIMIT,
                      extra_ops: Iterable[str] = (), extra_nodes: Iterable[str] = ()) -> tuple:
    """-> ({node name: reason}, block op types, report lists)."""
    ops = default_block_ops()
    for op in extra_ops:  # a dict gives each op type its reason
        ops.setdefault(op, extra_ops[op] if isinstance(extra_ops, dict) else "requested (--fp32-op)")
    keep = {}
    for n in model.graph.node:
        if n.op_type in ops:
            keep[n.name] = f"op type {n.op_type}: {ops[n.op_type]}"
    for name in extra_nodes:
        keep.setdefault(name, "requested")
    overflow_tensors, underflow_tensors = [], []
    if ranges:
        prod = {o: n for n in model.graph.node for o in n.output}
        cons = collections.defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                cons[i].append(n)
        for t, s in ranges.items():
            if s["max_abs"] > overflow:
                overflow_tensors.append({"tensor": t, "max_abs": s["max_abs"]})
                why = f"activation '{t}' reaches |x| = {s['max_abs']:.3g} > {overflow:.0f} (FP16 max 65504)"
                if t in prod:
                    keep.setdefault(prod[t].name, "produces " + why)
                for c in cons.get(t, []):
                    keep.setdefault(c.name, "reads " + why)
            if s["tiny_fraction"] > 0.01:
                underflow_tensors.append({"tensor": t, "fraction_below_fp16_subnormal": round(s["tiny_fraction"], 4)})
    return keep, ops, overflow_tensors, underflow_tensors


def convert_fp16(model, fp32_nodes: dict, block_ops: dict, *, output_dtypes: Optional[dict] = None):
    """FP32 ModelProto -> FP16 ModelProto with ``fp32_nodes`` (name -> reason) and ``block_ops`` kept FP32.

    ``output_dtypes``: graph output name -> "float32"/"float16" for float outputs (default: FP32)."""
    import onnx
    from onnx import TensorProto
    from onnxconverter_common import float16 as f16

    m = onnx.ModelProto()
    m.CopyFrom(model)
    blocked = {n.name for n in m.graph.node if n.op_type in block_ops or n.name in fp32_nodes}
    _unshare_initializers(m, blocked)
    del m.graph.value_info[:]  # duplicates confuse the converter; it re-infers them
    float_casts = {n.name for n in m.graph.node if n.op_type == "Cast" and n.name not in blocked
                   and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)}
    float_outputs = {o.name for o in m.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the float32 number ... will be truncated" for every tiny weight
        h = f16.convert_float_to_float16(
            m, keep_io_types=True, op_block_list=list(block_ops), node_block_list=sorted(fp32_nodes),
            min_positive_val=1e-7, max_finite_val=65504.0,
        )
    for n in h.graph.node:
        if n.name in float_casts:
            for a in n.attribute:
                if a.name == "to":
                    a.i = TensorProto.FLOAT16
    # graph outputs: FP32 unless asked otherwise (a blocked producer got a cast to FP16 appended)
    want = {k: (TensorProto.FLOAT16 if v == "float16" else TensorProto.FLOAT) for k, v in (output_dtypes or {}).items()}
    prod = {o: n for n in h.graph.node for o in n.output}
    for out in h.graph.output:
        if out.name not in float_outputs:
            continue
        target = want.get(out.name, TensorProto.FLOAT)
        if out.type.tensor_type.elem_type == target:
            continue
        p = prod.get(out.name)
        if p is not None and p.op_type == "Cast":
            for a in p.attribute:
                if a.name == "to":
                    a.i = target
        else:
            raise SegclipError(f"fp16: cannot restore the dtype of output '{out.name}'")
        out.type.tensor_type.elem_type = target
    for vi in h.graph.value_info:
        if vi.name in float_outputs:
            vi.type.tensor_type.elem_type = want.get(vi.name, TensorProto.FLOAT)
    return h


def fp16_report(model16, fp32_nodes: dict, overflow_tensors, underflow_tensors, ranges_seconds: float,
                n_images: int, overflow: float = OVERFLOW_LIMIT) -> dict:
    from onnx import TensorProto

    compute = [n for n in model16.graph.node if n.op_type not in ("Cast", "Constant", "Shape", "Identity")]
    kept = sorted(({"name": k, "op_type": "", "reason": v} for k, v in fp32_nodes.items()), key=lambda d: d["name"])
    types = {n.name: n.op_type for n in model16.graph.node}
    for d in kept:
        d["op_type"] = types.get(d["name"], "?")
    kept = [d for d in kept if d["op_type"] != "?"]
    fp16_inits = sum(1 for t in model16.graph.initializer if t.data_type == TensorProto.FLOAT16)
    fp32_inits = sum(1 for t in model16.graph.initializer if t.data_type == TensorProto.FLOAT)
    return {
        "converter": "onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)",
        "overflow_limit": overflow,
        "calibration_images": n_images,
        "range_pass_seconds": round(ranges_seconds, 3),
        "fp32_op_types": sorted(default_block_ops()),
        "fp32_nodes": kept,
        "fp32_node_count": len(kept),
        "compute_nodes": len(compute),
        "overflow_tensors": overflow_tensors,
        "underflow_tensors": underflow_tensors[:50],
        "underflow_tensor_count": len(underflow_tensors),
        "initializers": {"fp16": fp16_inits, "fp32": fp32_inits},
    }


def make_fp16(twin_fp32, images: np.ndarray, overflow: float = OVERFLOW_LIMIT, extra_ops=(), extra_nodes=(),
              output_dtypes=None, scene_ids=None):
    """Range pass on ``twin_fp32`` (scores-enabled FP32 ModelProto; ``scene_ids``: one per image for
    a graph with a scene_id input) + conversion.  Returns (fp16 twin ModelProto, fp32_nodes, report)."""
    t0 = time.perf_counter()
    ranges = activation_ranges(twin_fp32, images, scene_ids=scene_ids) if images is not None and len(images) else None
    t_ranges = time.perf_counter() - t0
    keep, ops, over, under = choose_fp32_nodes(twin_fp32, ranges, overflow, extra_ops, extra_nodes)
    h = convert_fp16(twin_fp32, keep, ops, output_dtypes=output_dtypes)
    report = fp16_report(h, keep, over, under, t_ranges, 0 if images is None else len(images), overflow)
    return h, keep, ops, report
