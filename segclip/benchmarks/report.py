"""The report: one table for the terminal, ``benchmark.json``, ``benchmark.csv`` (+ ``triton_load.csv``)
and ``latency.png``.  The JSON schema is documented in ``benchmarks/README.md``; ``check_report``
enforces it (the tests use it, and ``run_benchmark`` runs it before writing)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

from segclip.atomic import atomic_file, atomic_write_json

SCHEMA_VERSION = 2  # 2: size_mib (was size_mb, already MiB), other_cpu and busy per row
TOP_KEYS = ("schema_version", "machine", "config", "rows", "triton_load", "summary", "table")

# key -> allowed types (None = JSON null allowed)
_NUM = (int, float)
ROW_KEYS = {
    "backend": (str,), "name": (str, None), "precision": (str, None), "status": (str,), "device": (str, None),
    "artifact": (str, None), "size_mib": _NUM + (None,),
    "batch": (int, None), "height": (int, None), "width": (int, None),
    "p50_ms": _NUM + (None,), "p90_ms": _NUM + (None,), "p99_ms": _NUM + (None,), "mean_ms": _NUM + (None,),
    "reps": (int, None), "throughput_ips": _NUM + (None,), "speedup_vs_torch": _NUM + (None,),
    "miou": _NUM + (None,), "pixel_agreement": _NUM + (None,), "miou_delta": _NUM + (None,),
    "accuracy_images": (int, None), "other_cpu": _NUM + (None,), "busy": (bool,), "notes": (str, None),
}
LOAD_KEYS = {
    "protocol": (str,), "url": (str,), "tool": (str,), "status": (str,), "concurrency": (int,), "batch": (int,),
    "requests": (int, None), "failures": (int,), "throughput_ips": _NUM + (None,), "duration_s": _NUM + (None,),
    "p50_ms": _NUM + (None,), "p90_ms": _NUM + (None,), "p99_ms": _NUM + (None,), "mean_ms": _NUM + (None,),
    "server_queue_ms": _NUM + (None,), "server_compute_ms": _NUM + (None,),
    "server_compute_input_ms": _NUM + (None,), "server_compute_infer_ms": _NUM + (None,),
    "server_compute_output_ms": _NUM + (None,), "server_batches": (int, None), "server_mean_batch": _NUM + (None,),
    "output_checks": (int,), "output_mismatches": (int,), "output_min_agreement": _NUM + (None,), "errors": (list,),
    "other_cpu": _NUM + (None,), "busy": (bool,),
}
# whole-scene rows (segclip.benchmarks.scene; the report's optional "scene" list, scene.csv)
SCENE_KEYS = {
    "backend": (str,), "status": (str,), "artifact": (str, None), "runtime": (str, None), "width": (int, None),
    "height": (int, None), "window": (int, None), "batch": (int, None), "windows": (int, None),
    "megapixels": _NUM + (None,), "seconds": _NUM + (None,), "mpx_s": _NUM + (None,), "runner_s": _NUM + (None,),
    "read_s": _NUM + (None,), "blend_s": _NUM + (None,), "write_s": _NUM + (None,), "runner_share": _NUM + (None,),
    "read_share": _NUM + (None,), "blend_share": _NUM + (None,), "write_share": _NUM + (None,),
    "runner_bound_mpx_s": _NUM + (None,), "pipeline_efficiency": _NUM + (None,), "peak_rss_mib": _NUM + (None,),
    "other_cpu": _NUM + (None,), "busy": (bool,),
}
STATUS_PREFIXES = ("ok", "unavailable: ", "failed: ", "skipped: ", "not run: ")  # not run: interrupted/still running
CSV_COLUMNS = list(ROW_KEYS)


def _type_ok(v, allowed) -> bool:
    if v is None:
        return None in allowed
    if isinstance(v, bool):
        return bool in allowed
    return isinstance(v, tuple(t for t in allowed if t is not None))


def check_report(report: dict) -> list:
    """Problems with a report against the documented schema (empty list: valid)."""
    problems = []
    for k in TOP_KEYS:
        if k not in report:
            problems.append(f"missing top-level key {k!r}")
    for name, keys, items in (("rows", ROW_KEYS, report.get("rows", [])), ("triton_load", LOAD_KEYS, report.get("triton_load", [])),
                              ("scene", SCENE_KEYS, report.get("scene", []))):
        if not isinstance(items, list):
            problems.append(f"{name} is not a list")
            continue
        for i, r in enumerate(items):
            for k, allowed in keys.items():
                if k not in r:
                    problems.append(f"{name}[{i}] lacks {k!r}")
                elif not _type_ok(r[k], allowed):
                    problems.append(f"{name}[{i}].{k} = {r[k]!r} is not {allowed}")
            st = r.get("status", "")
            if not (st == "ok" or any(st.startswith(p) and len(st) > len(p) for p in STATUS_PREFIXES[1:])):
                problems.append(f"{name}[{i}].status {st!r} is not 'ok' or '<unavailable|failed|skipped|not run>: <reason>'")
            if name == "rows" and st == "ok":
                for k in ("batch", "height", "width", "p50_ms", "p90_ms", "p99_ms", "throughput_ips"):
                    if r.get(k) is None:
                        problems.append(f"rows[{i}] is ok but {k} is null")
    for k in ("machine", "config", "summary"):
        if k in report and not isinstance(report[k], dict):
            problems.append(f"{k} is not an object")
    return problems


# ---- terminal table --------------------------------------------------------------------------------
def _f(v, fmt="{:.1f}", none="-"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return fmt.format(v)


def _others(r) -> str:
    """Other processes' CPU share while the row ran, '!' when above the busy threshold."""
    return _f(None if r.get("other_cpu") is None else 100 * r["other_cpu"], "{:.0f}%") + (" !" if r.get("busy") else "")


def _pct(x):
    """A fraction (how mIoU and agreement are stored) as the percent a table shows."""
    return None if x is None else 100 * x


def format_table(report: dict) -> str:
    rows = report["rows"]
    head = ["backend", "precision", "status", "MiB", "HxW", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "x torch",
            "mIoU %", "agree %", "dmIoU pts", "others CPU"]
    lines = []
    for r in rows:
        st = r["status"] if r["status"] == "ok" else r["status"].split(":", 1)[0]
        hw = f"{r['height']}x{r['width']}" if r.get("height") else "-"
        lines.append([r["backend"], r.get("precision") or "-", st, _f(r.get("size_mib")), hw, _f(r.get("batch"), "{}"),
                      _f(r.get("p50_ms")), _f(r.get("p90_ms")), _f(r.get("p99_ms")), _f(r.get("throughput_ips"), "{:.2f}"),
                      _f(r.get("speedup_vs_torch"), "{:.2f}"), _f(_pct(r.get("miou")), "{:.1f}"),
                      _f(None if r.get("pixel_agreement") is None else 100 * r["pixel_agreement"], "{:.3f}"),
                      _f(_pct(r.get("miou_delta")), "{:+.2f}"), _others(r)])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    cfg = report.get("config") or {}
    if any(r.get("miou") is not None for r in rows):  # what the mIoU column is over (eval on the same set agrees)
        out.append(f"mIoU % on {cfg.get('accuracy_images')}, whole images in windows of the row's HxW; "
                   f"dmIoU pts vs torch")
    reasons = {}
    for r in rows:
        if r["status"] != "ok":
            reasons.setdefault(f"{r['backend']}" + (f" {r['height']}x{r['width']}" if r.get("height") else "")
                               + (f" batch {r['batch']}" if r.get("batch") else ""), r["status"])
    if reasons:
        out.append("")
        out += [f"{k}: {v}" for k, v in reasons.items()]
    notes = sorted({r["notes"] for r in rows if r.get("notes")})
    out += [f"note: {n}" for n in notes]
    load = report.get("triton_load") or []
    if load:
        out.append("")
        lh = ["protocol", "concurrency", "requests", "failures", "img/s", "p50 ms", "p90 ms", "p99 ms", "queue ms",
              "compute ms", "batch", "others CPU", "status"]
        ll = [[r["protocol"], str(r["concurrency"]), _f(r["requests"], "{}"), str(r["failures"]),
               _f(r["throughput_ips"], "{:.2f}"), _f(r["p50_ms"]), _f(r["p90_ms"]), _f(r["p99_ms"]),
               _f(r["server_queue_ms"], "{:.2f}"), _f(r["server_compute_ms"], "{:.1f}"), _f(r["server_mean_batch"], "{:.2f}"),
               _others(r), r["status"]] for r in load]
        w = [max(len(h), *(len(l[i]) for l in ll)) for i, h in enumerate(lh)]
        out += ["  ".join(h.ljust(x) for h, x in zip(lh, w)), "  ".join("-" * x for x in w)]
        out += ["  ".join(c.ljust(x) for c, x in zip(l, w)) for l in ll]
    scene = report.get("scene") or []
    if scene:
        out += ["", "whole scene (segclip predict end to end; efficiency = Mpx/s / runner-bound Mpx/s):"]
        sh = ["backend", "runs", "status", "HxW", "window", "batch", "Mpx/s", "runner-bound", "efficiency", "runner %",
              "read %", "blend %", "write %", "peak RSS MiB", "others CPU"]
        sl = [[r["backend"], f"{r['artifact']} on {r['runtime']}" if r.get("artifact") else "-",
               r["status"] if r["status"] == "ok" else r["status"].split(":", 1)[0],
               f"{r['height']}x{r['width']}" if r.get("height") else "-", _f(r.get("window"), "{}"), _f(r.get("batch"), "{}"),
               _f(r.get("mpx_s"), "{:.3f}"), _f(r.get("runner_bound_mpx_s"), "{:.3f}"), _f(_pct(r.get("pipeline_efficiency")), "{:.0f}%"),
               _f(_pct(r.get("runner_share")), "{:.0f}"), _f(_pct(r.get("read_share")), "{:.0f}"),
               _f(_pct(r.get("blend_share")), "{:.0f}"), _f(_pct(r.get("write_share")), "{:.0f}"),
               _f(r.get("peak_rss_mib"), "{:.0f}"), _others(r)] for r in scene]
        w = [max(len(h), *(len(l[i]) for l in sl)) for i, h in enumerate(sh)]
        out += ["  ".join(h.ljust(x) for h, x in zip(sh, w)), "  ".join("-" * x for x in w)]
        out += ["  ".join(c.ljust(x) for c, x in zip(l, w)) for l in sl]
        out += [f"scene {r['backend']}: {r['status']}" for r in scene if r["status"] != "ok"]
    if any(r.get("busy") for r in list(rows) + list(load) + list(scene)):
        thr = (report.get("summary") or {}).get("busy_threshold") or (report.get("config") or {}).get("busy_threshold")
        out += ["", f"! busy: other processes took more than {100 * (thr or 0):.0f}% of the CPUs while this row was "
                    "measured; its timing is not reliable"]
    return "\n".join(out)


# ---- files -----------------------------------------------------------------------------------------
def write_json(report: dict, path) -> Path:
    return atomic_write_json(path, report, default=str)


def write_csv(items: list, path, columns: list) -> Path:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in items:
            w.writerow({k: (";".join(map(str, r[k])) if isinstance(r.get(k), list) else r.get(k)) for k in columns})
    return Path(path)


# one colour per backend, the same in every run (tab10 order, then tab20's light shades); grey = unknown
BACKEND_COLORS = {"torch": "#1f77b4", "onnxruntime": "#ff7f0e", "onnxruntime-fp16": "#2ca02c", "tensorrt": "#d62728",
                  "triton-grpc": "#9467bd", "triton-http": "#8c564b", "torch-compile": "#e377c2",
                  "onnxruntime-int8": "#bcbd22", "openvino": "#17becf", "openvino-int8": "#aec7e8",
                  "openvino-int8-msda": "#ffbb78"}
PROTOCOL_COLORS = {"grpc": BACKEND_COLORS["triton-grpc"], "http": BACKEND_COLORS["triton-http"]}
BUSY_HATCH = "//"
# value labels sit above their bar (and whisker) on a white box: readable over any colour or hatch
LABEL_BOX = dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.85)


def _color(backend: str) -> str:
    return BACKEND_COLORS.get(backend, "#7f7f7f")


def write_plot(report: dict, path) -> Optional[Path]:
    """latency.png.  One batch size: bars of p50 latency per backend (whisker to p90) and of
    throughput; several: p50 latency vs batch per backend and size.  Triton throughput vs
    concurrency when swept.  Fixed colours per backend; throughput axes start at zero; rows
    measured on a busy machine are hatched (bars) or drawn hollow (lines)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ok = [r for r in report["rows"] if r["status"] == "ok"]
    load = [r for r in report.get("triton_load") or [] if r.get("throughput_ips") is not None]
    single = len({r["batch"] for r in ok}) <= 1
    scene = [r for r in report.get("scene") or [] if r["status"] == "ok" and r.get("mpx_s")]
    ncols = (2 if single else 1) + (1 if load else 0) + (1 if scene else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 4.5), squeeze=False)
    axes = list(axes[0])
    busy_any = any(r.get("busy") for r in ok + load + scene)
    if single:
        labels = [r["backend"] + ("" if len({(x["height"], x["width"]) for x in ok}) == 1 else f" {r['height']}x{r['width']}")
                  for r in ok]
        x = list(range(len(ok)))
        colors = [_color(r["backend"]) for r in ok]
        hatches = [BUSY_HATCH if r.get("busy") else "" for r in ok]
        lat, thr = axes[0], axes[1]
        bars = lat.bar(x, [r["p50_ms"] for r in ok], color=colors, hatch=hatches, edgecolor="black",
                       yerr=[[0] * len(ok), [r["p90_ms"] - r["p50_ms"] for r in ok]], capsize=4)
        for xi, r in zip(x, ok):  # above the p90 whisker, not across it
            lat.annotate(f"{r['p50_ms']:.1f}", (xi, r["p90_ms"]), xytext=(0, 3), textcoords="offset points", ha="center",
                         va="bottom", fontsize=8, bbox=LABEL_BOX)
        lat.margins(y=0.12)
        lat.set_ylabel("latency p50 ms (whisker: p90)")
        bars = thr.bar(x, [r["throughput_ips"] for r in ok], color=colors, hatch=hatches, edgecolor="black")
        thr.bar_label(bars, fmt="%.2f", fontsize=8, padding=2, bbox=LABEL_BOX)
        thr.margins(y=0.12)
        thr.set_ylabel("throughput (images/s)")
        b = ok[0]["batch"] if ok else "-"
        size = f"{ok[0]['height']}x{ok[0]['width']}" if ok else ""
        for ax, what in ((lat, "latency"), (thr, "throughput")):
            ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
            ax.set_ylim(bottom=0)
            ax.set_title(f"{what} per backend, batch {b} {size}")
            ax.grid(True, axis="y", alpha=0.3)
        rest = axes[2:]
    else:
        ax = axes[0]
        series = {}
        for r in ok:
            series.setdefault((r["backend"], r["height"], r["width"]), []).append(r)
        styles = ["-", "--", ":", "-."]
        sizes = sorted({(k[1], k[2]) for k in series})
        for (backend, h, w), pts in sorted(series.items()):
            pts.sort(key=lambda r: r["batch"])
            c, ls = _color(backend), styles[sizes.index((h, w)) % len(styles)]
            bx = [r["batch"] for r in pts]
            ax.plot(bx, [r["p50_ms"] for r in pts], color=c, linestyle=ls, label=f"{backend} {h}x{w}")
            ax.fill_between(bx, [r["p50_ms"] for r in pts], [r["p90_ms"] for r in pts], color=c, alpha=0.15)
            for r in pts:  # busy rows hollow
                ax.plot([r["batch"]], [r["p50_ms"]], marker="o", color=c, markerfacecolor="white" if r.get("busy") else c)
        ax.set_xscale("log", base=2)
        ticks = sorted({r["batch"] for r in ok})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("batch")
        ax.set_ylabel("latency p50 ms (band: p90)")
        ax.set_title("latency vs batch" + (" (hollow: busy machine)" if busy_any else ""))
        if series:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        rest = axes[1:]
    if load:
        ax2 = rest[0]
        by = {}
        for r in load:
            by.setdefault(r["protocol"], []).append(r)
        for proto, pts in sorted(by.items()):
            pts.sort(key=lambda r: r["concurrency"])
            c = PROTOCOL_COLORS.get(proto, "#7f7f7f")
            ax2.plot([r["concurrency"] for r in pts], [r["throughput_ips"] for r in pts], color=c, label=f"triton {proto}")
            for r in pts:
                ax2.plot([r["concurrency"]], [r["throughput_ips"]], marker="o", color=c,
                         markerfacecolor="white" if r.get("busy") else c)
        ax2.set_xscale("log", base=2)
        cticks = sorted({r["concurrency"] for r in load})
        ax2.set_xticks(cticks, [str(t) for t in cticks])
        ax2.set_ylim(bottom=0)
        ax2.set_xlabel("concurrent requests")
        ax2.set_ylabel("throughput (images/s)")
        ax2.set_title("Triton throughput vs concurrency")
        ax2.legend(fontsize=8)
        ax2.grid(True, alpha=0.3)
        rest = rest[1:]
    if scene:  # whole-scene Mpx/s per backend; the label: pipeline efficiency
        ax3 = rest[0]
        x = list(range(len(scene)))
        bars = ax3.bar(x, [r["mpx_s"] for r in scene], color=[_color(r["backend"]) for r in scene], edgecolor="black",
                       hatch=[BUSY_HATCH if r.get("busy") else "" for r in scene])
        ax3.bar_label(bars, labels=[f"{r['mpx_s']:.2f}\n{100 * (r.get('pipeline_efficiency') or 0):.0f}% eff." for r in scene],
                      fontsize=7, padding=2, bbox=LABEL_BOX)
        ax3.set_xticks(x, [r["backend"] for r in scene], rotation=20, ha="right", fontsize=8)
        ax3.set_ylim(0, 1.25 * max(r["mpx_s"] for r in scene))  # room for the two-line labels
        ax3.set_ylabel("megapixels / s (predict, end to end)")
        ax3.set_title(f"whole scene {scene[0]['height']}x{scene[0]['width']}")
        ax3.grid(True, axis="y", alpha=0.3)
    m = report.get("machine") or {}
    title = f"segclip benchmark - {m.get('cpu', '?')}, {m.get('gpu') or 'no GPU'}, {m.get('threads')} threads"
    if busy_any:
        thr_share = (report.get("config") or {}).get("busy_threshold") or 0
        title += f"\nBUSY MACHINE: hatched/hollow rows ran while other processes took > {100 * thr_share:.0f}% of the CPUs"
        fig.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=BUSY_HATCH, label="busy machine")],
                   loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=9, color="firebrick" if busy_any else "black")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


def write_all(report: dict, out_dir, plot: bool = True) -> dict:
    out_dir = Path(out_dir)
    files = {"json": str(write_json(report, out_dir / "benchmark.json")),
             "csv": str(write_csv(report["rows"], out_dir / "benchmark.csv", CSV_COLUMNS))}
    if report.get("triton_load"):
        files["triton_load_csv"] = str(write_csv(report["triton_load"], out_dir / "triton_load.csv", list(LOAD_KEYS)))
    if report.get("scene"):
        files["scene_csv"] = str(write_csv(report["scene"], out_dir / "scene.csv", list(SCENE_KEYS)))
    if plot:
        files["plot"] = str(write_plot(report, out_dir / "latency.png"))
    return files
