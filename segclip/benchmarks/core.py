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


from segclip.contract import artifact_problem, is_export_dir, manifest_signature, read_manifest, sha256_file, signature_from_checkpoint
from segclip.errors import GateFailed, SegclipError, one_line
from segclip.parsers import parse_device, parse_ints, parse_sizes, renamed_keyword, split_list

from segclip.benchmarks import accuracy as acc
from segclip.benchmarks.backends import BACKENDS, QUICK_BACKENDS, REFERENCE, parse_backends
from segclip.benchmarks.machine import describe as describe_machine
from segclip.benchmarks.machine import machine_info
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
        from segclip.engine.checkpoint import resolve_checkpoint

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
        from segclip.engine.checkpoint import load_checkpoint

        return signature_from_checkpoint(load_checkpoint(self.checkpoint), scores=False)

    @property
    def classes(self):
        return tuple(self.signature.classes)

    def default_sizes(self) -> list:
        sig = self.signature
        if self.base_manifest is not None and not sig.dynamic_size:
            return [(int(sig.height), int(sig.width))]
        if self.checkpoint is not None and self.base_manifest is None:
            from segclip.engine.checkpoint import load_checkpoint

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
        d = self.work_dir / "exports" / f"{h}x{w}"
        if is_export_dir(d):  # reuse an export this benchmark made before, if it matches
            try:
                m = read_manifest(d)
                arts = m.get("artifacts") or {}
                same = (m.get("source") or {}).get("sha256") == sha256_file(self.checkpoint)
                if same and "onnx" in arts and (not self.fp16 or "onnx_fp16" in arts) and (not self.trt or "tensorrt" in arts) \
                        and (not self.int8 or "onnx_int8" in arts) \
                        and int((m.get("input") or {}).get("batch", {}).get("max", 0)) >= self.max_batch:
                    self.log(f"using the export in {d}")
                    return d, m
            except SegclipError:
                pass
        from segclip.export import export

        self.log(f"exporting {self.checkpoint} at {h}x{w} to {d} (onnx{', fp16' if self.fp16 else ''}{', int8' if self.int8 else ''}"
                 f"{', tensorrt' if self.trt else ''})")
        t0 = time.perf_counter()
        quiet = lambda *a, **k: None  # noqa: E731
        try:
            export(self.checkpoint, d, fp16=self.fp16, trt=self.trt, batch=(1, 1, max(1, self.max_batch)),
                   size=(h, w), parity_images=2, force=True, int8=self.int8, int8_fallback=0, log=quiet)
        except GateFailed:
            pass  # artifacts kept and marked failed: measured anyway, flagged in the rows' notes
        except SegclipError as e:
            if not is_export_dir(d):  # e.g. --trt without a GPU still writes the ONNX export
                raise SegclipError(f"export at {h}x{w} failed: {one_line(e)}") from None
        self.log(f"exported in {time.perf_counter() - t0:.1f} s")
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


def bench_runner(runner, spec, size, batches, timing: dict, items: list, log, note=None) -> tuple:
    """Rows for one runner at one size (one per batch) and its predictions on the accuracy images."""
    h, w = size
    rows, preds = [], None
    try:
        runner.activate()
    except Exception as e:
        return [_base_row(spec, size, status=f"unavailable: {one_line(e, 300)}")], None
    try:
        d = runner.describe()
        common = {"name": runner.name, "precision": runner.precision, "device": d.get("device") and str(d.get("device")),
                  "artifact": d.get("artifact"), "size_mib": d.get("size_mib"), "notes": note}
        sig = runner.signature
        if not sig.dynamic_size and (sig.height, sig.width) != (h, w):
            return [_base_row(spec, size, **common, status=f"skipped: this artifact takes {sig.height}x{sig.width} images only")], None
        for b in batches:
            if runner.max_batch is not None and b > runner.max_batch:
                rows.append(_base_row(spec, size, b, **common, status=f"skipped: batch {b} > the artifact's max batch {runner.max_batch}"))
                continue
            inputs = random_batches(b, h, w, count=timing["inputs"])
            try:
                t = measure(runner.infer, inputs, warmup=timing["warmup"], min_reps=timing["min_reps"],
                            budget_s=timing["budget_s"], meter=CpuMeter.for_this_tree())
            except Exception as e:
                rows.append(_base_row(spec, size, b, **common, status=f"failed: {one_line(e, 300)}"))
                continue
            st = t.stats
            rows.append(_base_row(spec, size, b, **common, p50_ms=st["p50_ms"], p90_ms=st["p90_ms"], p99_ms=st["p99_ms"],
                                  mean_ms=st["mean_ms"], reps=t.reps, throughput_ips=t.throughput_ips,
                                  **busy_fields(t.foreign_share, timing["busy_threshold"])))
            busy = f", BUSY: other processes took {100 * t.foreign_share:.0f}% of the CPUs" if rows[-1]["busy"] else ""
            log(f"  {spec.name:17s} {h}x{w} batch {b}: p50 {st['p50_ms']:.1f} ms, p90 {st['p90_ms']:.1f} ms "
                f"({t.reps} reps), {t.throughput_ips:.2f} img/s{busy}")
        if items and any(r["status"] == "ok" for r in rows):
            try:
                preds = acc.predict_all(runner, items, h, w, batch=min(4, max(batches)))
            except Exception as e:
                for r in rows:
                    r["notes"] = "; ".join(x for x in (r["notes"], f"accuracy failed: {one_line(e)}") if x)
        return rows, preds
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


def _fill_accuracy(rows: list, preds, items, ref_preds, ref_miou, num_classes, classes) -> None:
    if preds is None:
        return
    m = acc.score(preds, items, num_classes, classes)
    agree = acc.agreement(preds, ref_preds)
    for r in rows:
        if r["status"] == "ok":
            r["miou"] = m
            r["pixel_agreement"] = agree
            r["miou_delta"] = round(m - ref_miou, 6) if m is not None and ref_miou is not None else None
            r["accuracy_images"] = len(items)


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
        from segclip.serving.repo import build_repository
        from segclip.serving.server import TritonServer, free_ports
    except ImportError as e:
        yield {"_why": f"segclip.serving is not available ({one_line(e)}); pass --triton-url"}
        return
    h, w = size
    repo = work_dir / "triton_repo" / f"{h}x{w}"
    server = None
    try:
        build_repository(export[0], repo, intra_op_threads=threads, force=True)
        hp, gp, mp = free_ports(3)
        server = TritonServer(repo, http_port=hp, grpc_port=gp, metrics_port=mp, env=env)
        log(f"starting Triton on 127.0.0.1 (http {hp}, grpc {gp}) for {repo}")
        server.start()
    except Exception as e:
        if server is not None:
            server.stop()
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
    from segclip.runtime import load_runner

    try:
        with load_runner(export[0], format="onnx", allow_failed=True, providers="cpu", threads=threads) as r:
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
def run_benchmark(source, out=None, data=None, backends=None, batch=None, size=None, concurrency=(1, 4, 8),
                  quick: bool = False, triton_url=None, *, reps: Optional[int] = None, warmup: Optional[int] = None,
                  threads: Optional[int] = None, budget_s: Optional[float] = None, device: Optional[str] = None,
                  limit: Optional[int] = None, triton_shm: bool = False, triton_env=None,
                  load_duration_s: Optional[float] = None, plot: bool = True, show_table: bool = True, log=print,
                  force: bool = False, busy_threshold: float = BUSY_THRESHOLD, batches=None, sizes=None) -> dict:
    """Benchmark a run directory / checkpoint / export directory on every backend; returns the report
    (and writes ``OUT/benchmark.json``, ``benchmark.csv``, ``latency.png`` when ``out`` is given).

    ``quick``: batch 1, the first size, torch + onnxruntime + onnxruntime-fp16 (unless ``backends``
    is given), 2 warm-up calls, >= 5 reps in a 1 s budget, 4 accuracy images, no Triton sweep.
    ``reps``: minimum timed calls per row (default 10); ``budget_s``: time per row after that
    (default 3 s); ``threads``: CPU threads for torch and ONNX Runtime (default: usable CPUs);
    ``device``: "cpu", "cuda" or "cuda:N" for torch / ONNX Runtime / TensorRT (default: cuda when visible);
    ``limit``: accuracy images (default 16); ``busy_threshold``: rows measured while other processes
    took more than this share of all CPUs are flagged ``busy`` (table, JSON, plot, summary warning).
    Every argument (and ``data``) is checked before ``out`` is created; an ``out`` that already holds
    a benchmark is replaced only with ``force``.
    """
    t_start = time.perf_counter()
    log = log or (lambda *a, **k: None)
    names = parse_backends(backends if backends is not None else (QUICK_BACKENDS if quick else None))
    # ``batch``/``size`` as on the command line; ``batches``/``sizes`` kept for one release
    batch = renamed_keyword("run_benchmark", "batches", batches, "batch", batch)
    size = renamed_keyword("run_benchmark", "sizes", sizes, "size", size)
    batches = parse_ints(batch if batch is not None else (1, 4, 8), "batch") or (1,)
    if quick:
        batches = batches[:1]
    concurrency = parse_ints(concurrency, "concurrency")
    size_list = parse_sizes(size)
    given_urls = parse_triton_urls(triton_url)
    data_spec = acc.parse_data(data)
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(device)
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
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise SegclipError(f"--out {out}: exists and is a file; give a folder for the benchmark results")
        done = [f for f in ("benchmark.json", "benchmark.csv", "latency.png", "triton_load.csv") if (out / f).exists()]
        if done and not force:
            raise SegclipError(f"{out} already holds benchmark results ({', '.join(done)}); pass --force to replace "
                               f"them or choose another --out")
    load_duration = float(load_duration_s if load_duration_s is not None else (2.0 if quick else 5.0))

    tmp = created = None
    if out is not None:
        work_dir = out  # created once the source and --data have been checked
    else:
        tmp = work_dir = Path(tempfile.mkdtemp(prefix="segclip-bench-"))
    old_threads = torch.get_num_threads()
    set_threads(threads)
    try:
        import importlib.util

        want_trt = "tensorrt" in names and torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None
        int8 = any(BACKENDS[n].artifact in ("onnx_int8", "onnx_int8_cpu") for n in names)
        sources = Sources(source, work_dir, fp16="onnxruntime-fp16" in names, trt=want_trt, max_batch=max(batches), log=log,
                          int8=int8)
        data_items = data_desc = None
        if data_spec is not None:
            data_items, data_desc = acc.load_items(data_spec, limit, sources.classes)
        if out is not None:
            created = [d for d in (work_dir, *work_dir.parents) if not d.exists()]
            work_dir.mkdir(parents=True, exist_ok=True)
        if size_list is None:
            size_list = sources.default_sizes()
        if quick:
            size_list = size_list[:1]
        settings = Settings(device=device, threads=threads, scores=bool(sources.signature.scores), triton_shm=triton_shm)
        machine = machine_info(threads)
        log(f"machine: {describe_machine(machine)}")

        order = sorted(names, key=lambda n: (n != REFERENCE, BACKENDS[n].source == "triton"))
        rows, load = [], []
        for si, size in enumerate(size_list):
            h, w = size
            need_export = any(BACKENDS[n].source == "artifact" for n in names) or \
                (any(BACKENDS[n].source == "triton" for n in names) and not given_urls)
            export = None
            if need_export:
                try:
                    export = sources.export_for(size)
                except SegclipError as e:
                    export = e
            if data_items is not None:
                items = data_items
            else:
                items, data_desc = acc.random_items(min(limit, 4), h, w), "random uint8 images (no labels: pixel agreement only)"
            ref_preds = ref_miou = None
            size_rows = []
            if REFERENCE not in names and items and sources.checkpoint is not None:
                # the accuracy deltas need the PyTorch reference even when it is not benchmarked
                ref_runner, _ = make_runner(BACKENDS[REFERENCE], settings, sources, size, export, {})
                if ref_runner is not None:
                    with ref_runner:
                        ref_preds = acc.predict_all(ref_runner, items, h, w)
                    ref_miou = acc.score(ref_preds, items, len(sources.classes), sources.classes)
            for name in order:
                spec = BACKENDS[name]
                if spec.source == "triton":
                    continue
                runner, why = make_runner(spec, settings, sources, size, export, {})
                if runner is None:
                    size_rows.append(_base_row(spec, size, status=f"unavailable: {why}"))
                    log(f"  {name:17s} {h}x{w}: unavailable: {why}")
                    continue
                r_rows, preds = bench_runner(runner, spec, size, batches, timing, items, log,
                                             note=_artifact_note(export, spec))
                if name == REFERENCE and preds is not None:
                    ref_preds, ref_miou = preds, acc.score(preds, items, len(sources.classes), sources.classes)
                _fill_accuracy(r_rows, preds, items, ref_preds, ref_miou, len(sources.classes), sources.classes)
                size_rows += r_rows
            triton_names = [n for n in order if BACKENDS[n].source == "triton"]
            if triton_names:
                with triton_endpoints(given_urls, export, work_dir, size, threads, log, env=triton_env) as urls:
                    served = set()  # protocols whose latency rows ran: the sweep goes only there
                    for name in triton_names:
                        spec = BACKENDS[name]
                        runner, why = make_runner(spec, settings, sources, size, export, urls)
                        if runner is None:
                            size_rows.append(_base_row(spec, size, status=f"unavailable: {why}"))
                            log(f"  {name:17s} {h}x{w}: unavailable: {why}")
                            continue
                        r_rows, preds = bench_runner(runner, spec, size, batches, timing, items, log)
                        _fill_accuracy(r_rows, preds, items, ref_preds, ref_miou, len(sources.classes), sources.classes)
                        size_rows += r_rows
                        if any(r["status"] == "ok" for r in r_rows):
                            served.add(spec.protocol)
                    if si == 0 and concurrency and not quick:
                        inputs = random_batches(1, h, w, count=timing["inputs"], seed=7)
                        expected = _local_masks(export, inputs, threads)
                        for proto in ("grpc", "http"):
                            if proto in served:
                                log(f"Triton {proto} concurrency sweep {','.join(map(str, concurrency))} at {h}x{w}")
                                from segclip.benchmarks.triton_load import sweep

                                meter = CpuMeter.for_this_tree()  # the server started here is ours
                                a = meter.snapshot()
                                for r in sweep(urls[proto], concurrency, inputs, expected, duration_s=load_duration, log=log):
                                    b = meter.snapshot()
                                    r.update(height=h, width=w, **busy_fields(CpuMeter.foreign_share(a, b), timing["busy_threshold"]))
                                    load.append(r)
                                    a = meter.snapshot()
            rows += size_rows
        _speedups(rows)

        report = {
            "schema_version": SCHEMA_VERSION,
            "machine": machine,
            "config": {
                "source": str(source), "checkpoint": str(sources.checkpoint) if sources.checkpoint else None,
                "export": str(sources.base_export) if sources.base_export else None,
                "backends": names, "batches": list(batches), "sizes": [f"{h}x{w}" for h, w in size_list],
                "concurrency": list(concurrency), "quick": bool(quick), "device": device, "threads": threads,
                "warmup": timing["warmup"], "min_reps": timing["min_reps"], "budget_s": timing["budget_s"],
                "busy_threshold": timing["busy_threshold"],
                "distinct_inputs": timing["inputs"], "triton_url": given_urls or None, "triton_shm": triton_shm,
                "data": None if data_spec is None else ":".join(data_spec),
                "accuracy_images": data_desc, "accuracy_method": acc.TILING,
                "latency": "host uint8 in -> host arrays out, perf_counter around runner.infer; warm-up excluded; "
                           "CUDA synchronised before each call when initialised",
                "classes": list(sources.classes),
            },
            "rows": rows,
            "triton_load": load,
            "summary": summarize(rows, load, machine, timing["busy_threshold"]),
        }
        report["summary"]["seconds"] = round(time.perf_counter() - t_start, 1)
        try:
            import os

            machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            machine["load_average_end"] = None
        report["table"] = format_table(report)
        problems = check_report(report)
        if problems:  # a bug here, not the user's: say so loudly
            raise RuntimeError("benchmark report does not match its schema: " + "; ".join(problems[:5]))
        if out is not None:
            report["files"] = write_all(report, work_dir, plot=plot)
            write_json(report, work_dir / "benchmark.json")  # again, now listing the files
        if show_table:
            log(report["table"])
            if report["summary"]["warning"]:
                log(f"warning: {report['summary']['warning']}")
        return report
    except BaseException:
        for d in created or ():  # folders this run made and left empty go again
            try:
                d.rmdir()
            except OSError:
                break
        raise
    finally:
        set_threads(old_threads)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
