"""Where the time goes, per operator type: ONNX Runtime's profiler and torch.profiler.

Used by ``run_targets.py`` when a target is missed, so RESULTS.md can say which operators dominate.
Both return ``{"total_ms": per-iteration total, "ops": [{"op", "ms", "share", "calls"}, ...]}``
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
