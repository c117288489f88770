"""Where the time goes, per operator type: ONNX Runtime's profiler, OpenVINO's per-layer counters and
torch.profiler.

Used by ``run_targets.py`` when a target is missed and for the INT8 paths, so RESULTS.md can say which
operators dominate.  All return ``{"total_ms": per-iteration total, "ops": [{"op", "ms", "share", "calls"}, ...]}``
(sorted, per iteration).
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np


def ort_profile(onnx_path, images: np.ndarray, threads: Optional[int] = None, iters: int = 1, warmup: int = 1,
                optimization: str = "all", top: int = 12) -> dict:
    """Per-op-type kernel time of a CPU ONNX Runtime session (``enable_profiling``), same session
    options as ``OnnxRunner`` (intra-op ``threads``, inter-op 1, graph optimisation ``optimization``)."""
    import onnxruntime as ort

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    tmp = tempfile.mkdtemp(prefix="segclip-ortprof-")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = levels[optimization]
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    for _ in range(max(0, warmup)):
        sess.run(outs, {name: images})
    # a second session with profiling on: the first one's warm-up does not pollute the trace
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "ort")
    psess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    psess.run(outs, {name: images})  # first run: arena growth etc., dropped below
    for _ in range(max(1, iters)):
        psess.run(outs, {name: images})
    path = psess.end_profiling()
    events = json.loads(Path(path).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    keep_after = runs[0]["ts"] + runs[0]["dur"] if len(runs) > 1 else -1
    by_op, calls = collections.Counter(), collections.Counter()
    nodes = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e.get("ts", 0) < keep_after:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        by_op[op] += e.get("dur", 0)
        calls[op] += 1
        nodes[e["name"][: -len("_kernel_time")]] += e.get("dur", 0)
    n = max(1, iters)
    total = sum(by_op.values())
    run_ms = [r["dur"] / 1e3 for r in runs[1:]] if len(runs) > 1 else []
    try:
        os.remove(path)
        os.rmdir(tmp)
    except OSError:
        pass
    return {
        "tool": f"onnxruntime {ort.__version__} enable_profiling (CPUExecutionProvider, {threads or 'default'} threads, "
                f"graph optimisation {optimization})",
        "iters": n, "total_ms": round(total / 1e3 / n, 2), "run_ms": round(float(np.median(run_ms)), 2) if run_ms else None,
        "ops": [{"op": op, "ms": round(us / 1e3 / n, 2), "share": round(us / total, 4) if total else None, "calls": calls[op] // n}
                for op, us in by_op.most_common(top)],
        "top_nodes": [{"node": k, "ms": round(v / 1e3 / n, 2)} for k, v in nodes.most_common(8)],
    }


GEMM_LAYERS = ("Convolution", "FullyConnected", "MatMul")


def ov_profile(onnx_path, images: np.ndarray, threads: Optional[int] = None, iters: int = 3, warmup: int = 2,
               precision: str = "f32", top: int = 12) -> dict:
    """Per-layer time of OpenVINO's CPU plugin (``PERF_COUNT``), by executed layer type and kernel
    ("Convolution brgconv_avx512_I8": an INT8 convolution; "GridSample jit_avx512_f32": float), with
    the OpenVINO runner's compile options (latency hint, ``precision`` hint, ``threads``)."""
    import openvino as ov

    from segclip.runtime import ov_extension
    from segclip.runtime.msda_plugin import META_PLUGINS
    from segclip.runtime.onnx_runner import read_onnx_metadata

    core = ov.Core()
    meta = read_onnx_metadata(onnx_path)
    if meta.get(META_PLUGINS):  # the plugin form: segclip's deformable-attention kernel (model_int8_msda.onnx)
        ov_extension.add_to(core, onnx_path, ov_extension.read_record(meta))
    model = core.read_model(str(onnx_path))
    model.reshape({model.inputs[0].get_any_name(): list(images.shape)})
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": True}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    for _ in range(max(0, warmup)):
        req.infer({0: images})
    by_op, calls, nodes = collections.Counter(), collections.Counter(), collections.Counter()
    n = max(1, iters)
    for _ in range(n):
        req.infer({0: images})
        for p in req.get_profiling_info():
            us = p.real_time.total_seconds() * 1e6
            if us <= 0:
                continue  # fused into a neighbour or not executed
            key = f"{p.node_type} {p.exec_type}"
            by_op[key] += us
            calls[key] += 1
            nodes[p.node_name] += us
    total = sum(by_op.values())
    return {
        "tool": f"OpenVINO {ov.__version__} PERF_COUNT (CPU, {threads or 'default'} threads, precision hint {precision})",
        "iters": n, "total_ms": round(total / 1e3 / n, 2),
        "ops": [{"op": op, "ms": round(us / 1e3 / n, 2), "share": round(us / total, 4) if total else None, "calls": calls[op] // n}
                for op, us in by_op.most_common(top)],
        # INT8 GEMM work: convolutions and matmuls on int8 kernels (an int8 Transpose or Reorder only moves data)
        "int8_ms": round(sum(us for op, us in by_op.items() if op.startswith(GEMM_LAYERS) and "_i8" in op.lower()) / 1e3 / n, 2),
        "top_nodes": [{"node": k, "ms": round(v / 1e3 / n, 2)} for k, v in nodes.most_common(8)],
    }


def torch_profile(module, images: np.ndarray, iters: int = 1, warmup: int = 1, top: int = 12) -> dict:
    """Per-aten-op self CPU time of eager inference (``torch.profiler``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    x = torch.from_numpy(images)
    with torch.inference_mode():
        for _ in range(max(0, warmup)):
            module(x)
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(max(1, iters)):
                module(x)
    n = max(1, iters)
    avgs = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in avgs)
    return {
        "tool": f"torch {torch.__version__} torch.profiler (CPU, {torch.get_num_threads()} threads)",
        "iters": n, "total_ms": round(total / 1e3 / n, 2),
        "ops": [{"op": e.key, "ms": round(e.self_cpu_time_total / 1e3 / n, 2),
                 "share": round(e.self_cpu_time_total / total, 4) if total else None, "calls": e.count // n}
                for e in avgs[:top]],
    }


def format_profile(prof: dict, title: str) -> str:
    """Markdown table of a profile."""
    lines = [f"**{title}** - {prof['tool']}, {prof['iters']} iteration(s), {prof['total_ms']:.0f} ms of operator time per run", "",
             "| operator | ms / run | share | calls / run |", "|---|---:|---:|---:|"]
    for o in prof["ops"]:
        lines.append(f"| {o['op']} | {o['ms']:.1f} | {100 * (o['share'] or 0):.1f}% | {o['calls']} |")
    return "\n".join(lines)
