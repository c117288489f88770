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

This script states the targets and writes the results; the measuring is ``segclip.benchmarks.targets``
(A/B pairs timed interleaved by ``interleaved.compare_interleaved``, so load from other processes on
a shared machine falls on both sides alike; per-operator profiles where a target is missed) and
RESULTS.md is rendered by ``segclip.benchmarks.targets_md``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from segclip.atomic import atomic_write_json, atomic_write_text
from segclip.benchmarks import targets as tg
from segclip.benchmarks.machine import describe as describe_machine
from segclip.benchmarks.machine import machine_info
from segclip.benchmarks.targets import verdict
from segclip.benchmarks.targets_md import render, verdict_text
from segclip.benchmarks.timing import default_threads, set_threads
from segclip.errors import SegclipError, one_line
from segclip.parsers import parse_sizes

HERE = Path(__file__).resolve().parent
ORT_SPEEDUP = {512: 2.0, 1024: 2.5}
FLOP_SHARE = 0.60
TRITON_RATIO = 1.10
TRT_SPEEDUP, TRT_MIOU_DELTA = 5.0, 0.001  # mIoU is a fraction: 0.001 = 0.1 point
INT8_SPEEDUP = {512: 2.0, 1024: 2.5}
INT8_AGREEMENT, INT8_MIOU_POINTS = 0.98, 1.0
# issue 27: the best CPU path (any runtime, any gated precision) against torch eager, per INT8 instruction set
BEST_SPEEDUP = {"amx": 6.0, "avx512_vnni": 6.0, "avx_vnni": 6.0, "avx512": 3.0, "avx2": 3.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sizes_arg(what: str):
    """argparse type: "512,1024" -> [512, 1024] by ``parsers.parse_sizes`` (square sizes: the targets state S x S)."""
    def parse(value) -> list:
        try:
            sizes = parse_sizes(value, what) or []
        except SegclipError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not sizes or any(h != w for h, w in sizes):
            raise argparse.ArgumentTypeError(f"--{what} {value!r}: the targets are stated for square images; give e.g. --{what} 512")
        return [h for h, _ in sizes]
    return parse


def row(id_, name, measured, text, required, v) -> dict:
    return {"id": id_, "name": name, "measured": measured, "measured_text": text, "required_text": required, "verdict": v}


def targets_1_to_4(res: dict, triton_size: int, gpu_size: int) -> list:
    out = [row("1", f"ORT CPU FP32 vs PyTorch eager FP32, {s}x{s} batch 1", r["speedup"], f"{r['speedup']:.2f}x",
               f">= {r['required_speedup']:g}x", r["speedup_verdict"]) for s, r in res["cpu"].items()]
    peak = res["gemm"]["gflops_best"]
    out += [row("2", f"ORT CPU effective FLOP rate / FP32 GEMM rate, {s}x{s}", r["flop_share"],
                f"{100 * r['flop_share']:.1f}% ({r['ort_gflops']:.1f} of {peak:.1f} GFLOP/s)", f">= {100 * FLOP_SHARE:.0f}%",
                r["flop_verdict"]) for s, r in res["cpu"].items()]
    tr = res["triton"]
    out.append(row("3", f"Triton gRPC p50 / in-process ORT p50, {triton_size}x{triton_size} batch 1", tr.get("ratio"),
                   f"{tr['ratio']:.3f}x ({tr['transport']}; plain gRPC {tr['ratio_grpc']:.3f}x)" if tr.get("ratio") is not None
                   else tr.get("status"), f"<= {TRITON_RATIO:.2f}x", verdict(tr.get("ratio"), TRITON_RATIO, False)))
    gp, name = res["gpu"], f"TensorRT FP16 vs PyTorch eager FP32 (GPU), {gpu_size}x{gpu_size}"
    if gp.get("status") != "measured":
        return out + [row("4", name, None, gp.get("status"), f">= {TRT_SPEEDUP:g}x, dmIoU <= 0.1",
                          {"result": "NOT MEASURED", "margin": None})]
    d = gp.get("miou_delta")
    return out + [row("4", name, gp["speedup"], f"{gp['speedup']:.2f}x", f">= {TRT_SPEEDUP:g}x", verdict(gp["speedup"], TRT_SPEEDUP, True)),
                  row("4", "TensorRT FP16 mIoU delta vs PyTorch FP32", d, "n/a" if d is None else f"{100 * d:+.2f} points",
                      f"<= {100 * TRT_MIOU_DELTA:g} point", verdict(None if d is None else abs(d), TRT_MIOU_DELTA, False))]


def target_5(res: dict) -> list:
    out, i8 = [], res.get("int8") or {}
    for size, r in (i8.get("speed") or {}).items():
        size, sp, p = int(size), r["speedup_vs_torch"].get("onnxruntime-int8"), r["p50"]
        req = INT8_SPEEDUP.get(size, 2.0)
        out.append(row("5", f"ORT CPU INT8 vs PyTorch eager FP32, {size}x{size} batch 1", sp, f"{sp:.2f}x" if sp else "not measured",
                       f">= {req:g}x", verdict(sp, req, True)))
        best = max(r["speedup_vs_torch"].items(), key=lambda kv: kv[1]) if r["speedup_vs_torch"] else None
        need = BEST_SPEEDUP.get(r.get("isa"))
        if best and need:
            out.append(row("5", f"best CPU path vs PyTorch eager FP32 ({r['isa']} host), {size}x{size} batch 1", best[1],
                           f"{best[1]:.2f}x ({best[0]})", f">= {need:g}x", verdict(best[1], need, True)))
        if "onnxruntime-int8" in p:
            others = {k: p[k] for k in ("torch-compile", "openvino") if k in p}
            worst = min(others.values()) / p["onnxruntime-int8"] if others else None
            text = ", ".join(f"{k} / ORT INT8 = {v / p['onnxruntime-int8']:.2f}x" for k, v in others.items()) + "".join(
                f"; {k}: {w}" for k, w in r["unavailable"].items() if k in ("torch-compile", "openvino"))
            out.append(row("5", f"ORT CPU INT8 faster than torch-compile and OpenVINO FP32, {size}x{size}", worst, text,
                           "> 1x each", verdict(worst, 1.0, True, strict=True)))
    for k, r in ((i8.get("accuracy") or {}).get("rows") or {}).items():
        a, d = r["pixel_agreement"], r["miou_delta_points"]
        name = f"INT8 {k} vs PyTorch FP32 on a trained model: "
        out += [row("5", name + "pixel agreement", a, f"{100 * a:.2f}%", f">= {100 * INT8_AGREEMENT:.0f}%", verdict(a, INT8_AGREEMENT, True)),
                row("5", name + "|dmIoU|", d, "n/a" if d is None else f"{d:+.2f} points", f"<= {INT8_MIOU_POINTS:g} point",
                    verdict(None if d is None else abs(d), INT8_MIOU_POINTS, False))]
    return out


def command() -> str:
    env = f"SEGCLIP_TRITON_ENV={shlex.quote(os.environ['SEGCLIP_TRITON_ENV'])} " if os.environ.get("SEGCLIP_TRITON_ENV") else ""
    return f"cd {HERE.parent} && " + env + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.executable, HERE.parent), "benchmarks/run_targets.py", *sys.argv[1:]])


def save(res: dict, results: Path, out: Path = None) -> None:
    """RESULTS.json beside RESULTS.md (and ``out``/targets.json), each written atomically."""
    res["json"] = results.with_suffix(".json").name
    for p in ([out / "targets.json"] if out else []) + [results.with_suffix(".json")]:
        atomic_write_json(p, res, default=str)
    atomic_write_text(results, render(res))


def setup(args, preset: str) -> tg.Setup:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(args.threads or default_threads())
    set_threads(threads)
    return tg.Setup(tg.make_checkpoint(out / f"{preset}-random.pt", preset), out, threads, args.reps, args.warmup,
                    args.budget, args.wait_clean, args.max_minutes * 60, log)


def measure(args, results: Path) -> int:
    t0 = time.perf_counter()
    s = setup(args, args.preset)
    machine = machine_info(s.threads)
    log(f"machine: {describe_machine(machine)}")
    res = {"command": command(), "machine": machine, "threads": s.threads, "reps": args.reps, "warmup": args.warmup,
           "preset": args.preset, "wait_clean": args.wait_clean, "max_minutes": args.max_minutes, "notes": [],
           **tg.model_facts(s.ckpt, args.preset)}
    exports = {z: s.export(z) for z in sorted(set(args.sizes + ([] if args.skip_triton else [args.triton_size])))}
    cpu = tg.cpu_targets(s, {z: exports[z] for z in args.sizes}, ORT_SPEEDUP, FLOP_SHARE, gemm_n=args.gemm,
                         profile=args.profile, variants=args.variants)
    res["notes"] += cpu.pop("notes")
    res.update(cpu)
    res["triton"] = {"status": "not measured: --skip-triton"} if args.skip_triton else \
        tg.triton_target(s, args.triton_size, exports[args.triton_size])
    try:  # a GPU failure must not lose the CPU and Triton figures measured above
        res["gpu"] = tg.gpu_target(s, args.gpu_size, args.data)
    except Exception as e:
        log(f"GPU target failed: {one_line(e, 300)}")
        res["gpu"] = {"status": f"failed: {one_line(e, 300)}"}
    res["targets"] = targets_1_to_4(res, args.triton_size, args.gpu_size)
    res.update(load_average_end=tg.load_average(), seconds=round(time.perf_counter() - t0, 1), finished=tg.finished())
    save(res, results, s.out)
    for t in res["targets"]:
        log(f"target {t['id']}: {t['name']}: {t['measured_text']} (required {t['required_text']}) -> {verdict_text(t['verdict'])}")
    log(f"wrote {results} and {results.with_suffix('.json')} in {res['seconds'] / 60:.1f} min")
    return 0


def measure_int8(args, results: Path) -> int:
    """Target 5 alone; the other sections come from the earlier results JSON beside --results."""
    t0 = time.perf_counter()
    prev = results.with_suffix(".json")
    if not prev.is_file():
        log(f"{prev} not found: run without --only first")
        return 2
    res = json.loads(prev.read_text())
    s = setup(args, res.get("preset", args.preset))
    i8 = {**(res.get("int8") or {}), "load_before": tg.load_average(), "measured": None}  # earlier sizes are kept
    log(f"target 5 (INT8 on CPU), load average {i8['load_before']}")
    i8["speed"] = {**{int(k): v for k, v in (i8.get("speed") or {}).items()}, **tg.int8_speed(s, args.sizes)}
    if args.int8_accuracy:
        i8["accuracy"] = tg.int8_accuracy(s, Path(args.int8_accuracy), args.data, args.int8_accuracy_size)
    i8.update(load_after=tg.load_average(), measured=tg.finished(), command=command(), seconds=round(time.perf_counter() - t0, 1))
    res["int8"] = i8
    res["targets"] = [t for t in res.get("targets", []) if t["id"] != "5"] + target_5(res)
    save(res, results, s.out)
    for t in res["targets"]:
        if t["id"] == "5":
            log(f"target 5: {t['name']}: {t['measured_text']} (required {t['required_text']}) -> {verdict_text(t['verdict'])}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/segclip-targets", help="work dir: checkpoint, exports, targets.json")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help="where RESULTS.md goes")
    ap.add_argument("--preset", default="segclip-r50")
    ap.add_argument("--sizes", type=sizes_arg("sizes"), default=[512, 1024], help="CPU comparison sizes (default 512,1024)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both sides (default: usable CPUs)")
    ap.add_argument("--reps", type=int, default=5, help="minimum interleaved rounds per comparison")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0.0, help="extra seconds of rounds per comparison after --reps")
    ap.add_argument("--wait-clean", action=argparse.BooleanOptionalAction, default=True,
                    help="keep interleaving until each side has --reps clean samples (others <= 15%% CPU), up to --max-minutes")
    ap.add_argument("--max-minutes", type=float, default=10.0, help="cap per comparison when waiting for clean samples")
    ap.add_argument("--gemm", type=int, default=4096, help="N of the N x N FP32 GEMM reference of target 2")
    ap.add_argument("--triton-size", type=lambda v: sizes_arg("triton-size")(v)[0], default=512)
    ap.add_argument("--skip-triton", action="store_true")
    ap.add_argument("--gpu-size", type=lambda v: sizes_arg("gpu-size")(v)[0], default=1024)
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
    ap.add_argument("--int8-accuracy-size", type=lambda v: sizes_arg("int8-accuracy-size")(v)[0], default=256)
    args = ap.parse_args(argv)
    results = Path(args.results)
    if args.only == "int8":
        return measure_int8(args, results)
    if args.render:
        save(json.loads(Path(args.render).read_text()), results)
        log(f"wrote {results} from {args.render}")
        return 0
    return measure(args, results)


if __name__ == "__main__":
    sys.exit(main())
