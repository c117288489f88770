"""The report: one table for the terminal, ``benchmark.json``, ``benchmark.csv`` (+ ``triton_load.csv``)
and ``latency.png``.  The JSON schema is documented in ``benchmarks/README.md``; ``check_report``
enforces it (the tests use it, and ``run_benchmark`` runs it before writing)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

from segclip.atomic import atomic_file, atomic_write_json

SCHEMA_VERSION = 1
TOP_KEYS = ("schema_version", "machine", "config", "rows", "triton_load", "summary", "table")

# key -> allowed types (None = JSON null allowed)
_NUM = (int, float)
ROW_KEYS = {
    "backend": (str,), "name": (str, None), "precision": (str, None), "status": (str,), "device": (str, None),
    "artifact": (str, None), "size_mb": _NUM + (None,),
    "batch": (int, None), "height": (int, None), "width": (int, None),
    "p50_ms": _NUM + (None,), "p90_ms": _NUM + (None,), "p99_ms": _NUM + (None,), "mean_ms": _NUM + (None,),
    "reps": (int, None), "throughput_ips": _NUM + (None,), "speedup_vs_torch": _NUM + (None,),
    "miou": _NUM + (None,), "pixel_agreement": _NUM + (None,), "miou_delta": _NUM + (None,),
    "accuracy_images": (int, None), "notes": (str, None),
}
LOAD_KEYS = {
    "protocol": (str,), "url": (str,), "tool": (str,), "status": (str,), "concurrency": (int,), "batch": (int,),
    "requests": (int, None), "failures": (int,), "throughput_ips": _NUM + (None,), "duration_s": _NUM + (None,),
    "p50_ms": _NUM + (None,), "p90_ms": _NUM + (None,), "p99_ms": _NUM + (None,), "mean_ms": _NUM + (None,),
    "server_queue_ms": _NUM + (None,), "server_compute_ms": _NUM + (None,),
    "server_compute_input_ms": _NUM + (None,), "server_compute_infer_ms": _NUM + (None,),
    "server_compute_output_ms": _NUM + (None,), "server_batches": (int, None), "server_mean_batch": _NUM + (None,),
    "output_checks": (int,), "output_mismatches": (int,), "output_min_agreement": _NUM + (None,), "errors": (list,),
}
STATUS_PREFIXES = ("ok", "unavailable: ", "failed: ", "skipped: ")
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
    for name, keys, items in (("rows", ROW_KEYS, report.get("rows", [])), ("triton_load", LOAD_KEYS, report.get("triton_load", []))):
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
                problems.append(f"{name}[{i}].status {st!r} is not 'ok' or '<unavailable|failed|skipped>: <reason>'")
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


def format_table(report: dict) -> str:
    rows = report["rows"]
    head = ["backend", "precision", "status", "MB", "HxW", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "x torch",
            "mIoU", "agree %", "dmIoU"]
    lines = []
    for r in rows:
        st = r["status"] if r["status"] == "ok" else r["status"].split(":", 1)[0]
        hw = f"{r['height']}x{r['width']}" if r.get("height") else "-"
        lines.append([r["backend"], r.get("precision") or "-", st, _f(r.get("size_mb")), hw, _f(r.get("batch"), "{}"),
                      _f(r.get("p50_ms")), _f(r.get("p90_ms")), _f(r.get("p99_ms")), _f(r.get("throughput_ips"), "{:.2f}"),
                      _f(r.get("speedup_vs_torch"), "{:.2f}"), _f(r.get("miou"), "{:.2f}"),
                      _f(None if r.get("pixel_agreement") is None else 100 * r["pixel_agreement"], "{:.3f}"),
                      _f(r.get("miou_delta"), "{:+.2f}")])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
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
              "compute ms", "batch", "status"]
        ll = [[r["protocol"], str(r["concurrency"]), _f(r["requests"], "{}"), str(r["failures"]),
               _f(r["throughput_ips"], "{:.2f}"), _f(r["p50_ms"]), _f(r["p90_ms"]), _f(r["p99_ms"]),
               _f(r["server_queue_ms"], "{:.2f}"), _f(r["server_compute_ms"], "{:.1f}"), _f(r["server_mean_batch"], "{:.2f}"),
               r["status"]] for r in load]
        w = [max(len(h), *(len(l[i]) for l in ll)) for i, h in enumerate(lh)]
        out += ["  ".join(h.ljust(x) for h, x in zip(lh, w)), "  ".join("-" * x for x in w)]
        out += ["  ".join(c.ljust(x) for c, x in zip(l, w)) for l in ll]
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


def write_plot(report: dict, path) -> Optional[Path]:
    """latency.png: p50 latency vs batch per backend (and size); Triton throughput vs concurrency."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = [r for r in report["rows"] if r["status"] == "ok"]
    load = [r for r in report.get("triton_load") or [] if r.get("throughput_ips") is not None]
    ncols = 2 if load else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.5), squeeze=False)
    ax = axes[0][0]
    series = {}
    for r in ok:
        series.setdefault(f"{r['backend']} {r['height']}x{r['width']}", []).append((r["batch"], r["p50_ms"], r["p90_ms"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        b = [p[0] for p in pts]
        ax.plot(b, [p[1] for p in pts], marker="o", label=label)
        ax.fill_between(b, [p[1] for p in pts], [p[2] for p in pts], alpha=0.15)
    ax.set_xscale("log", base=2)
    ticks = sorted({r["batch"] for r in ok})
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("batch")
    ax.set_ylabel("latency p50 ms (band: p90)")
    ax.set_title("latency vs batch")
    if series:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    if load:
        ax2 = axes[0][1]
        by = {}
        for r in load:
            by.setdefault(r["protocol"], []).append((r["concurrency"], r["throughput_ips"], r["p50_ms"]))
        for proto, pts in sorted(by.items()):
            pts.sort()
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"triton {proto}")
        ax2.set_xscale("log", base=2)
        cticks = sorted({r["concurrency"] for r in load})
        ax2.set_xticks(cticks, [str(t) for t in cticks])
        ax2.set_xlabel("concurrent requests")
        ax2.set_ylabel("throughput (images/s)")
        ax2.set_title("Triton throughput vs concurrency")
        ax2.legend(fontsize=8)
        ax2.grid(True, alpha=0.3)
    m = report.get("machine") or {}
    fig.suptitle(f"segclip benchmark - {m.get('cpu', '?')}, {m.get('gpu') or 'no GPU'}, {m.get('threads')} threads", fontsize=9)
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
    if plot:
        files["plot"] = str(write_plot(report, out_dir / "latency.png"))
    return files
