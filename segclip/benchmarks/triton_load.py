"""Concurrency sweep against a running Triton server (gRPC and HTTP).

For each concurrency C, C requests are kept in flight for a time budget with tritonclient's
asyncio clients (``tritonclient.grpc.aio`` / ``tritonclient.http.aio``): each of C workers sends
one batch-1 request (uint8 image in, uint8 ``mask`` out), awaits it, and sends the next, rotating
over a few distinct random images.  Triton's dynamic batcher groups concurrent requests on the
server side.  Reported per concurrency: requests, failures (must be 0), client-side throughput and
p50/p90/p99 latency, and the server's own split from its statistics endpoint
(``get_inference_statistics``: queue, compute_input, compute_infer, compute_output ns, as deltas
over the sweep, per successful request).  Responses are checked on a sample against the local ONNX
Runtime result for the same image (pixel agreement).

When NVIDIA's ``perf_analyzer`` is on PATH it is used for the throughput/latency numbers instead
(``--concurrency-range C:C``, CSV output), and the output check still runs through the client.
"""
from __future__ import annotations

import asyncio
import csv
import io
import shutil
import subprocess
import time
from typing import Optional

import numpy as np

from segclip.errors import SegclipError, one_line
from segclip.inference.compare import agreement
from segclip.signature import DEFAULT_SCENE, INPUT_NAME, MASK_NAME, Signature, triton_wire_type

from segclip.benchmarks.timing import percentiles
from segclip.runtime.triton import parse_url

AGREEMENT_MIN = 0.995  # a response whose mask agrees with the local result on fewer pixels is a mismatch

_STAT_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")


def _stats_entry(stats, model: str) -> dict:
    """{key: (count, ns)} for success + the four phases, from either client's JSON statistics."""
    entries = stats.get("model_stats", []) if isinstance(stats, dict) else []
    for e in entries:
        if e.get("name") == model:
            inf = e.get("inference_stats", {})
            out = {}
            for k in ("success", "fail") + _STAT_KEYS:
                d = inf.get(k, {}) or {}
                out[k] = (int(d.get("count", 0) or 0), int(d.get("ns", 0) or 0))
            out["execution_count"] = int(e.get("execution_count", 0) or 0)
            out["inference_count"] = int(e.get("inference_count", 0) or 0)
            return out
    return {}


def server_split(before: dict, after: dict) -> dict:
    """Per-request server queue/compute times (ms) and the mean server batch over a sweep."""
    if not before or not after:
        return {"server_queue_ms": None, "server_compute_ms": None, "server_compute_input_ms": None,
                "server_compute_infer_ms": None, "server_compute_output_ms": None, "server_batches": None,
                "server_mean_batch": None}
    n = max(1, after["success"][0] - before["success"][0])
    per = {k: (after[k][1] - before[k][1]) / n / 1e6 for k in _STAT_KEYS}
    execs = after["execution_count"] - before["execution_count"]
    infs = after["inference_count"] - before["inference_count"]
    return {
        "server_queue_ms": round(per["queue"], 3),
        "server_compute_ms": round(per["compute_input"] + per["compute_infer"] + per["compute_output"], 3),
        "server_compute_input_ms": round(per["compute_input"], 3),
        "server_compute_infer_ms": round(per["compute_infer"], 3),
        "server_compute_output_ms": round(per["compute_output"], 3),
        "server_batches": execs,
        "server_mean_batch": round(infs / execs, 2) if execs else None,
    }


class _Client:
    """The same few calls on both asyncio clients; requests built from the model's ``Signature`` (the
    image input's name and type; a model with metadata prompts also gets its default scene)."""

    def __init__(self, protocol: str, address: str, signature: Signature):
        self.protocol, self.signature = protocol, signature
        if protocol == "grpc":
            import tritonclient.grpc.aio as tc
        else:
            import tritonclient.http.aio as tc
        self.tc = tc
        self.client = tc.InferenceServerClient(address)

    async def stats(self, model: str) -> dict:
        try:
            if self.protocol == "grpc":
                s = await self.client.get_inference_statistics(model_name=model, as_json=True)
            else:
                s = await self.client.get_inference_statistics(model_name=model)
        except Exception:
            return {}
        return _stats_entry(s, model)

    async def infer(self, model: str, version: str, x: np.ndarray) -> np.ndarray:
        tc, sig = self.tc, self.signature
        arrays = [(sig.inputs[0], np.ascontiguousarray(x, dtype=sig.inputs[0].dtype))]
        if sig.scenes:  # N x 1 default scene ids, as the runner sends them (triton_dims)
            arrays.append((sig.inputs[1], np.full((len(x), 1), DEFAULT_SCENE, dtype=sig.inputs[1].dtype)))
        binary = {} if self.protocol == "grpc" else {"binary_data": True}
        inputs = []
        for spec, arr in arrays:
            inp = tc.InferInput(spec.name, list(arr.shape), triton_wire_type(spec.dtype))
            inp.set_data_from_numpy(arr, **binary)
            inputs.append(inp)
        out = [tc.InferRequestedOutput(MASK_NAME, **binary)]
        res = await self.client.infer(model, inputs, model_version=version, outputs=out)
        return res.as_numpy(MASK_NAME)

    async def close(self):
        try:
            await self.client.close()
        except Exception:
            pass


async def _level(url: str, signature: Signature, concurrency: int, inputs: list, expected: Optional[list],
                 duration_s: float, min_requests: int, check_every: int) -> dict:
    protocol, address, model, version = parse_url(url)
    client = _Client(protocol, address, signature)
    lat, errors = [], []
    checks = {"n": 0, "mismatches": 0, "min_agreement": None}
    counter = {"i": 0}
    stop_at = time.perf_counter() + duration_s

    def check(k: int, got: np.ndarray):
        if expected is None or k % check_every:
            return
        ref = expected[k % len(inputs)]
        got = np.asarray(got).reshape(ref.shape) if got is not None and got.size == ref.size else None
        agree = agreement([got], [ref]) if got is not None else 0.0
        checks["n"] += 1
        checks["min_agreement"] = agree if checks["min_agreement"] is None else min(checks["min_agreement"], agree)
        if agree < AGREEMENT_MIN:
            checks["mismatches"] += 1

    async def worker():
        while True:
            k = counter["i"]
            if k >= min_requests and time.perf_counter() >= stop_at:
                return
            counter["i"] += 1
            x = inputs[k % len(inputs)]
            t0 = time.perf_counter()
            try:
                got = await client.infer(model, version, x)
            except Exception as e:  # every failure is counted and reported, never raised
                errors.append(one_line(e, 200))
                continue
            lat.append((time.perf_counter() - t0) * 1e3)
            check(k, got)

    try:
        # one request outside the measurement: connection set-up, first-call costs
        await client.infer(model, version, inputs[0])
        before = await client.stats(model)
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
        after = await client.stats(model)
    finally:
        await client.close()
    batch = int(inputs[0].shape[0])
    st = percentiles(lat)
    row = {
        "protocol": protocol, "url": url, "tool": "tritonclient.aio", "concurrency": int(concurrency), "batch": batch,
        "requests": len(lat) + len(errors), "failures": len(errors),
        "throughput_ips": round(len(lat) * batch / wall, 3) if wall > 0 else None, "duration_s": round(wall, 3),
        "p50_ms": st["p50_ms"], "p90_ms": st["p90_ms"], "p99_ms": st["p99_ms"], "mean_ms": st["mean_ms"],
        **server_split(before, after),
        "output_checks": checks["n"], "output_mismatches": checks["mismatches"],
        "output_min_agreement": None if checks["min_agreement"] is None else round(checks["min_agreement"], 6),
        "errors": sorted(set(errors))[:3],
    }
    row["status"] = _status(row)
    return row


def _status(row: dict) -> str:
    if row["failures"]:
        return f"failed: {row['failures']} of {row['requests']} requests failed ({row['errors'][0] if row['errors'] else '?'})"
    if row.get("output_mismatches"):
        return (f"failed: {row['output_mismatches']} of {row['output_checks']} checked responses differ from local "
                f"ONNX Runtime (min pixel agreement {row['output_min_agreement']})")
    return "ok"


def _perf_analyzer(url: str, concurrency: int, height: int, width: int, duration_s: float) -> dict:
    """One concurrency level with perf_analyzer (numbers only; the output check runs separately)."""
    protocol, address, model, version = parse_url(url)
    cmd = [shutil.which("perf_analyzer"), "-m", model, "-u", address, "-i", protocol, "-b", "1",
           "--concurrency-range", f"{concurrency}:{concurrency}", "--shape", f"{INPUT_NAME}:{height},{width},3",
           "--input-data", "random", "--measurement-interval", str(int(max(1.0, duration_s) * 1000)),
           "-f", "/dev/stdout", "--percentile", "50"]
    if version:
        cmd += ["-x", version]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(120, 10 * duration_s))
    if r.returncode != 0:
        raise SegclipError(f"perf_analyzer failed: {one_line(r.stderr or r.stdout, 300)}")
    text = r.stdout[r.stdout.find("Concurrency,"):]
    rec = next(csv.DictReader(io.StringIO(text)))
    us = lambda k: round(float(rec[k]) / 1e3, 3) if rec.get(k) not in (None, "") else None  # noqa: E731
    q, ci, cf, co = us("Server Queue"), us("Server Compute Input"), us("Server Compute Infer"), us("Server Compute Output")
    return {
        "protocol": protocol, "url": url, "tool": "perf_analyzer", "concurrency": int(concurrency), "batch": 1,
        "requests": None, "failures": 0, "throughput_ips": round(float(rec["Inferences/Second"]), 3),
        "duration_s": duration_s, "p50_ms": us("p50 latency"), "p90_ms": us("p90 latency"), "p99_ms": us("p99 latency"),
        "mean_ms": None, "server_queue_ms": q,
        "server_compute_ms": round(sum(v for v in (ci, cf, co) if v is not None), 3) if cf is not None else None,
        "server_compute_input_ms": ci, "server_compute_infer_ms": cf, "server_compute_output_ms": co,
        "server_batches": None, "server_mean_batch": None, "errors": [],
    }


def sweep(url: str, concurrency=(1, 4, 8), inputs: Optional[list] = None, expected: Optional[list] = None, *,
          height: int = 512, width: int = 512, duration_s: float = 5.0, min_requests: Optional[int] = None,
          check_every: int = 5, use_perf_analyzer: Optional[bool] = None, log=None,
          signature: Optional[Signature] = None) -> list:
    """One row per concurrency level (see the module docstring); ``inputs``: batch-1 uint8 arrays
    (1 x H x W x 3), ``expected``: the local ONNX Runtime mask for each input (or None: no check);
    ``signature``: the served model's (default: read from the server, as ``TritonRunner`` reads it)."""
    if inputs is None:
        rng = np.random.default_rng(0)
        inputs = [rng.integers(1, 256, (1, height, width, 3), dtype=np.uint8) for _ in range(4)]
    height, width = int(inputs[0].shape[1]), int(inputs[0].shape[2])
    use_pa = shutil.which("perf_analyzer") is not None if use_perf_analyzer is None else use_perf_analyzer
    rows = []
    for c in concurrency:
        c = int(c)
        n_min = min_requests if min_requests is not None else 2 * c
        try:
            if signature is None:  # inside the try: a server that cannot describe its model fails its rows
                from segclip.runtime.triton import TritonRunner

                signature = TritonRunner(url).signature
            if use_pa:
                row = _perf_analyzer(url, c, height, width, duration_s)
                chk = asyncio.run(_level(url, signature, 1, inputs, expected, 0.0, len(inputs), 1))
                row.update({k: chk[k] for k in ("output_checks", "output_mismatches", "output_min_agreement")})
                row["failures"] += chk["failures"]
                row["requests"] = chk["requests"] if row["requests"] is None else row["requests"]
                row["status"] = _status(row)
            else:
                row = asyncio.run(_level(url, signature, c, inputs, expected, duration_s, n_min, check_every))
        except Exception as e:
            msg = one_line(e, 300)
            row = {"protocol": parse_url(url)[0], "url": url, "tool": "perf_analyzer" if use_pa else "tritonclient.aio",
                   "concurrency": c, "batch": 1, "requests": 0, "failures": 0, "throughput_ips": None, "duration_s": None,
                   "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, **server_split({}, {}),
                   "output_checks": 0, "output_mismatches": 0, "output_min_agreement": None, "errors": [msg],
                   "status": f"failed: {msg}"}
        rows.append(row)
        if log:
            log(f"  triton {row['protocol']:4s} concurrency {c:3d}: {row['status']}, "
                f"{row['throughput_ips']} img/s, p50 {row['p50_ms']} ms, server queue {row['server_queue_ms']} ms / "
                f"compute {row['server_compute_ms']} ms")
    return rows
