"""``segclip benchmark``: latency, throughput and accuracy of every backend in one table.

    from segclip.benchmarks import run_benchmark
    report = run_benchmark("runs/small/export", out="runs/small/bench", data="sample:data/sample:val", quick=True)
    report["summary"]["backends"]["onnxruntime"]["speedup_vs_torch"]

Modules: ``core`` (``run_benchmark``), ``backends`` (how each backend's runner is made),
``timing`` (latency rules, GEMM rate), ``accuracy`` (mIoU / agreement on the same tiled images),
``triton_load`` (concurrency sweep), ``flops`` (model FLOPs), ``machine`` (machine block),
``report`` (table, JSON schema check, CSV, PNG), ``interleaved`` (A/B timing of runners round by
round with their pixel agreement), ``targets`` / ``targets_md`` (the measurements and the RESULTS.md
of ``benchmarks/run_targets.py``, which states the project's performance targets).  The JSON schema
is in ``README.md``.
"""
from __future__ import annotations

from segclip.benchmarks.backends import BACKENDS, DEFAULT_BACKENDS, QUICK_BACKENDS
from segclip.benchmarks.core import run_benchmark
from segclip.benchmarks.machine import machine_info
from segclip.benchmarks.report import SCHEMA_VERSION, check_report, format_table

__all__ = ["run_benchmark", "BACKENDS", "DEFAULT_BACKENDS", "QUICK_BACKENDS", "machine_info", "check_report",
           "format_table", "SCHEMA_VERSION"]
