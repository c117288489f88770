"""A/B timing of runners on the same inputs, interleaved, with their pixel agreement.

The one way the performance targets (``benchmarks/run_targets.py``, ``targets.py``) and the ORT
variants probe (``variants.py``) compare runners:

* each runner is activated (unless it already is) and run once on the first input: its readiness
  call (torch.compile compiles, OpenVINO compiles the shape), whose class map is compared with the
  first runner's (``segclip.inference.compare.agreement``).  A runner that fails there is reported
  unavailable, with the reason, instead of ending the comparison;
* the others are timed round by round, order alternating (``timing.measure_interleaved``), so load
  from other processes on a shared machine falls on every side alike;
* every side's p50 is read on one basis: its *clean* samples (other processes took at most
  ``MAX_FOREIGN`` of the CPUs) when every side has at least 3 of them, else all samples.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from segclip.errors import one_line
from segclip.inference.compare import agreement
from segclip.signature import MASK_NAME

from segclip.benchmarks.timing import CpuMeter, Timing, measure_interleaved

GAP_S = 0.3  # idle seconds before each timed call (see measure_interleaved)
MAX_FOREIGN = 0.15  # a sample is "clean" when other processes took <= 15% of the machine's CPU time during it


def summary(t: Timing, max_foreign: float = MAX_FOREIGN) -> dict:
    """One side's timing as the results JSON keeps it: percentiles of all samples, those of the clean
    samples (None when fewer than 3), every sample and its foreign-CPU share."""
    d = t.to_dict()
    out = {k: d[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "reps", "warmup", "foreign_cpu_mean")}
    out["clean"] = t.clean(max_foreign)
    out["samples_ms"] = [round(x, 2) for x in t.samples_ms]
    out["foreign_cpu"] = [None if f is None else round(f, 3) for f in t.foreign]
    return out


def basis(sides: Sequence[dict]) -> tuple:
    """("clean", p50s) on the clean samples when every side (a ``summary``) has them, else ("all", p50s)."""
    if all(s.get("clean") for s in sides):
        return "clean", [s["clean"]["p50_ms"] for s in sides]
    return "all", [s["p50_ms"] for s in sides]


def compare_interleaved(runners: dict, inputs: Sequence, *, warmup: int = 1, min_rounds: int = 5, budget_s: float = 0.0,
                        gap_s: float = GAP_S, meter: Optional[CpuMeter] = None, min_clean: int = 0,
                        max_foreign: float = MAX_FOREIGN, max_s: float = 600.0, log=None) -> dict:
    """Time ``runners`` ({name: runner}, the first is the reference) interleaved on ``inputs``.

    -> {"timing": {name: summary}, "basis": "clean" | "all", "p50": {name: ms on that basis},
    "reps": {name: samples behind that p50}, "pixel_agreement": {name: fraction of the first input's
    pixels equal to the reference's class map, None without it}, "unavailable": {name: reason}}.
    Runners this call activated are deactivated again; those already active stay so."""
    ready, unavailable, masks, opened = {}, {}, {}, []
    try:
        for name, r in runners.items():
            try:
                t0 = time.perf_counter()
                if not r.is_active:
                    r.activate()
                    opened.append(r)
                masks[name] = r.infer(inputs[0])[MASK_NAME]
                ready[name] = r
                if log:
                    log(f"  {name}: ready in {time.perf_counter() - t0:.1f} s")
            except Exception as e:  # one side that cannot run here is a reason in the results, not a crash
                unavailable[name] = one_line(e, 300)
        ref = masks.get(next(iter(runners), None))
        agree = {n: None if ref is None else agreement([m], [ref]) for n, m in masks.items()}
        t = measure_interleaved({n: r.infer for n, r in ready.items()}, inputs, warmup=warmup, min_rounds=min_rounds,
                                budget_s=budget_s, gap_s=gap_s, meter=meter, min_clean=min_clean,
                                max_foreign=max_foreign, max_s=max_s, log=log) if ready else {}
    finally:
        for r in opened:
            r.deactivate()
    timing = {n: summary(v, max_foreign) for n, v in t.items()}
    b, p50s = basis(list(timing.values()))
    return {"timing": timing, "basis": b, "p50": dict(zip(timing, p50s)),
            "reps": {n: (s["clean"] if b == "clean" else s)["reps"] for n, s in timing.items()},
            "pixel_agreement": {n: None if a is None else round(a, 6) for n, a in agree.items()},
            "unavailable": unavailable}
