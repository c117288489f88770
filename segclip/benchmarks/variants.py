"""Probes for the lead: would an export-side change make ONNX Runtime faster on CPU?

``run_targets.py`` runs these where the ORT-vs-eager target is missed and records the numbers in
RESULTS.md; nothing here changes what ``segclip export`` writes.  Each variant computes the same
class map as the exported graph (checked: pixel agreement is reported with the timing).

* graph optimisation level: ORT_ENABLE_ALL (the ``OnnxRunner`` default) vs EXTENDED vs BASIC;
* ``einsum_as_matmul``: the mask-embedding Einsums (``bqc,bchw->bqhw`` and ``bqk,bqhw->bkhw``)
  rewritten as Reshape + MatMul (+ Transpose), so ORT runs them through its GEMM instead of its
  generic Einsum kernel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# equation -> transpose the first operand (bqk -> bkq) before the MatMul
_EINSUM_AS_MATMUL = {"bqc,bchw->bqhw": False, "bqk,bqhw->bkhw": True}


def einsum_as_matmul(model) -> tuple:
    """(rewritten copy of ``model``, number of Einsum nodes rewritten).  Needs a fixed-size graph
    (the spatial size of the second operand is read from shape inference)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    d = probe.graph.input[0].type.tensor_type.shape.dim[0]
    d.Clear()
    d.dim_value = 1
    shapes = {v.name: [x.dim_value for x in v.type.tensor_type.shape.dim]
              for v in SymbolicShapeInference.infer_shapes(probe, auto_merge=True).graph.value_info}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, n = [], 0
    for node in out.graph.node:
        eq = next((a.s.decode() for a in node.attribute if a.name == "equation"), None) if node.op_type == "Einsum" else None
        hw = shapes.get(node.input[1], [])[2:4] if eq in _EINSUM_AS_MATMUL else []
        if len(hw) != 2 or not all(hw):
            nodes.append(node)
            continue
        a, b = node.input
        p = (node.name or f"einsum{n}").replace("/", "_")
        new = [helper.make_node("Constant", [], [p + "_flat"], value=numpy_helper.from_array(np.array([0, 0, -1], np.int64))),
               helper.make_node("Constant", [], [p + "_hw"], value=numpy_helper.from_array(np.array([0, 0, *hw], np.int64))),
               helper.make_node("Reshape", [b, p + "_flat"], [p + "_b"])]
        if _EINSUM_AS_MATMUL[eq]:
            new.append(helper.make_node("Transpose", [a], [p + "_aT"], perm=[0, 2, 1]))
            a = p + "_aT"
        new += [helper.make_node("MatMul", [a, p + "_b"], [p + "_mm"]),
                helper.make_node("Reshape", [p + "_mm", p + "_hw"], [node.output[0]])]
        nodes += new
        n += 1
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out, n


def ort_variants(onnx_path, size: int, threads: int, work_dir, *, reps: int = 3, warmup: int = 1, gap_s: float = 0.3,
                 min_clean: int = 0, max_s: float = 600.0, log=None) -> dict:
    """Interleaved p50 of the exported graph under the default session and each variant."""
    import onnx

    from segclip.runtime.onnx_runner import OnnxRunner

    from segclip.benchmarks.interleaved import compare_interleaved
    from segclip.benchmarks.timing import random_batches

    onnx_path = Path(onnx_path)
    base = OnnxRunner(onnx_path, providers="cpu", threads=threads)
    runners = {"default (ORT_ENABLE_ALL)": base,
               "ORT_ENABLE_EXTENDED": OnnxRunner(onnx_path, providers="cpu", threads=threads, optimization="extended"),
               "ORT_ENABLE_BASIC": OnnxRunner(onnx_path, providers="cpu", threads=threads, optimization="basic")}
    rewritten, n = einsum_as_matmul(onnx.load(str(onnx_path)))
    if n:
        p = Path(work_dir) / f"{onnx_path.stem}_einsum_as_matmul_{size}.onnx"
        onnx.save(rewritten, str(p))
        runners[f"Einsum -> MatMul ({n} nodes)"] = OnnxRunner(p, providers="cpu", threads=threads, signature=base.signature)
    c = compare_interleaved(runners, random_batches(1, size, size, count=2, seed=5), warmup=warmup, min_rounds=reps,
                            gap_s=gap_s, min_clean=min_clean, max_s=max_s, log=log)
    if c["unavailable"]:  # every variant is a session of the same graph: one that cannot run is a bug
        raise RuntimeError("ORT variants failed: " + "; ".join(f"{k}: {v}" for k, v in c["unavailable"].items()))
    res = {k: {"p50_ms": c["p50"][k], "basis": c["basis"], "reps": c["reps"][k], "pixel_agreement": c["pixel_agreement"][k]}
           for k in runners}
    b = res["default (ORT_ENABLE_ALL)"]["p50_ms"]
    for v in res.values():
        v["vs_default"] = round(v["p50_ms"] / b, 4)
    return res
