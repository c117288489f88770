"""Latency measurement done one way for every backend.

* Inputs: several distinct random uint8 batches (values 1..255, never all zeros, so no backend can
  take a shortcut on constant data), rotated call after call.
* Warm-up calls are run first and excluded (session creation, allocator growth, cuDNN/TensorRT
  autotuning, lazy CUDA init).
* Each timed call is ``perf_counter`` around ``runner.infer`` (host uint8 in, host arrays out).
  Runners return host numpy arrays, so a GPU result has been copied back - which waits for the
  device - before the clock stops; in addition, when CUDA is initialised in this process, the device
  is synchronised before each call starts, so no earlier queued work is billed to it.  The latency
  is therefore end to end: input check, host->device copy, compute, device->host copy.
* Repetitions are time-budgeted with a minimum count: at least ``min_reps`` calls, then more until
  ``budget_s`` is spent (or ``max_reps``).  p50/p90/p99 are numpy percentiles (linear
  interpolation) of the per-call times; with fewer than 100 reps p99 is interpolated near the max,
  so every row also records ``reps``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from segclip.inference.speed import random_batches  # noqa: F401  (one input generator for every timing)


def set_threads(threads: Optional[int]) -> Optional[int]:
    """Apply one CPU thread count to PyTorch in this process (ONNX Runtime gets the same number as
    its intra-op thread count through the runner options).  Returns the count in force."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before any inter-op work started
            pass
    return torch.get_num_threads()


def default_threads() -> int:
    """CPUs this process may run on (affinity), the default for every CPU backend."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cuda_sync() -> None:
    """Wait for queued CUDA work, if this process has initialised CUDA (never initialises it)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    except Exception:
        pass


def percentiles(samples_ms: Sequence[float]) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "min_ms": None, "max_ms": None}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(a.mean()), 3), "min_ms": round(float(a.min()), 3), "max_ms": round(float(a.max()), 3)}


@dataclass
class Timing:
    batch: int
    reps: int
    warmup: int
    wall_s: float
    samples_ms: list = field(repr=False, default_factory=list)
    foreign: list = field(repr=False, default_factory=list)  # per sample: CPU share of other processes (or None)

    @property
    def stats(self) -> dict:
        return percentiles(self.samples_ms)

    def clean(self, max_foreign: float = 0.15, min_samples: int = 3) -> Optional[dict]:
        """Percentiles of the samples during which other processes took at most ``max_foreign`` of
        the machine's CPU time (None when fewer than ``min_samples`` qualify or nothing was metered)."""
        keep = [s for s, f in zip(self.samples_ms, self.foreign) if f is not None and f <= max_foreign]
        if len(keep) < min_samples:
            return None
        d = percentiles(keep)
        d["reps"] = len(keep)
        return d

    @property
    def foreign_share(self) -> Optional[float]:
        """Share of the CPUs other processes took over all timed calls (time-weighted; None unmetered)."""
        pairs = [(s, f) for s, f in zip(self.samples_ms, self.foreign) if f is not None]
        total = math.fsum(s for s, _ in pairs)
        return round(math.fsum(s * f for s, f in pairs) / total, 4) if pairs and total > 0 else None

    @property
    def throughput_ips(self) -> Optional[float]:
        """Images per second of this single stream: images processed / summed call time
        (= batch / mean latency)."""
        total_s = math.fsum(self.samples_ms) / 1e3
        if not self.reps or total_s <= 0:
            return None
        return round(self.batch * self.reps / total_s, 3)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("samples_ms")
        fr = [f for f in d.pop("foreign") if f is not None]
        d["foreign_cpu_mean"] = round(float(np.mean(fr)), 4) if fr else None
        d.update(self.stats)
        d["throughput_ips"] = self.throughput_ips
        return d


def measure(fn: Callable, inputs: Sequence[np.ndarray], *, warmup: int = 3, min_reps: int = 10,
            max_reps: int = 10000, budget_s: float = 5.0, sync: Callable = cuda_sync,
            meter: Optional["CpuMeter"] = None) -> Timing:
    """Time ``fn(x)`` over ``inputs`` rotated; see the module docstring for the rules.  With a
    ``meter``, each sample also records the CPU share other processes took during it."""
    if not inputs:
        raise ValueError("measure: no inputs")
    n_in = len(inputs)
    for i in range(max(0, warmup)):
        fn(inputs[i % n_in])
    sync()
    samples, foreign = [], []
    deadline = time.perf_counter() + max(0.0, budget_s)
    i = 0
    while i < max_reps and (i < min_reps or time.perf_counter() < deadline):
        x = inputs[(i + warmup) % n_in]
        sync()
        a = meter.snapshot() if meter else None
        t0 = time.perf_counter()
        fn(x)
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1e3)
        if meter:
            foreign.append(CpuMeter.foreign_share(a, meter.snapshot()))
        i += 1
    # throughput counts only the timed calls (not the loop's own sync/bookkeeping)
    wall = math.fsum(samples) / 1e3
    return Timing(batch=int(inputs[0].shape[0]), reps=len(samples), warmup=max(0, warmup), wall_s=round(wall, 6),
                  samples_ms=samples, foreign=foreign)


class CpuMeter:
    """How much CPU *other* processes took while a call ran (Linux ``/proc``; None elsewhere).

    ``foreign share`` = (machine busy time - time of our processes) / machine total time over the
    call, from ``/proc/stat`` and ``/proc/<pid>/stat``.  "Our processes" are this one plus whatever
    ``own_pids()`` returns (e.g. a Triton server doing the work).  A timed call during which other
    jobs took a large share of the CPUs measured the neighbours as much as the code: on a shared
    machine such samples can be reported apart (``Timing`` keeps the share per sample)."""

    @classmethod
    def for_this_tree(cls) -> "CpuMeter":
        """A meter whose "own" processes are this one and its descendants now (a Triton server or
        worker started here does the benchmark's work; listed once, not at every snapshot)."""
        pids = descendant_pids()
        return cls(own_pids=lambda: pids)

    def __init__(self, own_pids: Optional[Callable] = None):
        self.own_pids = own_pids or (lambda: [])
        self.ok = os.path.exists("/proc/stat")

    @staticmethod
    def _machine():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]) - idle, sum(v[:8])

    @staticmethod
    def _proc(pid) -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime (all threads)
        except (OSError, IndexError, ValueError):
            return 0

    def snapshot(self):
        if not self.ok:
            return None
        busy, total = self._machine()
        own = self._proc("self") + sum(self._proc(p) for p in self.own_pids())
        return busy, total, own

    @staticmethod
    def foreign_share(a, b) -> Optional[float]:
        if a is None or b is None:
            return None
        d_total = b[1] - a[1]
        if d_total <= 0:
            return None
        return max(0.0, min(1.0, ((b[0] - a[0]) - (b[2] - a[2])) / d_total))


def descendant_pids(root: Optional[int] = None) -> list:
    """Live descendants of ``root`` (default: this process), from ``/proc`` (empty elsewhere)."""
    root = os.getpid() if root is None else int(root)
    children = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def measure_interleaved(fns: dict, inputs: Sequence[np.ndarray], *, warmup: int = 1, min_rounds: int = 5,
                        per_round: int = 1, budget_s: float = 0.0, gap_s: float = 0.3, sync: Callable = cuda_sync,
                        meter: Optional[CpuMeter] = None, min_clean: int = 0, max_foreign: float = 0.15,
                        max_s: float = 600.0, log=None) -> dict:
    """Time several callables on the same inputs in alternating rounds: {name: Timing}.

    For A/B ratios on a shared machine: load that comes and goes hits every contender alike instead
    of whichever happened to run then.  Each round runs ``per_round`` calls of each callable, in an
    order reversed every other round (no position bias); at least ``min_rounds`` rounds, then more
    until ``budget_s`` is spent.  Warm-up calls (per callable) are excluded.  ``gap_s`` of idle time
    precede every timed call: runtimes keep their worker threads spinning for a while after a call
    (ONNX Runtime's intra-op pool, OpenMP), which would otherwise steal the cores from the *other*
    runtime's next call - a penalty no single-runtime deployment pays.  Each sample also records
    the CPU share other processes took during it (``Timing.foreign``); with ``min_clean`` > 0, rounds
    go on (up to ``max_s`` seconds in all) until every callable has that many samples during which
    other processes took at most ``max_foreign`` of the CPUs."""
    names = list(fns)
    n_in = len(inputs)
    meter = meter or CpuMeter()
    for name in names:
        for i in range(max(0, warmup)):
            fns[name](inputs[i % n_in])
    sync()
    samples = {n: [] for n in names}
    foreign = {n: [] for n in names}
    t_start = time.perf_counter()
    deadline = t_start + max(0.0, budget_s)

    def want_more_clean() -> bool:
        if min_clean <= 0 or time.perf_counter() - t_start > max_s:
            return False
        return any(sum(1 for f in foreign[n] if f is not None and f <= max_foreign) < min_clean for n in names)

    r = 0
    while r < min_rounds or time.perf_counter() < deadline or want_more_clean():
        for name in (names if r % 2 == 0 else names[::-1]):
            for k in range(per_round):
                x = inputs[(r * per_round + k) % n_in]
                if gap_s > 0:
                    time.sleep(gap_s)
                sync()
                a = meter.snapshot()
                t0 = time.perf_counter()
                fns[name](x)
                samples[name].append((time.perf_counter() - t0) * 1e3)
                foreign[name].append(CpuMeter.foreign_share(a, meter.snapshot()))
        r += 1
        if log:
            log(f"    round {r}: " + ", ".join(
                f"{n} {samples[n][-1]:.0f} ms" + (f" (others {100 * foreign[n][-1]:.0f}% CPU)" if foreign[n][-1] is not None else "")
                for n in names))
    batch = int(inputs[0].shape[0])
    return {n: Timing(batch=batch, reps=len(s), warmup=max(0, warmup), wall_s=round(math.fsum(s) / 1e3, 6), samples_ms=s,
                      foreign=foreign[n])
            for n, s in samples.items()}


def gemm_rate(threads: Optional[int] = None, n: int = 4096, reps: int = 5, budget_s: float = 20.0) -> dict:
    """FP32 GEMM rate of this machine with the same thread count: ``torch.mm`` of two n x n
    matrices (MKL/oneDNN on CPU), best and median of ``reps`` timed calls after one warm-up.

    This is the practical peak a dense CPU workload can reach here, the denominator of the
    "effective FLOP rate" target."""
    import torch

    set_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    torch.mm(a, b)  # warm-up (thread pool, packing buffers)
    meter = CpuMeter()
    times, foreign = [], []
    t_end = time.perf_counter() + budget_s
    while len(times) < reps and (len(times) < 2 or time.perf_counter() < t_end):
        s0 = meter.snapshot()
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
        foreign.append(CpuMeter.foreign_share(s0, meter.snapshot()))
    flops = 2.0 * n ** 3
    i_best = int(np.argmin(times))
    best, med = times[i_best], float(np.median(times))
    return {"method": f"torch.mm {n}x{n} @ {n}x{n} float32", "n": n, "threads": torch.get_num_threads(), "reps": len(times),
            "flops": flops, "best_s": round(best, 4), "median_s": round(med, 4),
            "gflops_best": round(flops / best / 1e9, 2), "gflops_median": round(flops / med / 1e9, 2),
            "foreign_cpu_at_best": None if foreign[i_best] is None else round(foreign[i_best], 3)}


def int8_gemm_rate(threads: Optional[int] = None, n: int = 4096, reps: int = 5) -> dict:
    """INT8 GEMM rate of this machine with the same thread count: ONNX Runtime's ``MatMulInteger`` of
    an n x n uint8 by an n x n int8 matrix (MLAS: VNNI where the CPU has it, else AVX2's 16-bit
    ``vpmaddubsw`` path), best of ``reps`` calls after one warm-up.  The limit an INT8 graph would
    reach if all its FLOPs ran at this rate (the speed target's "GEMM limit")."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "int8_gemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    sess.run(None, {"a": a})
    times = []
    for _ in range(max(2, reps)):
        t0 = time.perf_counter()
        sess.run(None, {"a": a})
        times.append(time.perf_counter() - t0)
    ops = 2.0 * n ** 3
    return {"method": f"onnxruntime {ort.__version__} MatMulInteger {n}x{n} uint8 @ {n}x{n} int8", "n": n,
            "threads": threads, "reps": len(times), "best_s": round(min(times), 4),
            "gops_best": round(ops / min(times) / 1e9, 1), "gops_median": round(ops / float(np.median(times)) / 1e9, 1)}
