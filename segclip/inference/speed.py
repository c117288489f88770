"""Which artifact is fastest on this machine: every gated artifact of an export timed on every runtime
found here, recorded in its manifest (``segclip.contract.SPEED``), so that predict, eval and
triton-repo run the fastest one by default (``contract.choose_artifact`` decides).

``segclip export`` measures once it has gated its artifacts; ``segclip tune EXPORT`` measures again,
e.g. after copying the export to the machine that will run it.  A few calls per pair at the window
and batch ``segclip predict`` uses: enough to rank paths that differ by 1.3x or more (benchmarks/
RESULTS.md: ORT FP32 vs OpenVINO INT8 differs 2.3x at 512 px on a VNNI CPU), not a benchmark --
``segclip benchmark`` is that.
"""
from __future__ import annotations

import importlib.util
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from segclip.contract import (FORMATS, RUNNABLE, RUNTIME_NAMES, SPEED, artifact_problem, manifest_signature, read_manifest,
                              same_machine, tensorrt_unavailable_reason, this_machine, write_manifest)
from segclip.errors import one_line
from segclip.parsers import split_device
from segclip.inference.predict import DEFAULT_WINDOW  # predict's window for exports that take any size

CALLS = 3  # timed calls per pair, after one warm-up call (session creation, compile, allocator growth)


def random_batches(batch: int, height: int, width: int, count: int = 4, seed: int = 0) -> list:
    """``count`` distinct uint8 batches N x H x W x 3 with values in 1..255 (never constant, so no
    backend can take a shortcut)."""
    rng = np.random.default_rng([seed, batch, height, width])
    return [rng.integers(1, 256, size=(batch, height, width, 3), dtype=np.uint8) for _ in range(max(1, count))]


def pairs(manifest: dict, directory) -> list:
    """(artifact, runtime) pairs to time: gated artifacts (``artifact_problem`` None) on each runtime
    installed here; TensorRT engines only where TensorRT runs."""
    out = []
    for key in RUNNABLE:
        if artifact_problem(manifest, key, directory) is not None:
            continue
        if FORMATS[key].runner == "tensorrt":
            if tensorrt_unavailable_reason() is None:
                out.append((key, "tensorrt"))
            continue
        out += [(key, rt) for rt in FORMATS[key].runtimes if importlib.util.find_spec(rt) is not None]
    return out


def _versions() -> dict:
    from importlib import metadata

    v = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt"):
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return v


def window_of(manifest: dict, size: Optional[int] = None) -> tuple:
    """The window predict uses on this export: its fixed size, else ``size`` (default ``DEFAULT_WINDOW``)."""
    sig = manifest_signature(manifest)
    return (int(size or DEFAULT_WINDOW),) * 2 if sig.dynamic_size else (sig.height, sig.width)


def time_pair(directory, artifact: str, runtime: str, window: tuple, *, batch: Optional[int] = None,
              calls: int = CALLS, threads: Optional[int] = None) -> dict:
    """One row: median ms per call of ``artifact`` on ``runtime`` at predict's batch for that runner
    (``predict.default_batch``, at most the artifact's max), or the one-line reason it could not run."""
    from segclip.inference.predict import default_batch
    from segclip.runtime import load_runner

    row = {"artifact": artifact, "runtime": runtime}
    opts = {"format": artifact, **({"runtime": runtime} if runtime != "tensorrt" else {})}
    if threads and runtime != "tensorrt":
        opts["threads"] = int(threads)
    try:
        runner = load_runner(directory, **opts)
        b = batch or default_batch(runner, window)
        b = min(b, runner.max_batch) if runner.max_batch else b
        inputs = random_batches(b, *window, count=2, seed=3)
        with runner:
            runner.infer(inputs[0])  # warm-up: compile, allocate
            samples = []
            for i in range(max(1, calls)):
                t0 = time.perf_counter()
                runner.infer(inputs[(i + 1) % len(inputs)])
                samples.append((time.perf_counter() - t0) * 1e3)
        row.update({"device": str(runner.describe().get("device") or "cpu"), "batch": b,
                    "ms": round(statistics.median(samples), 3)})
    except Exception as e:  # any runtime's own error type: a row saying why, never a failed export or tune
        row["error"] = one_line(e, 200)
    return row


def measure(directory, *, manifest: Optional[dict] = None, size: Optional[int] = None, calls: int = CALLS,
            threads: Optional[int] = None, log: Callable = print) -> dict:
    """Time every gated artifact of the export in ``directory`` on every runtime here -> a speed record
    (``contract.SPEED``) for this machine.  ``manifest``: the one being written (at export)."""
    d = Path(directory)
    m = manifest if manifest is not None else read_manifest(d)
    window = window_of(m, size)
    rows = []
    for artifact, runtime in pairs(m, d):
        row = time_pair(d, artifact, runtime, window, calls=calls, threads=threads)
        rows.append(row)
    machine = {**this_machine(), "threads": threads, "versions": _versions()}
    gpu = next((r["device"] for r in rows if str(r.get("device", "")).startswith("cuda")), None)
    if gpu:
        import torch

        machine["gpu"] = torch.cuda.get_device_name(split_device(gpu)[1] or 0)
    rec = {"machine": machine, "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "window": list(window), "calls": calls, "rows": rows}
    for line in table(rec):
        log(line)
    return rec


def table(rec: dict) -> list:
    """The record as printed lines, fastest first, each with its speed over ONNX Runtime FP32."""
    m = rec["machine"]
    rows = rec.get("rows") or []
    ref = next((r["ms"] for r in rows if r.get("artifact") == "onnx" and r.get("runtime") == "onnxruntime" and "ms" in r), None)
    h, w = rec["window"]
    out = [f"speed on this machine ({m.get('cpu')}, {m.get('isa')}, {m.get('cpus')} CPUs; {h}x{w} windows, "
           f"median of {rec.get('calls')} calls):"]
    for r in sorted(rows, key=lambda r: r.get("ms", float("inf"))):
        what = f"  {r['artifact']:<14} {RUNTIME_NAMES.get(r['runtime'], r['runtime']):<13}"
        if "ms" in r:
            x = f" ({ref / r['ms']:.2f}x ORT FP32)" if ref else ""
            out.append(f"{what} {r['ms']:9.1f} ms / batch of {r['batch']}{x}")
        else:
            out.append(f"{what} not measured: {r['error']}")
    if not rows:
        out.append("  no gated artifact to time")
    return out


def record(manifest: dict, rec: dict) -> dict:
    """``manifest`` with ``rec`` as its record for rec's machine (an earlier one of the same machine replaced)."""
    keep = [r for r in manifest.get(SPEED) or [] if isinstance(r, dict) and not same_machine(r.get("machine") or {}, rec["machine"])]
    manifest[SPEED] = keep + [rec]
    return manifest


def tune(directory, *, size: Optional[int] = None, calls: int = CALLS, threads: Optional[int] = None,
         log: Callable = print) -> dict:
    """``segclip tune``: measure the export in ``directory`` here and record it in its manifest
    (written atomically; the artifacts are not touched).  Returns the record."""
    from segclip.contract import choose_artifact

    d = Path(directory)
    m = read_manifest(d)
    rec = measure(d, manifest=m, size=size, calls=calls, threads=threads, log=log)
    write_manifest(d, record(m, rec))
    log(choose_artifact(m, d).line())
    return rec


__all__ = ["CALLS", "DEFAULT_WINDOW", "random_batches", "pairs", "window_of", "time_pair", "measure", "table", "record", "tune"]
