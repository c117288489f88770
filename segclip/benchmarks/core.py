"""``run_benchmark``: every backend, one table (Ultralytics ``benchmark`` style), runners as a loop.

For each benchmark size: the artifacts are found (an export directory of that size, exported on
demand from the checkpoint when the given one is fixed at another size), then every requested
backend's runner is created from its spec (``backends.BACKENDS``) and, if that works, timed at each
batch size (``timing.measure``) and run over the accuracy images (``accuracy``).  A runner that
cannot be created or activated gives one row ``unavailable: <reason>``.  Triton rows use a given
``--triton-url`` or a server started here on free ports from the same export (``segclip.serving``),
followed by the concurrency sweep (``triton_load``) at the first size.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional


from segclip.contract import (INT8_KEYS, artifact_problem, batch_profile, is_export_dir, manifest_signature, read_manifest, sha256_file,
                              signature_from_checkpoint, tensorrt_unavailable_reason)
from segclip.errors import GateFailed, SegclipError, one_line
from segclip.inference.compare import miou, score
from segclip.parsers import parse_device, parse_ints, parse_sizes, split_list

from segclip.benchmarks import accuracy as acc
from segclip.benchmarks.backends import BACKENDS, QUICK_BACKENDS, REFERENCE, parse_backends
from segclip.benchmarks.machine import describe as describe_machine
from segclip.benchmarks.machine import machine_info
from segclip.benchmarks.progress import NOT_RUN, Progress
from segclip.benchmarks.scene import add_scene, check_scene
from segclip.benchmarks.report import SCHEMA_VERSION, check_report, format_table, write_all, write_json
from segclip.benchmarks.timing import CpuMeter, default_threads, measure, random_batches, set_threads

BUSY_THRESHOLD = 0.10  # a row is "busy" when other processes took more than this share of all CPUs

@dataclasses.dataclass
class Settings:
    """What the runner options of every backend are derived from (``BackendSpec.options``)."""

    device: str
    threads: int
    scores: bool = False
    triton_shm: bool = False


# ---- small parsers ---------------------------------------------------------------------------------
def parse_triton_urls(value) -> dict:
    """None | "grpc://h:p/m" | ["grpc://...", "http://..."] | "a,b" -> {protocol: url}."""
    from segclip.runtime.triton import parse_url

    urls = {}
    for u in split_list(value):
        proto = parse_url(u)[0]
        if proto in urls and urls[proto] != u:
            raise SegclipError(f"--triton-url: two {proto} URLs given ({urls[proto]}, {u}); give one per protocol")
        urls[proto] = u
    return urls


# ---- where the artifacts come from -----------------------------------------------------------------
class Sources:
    """The checkpoint (PyTorch reference) and an export directory per benchmark size."""

    def __init__(self, source, work_dir: Path, *, fp16: bool, trt: bool, max_batch: int, log, int8: bool = False):
        from segclip.checkpoint import resolve_checkpoint

        p = Path(source)
        self.work_dir = work_dir
        self.fp16, self.trt, self.int8, self.max_batch = fp16, trt, int8, max_batch
        self.log = log
        self.base_export: Optional[Path] = None
        self.base_manifest: Optional[dict] = None
        self.checkpoint: Optional[Path] = None
        self.checkpoint_problem: Optional[str] = None
        self._exports = {}  # (h, w) -> (dir, manifest) | SegclipError
        if is_export_dir(p):
            self.base_export, self.base_manifest = p, read_manifest(p)
            ck = (self.base_manifest.get("source") or {}).get("checkpoint")
            if ck and Path(ck).is_file():
                self.checkpoint = Path(ck)
            else:
                self.checkpoint_problem = (f"the export's source checkpoint {ck or '(not recorded)'} is not on this machine; "
                                           f"benchmark the run directory instead to get the PyTorch reference")
        elif p.exists():
            self.checkpoint = resolve_checkpoint(p)
        else:
            raise SegclipError(f"{p}: no such run directory, checkpoint or export directory; check the path")
        self.signature = self._signature()

    def _signature(self):
        if self.base_manifest is not None:
            return manifest_signature(self.base_manifest)
        from segclip.checkpoint import load_checkpoint

        return signature_from_checkpoint(load_checkpoint(self.checkpoint), scores=False)

    @property
    def classes(self):
        return tuple(self.signature.classes)

    def default_sizes(self) -> list:
        sig = self.signature
        if self.base_manifest is not None and not sig.dynamic_size:
            return [(int(sig.height), int(sig.width))]
        if self.checkpoint is not None and self.base_manifest is None:
            from segclip.checkpoint import load_checkpoint

            crop = (load_checkpoint(self.checkpoint).get("train_config") or {}).get("crop_size")
            if crop:
                s = max(32, int(crop) // 32 * 32)
                return [(s, s)]
        return [(512, 512)]

    def _base_fits(self, size) -> bool:
        if self.base_export is None:
            return False
        sig = self.signature
        return sig.dynamic_size or (int(sig.height), int(sig.width)) == tuple(size)

    def export_for(self, size) -> tuple:
        """(export dir, manifest) holding artifacts for ``size``; raises SegclipError saying why not."""
        size = tuple(size)
        if size in self._exports:
            got = self._exports[size]
            if isinstance(got, Exception):
                raise got
            return got
        try:
            got = self._export_for(size)
        except SegclipError as e:
            self._exports[size] = e
            raise
        self._exports[size] = got
        return got

    def _export_for(self, size) -> tuple:
        if self._base_fits(size):
            return self.base_export, self.base_manifest
        h, w = size
        if self.checkpoint is None:
            raise SegclipError(f"the export {self.base_export} is fixed at {self.signature.height}x{self.signature.width} "
                               f"and {self.checkpoint_problem}; re-export with --size {h}x{w}")
        return export_or_reuse(self.checkpoint, self.work_dir / "exports" / f"{h}x{w}", size, fp16=self.fp16, trt=self.trt,
                               int8=self.int8, max_batch=self.max_batch, log=self.log)


def _reusable(m: dict, checkpoint, *, fp16: bool, trt: bool, int8: bool, max_batch: int) -> bool:
    """Whether an export made before holds what is asked for, from this checkpoint."""
    arts = m.get("artifacts") or {}
    engine = arts.get("tensorrt") or {}
    return ((m.get("source") or {}).get("sha256") == sha256_file(checkpoint) and "onnx" in arts
            and (not fp16 or "onnx_fp16" in arts)
            and (not int8 or all(k in arts for k in INT8_KEYS))
            # a not-built engine is reused only where it still cannot be built
            and (not trt or bool(engine.get("file")) or (bool(engine) and tensorrt_unavailable_reason() is not None))
            and int(batch_profile(m).get("max", 0)) >= max_batch)


def export_or_reuse(checkpoint, d, size, *, fp16: bool = False, trt: bool = False, int8: bool = False, max_batch: int = 1,
                    data=None, calib_images: Optional[int] = None, log=print, export_log=None) -> tuple:
    """(export dir, manifest) of ``checkpoint`` at ``size`` in ``d``: the export made there before when
    it holds what is asked for, else a fresh one (2 parity images; INT8 calibrated on ``data``, no
    fallback rounds: these exports are for timing).  A failed parity gate keeps the artifacts (they
    are measured and flagged); ``--trt`` without a GPU keeps the ONNX export.  ``export_log``: where
    the exporter's own lines go (default: nowhere)."""
    d, (h, w) = Path(d), size
    if is_export_dir(d):
        try:
            m = read_manifest(d)
            if _reusable(m, checkpoint, fp16=fp16, trt=trt, int8=int8, max_batch=max_batch):
                log(f"using the export in {d}")
                return d, m
        except SegclipError:
            pass
    from segclip.export import export

    log(f"exporting {checkpoint} at {h}x{w} to {d} (onnx{', fp16' if fp16 else ''}{', int8' if int8 else ''}"
        f"{', tensorrt' if trt else ''})")
    t0 = time.perf_counter()
    try:
        export(checkpoint, d, fp16=fp16, trt=trt, batch=(1, 1, max(1, max_batch)), size=(h, w), parity_images=2,
               force=True, int8=int8, data=data, calib_images=calib_images, int8_fallback=0,
               log=export_log or (lambda *a, **k: None))
    except GateFailed as e:  # artifacts kept and marked failed: measured anyway, flagged in the rows' notes
        log(f"export parity gate failed (artifacts kept, measured anyway, flagged): {one_line(e)}")
    except SegclipError as e:
        if not is_export_dir(d):  # e.g. --trt without a GPU still writes the ONNX export
            raise SegclipError(f"export at {h}x{w} failed: {one_line(e)}") from None
        log(f"export note: {one_line(e)}")
    log(f"exported in {time.perf_counter() - t0:.1f} s")
    return d, read_manifest(d)


# ---- runners ---------------------------------------------------------------------------------------
def make_runner(spec, settings: Settings, sources: Sources, size, export, triton_urls: dict):
    """(runner, None) or (None, reason) for one backend spec at one size."""
    from segclip.runtime import load_runner

    try:
        why = spec.probe(settings) if spec.probe else None
        if why:
            return None, why
        if spec.source == "checkpoint":
            if sources.checkpoint is None:
                return None, sources.checkpoint_problem
            return load_runner(sources.checkpoint, **spec.options(settings)), None
        if spec.source == "artifact":
            if isinstance(export, Exception):
                return None, one_line(export, 300)
            d, manifest = export
            why = artifact_problem(manifest, spec.artifact, d, allow_failed=True)  # failed parity: measured, flagged
            if why:
                return None, why
            return load_runner(d, format=spec.artifact, allow_failed=True, **spec.options(settings)), None
        if spec.source == "triton":
            url = triton_urls.get(spec.protocol)
            if not url:
                return None, triton_urls.get("_why") or f"no {spec.protocol}:// URL given (--triton-url {spec.protocol}://HOST:PORT/MODEL)"
            return load_runner(url, **spec.options(settings)), None
        raise SegclipError(f"unknown backend source {spec.source!r}")
    except ImportError as e:
        return None, f"{e.name or 'a module'} is not installed ({one_line(e)})"
    except Exception as e:  # SegclipError and backend exceptions alike: a status row, never a crash
        return None, one_line(e, 300)


def _base_row(spec, size, batch=None, **kw) -> dict:
    row = {"backend": spec.name, "name": None, "precision": None, "status": "ok", "device": None, "artifact": None,
           "size_mib": None, "batch": batch, "height": int(size[0]), "width": int(size[1]), "p50_ms": None, "p90_ms": None,
           "p99_ms": None, "mean_ms": None, "reps": None, "throughput_ips": None, "speedup_vs_torch": None, "miou": None,
           "pixel_agreement": None, "miou_delta": None, "accuracy_images": None, "other_cpu": None, "busy": False,
           "notes": None}
    row.update(kw)
    return row


def _artifact_note(export, spec) -> Optional[str]:
    if spec.source != "artifact" or isinstance(export, Exception) or export is None:
        return None
    art = (export[1].get("artifacts") or {}).get(spec.artifact) or {}
    if art.get("status") == "failed":
        return f"{spec.artifact}: this artifact failed the export parity gate (measured anyway)"
    return None


def _time_batches(runner, spec, size, batches, timing: dict, common: dict, log, record=None) -> list:
    """One row per batch size: latency percentiles and throughput of ``runner.infer``, with the share
    of the CPUs other processes took meanwhile (``busy``).  ``record(row)``: called as each row is
    done (``progress.Progress.row``: the bar and the saved report)."""
    h, w = size
    rows = []
    record = record or (lambda r: None)
    for b in batches:
        if runner.max_batch is not None and b > runner.max_batch:
            rows.append(_base_row(spec, size, b, **common, status=f"skipped: batch {b} > the artifact's max batch {runner.max_batch}"))
            record(rows[-1])
            continue
        inputs = random_batches(b, h, w, count=timing["inputs"])
        try:
            t = measure(runner.infer, inputs, warmup=timing["warmup"], min_reps=timing["min_reps"],
                        budget_s=timing["budget_s"], meter=CpuMeter.for_this_tree())
        except Exception as e:
            rows.append(_base_row(spec, size, b, **common, status=f"failed: {one_line(e, 300)}"))
            record(rows[-1])
            continue
        st = t.stats
        rows.append(_base_row(spec, size, b, **common, p50_ms=st["p50_ms"], p90_ms=st["p90_ms"], p99_ms=st["p99_ms"],
                              mean_ms=st["mean_ms"], reps=t.reps, throughput_ips=t.throughput_ips,
                              **busy_fields(t.foreign_share, timing["busy_threshold"])))
        busy = f", BUSY: other processes took {100 * t.foreign_share:.0f}% of the CPUs" if rows[-1]["busy"] else ""
        log(f"  {spec.name:17s} {h}x{w} batch {b}: p50 {st['p50_ms']:.1f} ms, p90 {st['p90_ms']:.1f} ms "
            f"({t.reps} reps), {t.throughput_ips:.2f} img/s{busy}")
        record(rows[-1])
    return rows


def bench_runner(runner, spec, size, batches, timing: dict, accuracy: "Accuracy", log, note=None, record=None) -> list:
    """Rows for one runner at one size (one per batch), with its accuracy on the accuracy images."""
    h, w = size
    try:
        runner.activate()
    except Exception as e:
        return [_base_row(spec, size, status=f"unavailable: {one_line(e, 300)}")]
    try:
        d = runner.describe()
        common = {"name": runner.name, "precision": runner.precision, "device": d.get("device") and str(d.get("device")),
                  "artifact": d.get("artifact"), "size_mib": d.get("size_mib"), "notes": note}
        sig = runner.signature
        if not sig.dynamic_size and (sig.height, sig.width) != (h, w):
            return [_base_row(spec, size, **common, status=f"skipped: this artifact takes {sig.height}x{sig.width} images only")]
        rows = _time_batches(runner, spec, size, batches, timing, common, log, record)
        if any(r["status"] == "ok" for r in rows):
            accuracy.measure(runner, rows, reference=spec.name == REFERENCE, batch=min(4, max(batches)))
        return rows
    finally:
        runner.deactivate()


def busy_fields(share: Optional[float], threshold: float) -> dict:
    """``other_cpu`` (share of all CPUs other processes took while the row was measured) and
    ``busy`` (that share was above ``threshold``: the timing measured the neighbours too)."""
    return {"other_cpu": share, "busy": share is not None and share > threshold}


def busy_warning(rows: list, load: list, threshold: float) -> Optional[str]:
    """One line when any row was measured on a busy machine, else None."""
    busy = [r for r in list(rows) + list(load) if r.get("busy")]
    if not busy:
        return None
    worst = max(r["other_cpu"] for r in busy)
    n = sum(1 for r in list(rows) + list(load) if r.get("other_cpu") is not None)
    return (f"{len(busy)} of {n} measured rows ran while other processes took more than {100 * threshold:.0f}% of the "
            f"CPUs (up to {100 * worst:.0f}%); their timings (flagged '!') are not reliable: re-run on a quiet machine")


class Accuracy:
    """The accuracy images of one size and the PyTorch reference's class maps on them; fills the
    accuracy columns of a runner's rows through the parity gate's comparator (mIoU a fraction)."""

    def __init__(self, items: list, size, classes):
        self.items, self.size, self.classes = items, tuple(size), tuple(classes)
        self.labels = acc.labels_of(items)
        self.ref_preds = self.ref_miou = None

    def predict(self, runner, batch: int = 4) -> list:
        return acc.predict(runner, self.items, *self.size, batch=batch)

    def set_reference(self, preds) -> None:
        self.ref_preds = preds
        self.ref_miou = miou(preds, self.labels, len(self.classes), self.classes)

    def measure(self, runner, rows: list, *, reference: bool = False, batch: int = 4) -> None:
        if not self.items:
            return
        try:
            preds = self.predict(runner, batch)
        except Exception as e:
            for r in rows:
                r["notes"] = "; ".join(x for x in (r["notes"], f"accuracy failed: {one_line(e)}") if x)
            return
        if reference:
            self.set_reference(preds)
        s = score(preds, self.ref_preds, self.labels, len(self.classes), self.ref_miou, self.classes)
        for r in rows:
            if r["status"] == "ok":
                r.update(s, accuracy_images=len(self.items))


def backend_rows(names, plan: "Plan", settings: Settings, sources: Sources, size, export, urls: dict, accuracy: Accuracy,
                 log) -> list:
    """Rows of the given backends at one size -- local and Triton ones alike: a runner per backend
    spec, timed and scored, or a status row saying why it cannot run here."""
    rows = []
    progress = plan.progress
    for name in names:
        spec = BACKENDS[name]
        runner, why = make_runner(spec, settings, sources, size, export, urls)
        if runner is None:
            new = [_base_row(spec, size, status=f"unavailable: {why}")]
            log(f"  {name:17s} {size[0]}x{size[1]}: unavailable: {why}")
        else:
            new = bench_runner(runner, spec, size, plan.batches, plan.timing, accuracy, log, note=_artifact_note(export, spec),
                               record=progress.row if progress else None)
        rows += new
        if progress:
            progress.done(name, size, new)
    return rows


# ---- Triton ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def triton_endpoints(given: dict, export, work_dir: Path, size, threads: int, log, env=None):
    """{protocol: model URL} (given, or a server started here for ``export``), or {"_why": reason}."""
    if given:
        yield dict(given)
        return
    if export is None or isinstance(export, Exception):
        yield {"_why": f"no export to serve ({one_line(export) if export else 'none'}) and no --triton-url"}
        return
    try:
        import segclip.serving.repo  # noqa: F401  (tritonclient and the server are optional extras)
        import segclip.serving.server  # noqa: F401
    except ImportError as e:
        yield {"_why": f"segclip.serving is not available ({one_line(e)}); pass --triton-url"}
        return
    from segclip.serving.server import serve_export

    h, w = size
    try:
        server = serve_export(export[0], work_dir / "triton_repo" / f"{h}x{w}", threads=threads, env=env, log=log)
    except Exception as e:
        yield {"_why": f"cannot start a Triton server here: {one_line(e, 300)} (or pass --triton-url)"}
        return
    try:
        model = server.models[0]
        log(f"Triton ready in {server.start_seconds:.1f} s: {server.describe()}, model {model}")
        yield {"grpc": server.model_url(model, "grpc"), "http": server.model_url(model, "http"), "_server": server.describe()}
    finally:
        server.stop()


def _local_masks(export, inputs: list, threads: int) -> Optional[list]:
    """The local ONNX Runtime (CPU, FP32) masks for the load sweep's inputs: the reference responses."""
    if export is None or isinstance(export, Exception):
        return None
    r, _ = make_runner(BACKENDS["onnxruntime"], Settings(device="cpu", threads=threads), None, None, export, {})
    if r is None:
        return None
    try:
        with r:
            return [r.infer(x)["mask"] for x in inputs]
    except Exception:
        return None


# ---- summary ---------------------------------------------------------------------------------------
def _speedups(rows: list) -> None:
    ref = {(r["height"], r["width"], r["batch"]): r["p50_ms"] for r in rows if r["backend"] == REFERENCE and r["status"] == "ok"}
    for r in rows:
        t = ref.get((r["height"], r["width"], r["batch"]))
        if r["status"] == "ok" and t and r["p50_ms"]:
            r["speedup_vs_torch"] = round(t / r["p50_ms"], 3)


def summarize(rows: list, load: list, machine: dict, busy_threshold: float = BUSY_THRESHOLD) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    size = (ok[0]["height"], ok[0]["width"]) if ok else (rows[0]["height"], rows[0]["width"]) if rows else (None, None)
    batch = min((r["batch"] for r in ok), default=None)
    per = {}
    for r in rows:
        if (r["height"], r["width"]) != size or (r["batch"] not in (batch, None)) or r["backend"] in per:
            continue
        per[r["backend"]] = {k: r[k] for k in ("status", "precision", "p50_ms", "throughput_ips", "speedup_vs_torch",
                                               "miou", "pixel_agreement", "miou_delta", "size_mib")}
    fastest = min((b for b, v in per.items() if v["status"] == "ok" and v["p50_ms"]), key=lambda b: per[b]["p50_ms"], default=None)
    best_load = max((r for r in load if r.get("status") == "ok" and r.get("throughput_ips")), key=lambda r: r["throughput_ips"],
                    default=None)
    return {
        "size": f"{size[0]}x{size[1]}" if size[0] else None,
        "batch": batch,
        "backends": per,
        "fastest": fastest,
        "unavailable": {r["backend"]: r["status"] for r in rows if r["status"].startswith("unavailable")},
        "triton_best": None if best_load is None else {k: best_load[k] for k in ("protocol", "concurrency", "throughput_ips", "p50_ms")},
        "triton_failures": sum(r.get("failures", 0) for r in load),
        "busy_threshold": busy_threshold,
        "busy_rows": sum(1 for r in list(rows) + list(load) if r.get("busy")),
        "clean": not any(r.get("busy") for r in list(rows) + list(load)),
        "warning": busy_warning(rows, load, busy_threshold),
        "machine": describe_machine(machine),
    }


# ---- the entry point ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Plan:
    """What one benchmark run measures: the parsed and defaulted arguments of ``run_benchmark``."""

    names: list
    batches: tuple
    sizes: Optional[list]
    concurrency: tuple
    given_urls: dict
    data_spec: Optional[tuple]
    device: str
    threads: int
    timing: dict
    limit: int
    load_duration: float
    quick: bool
    triton_shm: bool
    progress: Optional[object] = None  # progress.Progress: the bar and the report saved after each row


def make_plan(backends, batch, size, concurrency, quick, triton_url, data, reps, warmup, threads, budget_s, device,
              limit, triton_shm, load_duration_s, busy_threshold) -> Plan:
    """Parse and check every argument: a bad one fails before anything is read, exported or started."""
    names = parse_backends(backends if backends is not None else (QUICK_BACKENDS if quick else None))
    batches = parse_ints(batch if batch is not None else (1, 4, 8), "batch") or (1,)
    concurrency = parse_ints(concurrency, "concurrency")
    sizes = parse_sizes(size)
    given_urls = parse_triton_urls(triton_url)
    data_spec = acc.parse_data(data)
    import torch

    device = parse_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = int(threads or default_threads())
    if not 0 < float(busy_threshold) <= 1:
        raise SegclipError(f"--busy-threshold {busy_threshold}: must be a share of the CPUs in (0, 1], e.g. 0.1")
    timing = {"warmup": 2 if quick else 3, "min_reps": 5 if quick else 10, "budget_s": 1.0 if quick else 3.0, "inputs": 3,
              "busy_threshold": float(busy_threshold)}
    if warmup is not None:
        timing["warmup"] = int(warmup)
    if reps is not None:
        timing["min_reps"] = max(1, int(reps))
    if budget_s is not None:
        timing["budget_s"] = float(budget_s)
    limit = int(limit if limit is not None else (4 if quick else 16))
    for flag, v, low in (("--reps", reps, 1), ("--warmup", warmup, 0), ("--limit", limit, 1), ("--threads", threads, 1)):
        if v is not None and int(v) < low:
            raise SegclipError(f"{flag} {v}: must be at least {low}; leave it out for the default")
    if budget_s is not None and not float(budget_s) > 0:
        raise SegclipError(f"--budget {budget_s}: must be a positive number of seconds; leave it out for the default")
    return Plan(names=names, batches=batches[:1] if quick else batches, sizes=sizes, concurrency=concurrency,
                given_urls=given_urls, data_spec=data_spec, device=device, threads=threads, timing=timing, limit=limit,
                load_duration=float(load_duration_s if load_duration_s is not None else (2.0 if quick else 5.0)),
                quick=bool(quick), triton_shm=triton_shm)


def check_out(out, force: bool) -> Optional[Path]:
    """``--out`` as a folder that may take the results (replacing earlier ones only with ``force``)."""
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegclipError(f"--out {out}: exists and is a file; give a folder for the benchmark results")
    done = [f for f in ("benchmark.json", "benchmark.csv", "latency.png", "triton_load.csv") if (out / f).exists()]
    if done and not force:
        raise SegclipError(f"{out} already holds benchmark results ({', '.join(done)}); pass --force to replace "
                           f"them or choose another --out")
    return out


def _reference_only(plan: Plan, settings: Settings, sources: Sources, size, export, accuracy: Accuracy) -> None:
    """The accuracy deltas need the PyTorch reference's class maps even when it is not benchmarked."""
    if REFERENCE in plan.names or not accuracy.items or sources.checkpoint is None:
        return
    runner, _ = make_runner(BACKENDS[REFERENCE], settings, sources, size, export, {})
    if runner is not None:
        with runner:
            accuracy.set_reference(accuracy.predict(runner))


def _load_sweep(plan: Plan, urls: dict, served: set, export, size, log) -> list:
    """Triton's concurrency sweep on the protocols whose latency rows ran, each level flagged busy
    when other processes took the CPUs (the server started here counts as ours)."""
    from segclip.benchmarks.triton_load import sweep

    h, w = size
    inputs = random_batches(1, h, w, count=plan.timing["inputs"], seed=7)
    expected = _local_masks(export, inputs, plan.threads)
    load = []
    for proto in ("grpc", "http"):
        if proto not in served:
            continue
        log(f"Triton {proto} concurrency sweep {','.join(map(str, plan.concurrency))} at {h}x{w}")
        meter = CpuMeter.for_this_tree()
        a = meter.snapshot()
        for r in sweep(urls[proto], plan.concurrency, inputs, expected, duration_s=plan.load_duration, log=log):
            b = meter.snapshot()
            r.update(height=h, width=w, **busy_fields(CpuMeter.foreign_share(a, b), plan.timing["busy_threshold"]))
            load.append(r)
            a = meter.snapshot()
    return load


def run_order(names) -> list:
    """The order backends run in at each size: the reference first, Triton last."""
    return sorted(names, key=lambda n: (n != REFERENCE, BACKENDS[n].source == "triton"))


def planned_units(plan: Plan) -> tuple:
    """([(h, w, backend, batch)] in run order, Triton sweep levels): what the progress bar counts."""
    units = [(h, w, n, b) for h, w in plan.sizes for n in run_order(plan.names) for b in plan.batches]
    protocols = {BACKENDS[n].protocol for n in plan.names if BACKENDS[n].source == "triton"}
    return units, (len(protocols) * len(plan.concurrency) if plan.concurrency and not plan.quick else 0)


def bench_size(plan: Plan, settings: Settings, sources: Sources, size, items: list, work_dir: Path, *, sweep: bool,
               triton_env, log) -> tuple:
    """(rows, Triton load rows) of every backend at one size: the reference first, Triton last."""
    order = run_order(plan.names)
    local = [n for n in order if BACKENDS[n].source != "triton"]
    triton = [n for n in order if BACKENDS[n].source == "triton"]
    export = None
    if any(BACKENDS[n].source == "artifact" for n in plan.names) or (triton and not plan.given_urls):
        try:
            export = sources.export_for(size)
        except SegclipError as e:
            export = e
    accuracy = Accuracy(items, size, sources.classes)
    _reference_only(plan, settings, sources, size, export, accuracy)
    rows = backend_rows(local, plan, settings, sources, size, export, {}, accuracy, log)
    load = []
    if triton:
        with triton_endpoints(plan.given_urls, export, work_dir, size, plan.threads, log, env=triton_env) as urls:
            t_rows = backend_rows(triton, plan, settings, sources, size, export, urls, accuracy, log)
            rows += t_rows
            if sweep and plan.concurrency and not plan.quick:
                served = {BACKENDS[r["backend"]].protocol for r in t_rows if r["status"] == "ok"}
                load = _load_sweep(plan, urls, served, export, size, log)
                if plan.progress:
                    plan.progress.sweep_rows(load)
    return rows, load


def build_report(plan: Plan, source, sources: Sources, machine: dict, rows: list, load: list, data_desc, t_start: float,
                 complete: bool = True) -> dict:
    """The report (schema ``SCHEMA_VERSION``) with its table; checked against the schema.  ``complete``
    false: a report saved while running or after an interrupt (rows not reached say ``not run: ``)."""
    _speedups(rows)
    timing = plan.timing
    report = {
        "schema_version": SCHEMA_VERSION,
        "machine": machine,
        "config": {
            "source": str(source), "checkpoint": str(sources.checkpoint) if sources.checkpoint else None,
            "export": str(sources.base_export) if sources.base_export else None,
            "backends": plan.names, "batches": list(plan.batches), "sizes": [f"{h}x{w}" for h, w in plan.sizes],
            "concurrency": list(plan.concurrency), "quick": plan.quick, "device": plan.device, "threads": plan.threads,
            "warmup": timing["warmup"], "min_reps": timing["min_reps"], "budget_s": timing["budget_s"],
            "busy_threshold": timing["busy_threshold"],
            "distinct_inputs": timing["inputs"], "triton_url": plan.given_urls or None, "triton_shm": plan.triton_shm,
            "data": None if plan.data_spec is None else ":".join(plan.data_spec),
            "accuracy_images": data_desc, "accuracy_method": acc.METHOD,
            "latency": "host uint8 in -> host arrays out, perf_counter around runner.infer; warm-up excluded; "
                       "CUDA synchronised before each call when initialised",
            "classes": list(sources.classes),
        },
        "rows": rows,
        "triton_load": load,
        "summary": summarize(rows, load, machine, timing["busy_threshold"]),
    }
    report["summary"]["seconds"] = round(time.perf_counter() - t_start, 1)
    report["summary"]["complete"] = bool(complete)
    report["summary"]["not_run"] = sum(1 for r in rows if r["status"].startswith(NOT_RUN))
    try:
        import os

        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        machine["load_average_end"] = None
    report["table"] = format_table(report)
    problems = check_report(report)
    if problems:  # a bug here, not the user's: say so loudly
        raise RuntimeError("benchmark report does not match its schema: " + "; ".join(problems[:5]))
    return report


def _keep_partial(e: BaseException, plan, source, sources, machine, data_desc, t_start, tracker, work_dir, log) -> None:
    """After an interrupt or a crash: the finished rows, the others ``not run: <why>``, in the table and
    the files (plot included); never masks the exception being raised."""
    why = NOT_RUN + ("interrupted (Ctrl-C or SIGTERM)" if not isinstance(e, Exception)
                     else f"the benchmark stopped: {type(e).__name__}: {one_line(e, 200)}")
    try:
        tracker.close()
        rows = tracker.rows + tracker.not_run(why)
        report = build_report(plan, source, sources, machine, rows, tracker.load, data_desc, t_start, complete=False)
        files = write_all(report, work_dir, plot=any(r["status"] == "ok" for r in rows))
        log(report["table"])
        log(f"kept {len(tracker.rows)} finished row(s) in {files['json']} and {files['csv']}")
    except Exception as err:  # saving what was measured must not hide why the run stopped
        log(f"could not save the finished rows: {one_line(err)}")


def run_benchmark(source, out=None, data=None, backends=None, batch=None, size=None, concurrency=(1, 4, 8),
                  quick: bool = False, triton_url=None, *, reps: Optional[int] = None, warmup: Optional[int] = None,
                  threads: Optional[int] = None, budget_s: Optional[float] = None, device: Optional[str] = None,
                  limit: Optional[int] = None, triton_shm: bool = False, triton_env=None,
                  load_duration_s: Optional[float] = None, plot: bool = True, show_table: bool = True, log=print,
                  force: bool = False, busy_threshold: float = BUSY_THRESHOLD, scene=None,
                  progress: bool = False) -> dict:
    """Benchmark a run directory / checkpoint / export directory on every backend; returns the report
    (and writes ``OUT/benchmark.json``, ``benchmark.csv``, ``latency.png`` when ``out`` is given).

    ``quick``: batch 1, the first size, torch + onnxruntime + onnxruntime-fp16 (unless ``backends``
    is given), 2 warm-up calls, >= 5 reps in a 1 s budget, 4 accuracy images, no Triton sweep.
    ``reps``: minimum timed calls per row (default 10); ``budget_s``: time per row after that
    (default 3 s); ``threads``: CPU threads for torch and ONNX Runtime (default: usable CPUs);
    ``device``: "cpu", "cuda" or "cuda:N" for torch / ONNX Runtime / TensorRT (default: cuda when visible);
    ``limit``: accuracy images (default 16); ``busy_threshold``: rows measured while other processes
    took more than this share of all CPUs are flagged ``busy`` (table, JSON, plot, summary warning).
    ``scene``: also ``segclip predict`` end to end per local backend on that raster ("generate": a
    generated 2048x2048 GeoTIFF): Mpx/s, pipeline efficiency, peak RSS (``segclip.benchmarks.scene``).
    mIoU values are fractions (0..1); the table shows percent.
    ``progress``: a bar over the rows with an ETA on stderr.  With ``out``, the JSON and CSV are
    rewritten after every row, so an interrupt (Ctrl-C, SIGTERM) or a kill keeps the finished rows;
    the rows not reached say ``not run: ...`` and ``summary.complete`` is false.
    Every argument (and ``data``) is checked before ``out`` is created; an ``out`` that already holds
    a benchmark is replaced only with ``force``.
    """
    t_start = time.perf_counter()
    log = log or (lambda *a, **k: None)
    plan = make_plan(backends, batch, size, concurrency, quick, triton_url, data, reps, warmup, threads, budget_s, device,
                     limit, triton_shm, load_duration_s, busy_threshold)
    out = check_out(out, force)
    scene = check_scene(scene)
    import torch

    tmp = created = tracker = None
    if out is not None:
        work_dir = out  # created once the source and --data have been checked
    else:
        tmp = work_dir = Path(tempfile.mkdtemp(prefix="segclip-bench-"))
    old_threads = torch.get_num_threads()
    set_threads(plan.threads)
    try:
        want_trt = "tensorrt" in plan.names and tensorrt_unavailable_reason() is None
        int8 = any(BACKENDS[n].artifact in INT8_KEYS for n in plan.names)
        sources = Sources(source, work_dir, fp16="onnxruntime-fp16" in plan.names, trt=want_trt, max_batch=max(plan.batches),
                          log=log, int8=int8)
        data_items = None
        data_desc = "random uint8 images (no labels: pixel agreement only)"
        if plan.data_spec is not None:
            data_items, data_desc = acc.load_items(plan.data_spec, plan.limit, sources.classes,
                                                   sources.signature.value_range)
        if out is not None:
            created = [d for d in (work_dir, *work_dir.parents) if not d.exists()]
            work_dir.mkdir(parents=True, exist_ok=True)
        plan.sizes = (plan.sizes or sources.default_sizes())[:1 if plan.quick else None]
        settings = Settings(device=plan.device, threads=plan.threads, scores=bool(sources.signature.scores),
                            triton_shm=plan.triton_shm)
        machine = machine_info(plan.threads)
        log(f"machine: {describe_machine(machine)}")

        def save(rows, load, complete):
            if out is not None:
                write_all(build_report(plan, source, sources, machine, rows, load, data_desc, t_start, complete=complete),
                          work_dir, plot=False)

        units, sweep_levels = planned_units(plan)
        plan.progress = tracker = Progress(units, sweep_levels, write=save, bar=progress,
                                           make_row=lambda b, hw, batch, st: _base_row(BACKENDS[b], hw, batch, status=st))
        log = tracker.log(log)
        rows, load = [], []
        for i, (h, w) in enumerate(plan.sizes):
            items = data_items if data_items is not None else acc.random_items(min(plan.limit, 4), h, w)
            r, lo = bench_size(plan, settings, sources, (h, w), items, work_dir, sweep=i == 0, triton_env=triton_env, log=log)
            rows += r
            load += lo
        report = build_report(plan, source, sources, machine, rows, load, data_desc, t_start)
        if scene is not None:  # megapixels per second over a whole scene, per backend (segclip.benchmarks.scene)
            add_scene(report, plan.names, sources, plan.sizes[0], settings, scene, work_dir,
                      busy_threshold=plan.timing["busy_threshold"], log=log)
        if out is not None:
            report["files"] = write_all(report, work_dir, plot=plot)
            write_json(report, work_dir / "benchmark.json")  # again, now listing the files
        if show_table:
            log(report["table"])
            if report["summary"]["warning"]:
                log(f"warning: {report['summary']['warning']}")
        return report
    except BaseException as e:
        if tracker is not None and out is not None and (tracker.rows or tracker.load):
            _keep_partial(e, plan, source, sources, machine, data_desc, t_start, tracker, work_dir, log)
        for d in created or ():  # folders this run made and left empty go again
            try:
                d.rmdir()
            except OSError:
                break
        raise
    finally:
        if tracker is not None:
            tracker.close()
        set_threads(old_threads)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
