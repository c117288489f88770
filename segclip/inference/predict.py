"""``segclip predict``: whole scenes (orthomosaics, UAV frames) through any runner, streamed.

Per input raster three threads overlap, joined by bounded queues so that memory stays flat:

    reader  -- windows of the plan (``segclip.data.sliding.SlidingPlan``) read from the raster,
               column strip by column strip (``SlidingPlan.strips``), scaled to uint8, batched;
               all-nodata windows are skipped
    main    -- batches to the ``RunnerPool`` (local runner, or several Triton endpoints with a
               bounded number in flight each); results, in plan order, into the strip's ``Blender``
    writer  -- finished blocks (row band x strip): nodata -> ignore, into the class-map file, the
               pixel counts and the downsampled preview

Peak memory is the model, a few batches, one strip's ``window_h x strip width`` blend state (at
most ``sliding.BLEND_BYTES``) and two finished blocks queued for the writer; none of it depends on
the image's height or width.

Outputs per input ``DIR/<stem>``: ``_mask.tif`` (COG; georeferenced input) or ``_mask.png``,
``_preview.png`` (palette colours + legend, long side <= ``PREVIEW_MAX``), ``_counts.json`` (pixels
and area per class; nodata never counted), with ``overlay`` ``_overlay.png``, and with ``vector``
``_polygons.gpkg`` / ``.geojson`` (``segclip.inference.vector``, from the written class map).
"""
from __future__ import annotations

import glob
import queue
import threading
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from segclip.data.base import IGNORE_INDEX
from segclip.data.sliding import OVERLAP
from segclip.atomic import sweep_partials
from segclip.errors import SegclipError
from segclip.inference.outputs import OUTPUT_SUFFIXES, Counts, Preview, output_stems

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".jp2", ".img", ".vrt", ".bmp", ".webp")
_POLL = 0.2  # seconds between checks of the other threads while waiting on a queue
# Default windows per request.  On a CPU a request of CPU_PIXELS (two 1024 px windows) keeps every core
# busy and bounds activation memory: ONNX Runtime needs ~1.2-1.4 GiB at 8 x 1024 px
# (benchmarks/PREDICT_MEMORY.md).  Smaller windows batch up to the same pixels, at most DEVICE_BATCH: at
# 128 px, 4-8 windows per request ran a 2048 px scene 10-15% faster than 2 (OpenVINO INT8, FAST_PATH.md).
# GPUs and Triton servers (which batch on their side) get DEVICE_BATCH.
CPU_PIXELS, DEVICE_BATCH = 2 * 1024 * 1024, 8
# window of a model that takes any size (--size overrides); segclip tune times exports at it too
DEFAULT_WINDOW = 1024
# --gsd: model-grid rows brought back to the input's grid at a time (they become 32 / factor input rows)
UPSAMPLE_ROWS = 32


def default_batch(runner, window: tuple = (DEFAULT_WINDOW, DEFAULT_WINDOW)) -> int:
    """Windows per request for ``runner`` at ``window`` (h, w): on this machine's CPU as many as make
    ``CPU_PIXELS`` (1 to ``DEVICE_BATCH``), elsewhere ``DEVICE_BATCH``."""
    device = str(runner.describe().get("device") or "")
    if not device.lower().startswith("cpu"):
        return DEVICE_BATCH
    return max(1, min(DEVICE_BATCH, CPU_PIXELS // max(1, int(window[0]) * int(window[1]))))


def expand_inputs(inputs: Sequence[str]) -> tuple:
    """Files, folders (their rasters, sorted) and glob patterns -> (paths, [errors])."""
    paths, errors = [], []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                errors.append(f"{p}: folder holds no rasters; put images ({', '.join(RASTER_SUFFIXES)}) in it or give the files")
            paths += found
        elif p.exists():
            paths.append(p)
        elif glob.has_magic(s):
            found = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file())
            if not found:
                errors.append(f"{s}: the pattern matches no file")
            paths += found
        else:
            errors.append(f"{p}: no such file or folder; check the path")
    seen, unique = set(), []
    for p in paths:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique, errors


def _put(q: queue.Queue, item, failed: Callable[[], bool]) -> bool:
    """Blocking put that gives up (False) once another thread has failed."""
    while True:
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            if failed():
                return False


def _get(q: queue.Queue, failed: Callable[[], bool]):
    while True:
        try:
            return q.get(timeout=_POLL)
        except queue.Empty:
            if failed():
                raise _Stop() from None


class _Stop(Exception):
    pass


class Predictor:
    """Streams rasters through a ``RunnerPool``.  ``window`` is the model's input size."""

    def __init__(self, pool, window: tuple, overlap: float = OVERLAP, batch: int = 8, bands=None, value_range=None,
                 overlay: bool = False, progress: bool = True, log: Callable = print, scene: Optional[int] = None,
                 label_ids=None, runner_info: Optional[dict] = None, gsd="auto", out_grid: str = "input",
                 vector: Optional[str] = None, min_area: float = 0.0, simplify: float = 0.0):
        """``gsd``: "auto" (georeferenced inputs are read at the model's GSD), "off", or the inputs' GSD in
        metres (``segclip.data.resample.plan_resampling``); ``out_grid``: the class map at the "input"'s
        grid (nearest) or the "model"'s.  ``label_ids``: ``segclip.data.dataset_label_ids(...)`` to write the dataset's own mask-file ids
        (e.g. LoveDA 1..7, 0 = no-data) instead of the model's 0..K-1 (255 = no-data).  ``runner_info``:
        what ran (``runner_info``), recorded in every ``_counts.json``."""
        self.pool, self.window, self.overlap = pool, window, overlap
        self.batch = max(1, int(batch))
        sig = pool.signature
        # --range, else the range the model was trained with (train --range), else each file's p2-p98
        self.bands, self.value_range, self.overlay = bands, value_range or sig.value_range or None, overlay
        self.progress, self.log = progress, log
        self.scene = scene  # scene id of every window (models with metadata prompts); None = the default
        self.classes, self.palette, self.k = list(sig.classes), list(sig.palette), sig.num_classes
        self.mode = "scores" if pool.has_scores else "mask"
        self.encode, self.file_ids = (label_ids[1], label_ids[2]) if label_ids else (None, None)
        self.runner_info = runner_info
        self.model_gsd, self.gsd, self.out_grid = sig.gsd, gsd, out_grid
        # --vector: polygons of the written class map (segclip.inference.vector), --min-area m2, --simplify m
        self.vector, self.min_area, self.simplify = vector, float(min_area or 0), float(simplify or 0)

    # ---- one raster ------------------------------------------------------------------------------
    def predict_file(self, path: Path, stem: Path) -> dict:
        from tqdm import tqdm

        from segclip.data.raster import ClassMapSink, RasterSource, gdal_env
        from segclip.data.sliding import SlidingPlan, blend_bytes_per_pixel

        t0, infer0 = time.perf_counter(), self.pool.infer_seconds
        with gdal_env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", _not_georeferenced())
            source = RasterSource(path, self.bands, self.value_range)
            try:
                from segclip.data.resample import ResampledSource, plan_resampling

                if self.vector:  # this input's own refusal (geojson needs a CRS), before any work
                    from segclip.inference.vector import check_vector_input

                    check_vector_input(self.vector, source.georeferenced, path)
                gsd = plan_resampling(source, self.model_gsd, self.gsd)
                # windows are read at the model's GSD; the class map is written at out_src's grid
                work = ResampledSource(source, gsd["factor"]) if gsd["resampled"] else source
                out_src = work if self.out_grid == "model" else source
                gsd["grid"] = "model" if out_src is work and gsd["resampled"] else "input"
                plan = SlidingPlan(work.height, work.width, self.window, overlap=self.overlap)
                strips = plan.strips(blend_bytes_per_pixel(self.mode, self.k))
                if self.encode:  # dataset ids: their own colours, their no-data id
                    ids = range(max(self.file_ids) + 1)
                    sink = ClassMapSink(Path(f"{stem}_mask"), out_src, [self.file_ids[i][1] for i in ids], len(ids),
                                        int(self.encode(np.array([IGNORE_INDEX]))[0]))
                else:
                    sink = ClassMapSink(Path(f"{stem}_mask"), out_src, self.palette, self.k, IGNORE_INDEX)
                counts, preview = Counts(self.k), Preview(out_src.height, out_src.width, IGNORE_INDEX)
                bar = tqdm(total=sum(len(s[2]) for s in strips), desc=path.name[:30], unit="win", leave=False,
                           position=1, disable=None if self.progress else True, dynamic_ncols=True)  # None: terminals only
                try:
                    skipped = self._stream(work, out_src, plan, strips, sink, counts, preview, bar)
                except BaseException:
                    sink.abort()
                    raise
                finally:
                    bar.close()
                mask_path = sink.close()
                vector = self._vectorize(mask_path, stem, sink.ignore) if self.vector else None
                outputs = self._finish(out_src, stem, mask_path, counts, preview, gsd, vector)
            finally:
                source.close()
        seconds = time.perf_counter() - t0
        # where the time went (threads overlap, so the parts may add up to more than the wall time):
        # inside the runner, reading windows, blending them, writing blocks (segclip benchmark --scene)
        stages = {"runner": round(self.pool.infer_seconds - infer0, 3), **{k: round(v, 3) for k, v in self.busy.items()}}
        mpx = source.height * source.width / 1e6
        return {"input": str(path), "width": source.width, "height": source.height, "windows": len(plan),
                "strips": len(strips), "batch": self.batch, "skipped_windows": skipped, "seconds": round(seconds, 3), "megapixels": round(mpx, 3),
                "megapixels_per_s": round(mpx / max(seconds, 1e-9), 3), "scaling": source.describe_scaling(),
                "stage_seconds": stages, "outputs": outputs, "counts": counts, "gsd": gsd}

    def _stream(self, source, out_src, plan, strips, sink, counts, preview, bar) -> int:
        """``source``: what windows are read from (the raster, or it at the model's GSD); ``out_src``:
        the grid the class map is written at (``source``, or the raster's own when it was resampled)."""
        from segclip.data.sliding import Blender

        pool = self.pool
        q_in: queue.Queue = queue.Queue(maxsize=pool.slots + 1)  # batches read, not yet sent
        q_out: queue.Queue = queue.Queue(maxsize=2)  # finished blocks, not yet written
        errors: list = []
        failed = lambda: bool(errors)  # noqa: E731
        skipped = [0]
        busy = self.busy = {"read": 0.0, "blend": 0.0, "write": 0.0}  # seconds each stage worked (not waited)
        # every window of every strip, in the order they are read: (position, strip, window id)
        order = [(n, s, i) for n, (s, i) in enumerate((s, i) for s, st in enumerate(strips) for i in st[2])]

        def reader():
            try:
                with source.reopen() as src:
                    ids, batch = [], []
                    for n, s, i in order:  # a batch may span two strips: the main thread splits it
                        if errors:
                            return
                        t = time.perf_counter()
                        c = plan.coords[i]
                        v = src.valid(*c)
                        if v is not None and not v.any():
                            skipped[0] += 1
                            continue
                        ids.append((n, s, i))
                        batch.append(plan.pad(src.read(*c)))
                        busy["read"] += time.perf_counter() - t
                        if len(ids) == self.batch:
                            if not _put(q_in, (ids, np.stack(batch)), failed):
                                return
                            ids, batch = [], []
                    if ids:
                        _put(q_in, (ids, np.stack(batch)), failed)
            except BaseException as e:
                errors.append(e)
            finally:
                _put(q_in, None, failed)

        def writer():
            try:
                with out_src.reopen() as src:
                    while True:
                        item = _get(q_out, failed)
                        if item is None:
                            return
                        t = time.perf_counter()
                        for y0, x0, rows in self._out_blocks(item, source, out_src):
                            y1, x1 = y0 + rows.shape[0], x0 + rows.shape[1]
                            valid = src.valid(y0, x0, y1, x1)
                            if valid is not None:
                                rows[~valid] = IGNORE_INDEX
                            sink.write(y0, self.encode(rows) if self.encode else rows, x0)
                            counts.add(rows, valid, src.row_pixel_areas(y0, y1))
                            preview.add(y0, rows, x0)
                        busy["write"] += time.perf_counter() - t
            except _Stop:
                pass
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=reader, name="segclip-read", daemon=True),
                   threading.Thread(target=writer, name="segclip-write", daemon=True)]
        for t in threads:
            t.start()
        key = "scores" if self.mode == "scores" else "mask"
        pending: deque = deque()
        done = [0]
        cur = [-1, None]  # the open strip: (index, Blender) -- one at a time

        def emit(x0, bands):
            for y0, _, rows in bands:
                if not _put(q_out, (y0, x0, rows), failed):
                    raise _Stop()

        def open_strip(s):
            """Finish the open strip and the strips before ``s`` that got no window (all nodata); open ``s``."""
            for t in range(max(cur[0], 0), s):
                b = cur[1] if t == cur[0] else Blender(plan, self.k, mode=self.mode, strip=strips[t])
                cur[1] = None  # one blend band alive at a time
                t0 = time.perf_counter()
                bands = b.finish()
                busy["blend"] += time.perf_counter() - t0
                emit(b.x0, bands)
                del b
            cur[:] = [s, Blender(plan, self.k, mode=self.mode, strip=strips[s]) if s < len(strips) else None]

        def drain_one():
            ids, fut = pending.popleft()
            out = fut.result()[key]
            start = 0
            for end in range(1, len(ids) + 1):  # runs of one strip
                if end == len(ids) or ids[end][1] != ids[start][1]:
                    s = ids[start][1]
                    if cur[0] != s:
                        open_strip(s)
                    t = time.perf_counter()
                    bands = cur[1].add([i for _, _, i in ids[start:end]], out[start:end])
                    busy["blend"] += time.perf_counter() - t
                    emit(cur[1].x0, bands)
                    start = end
            bar.update(ids[-1][0] + 1 - done[0])
            done[0] = ids[-1][0] + 1

        try:
            while True:
                item = _get(q_in, failed)
                if item is None:
                    break
                ids, batch = item
                pending.append((ids, pool.submit(batch, self.scene)))
                while len(pending) > pool.slots:
                    drain_one()
            while pending:
                drain_one()
            open_strip(len(strips))  # finishes the last strips
            bar.update(len(order) - done[0])
            _put(q_out, None, failed)
        except _Stop:
            pass
        except BaseException as e:
            errors.append(e)
        finally:
            for _, fut in pending:
                fut.cancel()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return skipped[0]

    @staticmethod
    def _out_blocks(item, source, out_src):
        """A finished block as written: as is, or -- read at the model's GSD -- back at the input's grid
        (nearest), ``UPSAMPLE_ROWS`` model rows at a time so a block grows by the factor squared only
        that many rows at once."""
        y0, x0, rows = item
        if out_src is source:
            yield y0, x0, rows
            return
        for r in range(0, rows.shape[0], UPSAMPLE_ROWS):
            yield source.to_input_block(y0 + r, x0, rows[r:r + UPSAMPLE_ROWS])

    # ---- side outputs ----------------------------------------------------------------------------
    def _vectorize(self, mask_path: Path, stem: Path, ignore: int) -> dict:
        from segclip.inference.vector import FORMATS, vectorize

        names = ([self.file_ids[i][0] for i in range(max(self.file_ids) + 1)] if self.encode else self.classes)
        return vectorize(mask_path, Path(f"{stem}_polygons{FORMATS[self.vector][1]}"), names, fmt=self.vector,
                         ignore=ignore, min_area=self.min_area, simplify=self.simplify)

    def _finish(self, source, stem: Path, mask_path: Path, counts: Counts, preview: Preview, gsd=None,
                vector=None) -> dict:
        from segclip.atomic import atomic_write_json
        from segclip.signature import palette_table
        from segclip.viz import add_legend, legend_entries, nodata_color, save_png

        valid = int(counts.pixels.sum())
        total = source.width * source.height
        table = palette_table(self.palette)
        nodata_rgb = nodata_color(self.palette)  # as legend.png shows it
        table[IGNORE_INDEX] = nodata_rgb
        entries = legend_entries(self.classes, self.palette, shares=self.shares(counts), ignore_color=nodata_rgb)
        pm = preview.map
        colour = table[np.clip(pm, 0, 255)]
        outputs = {"mask": str(mask_path), "preview": f"{stem}_preview.png", "counts": f"{stem}_counts.json",
                   **({"vector": vector["file"]} if vector else {})}
        pictures = [(outputs["preview"], colour)]
        if self.overlay:
            img = source.read(0, 0, source.height, source.width, out_shape=pm.shape).astype(np.float32)
            over = np.where((pm == IGNORE_INDEX)[..., None], img, img * 0.5 + colour * 0.5)
            outputs["overlay"] = f"{stem}_overlay.png"
            pictures.append((outputs["overlay"], over.round().clip(0, 255).astype(np.uint8)))
        scale = "" if preview.step == 1 else f" (1/{preview.step} scale)"
        for dst, rgb in pictures:
            save_png(add_legend(rgb, entries, title=f"{Path(source.path).name}{scale}"), dst)
        georef, areas = source.georeferenced, bool(counts.area.any())
        doc = {
            "input": str(source.path),
            "width": source.width,
            "height": source.height,
            "crs": source.crs.to_string() if georef else None,
            "transform": list(source.transform)[:6] if georef else None,
            "pixels": total,
            "valid_pixels": valid,
            "nodata_pixels": counts.nodata,
            "scaling": source.describe_scaling(),  # how the pixels became 8-bit (16-bit: the range or the stretch)
            # ground sampling distance (m): the input's, the model's, input/model, and the grid written
            "gsd": gsd,
            **({"vector": vector} if vector else {}),  # --vector: the polygon layer, its count and m2 per class
            "area_unit": "m2" if areas else None,
            "classes": {name: {"id": i, "pixels": int(counts.pixels[i]),
                               "share": round(float(counts.pixels[i] / max(valid, 1)), 6),
                               **({"area_m2": round(float(counts.area[i]), 3)} if areas else {})}
                        for i, name in enumerate(self.classes)},
        }
        if self.runner_info:
            doc["runner"] = self.runner_info
        atomic_write_json(outputs["counts"], doc)
        return outputs

    @staticmethod
    def shares(counts: Counts) -> list:
        """[(class id or IGNORE_INDEX for nodata, share of all pixels)], largest first (``viz.class_shares`` order)."""
        total = max(int(counts.pixels.sum()) + counts.nodata, 1)
        rows = [(i, int(n) / total) for i, n in enumerate(counts.pixels) if n]
        if counts.nodata:
            rows.append((IGNORE_INDEX, counts.nodata / total))
        return sorted(rows, key=lambda r: (-r[1], r[0]))

    # ---- many rasters ----------------------------------------------------------------------------
    def run(self, paths: Sequence[Path], out: Path, stems: Optional[Sequence[Path]] = None) -> tuple:
        """-> (per-file summaries, [one-line errors]); a failing file never stops the others.  Also
        writes ``legend.png`` (what the class-map colours mean)."""
        from tqdm import tqdm

        from segclip.viz import describe_shares, legend_image, save_png

        results, errors = [], []
        if self.model_gsd is None and self.gsd != "off":  # said once per run, not per file
            self.log("note: the model's ground sampling distance is unknown (trained without train --gsd): inputs are "
                     "read at their own resolution")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stems = stems or output_stems(paths, out)
        for path, stem in tqdm(list(zip(paths, stems)), desc="files", unit="file", position=0,
                               disable=None if self.progress and len(paths) > 1 else True, dynamic_ncols=True):
            try:
                r = self.predict_file(path, stem)
            except SegclipError as e:
                errors.append(str(e))
                self.log(f"error: {e}")
                continue
            results.append(r)
            shares = describe_shares(self.shares(r.pop("counts")), self.classes)
            self.log(f"{path.name}: {r['width']}x{r['height']} {r['windows']} windows, {r['seconds']:.1f} s, "
                     f"{r['megapixels_per_s']:.2f} Mpx/s -> {r['outputs']['mask']} ({shares})")
            g = r.get("gsd") or {}
            if g.get("resampled"):
                self.log(f"  {path.name}: GSD {g['input']:g} m read at the model's {g['model']:g} m (x{g['factor']:g}); "
                         f"class map at the {g['grid']}'s grid")
            elif g.get("factor") and abs(g["factor"] - 1) >= 0.01:
                self.log(f"  {path.name}: GSD {g['input']:g} m, the model's {g['model']:g} m: not resampled ({g['why']})")
            if r["scaling"] not in ("8-bit as is", "palette"):  # 16-bit/float: say how it became 8-bit, not only in _counts.json
                self.log(f"  {path.name}: scaled to 8 bits ({r['scaling']})")
        if results and self.encode:
            ids = range(max(self.file_ids) + 1)
            save_png(legend_image([self.file_ids[i][0] for i in ids], [self.file_ids[i][1] for i in ids], ignore=False),
                     out / "legend.png")
        elif results:
            save_png(legend_image(self.classes, self.palette), out / "legend.png")
        return results, errors


def release_freed_memory() -> None:
    """Make glibc hand large freed buffers back to the system (process-wide; for the CLI process).

    With its default dynamic threshold, glibc stops mmap-ing a buffer size once one was freed and
    serves it from per-thread heaps that rarely shrink; with four threads passing window-, batch-
    and band-sized arrays, that retained heap grows with the band width.  A fixed 1 MiB threshold
    keeps peak RSS flat (measured: -130 MiB on a 10k x 10k scene)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):  # not glibc (musl): nothing to tune
            pass


def runner_info(runner, batch: Optional[int] = None) -> dict:
    """What ran, for ``_counts.json`` and eval's JSON: backend, artifact, and for an export directory
    which artifact/runtime was chosen and why (``contract.Choice``: explicit, measured or fallback)."""
    choice = getattr(runner, "choice", None)
    return {"backend": runner.backend, "artifact": runner.name, "precision": runner.precision,
            **({"batch": batch} if batch else {}), "choice": choice.to_dict() if choice else None}


def _not_georeferenced():
    from rasterio.errors import NotGeoreferencedWarning

    return NotGeoreferencedWarning


def predict_paths(models: Sequence[str], inputs: Sequence[str], out, *, size: Optional[int] = None,
                  overlap: float = OVERLAP, batch: Optional[int] = None, bands=None, value_range=None, overlay: bool = False,
                  in_flight: int = 2, runner_opts: Optional[dict] = None, timeout: Optional[float] = None,
                  force: bool = False, progress: bool = True, scene=None, log: Callable = print,
                  label_ids: str = "model", gsd="auto", out_grid: str = "input", vector: Optional[str] = None,
                  min_area: float = 0.0, simplify: float = 0.0) -> tuple:
    """``segclip predict`` in Python: -> (per-file summaries, [one-line errors]).  Raises
    ``SegclipError`` only when no input can be predicted at all (bad ``--out``, no usable model).
    ``scene``: a scene name or id of a model trained with metadata prompts, for every input.
    ``batch``: windows per request; None: ``predict.default_batch`` of the (first) model.
    ``gsd``: "auto" | "off" | the inputs' GSD in metres; ``out_grid``: "input" | "model" (see ``Predictor``)."""
    from segclip.data.gsd import parse_gsd_mode
    from segclip.parsers import path_list
    from segclip.contract import resolve_source
    from segclip.runtime import load_runner
    from segclip.runtime.pool import open_pool

    models = path_list(models, "predict_paths models", "predict_paths('runs/r50/export', ['scene.tif'], 'preds')")
    inputs = path_list(inputs, "predict_paths inputs", "predict_paths('runs/r50/export', ['scene.tif'], 'preds')")
    if not 0 <= overlap < 1:
        raise SegclipError(f"--overlap {overlap}: must be in [0, 1); give e.g. --overlap 0.25")
    if batch is not None and batch < 1:
        raise SegclipError(f"--batch {batch}: must be >= 1; give e.g. --batch 8")
    gsd = parse_gsd_mode(gsd)
    from segclip.inference.vector import check_vector_args

    check_vector_args(vector, min_area, simplify)
    if out_grid not in ("input", "model"):
        raise SegclipError(f"--out-grid {out_grid}: choose input (the class map at each input's own grid) or model")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegclipError(f"--out {out}: is a file, not a folder; give a folder for the predictions")
    sweep_partials(out, log=log)  # a killed run's partials go even when this run is refused below
    paths, errors = expand_inputs(inputs)
    if not paths:  # nothing to do: one line, not one per input
        more = f" (and {len(errors) - 1} more input(s) with no raster)" if len(errors) > 1 else ""
        raise SegclipError((errors[0] if errors else f"no input raster in {' '.join(map(str, inputs))}") + more)
    for e in errors:
        log(f"error: {e}")
    stems = output_stems(paths, out)
    if not force:  # checked before any work: an earlier run's results are never replaced silently
        existing = [p for s in stems for p in (Path(f"{s}{x}") for x in OUTPUT_SUFFIXES) if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise SegclipError(f"{existing[0]}{more} already exists from an earlier predict; pass --force to replace "
                               f"it or choose another --out")
    def load(m):  # local options (format, device, providers) for files, the request timeout for endpoints
        remote = str(m).startswith(("grpc://", "http://", "https://"))
        if remote:
            return load_runner(m, **({"timeout": timeout} if timeout else {}))
        opts = dict(runner_opts or {})
        if resolve_source(m).kind not in ("export", "onnx"):
            opts.pop("allow_failed", None)  # export folders (and the ONNX files in them) hold parity-gate verdicts
        runner = load_runner(m, **opts)
        if hasattr(runner, "memory_arena"):  # ONNX Runtime: peak memory flat over a whole scene (not yet active)
            runner.memory_arena = False
        return runner

    pool, pool_errors = open_pool(models, load, in_flight=in_flight, log=log)
    errors += pool_errors
    created = not out.exists()
    try:  # created only now: bad inputs or models leave no empty folder behind
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SegclipError(f"--out {out}: cannot create the folder ({e.strerror}); give a writable folder") from None
    try:
        results, file_errors = _predict_into(pool, paths, out, stems, size=size, overlap=overlap, batch=batch, bands=bands,
                                             value_range=value_range, overlay=overlay, progress=progress, log=log,
                                             scene=scene, label_ids=label_ids, gsd=gsd, out_grid=out_grid,
                                             vector=vector, min_area=min_area, simplify=simplify)
    finally:  # every input failed, or the run was refused (--size, --scene): no empty folder either
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    return results, errors + file_errors


def _predict_into(pool, paths, out, stems, *, size, overlap, batch, bands, value_range, overlay, progress, log, scene,
                  label_ids, gsd="auto", out_grid="input", vector=None, min_area=0.0, simplify=0.0) -> tuple:
    """The part of ``predict_paths`` that runs the models, once ``out`` exists."""
    with pool:
        sig = pool.signature
        # one-line error for a scene the model lacks (or any scene for a model without them)
        scene_id = None if scene is None else int(sig.check_scene_ids(scene, 1, where="--scene")[0])
        if out_grid == "model" and (sig.gsd is None or gsd == "off"):
            raise SegclipError("--out-grid model: " + ("the model's ground sampling distance is unknown (train --gsd "
                               "records it)" if sig.gsd is None else "--gsd off reads every input at its own grid")
                               + "; drop --out-grid model")
        if sig.dynamic_size:
            window = (int(size or DEFAULT_WINDOW),) * 2
        else:
            window = (sig.height, sig.width)
            if size and (size, size) != window:
                raise SegclipError(f"--size {size}: the model takes {sig.height}x{sig.width} windows; leave --size out, "
                                   f"or re-export with --size {size}x{size}")
        first = pool.endpoints[0].runners[0]
        if first.choice is not None:  # which artifact of an export, and why (fastest measured here, or asked for)
            log(first.choice.line())
        batch = default_batch(first, window) if batch is None else batch
        limit = first.max_batch  # fixed engine profiles; Triton splits big batches itself
        batch = min(batch, limit) if limit else batch
        ids = None
        if label_ids == "dataset":
            from segclip.data import dataset_label_ids

            ids = dataset_label_ids(sig.classes)
            if ids is None:
                raise SegclipError(f"--label-ids dataset: no dataset with its own mask-file ids has this model's classes "
                                   f"({', '.join(sig.classes)}); its masks already hold the class ids 0..K-1: drop --label-ids")
        predictor = Predictor(pool, window, overlap=overlap, batch=batch, bands=bands, value_range=value_range,
                              overlay=overlay, progress=progress, log=log, scene=scene_id, label_ids=ids,
                              runner_info=runner_info(first, batch) if len(pool.endpoints) == 1 else None,
                              gsd=gsd, out_grid=out_grid, vector=vector, min_area=min_area, simplify=simplify)
        return predictor.run(paths, out, stems)
