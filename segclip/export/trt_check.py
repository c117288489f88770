"""Will TensorRT take this ONNX graph?  Checked on the CPU box, before the model travels to the GPU.

``check_onnx(path, trt_version="10")`` walks every node against TensorRT's documented ONNX support,
kept as data in ``tensorrt_onnx_support.json`` (the ONNX-TensorRT operator matrix per TensorRT major
version, with its source URLs): op type and opset range; the restrictions the matrix states
(GridSample rank and modes, Resize modes, axes/K/depth inputs that must be build-time constants,
zero points of Q/DQ, ...); the UINT8 rule (UINT8 only as a network input or output, reached only
through a Cast to or from a float type); and segclip's own ban on If, Loop and NonZero.

Q/DQ graphs (explicit quantization) pass when they follow TensorRT's rules: QuantizeLinear from a
float type, DequantizeLinear from a quantized type (INT8/FP8/FP4/INT4), constant scales, zero points
zero.  TensorRT's own ``MultiscaleDeformableAttnPlugin_TRT`` (the plugin form of ``segclip export --trt``)
passes when its node matches the plugin: version shipped by that TensorRT, 5 inputs, INT32 shapes and
start indices, one float type for the rest (``segclip.runtime.msda_plugin.node_problems``).
``segclip export`` runs the check on every ONNX it writes and records the result in the
manifest as ``tensorrt_check``.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

from segclip.errors import SegclipError
from segclip.runtime.msda_plugin import PLUGIN_NAME, node_problems, register_onnx_schema

SUPPORT_FILE = Path(__file__).with_name("tensorrt_onnx_support.json")
DEFAULT_TRT_VERSION = "10"
STANDARD_DOMAINS = ("", "ai.onnx")
FLOAT_TYPES = ("FP32", "FP16", "BF16")


@functools.lru_cache(maxsize=None)
def support_table() -> dict:
    return json.loads(SUPPORT_FILE.read_text())


# JetPack release -> the TensorRT it ships (pytorch/TensorRT docs/getting_started/jetpack.rst: JetPack 6.1
# and 6.2 ship CUDA 12.6, TensorRT 10.3, cuDNN 9.3)
JETPACK_TENSORRT = {"6.1": "10.3", "6.2": "10.3"}


def resolve_trt_version(value) -> str:
    """``--trt-version`` as a user gives it -- a table key ("10", "11"), a TensorRT release ("10.15",
    "10.3") or a JetPack release ("jetpack6.2") -> the key of the support table to check against.
    A release with no table of its own is refused in one line naming the tables there are: a newer
    release's table could pass operators the older TensorRT lacks (JetPack 6 is TensorRT 10.3)."""
    import re

    tables = support_table()["tables"]
    v = str(value).strip().lower()
    jp = re.fullmatch(r"(?:jetpack|jp)[-_ ]?(\d+\.\d+)(?:\.\d+)*", v)
    if jp:
        if jp[1] not in JETPACK_TENSORRT:
            known = ", ".join(f"JetPack {k} = TensorRT {t}" for k, t in JETPACK_TENSORRT.items())
            raise SegclipError(f"--trt-version {value}: segclip does not know which TensorRT JetPack {jp[1]} ships "
                               f"(it knows {known}); give the TensorRT release, e.g. --trt-version 10.3")
        v = JETPACK_TENSORRT[jp[1]]
    if v in tables:
        return v
    for key, t in tables.items():
        if str(t.get("tensorrt")) == v:
            return key
    have = ", ".join(f"TensorRT {t.get('tensorrt')} (--trt-version {k})" for k, t in sorted(tables.items()))
    raise SegclipError(f"--trt-version {value}: segclip has no ONNX support table for TensorRT {v} (it has {have}), and "
                       f"a newer release's table may pass operators {v} lacks; check onnx-tensorrt's release/{v}-GA "
                       f"docs/operators.md, or run trtexec.sh on the target, whose TensorRT parses the graph itself")


def _trt_type(elem_type: int) -> Optional[str]:
    """ONNX element type -> the type names of the ONNX-TensorRT matrix."""
    from onnx import TensorProto as T

    names = {T.FLOAT: "FP32", T.FLOAT16: "FP16", T.BFLOAT16: "BF16", T.INT32: "INT32", T.INT64: "INT64",
             T.INT8: "INT8", T.UINT8: "UINT8", T.BOOL: "BOOL", T.DOUBLE: "DOUBLE", T.INT4: "INT4"}
    for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"):
        if hasattr(T, n):
            names[getattr(T, n)] = "FP8"
    if hasattr(T, "FLOAT4E2M1"):
        names[T.FLOAT4E2M1] = "FP4"
    return names.get(elem_type, T.DataType.Name(elem_type) if elem_type else None)


def load_onnx(path):
    """The graph of ``path`` without external weights (structure is enough); a one-line error for a
    missing file, a directory, or a file that is not (or no longer, when truncated) an ONNX model."""
    import onnx

    p = Path(path)
    if p.is_dir():
        raise SegclipError(f"{p}: is a directory, not an ONNX file; give the .onnx file (e.g. {p / 'model.onnx'})")
    if not p.is_file():
        raise SegclipError(f"{p}: no such file; give an exported .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise SegclipError(f"{p}: not a readable ONNX model ({type(e).__name__}); the file is truncated, corrupt or "
                           f"not ONNX: re-export it with segclip export") from None
    if not model.ir_version or not model.opset_import or not len(model.graph.node) or not len(model.graph.output):
        raise SegclipError(f"{p}: not an ONNX model (no IR version, opset, nodes or outputs); the file is truncated or "
                           f"not ONNX: re-export it with segclip export")
    return model


def _typed(model):
    """{tensor name: (ONNX elem type, rank or None)} from inputs, outputs, initializers and shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph ONNX cannot infer still gets the checks that need no types
        inferred = model
    g = inferred.graph
    out = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        out[vi.name] = (tt.elem_type, len(tt.shape.dim) if tt.HasField("shape") else None)
    for t in g.initializer:
        out[t.name] = (t.data_type, len(t.dims))
    return out


def _constants(graph) -> dict:
    """{name: TensorProto} for initializers and Constant outputs (build-time constants for TensorRT)."""
    c = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    c[n.output[0]] = a.t
    return c


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _all_zero(tensor) -> Optional[bool]:
    """True/False for a tensor whose values are stored here; None for external data (not loaded)."""
    from onnx import numpy_helper

    if any(e.key == "location" for e in tensor.external_data):
        return None
    try:
        return bool((numpy_helper.to_array(tensor) == 0).all())
    except Exception:
        return None


def check_model(model, trt_version: str = DEFAULT_TRT_VERSION) -> list:
    """-> problems, one string each naming the node, the op and why; [] when TensorRT takes the graph."""
    tables = support_table()["tables"]
    if str(trt_version) not in tables:
        raise SegclipError(f"--trt-version {trt_version}: no support table for it; choose one of {', '.join(sorted(tables))}")
    table = tables[str(trt_version)]
    forbidden = support_table()["forbidden"]
    label = f"TensorRT {table['tensorrt']}"
    g = model.graph
    problems = []

    opset = max((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), default=None)
    lo, hi = table["opset"]
    if opset is None or not lo <= opset <= hi:
        problems.append(f"graph: opset {opset} is outside {label}'s supported range {lo}..{hi}; re-export with --opset in that range")

    register_onnx_schema()  # shape inference through TensorRT's deformable-attention plugin node
    types = _typed(model)
    consts = _constants(g)
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_in = {i.name for i in g.input} - {t.name for t in g.initializer}
    graph_out = {o.name for o in g.output}

    def where(n):
        return f"node {n.name or '<unnamed>'} ({n.op_type})"

    for n in g.node:
        if n.op_type == PLUGIN_NAME:  # TensorRT's own plugin, found by op type (segclip.runtime.msda_plugin)
            problems += [f"{where(n)}: {why}" for why in node_problems(n, types, _trt_type, _attr, label, table["tensorrt"])]
            continue
        if n.domain not in STANDARD_DOMAINS:
            problems.append(f"{where(n)}: custom op domain '{n.domain}' is not in {label}'s ONNX parser; it needs a plugin")
            continue
        if n.op_type in forbidden:
            problems.append(f"{where(n)}: {forbidden[n.op_type]}")
            continue
        spec = table["ops"].get(n.op_type)
        if spec is None:
            problems.append(f"{where(n)}: not in {label}'s ONNX operator matrix")
            continue
        if spec.get("supported") is False:
            problems.append(f"{where(n)}: not supported by {label} (ONNX-TensorRT operator matrix)")
            continue
        first = types.get(n.input[0]) if n.input and n.input[0] else None
        t0 = _trt_type(first[0]) if first and first[0] else None
        allowed = spec.get("types") or []
        if t0 and allowed and n.op_type not in ("Shape", "Size", "Constant", "ConstantOfShape", "Cast", "CastLike") \
                and t0 not in allowed and t0 != "UINT8":  # UINT8 has its own rule below
            problems.append(f"{where(n)}: input type {t0} is not among {label}'s types for {n.op_type} ({', '.join(allowed)})")
        problems += [f"{where(n)}: {why}" for why in _rule_problems(n, table["rules"].get(n.op_type), types, consts, label)]
        if n.op_type == "QuantizeLinear" and t0 and t0 not in FLOAT_TYPES:
            problems.append(f"{where(n)}: quantizes from {t0}; TensorRT quantizes only from FP32/FP16/BF16")
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2]:
            zp = types.get(n.input[2])
            zt = _trt_type(zp[0]) if zp else None
            if zt and zt not in table["quantized_types"]:
                problems.append(f"{where(n)}: quantizes to {zt}; TensorRT's quantized types are "
                                f"{', '.join(table['quantized_types'])} (UINT8 is only for network inputs/outputs)")

    # UINT8: only as a network input or output, reached only through a Cast to or from a float type
    io_only = set(table["io_only_types"])
    for name, (et, _) in types.items():
        tname = _trt_type(et)
        if tname not in io_only:
            continue
        if name in graph_in:
            for c in consumers.get(name, []):
                if c.op_type != "Cast" or _trt_type(_attr(c, "to")) not in FLOAT_TYPES:
                    problems.append(f"{where(c)}: reads {tname} graph input '{name}'; TensorRT takes {tname} only through a "
                                    f"Cast to FP32/FP16/BF16")
        elif name in graph_out:
            p = producer.get(name)
            src = types.get(p.input[0]) if p is not None and p.input else None
            if p is None or p.op_type != "Cast" or not src or _trt_type(src[0]) not in FLOAT_TYPES:
                problems.append(f"{where(p) if p is not None else 'graph'}: produces {tname} graph output '{name}'; TensorRT "
                                f"makes {tname} only by a Cast from FP32/FP16/BF16")
        elif name in producer:
            problems.append(f"{where(producer[name])}: output '{name}' is {tname} inside the graph; {label} supports {tname} "
                            f"only as a network input or output")
    return problems


def _rule_problems(node, rule: Optional[dict], types: dict, consts: dict, label: str) -> list:
    if not rule:
        return []
    out = []
    for name, allowed in (rule.get("attributes") or {}).items():
        v = _attr(node, name)
        if v is not None and v not in allowed:
            out.append(f"{name}={v!r} is not supported by {label} (supported: {', '.join(map(str, allowed))})")
    for name in rule.get("attributes_all_ones") or []:
        v = _attr(node, name)
        if v and any(int(x) != 1 for x in v):
            out.append(f"{name}={list(v)} must be empty or all ones for {label}")
    for name in rule.get("attributes_absent") or []:
        if _attr(node, name) is not None:
            out.append(f"attribute {name} is not supported by {label}")
    for idx, what in (rule.get("constant_inputs") or {}).items():
        i = int(idx)
        if len(node.input) > i and node.input[i] and node.input[i] not in consts:
            out.append(f"input {what} ('{node.input[i]}') must be a build-time constant (initializer or Constant) for {label}")
    for idx, what in (rule.get("zero_inputs") or {}).items():
        i = int(idx)
        if len(node.input) > i and node.input[i] in consts and _all_zero(consts[node.input[i]]) is False:
            out.append(f"{what} must be zero for {label} (symmetric quantization)")
    ranks = rule.get("input_rank")
    if ranks and node.input:
        r = (types.get(node.input[0]) or (None, None))[1]
        if r is not None and r not in ranks:
            out.append(f"input rank {r}; {label} supports rank {' or '.join(map(str, ranks))} only")
    spatial = rule.get("spatial_rank")
    if spatial and node.input:
        r = (types.get(node.input[0]) or (None, None))[1]
        if r is not None and r - 2 not in spatial:
            out.append(f"{r - 2}D pooling; {label} pools 2D or 3D only")
    used = rule.get("used_outputs")
    if used and any(o for o in node.output[used:]):
        out.append(f"only the first {used} output(s) are supported by {label}; drop {[o for o in node.output[used:] if o]}")
    if rule.get("iota_axes_with_scales") and len(node.input) > 2 and node.input[2]:
        axes = _attr(node, "axes")
        rank = (types.get(node.input[0]) or (None, None))[1]
        if axes is not None and rank is not None and list(axes) != list(range(rank)):
            out.append(f"axes={list(axes)} with scales: {label} needs axes 0..{rank - 1} in order")
    return out


def check_onnx(path, trt_version: str = DEFAULT_TRT_VERSION) -> list:
    """Load ``path`` (one-line SegclipError when it cannot be read) and check it; -> problems."""
    return check_model(load_onnx(path), str(trt_version))


def manifest_entry(model_or_path, trt_version: str = DEFAULT_TRT_VERSION) -> dict:
    """What ``segclip export`` records per ONNX: ``{"tensorrt_check": "ok" | [problems], ...}``."""
    model = load_onnx(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path
    problems = check_model(model, str(trt_version))
    table = support_table()["tables"][str(trt_version)]
    return {"tensorrt_check": problems or "ok", "tensorrt_check_table": f"TensorRT {table['tensorrt']}"}
