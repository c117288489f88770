"""The measurements behind ``benchmarks/run_targets.py`` (the script states the targets and their
thresholds; this module measures, ``targets_md`` renders ``RESULTS.md``).

Every comparison is runners built by the benchmark's own factory (``core.make_runner`` over
``backends.BACKENDS``) and timed by ``interleaved.compare_interleaved``; exports come from
``core.export_or_reuse``, a Triton server from ``segclip.serving.server.serve_export``.  The results
are plain dicts, the shape ``RESULTS.json`` keeps.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Callable, Optional

from segclip.errors import SegclipError, one_line

from segclip.benchmarks import flops as fl
from segclip.benchmarks import profiling as prof
from segclip.benchmarks.interleaved import GAP_S, compare_interleaved
from segclip.benchmarks.timing import gemm_rate, random_batches, set_threads

# the CPU paths of target 5: benchmark backend name -> what it runs (segclip.benchmarks.backends)
INT8_PATHS = ("torch", "torch-compile", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8", "openvino-int8-msda")


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


def make_checkpoint(path: Path, preset: str = "segclip-r50", seed: int = 0) -> Path:
    """A random-init checkpoint of the full preset on the LoveDA classes (no downloads: CLIP and the
    backbone are random, the text embeddings random unit vectors); latency does not depend on training."""
    if path.is_file():
        return path
    import torch

    from segclip.checkpoint import atomic_save, checkpoint_dict
    from segclip.config import get_preset
    from segclip.data.loveda import CLASSES, PALETTE
    from segclip.modeling import build_model

    cfg = get_preset(preset).model
    cfg.backbone_weights = "none"
    cfg.clip_pretrained = "none"
    torch.manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(len(CLASSES), 512), dim=-1)
    model = build_model(cfg, CLASSES, text_embeddings=emb)
    atomic_save(checkpoint_dict(model, PALETTE, dataset="random-init"), path)
    return path


def sample_data(out: Path, size: int, n: int = 24) -> str:
    """A rendered labelled sample set of ``n`` images at ``size`` under ``out`` (made once)."""
    from segclip.data.sample import generate_sample_dataset

    root = out / f"sample_{size}_{n}"  # per n: the speed and accuracy runs ask different counts at one size
    generate_sample_dataset(root, num_train=1, num_val=n, size=size)
    return f"sample:{root}:val"


@dataclasses.dataclass
class Setup:
    """What the comparisons of one run share: the checkpoint, the work folder, the threads and the
    interleaving rules (``reps`` rounds at least; with ``wait_clean``, until every side has ``reps``
    clean samples or ``max_s`` passed)."""

    ckpt: Path
    out: Path
    threads: int
    reps: int = 5
    warmup: int = 1
    budget_s: float = 0.0
    wait_clean: bool = True
    max_s: float = 600.0
    log: Callable = print

    def timing(self, **kw) -> dict:
        """Keywords of ``compare_interleaved`` for this run (``kw`` overrides)."""
        return {"warmup": self.warmup, "min_rounds": self.reps, "budget_s": self.budget_s,
                "min_clean": self.reps if self.wait_clean else 0, "max_s": self.max_s, "log": self.log, **kw}

    def export(self, size: int, *, fp16: bool = False, trt: bool = False, int8: bool = False, data=None,
               calib_images: int = 16) -> tuple:
        """(export dir, manifest) at size x size, batch 1, under ``out`` (an earlier one reused).  INT8
        of a random-init model is for latency only (its class maps are near-ties): no fallback rounds."""
        from segclip.benchmarks.core import export_or_reuse

        return export_or_reuse(self.ckpt, self.out / f"export_{size}", (size, size), fp16=fp16, trt=trt, int8=int8,
                               max_batch=1, data=data, calib_images=calib_images, log=self.log,
                               export_log=lambda m: self.log(f"  export: {m.splitlines()[0]}"))

    @functools.cached_property
    def sources(self):
        from segclip.benchmarks.core import Sources

        return Sources(self.ckpt, self.out, fp16=False, trt=False, max_batch=1, log=self.log)

    def runners(self, names, size: int, export, *, device: str = "cpu", urls: Optional[dict] = None, shm: bool = False,
                need: bool = True) -> tuple:
        """({key: runner}, {key: why not}) of benchmark backends (``names``: a list, or {key: backend})
        by ``core.make_runner``; ``need``: a backend that cannot be made raises instead."""
        from segclip.benchmarks.backends import BACKENDS
        from segclip.benchmarks.core import Settings, make_runner

        settings = Settings(device=device, threads=self.threads, triton_shm=shm)
        made, why = {}, {}
        for key, name in (names.items() if isinstance(names, dict) else ((n, n) for n in names)):
            r, reason = make_runner(BACKENDS[name], settings, self.sources, (size, size), export, urls or {})
            if r is not None:
                made[key] = r
            elif need:
                raise SegclipError(f"{key} at {size}x{size}: {reason}")
            else:
                why[key] = reason
        return made, why


def _need(c: dict) -> dict:
    if c["unavailable"]:
        raise SegclipError("; ".join(f"{k}: {v}" for k, v in c["unavailable"].items()))
    return c


# ---- targets 1 + 2: ONNX Runtime vs PyTorch eager on CPU, effective FLOP rate ------------------------------
def cpu_targets(s: Setup, exports: dict, required: dict, flop_share: float, *, gemm_n: int = 4096, profile: str = "auto",
                variants: str = "auto") -> dict:
    """{"cpu": {size: ...}, "gemm", "gemm_runs_gflops", "flops_check", "notes"}: torch eager vs ONNX
    Runtime interleaved at each size of ``exports`` ({size: (dir, manifest)}) with the FP32 GEMM rate
    measured before and after; ``required``: {size: speedup} (2.0 for others); per-op profiles and ORT
    variants where a target is missed (``profile``/``variants`` "auto"), everywhere ("all") or never."""
    res = {"cpu": {}, "notes": []}
    gemm1 = gemm_rate(s.threads, n=gemm_n)
    s.log(f"GEMM {gemm1['gflops_best']:.1f} GFLOP/s ({s.threads} threads)")
    for size, export in exports.items():
        s.log(f"CPU {size}x{size}: torch eager FP32 vs ONNX Runtime FP32, batch 1, {s.threads} threads (interleaved)")
        runners, _ = s.runners(("torch", "onnxruntime"), size, export)
        c = _need(compare_interleaved(runners, random_batches(1, size, size, count=3), **s.timing()))
        p_t, p_o = c["p50"]["torch"], c["p50"]["onnxruntime"]
        onnx = export[0] / "model.onnx"
        g = fl.onnx_flops(onnx, batch=1)
        res["cpu"][size] = {"torch": c["timing"]["torch"], "onnxruntime": c["timing"]["onnxruntime"], "basis": c["basis"],
                            "torch_p50": p_t, "ort_p50": p_o, "speedup": round(p_t / p_o, 3),
                            "pixel_agreement": c["pixel_agreement"]["onnxruntime"], "flops": g,
                            "onnx_file_mb": round(onnx.stat().st_size / 2**20, 1), "required_speedup": required.get(size, 2.0)}
        s.log(f"  torch p50 {p_t:.0f} ms, onnxruntime p50 {p_o:.0f} ms ({c['basis']} samples) -> {p_t / p_o:.2f}x; "
              f"{g['gflops']:.1f} GFLOPs -> {g['flops'] / p_o / 1e6:.1f} GFLOP/s")
    gemm2 = gemm_rate(s.threads, n=gemm_n)
    res["gemm"] = max(gemm1, gemm2, key=lambda g: g["gflops_best"])
    res["gemm_runs_gflops"] = [gemm1["gflops_best"], gemm2["gflops_best"]]
    s.log(f"GEMM {gemm2['gflops_best']:.1f} GFLOP/s after the model timings")
    peak = res["gemm"]["gflops_best"]
    for size, r in res["cpu"].items():
        r["ort_gflops"] = round(r["flops"]["flops"] / r["ort_p50"] / 1e6, 2)
        r["flop_share"] = round(r["ort_gflops"] / peak, 4)
        r["speedup_verdict"] = verdict(r["speedup"], r["required_speedup"], True)
        r["flop_verdict"] = verdict(r["flop_share"], flop_share, True)
    s0 = min(exports)
    try:  # FLOP count cross-check with torch's counter at the smallest size
        tf = fl.torch_flops(_module(s.ckpt), s0, s0)
        res["flops_check"] = {"method": tf["method"], "gflops": tf["gflops"], "size": s0,
                              "onnx_gflops": res["cpu"][s0]["flops"]["gflops"]}
    except Exception as e:  # informative only
        res["notes"].append(f"torch FLOP cross-check failed: {e}")
    for size, r in res["cpu"].items():  # what the speedup target asks of ONNX Runtime, against this machine's GEMM
        req, flops = r["required_speedup"], r["flops"]["flops"]
        r["analysis"] = {"torch_gflops": round(flops / r["torch_p50"] / 1e6, 2),
                         "torch_share_of_gemm": round(flops / r["torch_p50"] / 1e6 / peak, 4),
                         "needed_ort_p50_ms": round(r["torch_p50"] / req, 1),
                         "needed_ort_share_of_gemm": round(flops / (r["torch_p50"] / req) / 1e6 / peak, 4),
                         "ceiling_speedup_at_gemm_rate": round(r["torch_p50"] / (flops / peak / 1e6), 3)}
    _profiles(s, res["cpu"], exports, profile)
    missed = [size for size, r in res["cpu"].items() if r["speedup_verdict"]["result"] == "MISS"]
    for size in list(res["cpu"]) if variants == "all" else (missed[-1:] if variants == "auto" else []):
        from segclip.benchmarks.variants import ort_variants

        s.log(f"ORT variants at {size}x{size} (graph optimisation levels, Einsum -> MatMul), interleaved")
        n = max(3, s.reps - 2)
        v = ort_variants(exports[size][0] / "model.onnx", size, s.threads, s.out, reps=n, warmup=s.warmup, gap_s=GAP_S,
                         min_clean=n if s.wait_clean else 0, max_s=s.max_s, log=s.log)
        for x in v.values():
            x["projected_speedup"] = round(res["cpu"][size]["speedup"] * x["vs_default"] ** -1, 3)
        res["cpu"][size]["variants"] = v
    return res


def _module(ckpt):
    from segclip.checkpoint import load_checkpoint, model_from_checkpoint
    from segclip.modeling import SegCLIPInference

    return SegCLIPInference(model_from_checkpoint(load_checkpoint(ckpt)), scores=False).eval()


def _profiles(s: Setup, cpu: dict, exports: dict, which: str) -> None:
    """Per-operator profiles of both sides for the sizes that missed a target (or all with "all")."""
    module = None
    for size, r in cpu.items():
        missed = r["speedup_verdict"]["result"] == "MISS" or r["flop_verdict"]["result"] == "MISS"
        if not (which == "all" or (which == "auto" and missed)):
            continue
        x = random_batches(1, size, size, count=1, seed=11)[0]
        s.log(f"profiling {size}x{size}: onnxruntime (enable_profiling) and torch eager (torch.profiler)")
        r["profile_onnxruntime"] = prof.ort_profile(exports[size][0] / "model.onnx", x, threads=s.threads, iters=1, warmup=1)
        if module is None:
            set_threads(s.threads)
            module = _module(s.ckpt)
        r["profile_torch"] = prof.torch_profile(module, x, iters=1, warmup=1)


# ---- target 3: Triton gRPC vs in-process ONNX Runtime -------------------------------------------------
def triton_target(s: Setup, size: int, export) -> dict:
    """In-process ONNX Runtime vs a Triton server started here on the same export (plain gRPC and
    gRPC with system shared memory), interleaved; the server's CPU time counts as ours."""
    from segclip.benchmarks.timing import CpuMeter

    try:
        from segclip.serving.server import process_group_pids, serve_export

        server = serve_export(export[0], s.out / f"triton_repo_{size}", threads=s.threads, max_batch=1, queue_delay_us=0,
                              startup_timeout=300, log=s.log)
    except ImportError as e:
        return {"status": f"not measured: segclip.serving is not available ({e})"}
    except Exception as e:
        return {"status": f"not measured: cannot start a Triton server here ({one_line(e, 300)})"}
    try:
        model = server.models[0]
        url = server.model_url(model, "grpc")
        s.log(f"Triton {size}x{size}: in-process ONNX Runtime vs {url} (plain and system shared memory), batch 1")
        runners, _ = s.runners(("onnxruntime", "triton-grpc"), size, export, urls={"grpc": url})
        runners.update(s.runners({"triton-grpc-shm": "triton-grpc"}, size, export, urls={"grpc": url}, shm=True)[0])
        meter = CpuMeter(own_pids=lambda: process_group_pids(server.pid))  # the server's work is ours
        c = compare_interleaved(runners, random_batches(1, size, size, count=3), meter=meter, **s.timing())
        shm_why = c["unavailable"].pop("triton-grpc-shm", None)
        _need(c)
        res = {"status": "measured", "size": size, "url": url, "server": server.describe(), "model": model,
               "pixel_agreement": c["pixel_agreement"]["triton-grpc"],
               "shm_note": shm_why and f"shared memory unavailable: {shm_why}", **c["timing"]}
        res["basis"], p50 = c["basis"], c["p50"]
        res["p50"] = p50
        base = p50["onnxruntime"]
        res["ratio_grpc"] = round(p50["triton-grpc"] / base, 4)
        res["ratio_grpc_shm"] = round(p50["triton-grpc-shm"] / base, 4) if "triton-grpc-shm" in p50 else None
        res["ratio"] = min(x for x in (res["ratio_grpc"], res["ratio_grpc_shm"]) if x is not None)
        res["transport"] = "system shared memory" if res["ratio"] == res["ratio_grpc_shm"] else "gRPC payload"
        s.log(f"  local p50 {base:.0f} ms, grpc {p50['triton-grpc']:.0f} ms ({res['ratio_grpc']:.3f}x)"
              + (f", grpc+shm {p50['triton-grpc-shm']:.0f} ms ({res['ratio_grpc_shm']:.3f}x)" if res["ratio_grpc_shm"] else "")
              + f" ({c['basis']} samples)")
        return res
    finally:
        server.stop()


# ---- target 4: TensorRT FP16 on a GPU -----------------------------------------------------------------
def gpu_target(s: Setup, size: int, data=None) -> dict:
    """TensorRT FP16 vs torch eager FP32 on cuda (>= 20 interleaved rounds) and their mIoU on a
    labelled set (``data``, else a generated sample set of 8 images at ``size``)."""
    from segclip.benchmarks import accuracy as acc
    from segclip.benchmarks.core import Accuracy
    from segclip.contract import tensorrt_unavailable_reason
    from segclip.inference.compare import score

    why = tensorrt_unavailable_reason()
    if why:
        return {"status": f"not measured: {why}"}
    export = s.export(size, fp16=True, trt=True)
    art = (export[1].get("artifacts") or {}).get("tensorrt") or {}
    if not art.get("file"):
        return {"status": f"not measured: the TensorRT engine was not built ({art.get('reason', 'unknown reason')})"}
    s.log(f"GPU {size}x{size}: torch eager FP32 (cuda) vs TensorRT {art.get('precision')}, batch 1")
    runners, _ = s.runners({"torch-cuda": "torch", "tensorrt": "tensorrt"}, size, export, device="cuda")
    classes = s.sources.classes
    with contextlib.ExitStack() as stack:  # both stay active for the accuracy pass
        for r in runners.values():
            stack.enter_context(r)
        c = _need(compare_interleaved(runners, random_batches(1, size, size, count=3), warmup=max(s.warmup, 3),
                                      min_rounds=max(s.reps, 20), budget_s=s.budget_s, gap_s=0.0))
        items, desc = acc.load_items(data or sample_data(s.out, size, n=8), 8, classes)
        a = Accuracy(items, (size, size), classes)
        a.set_reference(a.predict(runners["torch-cuda"], batch=1))
        sc = score(a.predict(runners["tensorrt"], batch=1), a.ref_preds, a.labels, len(classes), a.ref_miou, classes)
    res = {"status": "measured", "size": size, "torch-cuda": c["timing"]["torch-cuda"], "tensorrt": c["timing"]["tensorrt"],
           "precision": art.get("precision"), "gpu": art.get("gpu"), "tensorrt_version": art.get("tensorrt_version"),
           "miou_torch": None if a.ref_miou is None else round(a.ref_miou, 6), "miou_tensorrt": sc["miou"],
           "miou_delta": sc["miou_delta"], "pixel_agreement": sc["pixel_agreement"], "data": desc, "basis": c["basis"]}
    res["speedup"] = round(c["p50"]["torch-cuda"] / c["p50"]["tensorrt"], 3)
    return res


# ---- target 5: INT8 on CPU -------------------------------------------------------------------------------
def int8_speed(s: Setup, sizes) -> dict:
    """Every CPU path of segclip (``INT8_PATHS``) on the same inputs, interleaved, batch 1, at each size;
    a path that cannot run here is listed with the reason."""
    from segclip.benchmarks.timing import int8_gemm_rate
    from segclip.cpu import int8_isa

    res = {}
    for size in sizes:
        # latency does not depend on the calibration: 4 images keep the 1024 px export short
        d, manifest = export = s.export(size, int8=True, data=sample_data(s.out, size, n=8), calib_images=4)
        runners, unavailable = s.runners(INT8_PATHS, size, export, need=False)
        s.log(f"INT8 {size}x{size}: {', '.join(runners)} interleaved, batch 1, {s.threads} threads")
        c = compare_interleaved(runners, random_batches(1, size, size, count=3), **s.timing(budget_s=0.0))
        p50 = c["p50"]
        sizes_mb = {k: round((d / a["file"]).stat().st_size / 2**20, 2) for k, a in manifest["artifacts"].items() if a.get("file")}
        res[size] = {"timing": c["timing"], "basis": c["basis"], "p50": p50, "unavailable": {**unavailable, **c["unavailable"]},
                     "file_mb": sizes_mb, "isa": int8_isa(),
                     "speedup_vs_torch": {n: round(p50["torch"] / v, 3) for n, v in p50.items()} if "torch" in p50 else {},
                     "fastest": min(p50, key=p50.get), "export": str(d)}
        s.log("  " + ", ".join(f"{n} {v:.0f} ms" for n, v in p50.items()) + f" ({c['basis']} samples); fastest {res[size]['fastest']}")
        res[size].update(int8_limit(s, d, size, p50, res[size]["fastest"], int8_gemm_rate(s.threads)))
        # where the INT8 paths spend their time: what is not INT8 GEMM is what stands between them and the limit
        x = random_batches(1, size, size, count=1)[0]
        profiles = {"openvino-int8": lambda: prof.ov_profile(d / "model_int8.onnx", x, threads=s.threads),
                    "openvino-int8-msda": lambda: prof.ov_profile(d / "model_int8_msda.onnx", x, threads=s.threads),
                    "onnxruntime-int8": lambda: prof.ort_profile(d / "model_int8_cpu.onnx", x, threads=s.threads, iters=2)}
        res[size]["profiles"] = {}
        for name, run in profiles.items():
            if name in p50:
                res[size]["profiles"][name] = run()
    return res


def int8_limit(s: Setup, d: Path, size: int, p50: dict, fastest: str, gemm: dict) -> dict:
    """The model's FLOPs at ``size`` over this CPU's INT8 GEMM rate: the time if every FLOP ran as
    INT8 GEMM at that rate, and the share of it the fastest path reaches."""
    gflop = fl.onnx_flops(d / "model.onnx", 1, size, size)["gflops"]
    limit_ms = gflop / gemm["gops_best"] * 1e3
    out = {"gflop": gflop, "int8_gemm": gemm, "limit_ms": round(limit_ms, 1),
           "limit_speedup_vs_torch": round(p50["torch"] / limit_ms, 2) if "torch" in p50 else None,
           "fastest_share_of_limit": round(limit_ms / p50[fastest], 3)}
    s.log(f"  INT8 GEMM {gemm['gops_best']:.0f} GOP/s: {gflop:.1f} GFLOP -> {limit_ms:.0f} ms at 100% "
          f"({out['limit_speedup_vs_torch']}x torch eager); {fastest} reaches {100 * out['fastest_share_of_limit']:.0f}% of it")
    return out


def int8_accuracy(s: Setup, ckpt: Path, data, size: int) -> dict:
    """The exporter's own INT8 gate on a trained model: held-out labelled images, never calibration ones."""
    from segclip.contract import read_manifest
    from segclip.errors import GateFailed
    from segclip.export import export

    d = s.out / f"int8_accuracy_{size}"
    try:
        export(ckpt, d, int8=True, data=data or sample_data(s.out, size, n=32), size=size, calib_images=16, parity_images=16,
               batch=(1, 1, 4), force=True, log=lambda m: s.log(f"  export: {m.splitlines()[0]}"))
    except GateFailed as e:
        s.log(f"  INT8 gate failed: {e}")
    m = read_manifest(d)
    rows = {}
    for k in ("onnx_int8", "onnx_int8_cpu", "onnx_int8_msda"):
        a = m["artifacts"][k]
        p = a.get("parity")
        if not p:  # not built (its reason in the manifest)
            continue
        rows[k] = {"pixel_agreement": p["pixel_agreement"], "miou": p["miou"],
                   "miou_delta_points": None if p["miou_delta"] is None else round(100 * p["miou_delta"], 3),
                   "per_class_iou_delta": p.get("per_class_iou_delta"), "status": a["status"],
                   "fallback_float_nodes": [x["name"] for x in a["int8"].get("fallback_float_nodes", [])]}
    cal = m["artifacts"]["onnx_int8"]["int8"]["calibration"]
    return {"checkpoint": str(ckpt), "size": size, "data": cal["source"], "calibration_images": cal["calibration_images"],
            "gate_images": cal["gate_images"], "torch_miou": m["parity"]["reference"]["miou"], "rows": rows,
            "table": m["parity"]["table"]}


def model_facts(ckpt: Path, preset: str) -> dict:
    """The preset's description and the checkpoint's parameter count (millions), for the results' header."""
    import torch

    from segclip.config import get_preset

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    return {"preset_description": get_preset(preset).description, "params_m": sum(v.numel() for v in state.values()) / 1e6}


def load_average() -> Optional[list]:
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def finished() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
