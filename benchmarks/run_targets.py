#!/usr/bin/env python
"""Measure segclip's deployment performance targets in ONE run and write ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/run_targets.py                      # CPU targets (+ GPU target on a GPU box)
    .venv/bin/python benchmarks/run_targets.py --sizes 512 --reps 3 --out /tmp/segclip-targets

Targets (full ``segclip-r50`` preset, random init - latency does not depend on training; no
weights can be downloaded, so CLIP/backbone weights are random and the text embeddings are random
unit vectors):

1. ONNX Runtime CPU FP32 >= 2.0x faster than PyTorch eager FP32 at 512x512 and >= 2.5x at
   1024x1024, batch 1, same thread count for both.
2. ONNX Runtime CPU's effective FLOP rate (model FLOPs / p50 latency) >= 60% of a 4096^2 FP32 GEMM
   (torch.mm, same threads) measured in the same run.  FLOPs counted from the ONNX graph.
3. Triton gRPC on the same host (uint8 in, uint8 class map out) p50 <= 1.10x the in-process ONNX
   Runtime p50, batch 1 (also measured with system shared memory).
4. On an NVIDIA GPU: TensorRT FP16 >= 5x faster than PyTorch eager FP32 at 1024x1024 batch 1 with
   mIoU delta <= 0.1 point (recorded as not measured, with the reason, when there is no GPU).
5. INT8 on CPU (``segclip export --int8``): ONNX Runtime INT8 >= 2.0x PyTorch eager FP32 at 512x512 and
   >= 2.5x at 1024x1024, and faster than torch.compile (inductor) and OpenVINO FP32 at both sizes;
   the table names the fastest segclip CPU path.  Accuracy on a trained model (``--int8-accuracy
   CKPT``, e.g. the quickstart's segclip-small): pixel agreement >= 98%, |dmIoU| <= 1 point on
   held-out labelled images.  ``--only int8`` measures this target alone and keeps the other
   sections of an earlier RESULTS.json.

A/B pairs are timed interleaved (round by round, order alternating), so load from other processes
on a shared machine falls on both sides alike.  Where a target is missed, the per-operator profiles
of both sides (ONNX Runtime ``enable_profiling``, ``torch.profiler``) are recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


from segclip.benchmarks import flops as fl
from segclip.benchmarks import profiling as prof
from segclip.benchmarks.machine import describe as describe_machine
from segclip.benchmarks.machine import machine_info
from segclip.benchmarks.timing import default_threads, gemm_rate, measure_interleaved, random_batches, set_threads

HERE = Path(__file__).resolve().parent
LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
LOVEDA_PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128))
ORT_SPEEDUP = {512: 2.0, 1024: 2.5}
FLOP_SHARE = 0.60
TRITON_RATIO = 1.10
TRT_SPEEDUP, TRT_MIOU_DELTA = 5.0, 0.001  # mIoU is a fraction: 0.001 = 0.1 point
INT8_SPEEDUP = {512: 2.0, 1024: 2.5}
INT8_AGREEMENT, INT8_MIOU_POINTS = 0.98, 1.0
# the CPU paths of target 5: benchmark backend name -> what it runs (segclip.benchmarks.backends)
INT8_PATHS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8")
GAP_S = 0.3  # idle seconds before each timed call in the interleaved comparisons
MAX_FOREIGN = 0.15  # a sample is "clean" when other processes took <= 15% of the machine's CPU time during it


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- model and exports ------------------------------------------------------------------------------
def make_checkpoint(path: Path, preset: str = "segclip-r50", seed: int = 0) -> Path:
    """A random-init checkpoint of the full preset (no downloads): the latency is that of the trained model."""
    if path.is_file():
        return path
    import torch

    from segclip.config import get_preset
    from segclip.checkpoint import atomic_save, checkpoint_dict
    from segclip.modeling import build_model

    cfg = get_preset(preset).model
    cfg.backbone_weights = "none"
    cfg.clip_pretrained = "none"
    torch.manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(len(LOVEDA_CLASSES), 512), dim=-1)
    model = build_model(cfg, LOVEDA_CLASSES, text_embeddings=emb)
    atomic_save(checkpoint_dict(model, LOVEDA_PALETTE, dataset="random-init"), path)
    return path


def export_at(ckpt: Path, out: Path, size: int, fp16: bool = False, trt: bool = False, int8: bool = False, data=None,
              calib_images: int = 16) -> Path:
    """The export of ``ckpt`` at size x size under ``out`` (batch 1): core's export-or-reuse.  INT8 of
    a random-init model is for latency only (its class maps are near-ties), so no fallback rounds."""
    from segclip.benchmarks.core import export_or_reuse

    d, _ = export_or_reuse(ckpt, out / f"export_{size}", (size, size), fp16=fp16, trt=trt, int8=int8, max_batch=1, data=data,
                           calib_images=calib_images, log=log, export_log=lambda m: log(f"  export: {m.splitlines()[0]}"))
    return d


# ---- helpers ----------------------------------------------------------------------------------------
def verdict(measured, required, higher_is_better: bool, strict: bool = False) -> dict:
    """PASS when ``measured`` is at least (``strict``: more than) ``required``, or at most (less than)."""
    if measured is None:
        return {"result": "NOT MEASURED", "margin": None}
    if higher_is_better:
        ok = measured > required if strict else measured >= required
    else:
        ok = measured < required if strict else measured <= required
    if ok:
        return {"result": "PASS", "margin": round(measured - required, 3)}
    short = (required - measured) if higher_is_better else (measured - required)
    return {"result": "MISS", "margin": round(-short, 3), "miss_by": round(short, 3),
            "miss_by_pct": round(100 * short / required, 1)}


def timing_summary(t) -> dict:
    d = t.to_dict()
    out = {k: d[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "reps", "warmup", "foreign_cpu_mean")}
    out["clean"] = t.clean(MAX_FOREIGN)
    out["samples_ms"] = [round(x, 2) for x in t.samples_ms]
    out["foreign_cpu"] = [None if f is None else round(f, 3) for f in t.foreign]
    return out


def pick(sides: list) -> tuple:
    """(basis, {side: p50}) on the clean samples when every side has enough, else on all samples."""
    if all(s.get("clean") for s in sides):
        return "clean", [s["clean"]["p50_ms"] for s in sides]
    return "all", [s["p50_ms"] for s in sides]


# ---- targets 1 + 2: ONNX Runtime vs PyTorch eager on CPU, effective FLOP rate ------------------------------
def cpu_targets(ckpt: Path, exports: dict, threads: int, reps: int, warmup: int, budget_s: float, min_clean: int,
                max_s: float) -> dict:
    from segclip.runtime import load_runner

    out = {}
    for size, d in exports.items():
        log(f"CPU {size}x{size}: torch eager FP32 vs ONNX Runtime FP32, batch 1, {threads} threads (interleaved)")
        inputs = random_batches(1, size, size, count=3)
        torch_r = load_runner(ckpt, device="cpu", threads=threads, scores=False, name="torch-fp32")
        ort_r = load_runner(d, format="onnx", allow_failed=True, providers="cpu", threads=threads)
        with torch_r, ort_r:
            agree = float((torch_r.infer(inputs[0])["mask"] == ort_r.infer(inputs[0])["mask"]).mean())
            t = measure_interleaved({"torch": torch_r.infer, "onnxruntime": ort_r.infer}, inputs, warmup=warmup,
                                    min_rounds=reps, budget_s=budget_s, gap_s=GAP_S, min_clean=min_clean,
                                    max_foreign=MAX_FOREIGN, max_s=max_s, log=log)
        tt, to = timing_summary(t["torch"]), timing_summary(t["onnxruntime"])
        basis, (p_t, p_o) = pick([tt, to])
        speedup = p_t / p_o
        g = fl.onnx_flops(d / "model.onnx", batch=1)
        out[size] = {"torch": tt, "onnxruntime": to, "basis": basis, "torch_p50": p_t, "ort_p50": p_o,
                     "speedup": round(speedup, 3), "pixel_agreement": round(agree, 6),
                     "flops": g, "onnx_file_mb": round((d / "model.onnx").stat().st_size / 2**20, 1),
                     "required_speedup": ORT_SPEEDUP.get(size, 2.0)}
        log(f"  torch p50 {p_t:.0f} ms, onnxruntime p50 {p_o:.0f} ms ({basis} samples) -> {speedup:.2f}x; "
            f"{g['gflops']:.1f} GFLOPs -> {g['flops'] / p_o / 1e6:.1f} GFLOP/s")
    return out


def add_profiles(res: dict, ckpt: Path, exports: dict, threads: int, which: str) -> None:
    """Per-operator profiles of both sides for the sizes that missed a target (or all with --profile all)."""
    from segclip.checkpoint import load_checkpoint, model_from_checkpoint
    from segclip.modeling import SegCLIPInference

    module = None
    for size, r in res["cpu"].items():
        missed = r["speedup_verdict"]["result"] == "MISS" or r["flop_verdict"]["result"] == "MISS"
        if not (which == "all" or (which == "auto" and missed)):
            continue
        x = random_batches(1, size, size, count=1, seed=11)[0]
        log(f"profiling {size}x{size}: onnxruntime (enable_profiling) and torch eager (torch.profiler)")
        r["profile_onnxruntime"] = prof.ort_profile(exports[size] / "model.onnx", x, threads=threads, iters=1, warmup=1)
        if module is None:
            set_threads(threads)
            module = SegCLIPInference(model_from_checkpoint(load_checkpoint(ckpt)), scores=False).eval()
        r["profile_torch"] = prof.torch_profile(module, x, iters=1, warmup=1)


# ---- target 3: Triton gRPC vs in-process ONNX Runtime -------------------------------------------------
def triton_target(export_dir: Path, size: int, threads: int, reps: int, warmup: int, budget_s: float, work: Path,
                  min_clean: int = 0, max_s: float = 600.0) -> dict:
    from segclip.benchmarks.core import start_triton
    from segclip.errors import one_line
    from segclip.runtime import load_runner

    try:
        server = start_triton(export_dir, work / f"triton_repo_{size}", threads=threads, max_batch=1, queue_delay_us=0,
                              startup_timeout=300, log=log)
    except ImportError as e:
        return {"status": f"not measured: segclip.serving is not available ({e})"}
    except Exception as e:
        return {"status": f"not measured: cannot start a Triton server here ({one_line(e, 300)})"}
    try:
        model = server.models[0]
        url = server.model_url(model, "grpc")
        log(f"Triton {size}x{size}: in-process ONNX Runtime vs {url} (plain and system shared memory), batch 1")
        inputs = random_batches(1, size, size, count=3)
        local = load_runner(export_dir, format="onnx", allow_failed=True, providers="cpu", threads=threads)
        grpc_r = load_runner(url)
        shm_r = None
        shm_note = None
        try:
            shm_r = load_runner(url, shm=True)
            shm_r.activate()
        except Exception as e:
            shm_note = f"shared memory unavailable: {one_line(e)}"
            shm_r = None
        with local, grpc_r:
            ref = local.infer(inputs[0])["mask"]
            agree = float((grpc_r.infer(inputs[0])["mask"] == ref).mean())
            fns = {"onnxruntime": local.infer, "triton-grpc": grpc_r.infer}
            if shm_r is not None:
                fns["triton-grpc-shm"] = shm_r.infer
            from segclip.benchmarks.timing import CpuMeter
            from segclip.serving.server import process_group_pids

            meter = CpuMeter(own_pids=lambda: process_group_pids(server.pid))  # the server's work is ours
            t = measure_interleaved(fns, inputs, warmup=warmup, min_rounds=reps, budget_s=budget_s, gap_s=GAP_S, meter=meter,
                                    min_clean=min_clean, max_foreign=MAX_FOREIGN, max_s=max_s, log=log)
        if shm_r is not None:
            shm_r.deactivate()
        res = {"status": "measured", "size": size, "url": url, "server": server.describe(), "model": model,
               "pixel_agreement": round(agree, 6), "shm_note": shm_note}
        for k, v in t.items():
            res[k] = timing_summary(v)
        keys = [k for k in ("onnxruntime", "triton-grpc", "triton-grpc-shm") if k in res]
        basis, p50s = pick([res[k] for k in keys])
        p50 = dict(zip(keys, p50s))
        res["basis"], res["p50"] = basis, p50
        base = p50["onnxruntime"]
        res["ratio_grpc"] = round(p50["triton-grpc"] / base, 4)
        res["ratio_grpc_shm"] = round(p50["triton-grpc-shm"] / base, 4) if "triton-grpc-shm" in p50 else None
        best = min(x for x in (res["ratio_grpc"], res["ratio_grpc_shm"]) if x is not None)
        res["ratio"] = best
        res["transport"] = "system shared memory" if best == res["ratio_grpc_shm"] else "gRPC payload"
        log(f"  local p50 {base:.0f} ms, grpc {p50['triton-grpc']:.0f} ms ({res['ratio_grpc']:.3f}x)"
            + (f", grpc+shm {p50['triton-grpc-shm']:.0f} ms ({res['ratio_grpc_shm']:.3f}x)" if res["ratio_grpc_shm"] else "")
            + f" ({basis} samples)")
        return res
    finally:
        server.stop()


# ---- target 4: TensorRT FP16 on a GPU -----------------------------------------------------------------
def gpu_target(ckpt: Path, out: Path, size: int, reps: int, warmup: int, budget_s: float, data) -> dict:
    from segclip.benchmarks import accuracy as acc
    from segclip.contract import read_manifest, tensorrt_unavailable_reason
    from segclip.inference.compare import miou, score
    from segclip.runtime import load_runner

    why = tensorrt_unavailable_reason()
    if why:
        return {"status": f"not measured: {why}"}
    d = export_at(ckpt, out, size, fp16=True, trt=True)

    art = (read_manifest(d).get("artifacts") or {}).get("tensorrt") or {}
    if not art.get("file"):
        return {"status": f"not measured: the TensorRT engine was not built ({art.get('reason', 'unknown reason')})"}
    log(f"GPU {size}x{size}: torch eager FP32 (cuda) vs TensorRT {art.get('precision')}, batch 1")
    inputs = random_batches(1, size, size, count=3)
    torch_r = load_runner(ckpt, device="cuda", scores=False, name="torch-fp32-cuda")
    trt_r = load_runner(d, format="tensorrt", allow_failed=True)
    with torch_r, trt_r:
        t = measure_interleaved({"torch-cuda": torch_r.infer, "tensorrt": trt_r.infer}, inputs, warmup=max(warmup, 3),
                                min_rounds=max(reps, 20), budget_s=budget_s, gap_s=0.0, log=None)
        items, desc = acc.load_items(data or sample_data(out, size, n=8), 8, LOVEDA_CLASSES)
        ref = acc.predict(torch_r, items, size, size, batch=1)
        got = acc.predict(trt_r, items, size, size, batch=1)
    k, labels = len(LOVEDA_CLASSES), acc.labels_of(items)
    m_ref = miou(ref, labels, k, LOVEDA_CLASSES)
    s = score(got, ref, labels, k, m_ref, LOVEDA_CLASSES)  # the comparator of the export parity gate
    res = {"status": "measured", "size": size, "torch-cuda": timing_summary(t["torch-cuda"]), "tensorrt": timing_summary(t["tensorrt"]),
           "precision": art.get("precision"), "gpu": art.get("gpu"), "tensorrt_version": art.get("tensorrt_version"),
           "miou_torch": None if m_ref is None else round(m_ref, 6), "miou_tensorrt": s["miou"], "miou_delta": s["miou_delta"],
           "pixel_agreement": s["pixel_agreement"], "data": desc}
    res["basis"], (p_t, p_r) = pick([res["torch-cuda"], res["tensorrt"]])
    res["speedup"] = round(p_t / p_r, 3)
    return res


# ---- target 5: INT8 on CPU -------------------------------------------------------------------------------
def sample_data(out: Path, size: int, n: int = 24) -> str:
    from segclip.data.sample import generate_sample_dataset

    root = out / f"sample_{size}_{n}"  # per n: the speed and accuracy runs ask different counts at one size
    generate_sample_dataset(root, num_train=1, num_val=n, size=size)
    return f"sample:{root}:val"


def int8_speed(ckpt: Path, out: Path, sizes, threads: int, reps: int, warmup: int, min_clean: int, max_s: float) -> dict:
    """Every CPU path of segclip on the same inputs, interleaved, batch 1, at each size."""
    from segclip.benchmarks.backends import BACKENDS
    from segclip.benchmarks.core import Settings, Sources, make_runner
    from segclip.errors import one_line
    from segclip.contract import read_manifest

    res = {}
    sources = Sources(ckpt, out, fp16=False, trt=False, max_batch=1, log=log)
    settings = Settings(device="cpu", threads=threads)
    for size in sizes:
        # latency does not depend on the calibration: 4 images keep the 1024 px export short
        d = export_at(ckpt, out, size, int8=True, data=sample_data(out, size, n=8), calib_images=4)
        manifest = read_manifest(d)
        runners, unavailable = {}, {}
        for name in INT8_PATHS:  # the benchmark's own runner factory: a missing artifact is a reason, not a crash
            r, why = make_runner(BACKENDS[name], settings, sources, (size, size), (d, manifest), {})
            if why:
                unavailable[name] = why
            else:
                runners[name] = r
        inputs = random_batches(1, size, size, count=3)
        for name, r in list(runners.items()):
            try:
                t0 = time.perf_counter()
                r.activate()
                r.infer(inputs[0])  # torch.compile compiles here; OpenVINO compiles the shape
                log(f"  {name}: ready in {time.perf_counter() - t0:.1f} s")
            except Exception as e:
                unavailable[name] = one_line(e, 300)
                runners.pop(name)
        log(f"INT8 {size}x{size}: {', '.join(runners)} interleaved, batch 1, {threads} threads")
        t = measure_interleaved({n: r.infer for n, r in runners.items()}, inputs, warmup=warmup, min_rounds=reps, gap_s=GAP_S,
                                min_clean=min_clean, max_foreign=MAX_FOREIGN, max_s=max_s, log=log)
        for r in runners.values():
            r.deactivate()
        rows = {n: timing_summary(v) for n, v in t.items()}
        basis, p50s = pick(list(rows.values()))
        p50 = dict(zip(rows, p50s))
        arts = manifest["artifacts"]
        sizes_mb = {k: round((d / a["file"]).stat().st_size / 2**20, 2) for k, a in arts.items() if a.get("file")}
        res[size] = {"timing": rows, "basis": basis, "p50": p50, "unavailable": unavailable, "file_mb": sizes_mb,
                     "speedup_vs_torch": {n: round(p50["torch"] / v, 3) for n, v in p50.items()} if "torch" in p50 else {},
                     "fastest": min(p50, key=p50.get), "export": str(d)}
        log("  " + ", ".join(f"{n} {v:.0f} ms" for n, v in p50.items()) + f" ({basis} samples); fastest {res[size]['fastest']}")
    return res


def int8_accuracy(ckpt: Path, out: Path, data, size: int) -> dict:
    """The exporter's own INT8 gate on a trained model: held-out labelled images, never calibration ones."""
    from segclip.errors import GateFailed
    from segclip.contract import read_manifest
    from segclip.export import export

    d = out / f"int8_accuracy_{size}"
    data = data or sample_data(out, size, n=32)
    try:
        export(ckpt, d, int8=True, data=data, size=size, calib_images=16, parity_images=16, batch=(1, 1, 4), force=True,
               log=lambda m: log(f"  export: {m.splitlines()[0]}"))
    except GateFailed as e:
        log(f"  INT8 gate failed: {e}")
    m = read_manifest(d)
    rows = {}
    for k in ("onnx_int8", "onnx_int8_cpu"):
        a = m["artifacts"][k]
        rows[k] = {"pixel_agreement": a["parity"]["pixel_agreement"], "miou": a["parity"]["miou"],
                   "miou_delta_points": None if a["parity"]["miou_delta"] is None else round(100 * a["parity"]["miou_delta"], 3),
                   "per_class_iou_delta": a["parity"].get("per_class_iou_delta"), "status": a["status"],
                   "fallback_float_nodes": [x["name"] for x in a["int8"].get("fallback_float_nodes", [])]}
    cal = m["artifacts"]["onnx_int8"]["int8"]["calibration"]
    return {"checkpoint": str(ckpt), "size": size, "data": cal["source"], "calibration_images": cal["calibration_images"],
            "gate_images": cal["gate_images"], "torch_miou": m["parity"]["reference"]["miou"], "rows": rows,
            "table": m["parity"]["table"]}


def int8_targets(res: dict) -> list:
    out = []
    i8 = res.get("int8") or {}
    for size, r in (i8.get("speed") or {}).items():
        size = int(size)
        sp = r["speedup_vs_torch"].get("onnxruntime-int8")
        req = INT8_SPEEDUP.get(size, 2.0)
        out.append({"id": "5", "name": f"ORT CPU INT8 vs PyTorch eager FP32, {size}x{size} batch 1", "measured": sp,
                    "measured_text": f"{sp:.2f}x" if sp else "not measured", "required_text": f">= {req:g}x",
                    "verdict": verdict(sp, req, True)})
        p = r["p50"]
        if "onnxruntime-int8" in p:
            others = {k: p[k] for k in ("torch-compile", "openvino") if k in p}
            worst = min(others.values()) / p["onnxruntime-int8"] if others else None
            out.append({"id": "5", "name": f"ORT CPU INT8 faster than torch-compile and OpenVINO FP32, {size}x{size}",
                        "measured": worst, "measured_text": ", ".join(f"{k} / ORT INT8 = {v / p['onnxruntime-int8']:.2f}x" for k, v in others.items())
                        + "".join(f"; {k}: {w}" for k, w in r["unavailable"].items() if k in ("torch-compile", "openvino")),
                        "required_text": "> 1x each", "verdict": verdict(worst, 1.0, True, strict=True)})
    acc = i8.get("accuracy")
    if acc:
        for k, row in acc["rows"].items():
            out.append({"id": "5", "name": f"INT8 {k} vs PyTorch FP32 on a trained model: pixel agreement", "measured": row["pixel_agreement"],
                        "measured_text": f"{100 * row['pixel_agreement']:.2f}%", "required_text": f">= {100 * INT8_AGREEMENT:.0f}%",
                        "verdict": verdict(row["pixel_agreement"], INT8_AGREEMENT, True)})
            d = row["miou_delta_points"]
            out.append({"id": "5", "name": f"INT8 {k} vs PyTorch FP32 on a trained model: |dmIoU|", "measured": d,
                        "measured_text": "n/a" if d is None else f"{d:+.2f} points", "required_text": f"<= {INT8_MIOU_POINTS:g} point",
                        "verdict": verdict(None if d is None else abs(d), INT8_MIOU_POINTS, False)})
    return out


def int8_section(res: dict) -> list:
    i8 = res.get("int8")
    L = ["", "## 5. INT8 on CPU: every segclip CPU path side by side", ""]
    if not i8:
        return L + ["not measured in this run (`--only int8` measures it)."]
    if i8.get("measured"):
        L += [f"Measured {i8['measured']} (`{i8.get('command', '')}`); load average before: {i8.get('load_before')}, after: "
              f"{i8.get('load_after')}.", ""]
    L += [f"INT8 graphs by `segclip export --int8` (ONNX Runtime `quantize_static`, QDQ, per-channel int8 weights, "
          f"{i8.get('calibration', '16 calibration images of a rendered sample set at the same size')}): `model_int8_cpu.onnx` "
          f"(uint8 activations) for ONNX Runtime, `model_int8.onnx` (symmetric int8, the TensorRT graph) for OpenVINO. "
          f"Same random-init `{res.get('preset', 'segclip-r50')}` as above (latency does not depend on training). "
          f"Interleaved rounds, {GAP_S} s idle before each call, batch 1, {res.get('threads')} threads; p50 ms (samples).", ""]
    for size, r in (i8.get("speed") or {}).items():
        L += [f"**{size}x{size}** ({r['basis']} samples); fastest: **{r['fastest']}**", "",
              "| path | p50 ms | speedup vs torch eager | file MB |", "|---|---:|---:|---:|"]
        fm = r["file_mb"]
        files = {"onnxruntime": fm.get("onnx"), "openvino": fm.get("onnx"), "onnxruntime-int8": fm.get("onnx_int8_cpu"),
                 "openvino-int8": fm.get("onnx_int8")}
        for n, v in r["p50"].items():
            t = r["timing"][n]
            L.append(f"| {n} | {v:.1f} ({(t.get('clean') or t)['reps']}) | {r['speedup_vs_torch'].get(n, 0):.2f}x | "
                     f"{files.get(n) if files.get(n) is not None else '-'} |")
        for n, why in r["unavailable"].items():
            L.append(f"| {n} | unavailable: {why} | - | - |")
        L.append("")
    for size, r in (i8.get("speed") or {}).items():
        fm = r["file_mb"]
        if fm.get("onnx") and fm.get("onnx_int8_cpu"):
            L += [f"File sizes at {size}x{size}: `model.onnx` {fm['onnx']} MB, `model_int8.onnx` {fm.get('onnx_int8')} MB, "
                  f"`model_int8_cpu.onnx` {fm['onnx_int8_cpu']} MB ({fm['onnx_int8_cpu'] / fm['onnx']:.2f} of FP32).", ""]
    acc = i8.get("accuracy")
    if acc:
        L += [f"**Accuracy** ({acc['checkpoint']}, {acc['size']}x{acc['size']}): calibrated on {acc['calibration_images']} images of "
              f"{acc['data']}, gated on {acc['gate_images']} other labelled images of it (never a calibration image). "
              f"Torch FP32 mIoU {acc['torch_miou']}.", "", "```", acc["table"], "```", ""]
    if i8.get("quantizers"):
        L += ["**Quantizer choice.** " + i8["quantizers"], ""]
    return L


# ---- RESULTS.md -------------------------------------------------------------------------------------
def _v(v: dict) -> str:
    if v["result"] == "PASS":
        return "PASS"
    if v["result"] == "MISS":
        return f"MISS (short by {v['miss_by']:g}, {v['miss_by_pct']:g}%)"
    return v["result"]


def _ms(t: dict) -> str:
    c = t.get("clean")
    return f"{t['p50_ms']:.1f} ({t['reps']}) / " + (f"{c['p50_ms']:.1f} ({c['reps']})" if c else "-")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def write_results(res: dict, path: Path) -> None:
    m = res["machine"]
    L = ["# segclip performance targets - measured results", "",
         f"Measured {res['finished']} by `benchmarks/run_targets.py` in one run ({res['seconds'] / 60:.1f} min).", "",
         "```", res["command"], "```", "",
         f"**Machine:** {describe_machine(m)}.  ",
         f"CPU flags: {', '.join(m.get('cpu_flags') or []) or 'n/a'}; load average at start {m.get('load_average')}, "
         f"at end {res.get('load_average_end')} (a shared machine: other jobs ran beside this one).", "",
         f"**Model:** `{res['preset']}` ({res['preset_description'][:1].lower() + res['preset_description'][1:].rstrip('.')}), random init, {res['params_m']:.1f} M parameters, {len(LOVEDA_CLASSES)} LoveDA classes; exported by "
         f"`segclip export` (opset 17, onnxslim, uint8 NHWC in, uint8 class map out, no scores), batch 1. Latency does not "
         f"depend on training.", "",
         f"**Method:** batch 1, {res['threads']} threads for PyTorch (`torch.set_num_threads`) and ONNX Runtime (intra-op; "
         f"inter-op 1; graph optimisation ORT_ENABLE_ALL - the `OnnxRunner` defaults); {res['warmup']} untimed warm-up "
         f"call(s) per side; at least {res['reps']} timed rounds, the two sides interleaved round by round (order alternating) "
         f"so load from other processes falls on both; 3 distinct random uint8 images rotated; p50 = median of per-call "
         f"`perf_counter` times around `runner.infer` (host uint8 in, host arrays out); {GAP_S} s idle before every timed call, "
         f"so neither runtime's spinning worker threads (ONNX Runtime's pool, OpenMP) steal the cores from the other's next "
         f"call.  Each sample records the CPU share other processes took while it ran (`/proc/stat` minus this process "
         f"and, for Triton, the server's process group); a sample is *clean* when that share is <= {100 * MAX_FOREIGN:.0f}%.  "
         + (f"Rounds go on until every side has {res['reps']} clean samples (at most {res['max_minutes']:g} min per comparison).  "
            if res.get("wait_clean") else "") +
         f"Ratios use the clean samples when both sides have >= 3 of them (basis `clean`), else all samples (basis `all`); "
         f"both p50s are shown.  (Counts of samples in parentheses.)", "",
         "## Summary", "", "| # | target | measured | required | result |", "|---|---|---:|---:|---|"]
    for t in res["targets"]:
        L.append(f"| {t['id']} | {t['name']} | {t['measured_text']} | {t['required_text']} | {_v(t['verdict'])} |")
    L += ["", "## 1-2. ONNX Runtime vs PyTorch eager on CPU, effective FLOP rate", ""]
    g = res.get("gemm") or {}
    if g:
        L.append(f"GEMM reference: {g['method']}, {g['threads']} threads: **{g['gflops_best']:.1f} GFLOP/s** "
                 f"(best of {g['reps']} after warm-up, others' CPU share {_pct(g.get('foreign_cpu_at_best'))}; measured before "
                 f"and after the model timings: {' and '.join(f'{x:.1f}' for x in res['gemm_runs_gflops'])} GFLOP/s, higher kept).")
        L.append("")
    L += ["| size | torch p50 ms: all / clean samples | onnxruntime p50 ms: all / clean | basis | speedup | model GFLOPs | "
          "ORT GFLOP/s | % of GEMM | others' CPU share (torch / ORT) | ORT vs torch pixel agreement |",
          "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size, r in res["cpu"].items():
        L.append(f"| {size}x{size} | {_ms(r['torch'])} | {_ms(r['onnxruntime'])} | {r['basis']} | **{r['speedup']:.2f}x** | "
                 f"{r['flops']['gflops']:.1f} | {r['ort_gflops']:.1f} | **{100 * r['flop_share']:.1f}%** | "
                 f"{_pct(r['torch']['foreign_cpu_mean'])} / {_pct(r['onnxruntime']['foreign_cpu_mean'])} | "
                 f"{100 * r['pixel_agreement']:.3f}% |")
    first = next(iter(res["cpu"].values()), None)
    if first:
        L += ["", f"FLOPs: {first['flops']['method']}; breakdown at {next(iter(res['cpu']))} px: "
              + ", ".join(f"{k} {v:.1f} G" for k, v in first["flops"]["by_op_gflops"].items())
              + (f". Cross-check: {res['flops_check']['method']} gives {res['flops_check']['gflops']:.1f} GFLOPs at "
                 f"{res['flops_check']['size']} px (ONNX count {res['flops_check']['onnx_gflops']:.1f})." if res.get("flops_check") else ".")]
    for size, r in res["cpu"].items():
        a = r["analysis"]
        if r["speedup_verdict"]["result"] != "MISS":
            continue
        L += ["", f"**Why {size}x{size} misses {r['required_speedup']:g}x:** PyTorch eager already runs this model at "
              f"{a['torch_gflops']:.1f} GFLOP/s ({100 * a['torch_share_of_gemm']:.0f}% of the GEMM rate), so {r['required_speedup']:g}x "
              f"needs ONNX Runtime at <= {a['needed_ort_p50_ms']:.0f} ms, i.e. {100 * a['needed_ort_share_of_gemm']:.0f}% of the "
              f"GEMM rate for the counted FLOPs (it reaches {100 * r['flop_share']:.0f}%). Even at 100% of the GEMM rate the "
              f"speedup would be {a['ceiling_speedup_at_gemm_rate']:.2f}x"
              + (": the target is out of reach by runtime efficiency alone; it needs fewer FLOPs or a slower baseline."
                 if a["ceiling_speedup_at_gemm_rate"] < r["required_speedup"] else
                 ": reachable in principle, by removing non-GEMM time (the profile below).")]
        if r.get("variants"):
            L += ["", f"Export/session variants at {size}x{size} (`segclip/benchmarks/variants.py`, interleaved among themselves; "
                  f"projected speedup = measured speedup x default p50 / variant p50):", "",
                  "| variant | p50 ms | vs default | projected speedup | pixel agreement |", "|---|---:|---:|---:|---:|"]
            for k, v in r["variants"].items():
                L.append(f"| {k} | {v['p50_ms']:.0f} ({v['basis']}, {v['reps']}) | {v['vs_default']:.3f} | "
                         f"{v['projected_speedup']:.2f}x | {100 * v['pixel_agreement']:.3f}% |")
    for size, r in res["cpu"].items():
        if "profile_onnxruntime" in r:
            L += ["", f"### Profile at {size}x{size}", "", prof.format_profile(r["profile_onnxruntime"], "ONNX Runtime"), "",
                  prof.format_profile(r["profile_torch"], "PyTorch eager")]
    L += ["", "## 3. Triton gRPC vs in-process ONNX Runtime", ""]
    tr = res["triton"]
    if tr.get("status") == "measured":
        L += [f"Server: {tr['server']}, model `{tr['model']}` (ONNX Runtime in Triton's python backend, same "
              f"{res['threads']} intra-op threads), `max_batch_size` 1, no queue delay; client `TritonRunner` (tritonclient gRPC), "
              f"same host.  Responses agree with the local result on {100 * tr['pixel_agreement']:.3f}% of pixels.", "",
              f"| path | p50 ms: all / clean samples | p90 ms | p50 / in-process ({tr['basis']} samples) | others' CPU share |",
              "|---|---:|---:|---:|---:|"]
        for k in ("onnxruntime", "triton-grpc", "triton-grpc-shm"):
            if k in tr:
                L.append(f"| {k} | {_ms(tr[k])} | {tr[k]['p90_ms']:.1f} | {tr['p50'][k] / tr['p50']['onnxruntime']:.3f} | "
                         f"{_pct(tr[k]['foreign_cpu_mean'])} |")
        if tr.get("shm_note"):
            L += ["", tr["shm_note"]]
    else:
        L.append(tr.get("status", "not measured"))
    L += ["", "## 4. TensorRT FP16 vs PyTorch eager FP32 on an NVIDIA GPU", ""]
    gp = res["gpu"]
    if gp.get("status") == "measured":
        L += [f"GPU {gp.get('gpu')}, TensorRT {gp.get('tensorrt_version')}, engine precision {gp.get('precision')}, {gp['size']}x{gp['size']}.",
              "", "| path | p50 ms: all / clean samples | p90 ms |", "|---|---:|---:|",
              f"| torch eager FP32 (cuda) | {_ms(gp['torch-cuda'])} | {gp['torch-cuda']['p90_ms']:.2f} |",
              f"| TensorRT | {_ms(gp['tensorrt'])} | {gp['tensorrt']['p90_ms']:.2f} |", "",
              f"Speedup {gp['speedup']:.2f}x ({gp['basis']} samples); mIoU torch {gp['miou_torch']} vs TensorRT {gp['miou_tensorrt']} "
              f"(delta {100 * gp['miou_delta']:+.2f} points) on {gp['data']}; pixel agreement {gp['pixel_agreement']}."]
    else:
        L += [f"**{gp.get('status')}.** The code path is ready for a GPU box: `run_targets.py` exports the engine "
              f"(`segclip export --fp16 --trt --size 1024`), times `TensorRTRunner` against the PyTorch runner on cuda "
              f"(interleaved, >= 20 rounds) and compares mIoU on a labelled set (`--data`, else a generated 1024 px sample set)."]
    L += int8_section(res)
    if res.get("notes"):
        L += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    L += ["", f"Raw numbers, per-sample times and the profiles: `{res['json']}` (written by the same run).", ""]
    path.write_text("\n".join(L))


# ---- main -------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/segclip-targets", help="work dir: checkpoint, exports, targets.json")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help="where RESULTS.md goes")
    ap.add_argument("--preset", default="segclip-r50")
    ap.add_argument("--sizes", default="512,1024", help="CPU comparison sizes")
    ap.add_argument("--threads", type=int, default=None, help="threads for both sides (default: usable CPUs)")
    ap.add_argument("--reps", type=int, default=5, help="minimum interleaved rounds per comparison")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0.0, help="extra seconds of rounds per comparison after --reps")
    ap.add_argument("--wait-clean", action=argparse.BooleanOptionalAction, default=True,
                    help="keep interleaving until each side has --reps clean samples (others <= 15%% CPU), up to --max-minutes")
    ap.add_argument("--max-minutes", type=float, default=10.0, help="cap per comparison when waiting for clean samples")
    ap.add_argument("--triton-size", type=int, default=512)
    ap.add_argument("--skip-triton", action="store_true")
    ap.add_argument("--gpu-size", type=int, default=1024)
    ap.add_argument("--data", default=None, help="DATASET:ROOT:SPLIT for the GPU mIoU delta (default: generated sample)")
    ap.add_argument("--profile", choices=["auto", "all", "none"], default="auto", help="per-op profiles: where a target is missed")
    ap.add_argument("--render", metavar="JSON", default=None,
                    help="only re-write --results (and its .json twin) from a targets.json of an earlier run; measures nothing")
    ap.add_argument("--variants", choices=["auto", "all", "none"], default="auto",
                    help="ORT session/graph variants (benchmarks/variants.py): at the largest size that misses the speedup target")
    ap.add_argument("--only", choices=["all", "int8"], default="all",
                    help="int8: measure target 5 alone, keeping the other sections of an earlier --results JSON")
    ap.add_argument("--int8-accuracy", metavar="CKPT", default=None,
                    help="trained checkpoint for the INT8 accuracy gate (e.g. QUICKSTART/run/model_final.pt)")
    ap.add_argument("--int8-accuracy-size", type=int, default=256)
    args = ap.parse_args(argv)
    results = Path(args.results)
    if args.only == "int8":
        return main_int8(args, results)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        res["json"] = str(results.with_suffix(".json").name)
        results.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        write_results(res, results)
        log(f"wrote {results} from {args.render}")
        return 0

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(args.threads or default_threads())
    set_threads(threads)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    machine = machine_info(threads)
    log(f"machine: {describe_machine(machine)}")
    env = f"SEGCLIP_TRITON_ENV={shlex.quote(os.environ['SEGCLIP_TRITON_ENV'])} " if os.environ.get("SEGCLIP_TRITON_ENV") else ""
    res = {"command": "cd " + str(HERE.parent) + " && " + env + " ".join(shlex.quote(a) for a in
                                                                   [os.path.relpath(sys.executable, HERE.parent), "benchmarks/run_targets.py", *sys.argv[1:]]),
           "machine": machine, "threads": threads, "reps": args.reps, "warmup": args.warmup, "preset": args.preset,
           "wait_clean": args.wait_clean, "max_minutes": args.max_minutes,
           "notes": []}

    ckpt = make_checkpoint(out / f"{args.preset}-random.pt", args.preset)
    import torch

    from segclip.config import get_preset

    res["preset_description"] = get_preset(args.preset).description
    res["params_m"] = sum(v.numel() for v in torch.load(ckpt, map_location="cpu", weights_only=True)["model"].values()) / 1e6
    exports = {s: export_at(ckpt, out, s) for s in sorted(set(sizes + ([args.triton_size] if not args.skip_triton else [])))}

    gemm1 = gemm_rate(threads)
    log(f"GEMM {gemm1['gflops_best']:.1f} GFLOP/s ({threads} threads)")
    res["cpu"] = cpu_targets(ckpt, {s: exports[s] for s in sizes}, threads, args.reps, args.warmup, args.budget,
                             args.reps if args.wait_clean else 0, args.max_minutes * 60)
    gemm2 = gemm_rate(threads)
    res["gemm"] = max(gemm1, gemm2, key=lambda g: g["gflops_best"])
    res["gemm_runs_gflops"] = [gemm1["gflops_best"], gemm2["gflops_best"]]
    log(f"GEMM {gemm2['gflops_best']:.1f} GFLOP/s after the model timings")
    peak = res["gemm"]["gflops_best"]
    for size, r in res["cpu"].items():
        r["ort_gflops"] = round(r["flops"]["flops"] / r["ort_p50"] / 1e6, 2)
        r["flop_share"] = round(r["ort_gflops"] / peak, 4)
        r["speedup_verdict"] = verdict(r["speedup"], ORT_SPEEDUP.get(size, 2.0), True)
        r["flop_verdict"] = verdict(r["flop_share"], FLOP_SHARE, True)
    s0 = min(sizes)
    try:  # FLOP count cross-check with torch's counter at the smallest size
        from segclip.checkpoint import load_checkpoint, model_from_checkpoint
        from segclip.modeling import SegCLIPInference

        tf = fl.torch_flops(SegCLIPInference(model_from_checkpoint(load_checkpoint(ckpt))), s0, s0)
        res["flops_check"] = {"method": tf["method"], "gflops": tf["gflops"], "size": s0,
                              "onnx_gflops": res["cpu"][s0]["flops"]["gflops"]}
    except Exception as e:  # informative only
        res["notes"].append(f"torch FLOP cross-check failed: {e}")
    for size, r in res["cpu"].items():  # what the speedup target asks of ONNX Runtime, against this machine's GEMM
        req = ORT_SPEEDUP.get(size, 2.0)
        flops = r["flops"]["flops"]
        r["analysis"] = {"torch_gflops": round(flops / r["torch_p50"] / 1e6, 2),
                         "torch_share_of_gemm": round(flops / r["torch_p50"] / 1e6 / peak, 4),
                         "needed_ort_p50_ms": round(r["torch_p50"] / req, 1),
                         "needed_ort_share_of_gemm": round(flops / (r["torch_p50"] / req) / 1e6 / peak, 4),
                         "ceiling_speedup_at_gemm_rate": round(r["torch_p50"] / (flops / peak / 1e6), 3)}
    if args.profile != "none":
        add_profiles(res, ckpt, exports, threads, args.profile)
    missed = [s_ for s_, r in res["cpu"].items() if r["speedup_verdict"]["result"] == "MISS"]
    vsizes = list(res["cpu"]) if args.variants == "all" else (missed[-1:] if args.variants == "auto" else [])
    for size in vsizes:
        from segclip.benchmarks.variants import ort_variants

        log(f"ORT variants at {size}x{size} (graph optimisation levels, Einsum -> MatMul), interleaved")
        v = ort_variants(exports[size] / "model.onnx", size, threads, out, reps=max(3, args.reps - 2), warmup=args.warmup,
                         gap_s=GAP_S, min_clean=max(3, args.reps - 2) if args.wait_clean else 0, max_s=args.max_minutes * 60,
                         log=log)
        for name, x in v.items():
            x["projected_speedup"] = round(res["cpu"][size]["speedup"] * x["vs_default"] ** -1, 3)
        res["cpu"][size]["variants"] = v

    res["triton"] = {"status": "not measured: --skip-triton"} if args.skip_triton else \
        triton_target(exports[args.triton_size], args.triton_size, threads, args.reps, args.warmup, args.budget, out,
                      args.reps if args.wait_clean else 0, args.max_minutes * 60)
    try:  # a GPU failure must not lose the CPU and Triton figures measured above
        res["gpu"] = gpu_target(ckpt, out, args.gpu_size, args.reps, args.warmup, args.budget, args.data)
    except Exception as e:
        from segclip.errors import one_line

        log(f"GPU target failed: {one_line(e, 300)}")
        res["gpu"] = {"status": f"failed: {one_line(e, 300)}"}

    targets = []
    for size, r in res["cpu"].items():
        req = ORT_SPEEDUP.get(size, 2.0)
        targets.append({"id": "1", "name": f"ORT CPU FP32 vs PyTorch eager FP32, {size}x{size} batch 1",
                        "measured": r["speedup"], "measured_text": f"{r['speedup']:.2f}x", "required_text": f">= {req:g}x",
                        "verdict": r["speedup_verdict"]})
    for size, r in res["cpu"].items():
        targets.append({"id": "2", "name": f"ORT CPU effective FLOP rate / FP32 GEMM rate, {size}x{size}",
                        "measured": r["flop_share"],
                        "measured_text": f"{100 * r['flop_share']:.1f}% ({r['ort_gflops']:.1f} of {peak:.1f} GFLOP/s)",
                        "required_text": f">= {100 * FLOP_SHARE:.0f}%", "verdict": r["flop_verdict"]})
    tr = res["triton"]
    tv = verdict(tr.get("ratio"), TRITON_RATIO, False)
    targets.append({"id": "3", "name": f"Triton gRPC p50 / in-process ORT p50, {args.triton_size}x{args.triton_size} batch 1",
                    "measured": tr.get("ratio"),
                    "measured_text": (f"{tr['ratio']:.3f}x ({tr['transport']}; plain gRPC {tr['ratio_grpc']:.3f}x)"
                                      if tr.get("ratio") is not None else tr.get("status")),
                    "required_text": f"<= {TRITON_RATIO:.2f}x", "verdict": tv})
    gp = res["gpu"]
    if gp.get("status") == "measured":
        gv = verdict(gp["speedup"], TRT_SPEEDUP, True)
        dv = verdict(abs(gp["miou_delta"]) if gp.get("miou_delta") is not None else None, TRT_MIOU_DELTA, False)
        targets.append({"id": "4", "name": f"TensorRT FP16 vs PyTorch eager FP32 (GPU), {args.gpu_size}x{args.gpu_size}",
                        "measured": gp["speedup"], "measured_text": f"{gp['speedup']:.2f}x", "required_text": f">= {TRT_SPEEDUP:g}x",
                        "verdict": gv})
        targets.append({"id": "4", "name": "TensorRT FP16 mIoU delta vs PyTorch FP32", "measured": gp.get("miou_delta"),
                        "measured_text": f"{100 * gp['miou_delta']:+.2f} points" if gp.get("miou_delta") is not None else "n/a",
                        "required_text": f"<= {100 * TRT_MIOU_DELTA:g} point",
                        "verdict": dv})
    else:
        targets.append({"id": "4", "name": f"TensorRT FP16 vs PyTorch eager FP32 (GPU), {args.gpu_size}x{args.gpu_size}",
                        "measured": None, "measured_text": gp.get("status"), "required_text": f">= {TRT_SPEEDUP:g}x, dmIoU <= 0.1",
                        "verdict": {"result": "NOT MEASURED", "margin": None}})
    res["targets"] = targets
    try:
        res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        res["load_average_end"] = None
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    res["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["json"] = str(results.with_suffix(".json").name)  # beside RESULTS.md
    text = json.dumps(res, indent=2, default=str) + "\n"
    (out / "targets.json").write_text(text)
    results.with_suffix(".json").write_text(text)
    write_results(res, results)
    for t in targets:
        log(f"target {t['id']}: {t['name']}: {t['measured_text']} (required {t['required_text']}) -> {_v(t['verdict'])}")
    log(f"wrote {results} and {results.with_suffix('.json')} in {res['seconds'] / 60:.1f} min")
    return 0


def run_int8(res: dict, args, out: Path, ckpt: Path, threads: int, sizes) -> None:
    load_before = [round(x, 2) for x in os.getloadavg()]
    log(f"target 5 (INT8 on CPU), load average {load_before}")
    i8 = dict(res.get("int8") or {})  # sizes measured by an earlier --only int8 run are kept
    i8.update(load_before=load_before, measured=None)
    i8["speed"] = {**{int(k): v for k, v in (i8.get("speed") or {}).items()},
                   **int8_speed(ckpt, out, sizes, threads, args.reps, args.warmup, args.reps if args.wait_clean else 0,
                                args.max_minutes * 60)}
    if args.int8_accuracy:
        i8["accuracy"] = int8_accuracy(Path(args.int8_accuracy), out, args.data, args.int8_accuracy_size)
    i8["load_after"] = [round(x, 2) for x in os.getloadavg()]
    i8["measured"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["int8"] = i8
    res["targets"] = [t for t in res.get("targets", []) if t["id"] != "5"] + int8_targets(res)


def main_int8(args, results: Path) -> int:
    """Target 5 alone; the other sections come from the earlier results JSON beside --results."""
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(args.threads or default_threads())
    set_threads(threads)
    prev = results.with_suffix(".json")
    res = json.loads(prev.read_text()) if prev.is_file() else None
    if res is None:
        log(f"{prev} not found: run without --only first")
        return 2
    ckpt = make_checkpoint(out / f"{res.get('preset', args.preset)}-random.pt", res.get("preset", args.preset))
    run_int8(res, args, out, ckpt, threads, [int(s) for s in args.sizes.split(",") if s.strip()])
    res["int8"]["command"] = "cd " + str(HERE.parent) + " && " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.executable, HERE.parent), "benchmarks/run_targets.py", *sys.argv[1:]])
    res["int8"]["seconds"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(res, indent=2, default=str) + "\n"
    (out / "targets.json").write_text(text)
    prev.write_text(text)
    write_results(res, results)
    for t in res["targets"]:
        if t["id"] == "5":
            log(f"target 5: {t['name']}: {t['measured_text']} (required {t['required_text']}) -> {_v(t['verdict'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
