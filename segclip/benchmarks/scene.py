"""Whole-scene throughput: ``segclip predict`` end to end on one raster, per backend.

Users of this toolkit care about megapixels per second over a scene, not per-window latency.  Each
backend's predict runs in a child process of its own (``python -m segclip.benchmarks.scene``), so
its peak RSS is its own and no backend inherits another's allocator state.  Per row:

* ``mpx_s``: the scene's megapixels / predict's wall time (open, read, infer, blend, write the COG,
  counts and preview);
* ``runner_s``: time inside ``runner.infer`` (``RunnerPool.infer_seconds``); ``read_s``, ``blend_s``,
  ``write_s``: time predict's reader, main and writer threads worked (``Predictor.busy``: waiting on
  a queue is not counted).  The threads overlap, so the shares may add up to more than 1;
* ``runner_bound_mpx_s``: megapixels / ``runner_s``, the rate if everything but the runner were free;
* ``pipeline_efficiency`` = ``mpx_s`` / ``runner_bound_mpx_s`` (= runner_s / wall time): 1.0 when
  reading, blending and writing hide entirely behind inference.  (Issue 27 writes the ratio the other
  way up; this is the one that is a fraction, with 85% as the target.)
* ``peak_rss_mib``: the child's peak resident memory (/proc VmHWM);
* ``other_cpu``: share of the machine's CPU time other processes took meanwhile (from /proc/stat and
  the child's rusage), ``busy`` above the benchmark's threshold.

The ``default`` row runs predict with no --format/--runtime: the artifact ``contract.choose_artifact``
picks from the export's speed record, so its Mpx/s next to the fastest explicit row shows whether
the default is the fast path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from segclip.errors import SegclipError, one_line

SCENE_SIZE = 2048  # the generated scene: 2048 x 2048 px (4.2 Mpx), a small orthophoto tile
SCENE_GSD = 0.3  # metres per pixel of the generated scene (the sample set's)
TIMEOUT_S = 1800  # one backend's predict; a hung child is a failed row, not a hung benchmark
RESULT_TAG = "SEGCLIP_SCENE_RESULT "
DEFAULT_ROW = "default"
# backend options that are the benchmark's own, not predict's (names, scores: predict picks its own)
_NOT_PREDICT = ("name", "scores")


def make_scene(path, size: int = SCENE_SIZE, seed: int = 0) -> Path:
    """A georeferenced RGB GeoTIFF (EPSG:32633, ``SCENE_GSD`` m/px, tiled, deflate) of the sample
    set's rendered land cover: four 512 px renders tiled over the scene (throughput does not need
    every pixel to be new)."""
    import rasterio
    from affine import Affine

    from segclip.atomic import atomic_file
    from segclip.data.sample import render_scene

    path = Path(path)
    rng = np.random.default_rng(seed)
    tile = min(512, size)
    tiles = [render_scene(rng, tile, urban=bool(i % 2))[0] for i in range(4)]
    img = np.zeros((size, size, 3), np.uint8)
    for ty in range(0, size, tile):
        for tx in range(0, size, tile):
            t = tiles[(ty // tile + tx // tile) % 4]
            img[ty:ty + tile, tx:tx + tile] = t[:size - ty, :size - tx]
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(SCENE_GSD, 0.0, 500000.0, 0.0, -SCENE_GSD, 5000000.0), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", "photometric": "RGB"}
    with atomic_file(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.moveaxis(img, -1, 0))
    return path


def targets(names, sources, size, settings) -> list:
    """[(row name, model path or None, predict runner options, why it cannot run or None)]: every
    local backend of ``names`` (Triton rows are the serving benchmark's) and the ``default`` row."""
    from segclip.benchmarks.backends import BACKENDS

    out = []
    export = None
    try:
        export = sources.export_for(size)[0]
    except SegclipError as e:
        export_why = one_line(e, 200)
    for name in names:
        spec = BACKENDS[name]
        if spec.source == "triton":
            continue
        why = spec.probe(settings) if spec.probe else None
        opts = {k: v for k, v in spec.options(settings).items() if k not in _NOT_PREDICT and v is not None}
        if spec.source == "checkpoint":
            model = sources.checkpoint
            why = why or (None if model else getattr(sources, "checkpoint_problem", "no checkpoint"))
        else:
            model = export
            why = why or (None if export else export_why)
            opts.update(format=spec.artifact, allow_failed=True)  # measured anyway, as in the latency table (a note there)
        out.append((name, model, opts, why))
    if export is not None:
        out.append((DEFAULT_ROW, export, {}, None))
    return out


def _clock_ticks() -> tuple:
    """(busy, total) jiffies of the machine (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def run_one(model, scene, window: int, opts: dict, *, batch: Optional[int] = None, timeout: float = TIMEOUT_S) -> dict:
    """predict on ``scene`` in a child process -> its result (predict's summary + peak RSS + other_cpu)."""
    import resource

    with tempfile.TemporaryDirectory(prefix="segclip-scene-") as tmp:
        job = {"model": str(model), "scene": str(scene), "out": tmp, "size": window, "batch": batch, "opts": opts}
        a, own0 = _clock_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            res = subprocess.run([sys.executable, "-m", "segclip.benchmarks.scene", json.dumps(job)], capture_output=True,
                                 text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SegclipError(f"predict did not finish in {timeout:.0f} s") from None
        b, own1 = _clock_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith(RESULT_TAG)), None)
    if res.returncode != 0 or line is None:
        tail = (res.stderr or res.stdout).strip().splitlines()
        raise SegclipError(f"predict failed (exit {res.returncode}): {tail[-1] if tail else 'no output'}")
    out = json.loads(line[len(RESULT_TAG):])
    if a and b and b[1] > a[1]:
        hz = os.sysconf("SC_CLK_TCK")
        child = (own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime) * hz
        out["other_cpu"] = round(min(1.0, max(0.0, (b[0] - a[0] - child) / (b[1] - a[1]))), 4)
    return out


def row_from(name: str, result: Optional[dict], status: str = "ok", busy_threshold: float = 0.10) -> dict:
    """One scene row (``report.SCENE_KEYS``)."""
    r = result or {}
    st = r.get("stage_seconds") or {}
    wall, runner = r.get("seconds"), st.get("runner")
    mpx = r["width"] * r["height"] / 1e6 if r.get("width") else None  # exact: predict rounds its own to 3 places
    share = (lambda k: round(st[k] / wall, 4) if st.get(k) is not None and wall else None)
    bound = round(mpx / runner, 4) if mpx and runner else None
    choice = (r.get("runner") or {}).get("choice") or {}
    return {"backend": name, "status": status, "artifact": choice.get("format") or (r.get("runner") or {}).get("artifact"),
            "runtime": (r.get("runner") or {}).get("backend"), "width": r.get("width"), "height": r.get("height"),
            "window": r.get("window"), "batch": r.get("batch"), "windows": r.get("windows"), "megapixels": mpx,
            "seconds": wall, "mpx_s": round(mpx / wall, 4) if mpx and wall else None, "runner_s": runner, "read_s": st.get("read"),
            "blend_s": st.get("blend"), "write_s": st.get("write"), "runner_share": share("runner"),
            "read_share": share("read"), "blend_share": share("blend"), "write_share": share("write"),
            "runner_bound_mpx_s": bound,
            "pipeline_efficiency": round(runner / wall, 4) if runner and wall else None,  # = mpx_s / runner_bound_mpx_s
            "peak_rss_mib": r.get("peak_rss_mib"), "other_cpu": r.get("other_cpu"),
            "busy": bool(r.get("other_cpu") is not None and r["other_cpu"] > busy_threshold)}


def scene_rows(names, sources, size, settings, scene, *, busy_threshold: float = 0.10, log: Callable = print) -> list:
    """Whole-scene rows of the local backends of ``names`` at window ``size`` on ``scene``."""
    rows = []
    for name, model, opts, why in targets(names, sources, size, settings):
        if why:
            rows.append(row_from(name, None, f"unavailable: {why}"))
            log(f"  scene {name:17s}: unavailable: {why}")
            continue
        try:
            res = run_one(model, scene, int(size[0]), opts)
        except SegclipError as e:
            rows.append(row_from(name, None, f"failed: {one_line(e, 300)}"))
            log(f"  scene {name:17s}: failed: {one_line(e, 200)}")
            continue
        rows.append(row_from(name, res, busy_threshold=busy_threshold))
        r = rows[-1]
        log(f"  scene {name:17s}: {r['mpx_s']:.3f} Mpx/s ({r['seconds']:.1f} s), runner-bound {r['runner_bound_mpx_s'] or 0:.3f} "
            f"Mpx/s, pipeline efficiency {100 * (r['pipeline_efficiency'] or 0):.0f}%, peak RSS {r['peak_rss_mib']} MiB"
            + (f" [{r['artifact']} on {r['runtime']}]" if name == DEFAULT_ROW else "")
            + (f", BUSY: others took {100 * r['other_cpu']:.0f}% of the CPUs" if r["busy"] else ""))
    return rows


def summarize_scene(rows: list) -> Optional[dict]:
    """The fastest explicit row, the default row and how far the default is from the fastest."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("mpx_s")]
    explicit = [r for r in ok if r["backend"] != DEFAULT_ROW]
    if not ok:
        return None
    best = max(explicit or ok, key=lambda r: r["mpx_s"])
    default = next((r for r in ok if r["backend"] == DEFAULT_ROW), None)
    return {"fastest": best["backend"], "fastest_mpx_s": best["mpx_s"],
            "fastest_pipeline_efficiency": best.get("pipeline_efficiency"),
            "default": None if default is None else {"artifact": default["artifact"], "runtime": default["runtime"],
                                                     "mpx_s": default["mpx_s"]},
            "fastest_over_default": round(best["mpx_s"] / default["mpx_s"], 3) if default else None}


GENERATE = "generate"  # --scene without a raster: a generated SCENE_SIZE scene in the benchmark's folder


def check_scene(scene) -> Optional[object]:
    """``--scene`` before any work: None (no scene rows), ``GENERATE``, or an existing raster's Path."""
    if scene is None or scene is False:
        return None
    if scene is True or scene == GENERATE:
        return GENERATE
    p = Path(scene)
    if not p.is_file():
        raise SegclipError(f"--scene {scene}: no such raster; give a GeoTIFF/PNG to predict, or --scene alone for a "
                           f"generated {SCENE_SIZE}x{SCENE_SIZE} one")
    return p


def add_scene(report: dict, names, sources, size, settings, scene, work_dir: Path, *, busy_threshold: float = 0.10,
              log: Callable = print) -> None:
    """Whole-scene rows into ``report`` (its "scene" list, summary and table), for ``scene`` from ``check_scene``."""
    from segclip.benchmarks.report import check_report, format_table

    if scene == GENERATE:
        path = Path(work_dir) / f"scene_{SCENE_SIZE}x{SCENE_SIZE}.tif"
        if not path.is_file():
            log(f"whole scene: generating {path} ({SCENE_SIZE}x{SCENE_SIZE}, {SCENE_GSD} m/px)")
            make_scene(path)
    else:
        path = Path(scene)
    log(f"whole scene: segclip predict on {path}, one child process per backend")
    report["scene"] = scene_rows(names, sources, size, settings, path, busy_threshold=busy_threshold, log=log)
    report["config"]["scene"] = str(path)
    report["summary"]["scene"] = summarize_scene(report["scene"])
    report["table"] = format_table(report)
    problems = check_report(report)
    if problems:
        raise RuntimeError("benchmark report does not match its schema: " + "; ".join(problems[:5]))


def _peak_rss_mib() -> Optional[float]:
    """This process's peak resident memory: /proc's VmHWM (of this program only; ``ru_maxrss`` would
    carry over the benchmark parent's RSS at fork, which Linux keeps across exec), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError):
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _child(job: dict) -> None:
    """The child process: one predict, its summary and peak RSS as one tagged JSON line on stdout."""
    from segclip.inference.predict import predict_paths, release_freed_memory

    release_freed_memory()
    t0 = time.perf_counter()
    results, errors = predict_paths([job["model"]], [job["scene"]], job["out"], size=job["size"], batch=job.get("batch"),
                                    runner_opts=job["opts"], force=True, progress=False, log=lambda m: None)
    if errors or not results:
        raise SystemExit(f"error: {'; '.join(errors) or 'no result'}")
    r = results[0]
    r.pop("counts", None)
    with open(r.pop("outputs")["counts"]) as f:  # what ran: the artifact and runtime predict chose, and why
        r["runner"] = json.load(f).get("runner")
    r["window"] = job["size"]
    r["total_s"] = round(time.perf_counter() - t0, 3)
    r["peak_rss_mib"] = _peak_rss_mib()
    print(RESULT_TAG + json.dumps(r, default=str), flush=True)


if __name__ == "__main__":  # run_one's child
    try:
        _child(json.loads(sys.argv[1]))
    except SegclipError as e:
        raise SystemExit(f"error: {e}") from None
