"""``segclip benchmark``: every backend in one table (latency, throughput, accuracy, Triton load)."""
from __future__ import annotations

from pathlib import Path

import click

from segclip.cli.group import clean_partials
from segclip.cli.options import batch_option, data_option, device_option, out_option, size_option
from segclip.contract import is_export_dir
from segclip.errors import GateFailed


def default_out(source) -> Path:
    """RUN_DIR/benchmark for a run directory, ``<EXPORT>-benchmark`` beside an export directory (one
    per export; nothing is written inside an export), ``<dir>/benchmark`` beside a checkpoint file."""
    p = Path(source)
    if p.is_dir():
        return p.parent / f"{p.name}-benchmark" if is_export_dir(p) else p / "benchmark"
    return p.parent / "benchmark"


@click.command("benchmark")
@click.argument("source", type=click.Path(exists=True))
@data_option(required=False, help="Labelled images for mIoU and the deltas vs PyTorch (e.g. sample:data/sample:val); default: random images, agreement only.")
@click.option("--backends", default=None,
              help="Comma list of torch, onnxruntime, onnxruntime-fp16, tensorrt, triton-grpc, triton-http (default: all; --quick: the first three).")
@batch_option("list", default="1,4,8", help="Batch sizes.")
@size_option(several=True, help="Image sizes, multiples of 32. Default: the export's size (a fixed-size export is re-exported from its checkpoint for other sizes).")
@click.option("--concurrency", default="1,4,8", show_default=True, help="Triton concurrency sweep levels.")
@click.option("--triton-url", "triton_urls", multiple=True, metavar="URL",
              help="grpc://HOST:PORT/MODEL and/or http://HOST:PORT/MODEL of a running server (repeatable). Default: start one here.")
@click.option("--triton-env", default=None, type=click.Path(file_okay=False),
              help="Server env for a Triton started here (default: $SEGCLIP_TRITON_ENV, else ~/.cache/segclip/triton-env).")
@click.option("--triton-shm", is_flag=True, help="Triton latency rows pass tensors through system shared memory (same host).")
@click.option("--reps", type=click.IntRange(min=1), default=None, help="Minimum timed calls per row (default 10, --quick 5).")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Untimed warm-up calls per row (default 3, --quick 2).")
@click.option("--budget", "budget_s", type=float, default=None, help="Seconds of timing per row after the minimum reps (default 3).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for PyTorch and ONNX Runtime alike (default: usable CPUs).")
@device_option(help="Device for torch / ONNX Runtime / TensorRT (default: cuda when visible).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Accuracy images taken from --data (default 16, --quick 4).")
@click.option("--busy-threshold", type=float, default=0.10, show_default=True,
              help="Flag rows measured while other processes took more than this share of all CPUs.")
@click.option("--quick", is_flag=True,
              help="A smoke run (~10 s per backend on a small model): skips batch sizes after the first, sizes after the "
                   "first, the backends other than torch, onnxruntime and onnxruntime-fp16 (unless --backends), the Triton "
                   "concurrency sweep, and most reps (2 warm-up, >= 5 timed in 1 s) and accuracy images (4).")
@out_option(file_okay=False, help="Where benchmark.json/.csv and latency.png go, rewritten after every row so an interrupt keeps "
                                  "the finished ones (default: RUN_DIR/benchmark, or EXPORT-benchmark beside an export directory).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--scene", is_flag=False, flag_value="generate", default=None, metavar="[RASTER]",
              help="Also segclip predict end to end on RASTER per local backend (--scene alone: a generated 2048x2048 "
                   "GeoTIFF): Mpx/s, runner vs read/blend/write time, pipeline efficiency, peak RSS; and the default "
                   "predict (no --format) against the fastest.")
@click.option("--force", is_flag=True, help="Replace the results of an earlier benchmark in --out.")
def benchmark_cmd(source, data, backends, batch, size, concurrency, triton_urls, triton_env, triton_shm, reps, warmup,
                  budget_s, threads, device, limit, busy_threshold, scene, quick, out, quiet, force):
    """Benchmark RUN_DIR | EXPORT_DIR | CHECKPOINT on every backend: one table, JSON, CSV and a plot.

    Backends that cannot run here (no GPU, no tensorrt, no Triton server) get a row saying why.
    A progress bar counts the rows (ETA); Ctrl-C keeps the finished rows in --out and marks the rest
    "not run".  Exit code 1 if a backend failed while measuring or a Triton request failed."""
    from segclip.benchmarks import run_benchmark

    out = Path(out) if out else default_out(source)
    clean_partials(out)
    report = run_benchmark(source, out=out, data=data, backends=backends, batch=batch, size=size,
                           concurrency=concurrency, quick=quick, triton_url=list(triton_urls) or None, reps=reps,
                           warmup=warmup, threads=threads, budget_s=budget_s, device=device, limit=limit,
                           triton_shm=triton_shm, triton_env=triton_env, show_table=False, busy_threshold=busy_threshold,
                           log=lambda m: click.echo(m, err=True), force=force, scene=scene, progress=not quiet)
    click.echo(report["table"])
    if report["summary"].get("warning"):
        click.echo(f"warning: {report['summary']['warning']}", err=True)
    for k, v in report.get("files", {}).items():
        click.echo(f"{k:16s} {v}")
    failed = [f"{r['backend']} {r['height']}x{r['width']} batch {r['batch']}: {r['status']}" for r in report["rows"]
              if r["status"].startswith("failed")]
    failed += [f"triton {r['protocol']} concurrency {r['concurrency']}: {r['status']}" for r in report["triton_load"]
               if r["status"] != "ok"]
    if failed:
        raise GateFailed("benchmark: " + "; ".join(failed[:4]) + (f" (+{len(failed) - 4} more)" if len(failed) > 4 else ""))


COMMANDS = [benchmark_cmd]
