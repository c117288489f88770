"""PyTorch -> ONNX: trace ``SegCLIPInference`` (TorchScript exporter), simplify with onnxslim, make
the uint8 I/O TensorRT friendly, check, and stamp the metadata.

Named ``onnx_export`` so it never shadows the ``onnx`` package.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from segclip.contract import META_PREFIX
from segclip.errors import SegclipError, one_line
from segclip.signature import INPUT_NAME, MASK_NAME, SCENE_DTYPE, SCENE_NAME, SCORES_NAME, Signature
from segclip.atomic import atomic_write_bytes

if TYPE_CHECKING:  # imported lazily at run time (_onnx): the annotations only
    import onnx

MIN_OPSET = 17  # LayerNormalization (17), GridSample (16)


def check_opset(opset) -> int:
    """``--opset`` within what segclip's graph needs and what torch's TorchScript exporter writes
    (torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET, 20 in torch 2.x): checked before
    the checkpoint is read, not as torch's traceback after loading the model."""
    from torch.onnx import _constants

    top = int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    if not MIN_OPSET <= int(opset) <= top:
        raise SegclipError(f"--opset {opset}: segclip exports opsets {MIN_OPSET}..{top} (>= {MIN_OPSET} for "
                           f"LayerNormalization and GridSample, <= {top} for torch's exporter); give e.g. --opset 17")
    return int(opset)
STANDARD_DOMAINS = ("", "ai.onnx")


def _onnx():
    import onnx

    return onnx


def graph_sha256(model) -> str:
    """sha256 of the serialised GraphProto (nodes + weights; the model-level metadata is not part of it)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def trace_to_onnx(module, example, opset: int, dynamic_size: bool, output_names) -> "onnx.ModelProto":
    """Trace with the TorchScript exporter (``dynamo=False``): dynamic batch, optional dynamic H/W.
    ``example``: the image, or (image, scene_id) for a model with metadata prompts."""
    import torch

    onnx = _onnx()
    check_opset(opset)
    example = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    input_names = [INPUT_NAME, SCENE_NAME][: len(example)]
    axes = {INPUT_NAME: {0: "batch"}, SCENE_NAME: {0: "batch"}, MASK_NAME: {0: "batch"}, SCORES_NAME: {0: "batch"}}
    if dynamic_size:
        axes[INPUT_NAME].update({1: "height", 2: "width"})
        axes[MASK_NAME].update({1: "height", 2: "width"})
        axes[SCORES_NAME].update({2: "height", 3: "width"})
    axes = {k: v for k, v in axes.items() if k in (*input_names, *output_names)}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic: sizes stay symbolic (see modeling.layers.split_tokens)
        with torch.no_grad():
            torch.onnx.export(
                module, example, buf, input_names=input_names, output_names=list(output_names),
                opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False,
            )
    return onnx.load_from_string(buf.getvalue())


def slim(model) -> "onnx.ModelProto":
    import onnxslim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = onnxslim.slim(model)
    if out is None:
        raise SegclipError("onnxslim failed to simplify the exported graph")
    return out


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph) -> dict:
    d = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            d[i].append(n)
    return d


def make_uint8_io_trt_friendly(model) -> list:
    """TensorRT converts uint8 only to/from float32/float16 (no uint8 Transpose, no int64 -> uint8 Cast).

    * ``image -> Transpose -> Cast(float)`` becomes ``image -> Cast(float) -> Transpose``;
    * ``X(int) -> Cast(uint8) -> mask`` becomes ``X -> Cast(float) -> Cast(uint8)`` (class ids < 256 are exact).

    Both rewrites compute the same values.  Returns what was changed.
    """
    from onnx import TensorProto, helper

    g = model.graph
    changes = []
    cons = _consumers(g)
    inp = g.input[0].name
    if g.input[0].type.tensor_type.elem_type == TensorProto.UINT8 and len(cons[inp]) == 1:
        t = cons[inp][0]
        if t.op_type == "Transpose" and len(cons[t.output[0]]) == 1 and cons[t.output[0]][0].op_type == "Cast":
            c = cons[t.output[0]][0]
            # swap: image -> Cast -> Transpose -> (old Cast output name)
            cast_out, tr_out = c.output[0], t.output[0]
            c.input[0] = inp
            c.output[0] = tr_out + "_f"
            t.input[0] = c.output[0]
            t.output[0] = cast_out
            # keep topological order: the cast first
            nodes = list(g.node)
            ic, it = nodes.index(c), nodes.index(t)
            nodes[it], nodes[ic] = c, t
            del g.node[:]
            g.node.extend(nodes)
            changes.append("cast the uint8 image to float before the NHWC->NCHW transpose")
    prod = _producers(g)
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.UINT8 or out.name not in prod:
            continue
        c = prod[out.name]
        if c.op_type != "Cast":
            continue
        src = c.input[0]
        p = prod.get(src)
        if p is not None and p.op_type == "Cast":
            continue
        mid = src + "_as_float"
        new = helper.make_node("Cast", [src], [mid], name=c.name + "_to_float", to=TensorProto.FLOAT)
        c.input[0] = mid
        nodes = list(g.node)
        nodes.insert(nodes.index(c), new)
        del g.node[:]
        g.node.extend(nodes)
        changes.append(f"'{out.name}': cast the class ids to float before uint8")
    if changes:
        del g.value_info[:]  # stale after the rewrite; shape inference re-derives them
    return changes


def ensure_node_names(model) -> None:
    """Every node gets a unique name (the FP16 block list and the manifest refer to nodes by name)."""
    seen = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            base = n.name or f"/{n.op_type}"
            k = i
            while f"{base}__{k}" in seen:
                k += 1
            n.name = f"{base}__{k}"
        seen.add(n.name)


def drop_output(model, name: str):
    """The public graph without one output (e.g. ``scores`` when not asked for): same nodes, so the
    mask is computed exactly as in the scores-enabled twin the parity gate measures."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [o for o in m.graph.output if o.name != name]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    # prune nodes that fed only the dropped output
    needed = {o.name for o in m.graph.output}
    nodes = list(m.graph.node)
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in n.input if i)
    live.reverse()
    del m.graph.node[:]
    m.graph.node.extend(live)
    used = {i for n in live for i in n.input}
    inits = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    return m


def check_graph(model, where: str, plugins: tuple = ()) -> dict:
    """Full ONNX check + shape inference + standard-ops-only (``plugins``: (domain, op type) pairs also
    allowed, the TensorRT plugin graph's); returns op counts."""
    onnx = _onnx()
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        msg = one_line(e)
        raise SegclipError(f"{where}: the exported ONNX graph fails onnx.checker/shape inference ({msg})") from None
    allowed = {d for d, _ in plugins}
    custom = sorted({n.domain for n in model.graph.node if n.domain not in STANDARD_DOMAINS and (n.domain, n.op_type) not in plugins})
    custom += sorted({o.domain for o in model.opset_import if o.domain not in STANDARD_DOMAINS and o.domain not in allowed})
    if custom:
        raise SegclipError(f"{where}: the graph uses non-standard op domains {sorted(set(custom))}; only standard ONNX ops are allowed")
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def set_metadata(model, signature: Signature, *, precision: str, source_sha256: Optional[str] = None,
                 extra: Optional[dict] = None) -> str:
    """Write the segclip keys into ``metadata_props`` (replacing old ones); returns the graph hash."""
    from segclip import __version__

    h = graph_sha256(model)
    size = "dynamic" if signature.dynamic_size else f"{signature.height}x{signature.width}"
    meta = {
        "signature": signature.to_json(),
        "classes": json.dumps(list(signature.classes)),
        "palette": json.dumps([list(p) for p in signature.palette]),
        "input_size": size,
        "normalization": json.dumps({"mean": list(signature.pixel_mean), "std": list(signature.pixel_std),
                                     "scale": "0..255", "inside_graph": True, "input": "uint8 RGB NHWC"}),
        "graph_sha256": h,
        "version": __version__,
        "precision": precision,
    }
    if signature.scenes:  # scene_id -> name (metadata prompts); also inside the signature
        meta["scenes"] = json.dumps(list(signature.scenes))
    if source_sha256:
        meta["source_sha256"] = source_sha256
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    keep = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = META_PREFIX + k, v
    model.producer_name = "segclip"
    model.producer_version = __version__
    model.doc_string = (f"SegCLIP ({len(signature.classes)} classes, {precision}): uint8 RGB NHWC '{INPUT_NAME}' -> "
                        f"'{MASK_NAME}' class map; see metadata segclip.signature")
    return h


def save(model, path) -> Path:
    return atomic_write_bytes(path, model.SerializeToString())


def export_twin(module, signature: Signature, opset: int, dynamic_size: bool, log=print, plugins: tuple = ()):
    """Export the scores-enabled graph (the 'twin' every format derives from); returns (model, info).
    ``plugins``: (domain, op type) pairs the graph may hold (the TensorRT plugin form, see ``check_graph``)."""
    import torch

    h = signature.height or 64
    w = signature.width or 64
    example = torch.zeros((1, h, w, 3), dtype=torch.uint8)
    if signature.scenes:  # metadata prompts: the scene table is a constant the scene_id input indexes
        example = (example, torch.zeros(1, dtype=getattr(torch, SCENE_DTYPE)))
    t0 = time.perf_counter()
    model = trace_to_onnx(module, example, opset, dynamic_size, [MASK_NAME, SCORES_NAME])
    t_trace = time.perf_counter() - t0
    n_raw = len(model.graph.node)
    model = slim(model)
    changes = make_uint8_io_trt_friendly(model)
    ensure_node_names(model)
    ops = check_graph(model, "model.onnx", plugins)
    info = {"trace_seconds": round(t_trace, 3), "export_seconds": round(time.perf_counter() - t0, 3),
            "nodes_traced": n_raw, "nodes": len(model.graph.node), "rewrites": changes, "ops": ops}
    return model, info


def probe_dynamic_size(model, module, signature: Signature):
    """A dynamic-size graph must really be dynamic: run it at another size and compare with PyTorch."""
    import onnxruntime as ort
    import torch

    from segclip.inference.compare import agreement

    h, w = signature.height or 128, signature.width or 128
    h2, w2 = max(32, (h * 3 // 4) // 32 * 32), max(32, (w * 5 // 4) // 32 * 32 + 32)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, h2, w2, 3), dtype=np.uint8)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ids = np.full(1, len(signature.scenes) - 1, np.int32) if signature.scenes else None
        got = sess.run([MASK_NAME], {INPUT_NAME: x, **({} if ids is None else {SCENE_NAME: ids})})[0]
        with torch.no_grad():
            ref = module(torch.from_numpy(x), None if ids is None else torch.from_numpy(ids))[0].numpy()
        ok = got.shape == ref.shape and agreement([got], [ref]) > 0.99
    except Exception:
        ok = False
    if not ok:
        raise SegclipError(
            f"--dynamic-size: the traced graph is not size-independent (it fails or differs from PyTorch at {h2}x{w2}): "
            f"a spatial size was frozen during tracing (a Python int() of a shape in the model); export at a fixed "
            f"--size (segclip predict tiles larger images with a sliding window)"
        )
