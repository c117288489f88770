"""``RESULTS.md`` from the results of ``benchmarks/run_targets.py`` (the RESULTS.json dict): the
summary table of the targets, then one section per target with the measured figures.  Rendering
reads only the results, so ``run_targets.py --render`` re-writes RESULTS.md from any earlier run."""
from __future__ import annotations

from segclip.cpu import int8_isa, saturates
from segclip.data.loveda import CLASSES

from segclip.benchmarks import profiling as prof
from segclip.benchmarks.interleaved import GAP_S, MAX_FOREIGN
from segclip.benchmarks.machine import describe as describe_machine


def verdict_text(v: dict) -> str:
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


def isa_note(machine: dict) -> str:
    """Which CPUs the INT8 rows speak for: the run's INT8 instruction set (``segclip.cpu``; older results: from
    their CPU flags), and that x86 CPUs without VNNI differ."""
    isa = machine.get("int8_isa") or int8_isa(machine.get("cpu_flags") or [], "x86_64")
    other = ("8-bit products saturate in 16-bit lanes here, so the CPU INT8 graph has 7-bit weights; CPUs with VNNI, "
             "AMX or Arm's dot product get other figures" if saturates(isa) else
             "x86 CPUs without VNNI get other figures and a CPU INT8 graph with 7-bit weights")
    return (f"**INT8 instruction set:** {isa}. The INT8 speed-ups and agreements below hold for CPUs with this one; "
            f"{other} (README.md, 'INT8 depends on the CPU').")


def render(res: dict) -> str:
    """RESULTS.md of a run's results (``res``: the RESULTS.json dict)."""
    m = res["machine"]
    L = ["# segclip performance targets - measured results", "",
         f"Measured {res['finished']} by `benchmarks/run_targets.py` in one run ({res['seconds'] / 60:.1f} min).", "",
         "```", res["command"], "```", "",
         f"**Machine:** {describe_machine(m)}.  ",
         f"CPU flags: {', '.join(m.get('cpu_flags') or []) or 'n/a'}; load average at start {m.get('load_average')}, "
         f"at end {res.get('load_average_end')} (a shared machine: other jobs ran beside this one).", "",
         isa_note(m), "",
         f"**Model:** `{res['preset']}` ({res['preset_description'][:1].lower() + res['preset_description'][1:].rstrip('.')}), random init, {res['params_m']:.1f} M parameters, {len(CLASSES)} LoveDA classes; exported by "
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
        L.append(f"| {t['id']} | {t['name']} | {t['measured_text']} | {t['required_text']} | {verdict_text(t['verdict'])} |")
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
    L += ["", f"Raw numbers, per-sample times and the profiles: `{res['json']}` (written by the same run).", "",
          # notes kept by hand beside the generated file, so a re-run does not drop the link
          "The default path (predict/eval/triton-repo run the fastest gated artifact measured here), whole-scene "
          "throughput (`segclip benchmark --scene`) and an OpenVINO bf16 probe, measured on a loaded machine: "
          "[FAST_PATH.md](FAST_PATH.md).", ""]
    return "\n".join(L)




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
          f"(uint8 activations) for ONNX Runtime, `model_int8.onnx` (symmetric int8, the TensorRT graph) for OpenVINO, and `model_int8_msda.onnx` (the same graph with "
          f"segclip's deformable-attention kernel instead of GridSample) for OpenVINO-INT8-MSDA. "
          f"Same random-init `{res.get('preset', 'segclip-r50')}` as above (latency does not depend on training). "
          f"Interleaved rounds, {GAP_S} s idle before each call, batch 1, {res.get('threads')} threads; p50 ms (samples).", ""]
    for size, r in (i8.get("speed") or {}).items():
        L += [f"**{size}x{size}** ({r['basis']} samples); fastest: **{r['fastest']}**", "",
              "| path | p50 ms | speedup vs torch eager | file MB |", "|---|---:|---:|---:|"]
        fm = r["file_mb"]
        files = {"onnxruntime": fm.get("onnx"), "openvino": fm.get("onnx"), "onnxruntime-int8": fm.get("onnx_int8_cpu"),
                 "openvino-int8": fm.get("onnx_int8"), "openvino-int8-msda": fm.get("onnx_int8_msda")}
        for n, v in r["p50"].items():
            t = r["timing"][n]
            L.append(f"| {n} | {v:.1f} ({(t.get('clean') or t)['reps']}) | {r['speedup_vs_torch'].get(n, 0):.2f}x | "
                     f"{files.get(n) if files.get(n) is not None else '-'} |")
        for n, why in r["unavailable"].items():
            L.append(f"| {n} | unavailable: {why} | - | - |")
        L.append("")
        if r.get("limit_ms"):
            g = r["int8_gemm"]
            L += [f"INT8 GEMM limit at {size}x{size}: {r['gflop']:.1f} GFLOP at {g['gops_best']:.0f} GOP/s ({g['method']}, "
                  f"best of {g['reps']}, INT8 ISA {r.get('isa')}) = **{r['limit_ms']:.0f} ms**, {r['limit_speedup_vs_torch']}x torch "
                  f"eager; {r['fastest']} runs at **{100 * r['fastest_share_of_limit']:.0f}%** of it.", ""]
        for name, pr in (r.get("profiles") or {}).items():
            L += [prof.format_profile(pr, f"{name} at {size}x{size}"), ""]
            if pr.get("int8_ms") is not None:
                L += [f"{name}: INT8 kernels {pr['int8_ms']:.0f} ms of {pr['total_ms']:.0f} ms of layers; the rest (float "
                      f"layers, layout Reorders/Transposes) is what stands between it and the INT8 GEMM limit.", ""]
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
