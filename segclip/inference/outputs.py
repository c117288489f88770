"""What ``segclip predict`` writes per input besides the class map: output names inside ``--out``,
per-class pixel counts and areas, the downsampled preview map and the run summary table."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

PREVIEW_MAX = 2048
# everything predict may write per input (--vector's layers included): an existing one is refused without --force
OUTPUT_SUFFIXES = ("_mask.tif", "_mask.png", "_preview.png", "_overlay.png", "_counts.json", "_polygons.gpkg",
                   "_polygons.geojson")


def output_stems(paths: Sequence[Path], out: Path) -> list:
    """``out/<stem>`` per input, all different and all inside ``out``.  Inputs sharing a stem keep
    their extension when that tells them apart (x.png, x.tif -> x_png, x_tif), then get their
    parent folders' names prepended until they differ (a/x.tif, b/x.tif -> a_x, b_x), never
    beyond the filesystem root; inputs that nothing tells apart (one file given twice) are refused."""
    from segclip.errors import SegclipError

    paths = [Path(p) for p in paths]
    names = [p.stem for p in paths]

    def dups() -> set:
        return {n for n in names if names.count(n) > 1}

    d = dups()
    for n in d:  # one stem, several extensions: the extension is the shortest distinguishing name
        group = [i for i, m in enumerate(names) if m == n]
        if len({paths[i].suffix.lower() for i in group}) > 1:
            for i in group:
                names[i] = f"{n}_{paths[i].suffix.lstrip('.')}" if paths[i].suffix else n
    base = list(names)
    parents = [p.resolve().parent.parts[1:] for p in paths]  # without the root: a name never becomes absolute
    depth = 0
    while dups() and depth < max(len(x) for x in parents):
        depth += 1
        d = dups()
        names = ["_".join([*parents[i][-depth:], base[i]]) if n in d else n for i, n in enumerate(names)]
    d = dups()
    if d:
        a, b = [p for p, n in zip(paths, names) if n == sorted(d)[0]][:2]
        why = ("the same file given twice" if a.resolve() == b.resolve()
               else f"no name tells their outputs apart in --out {out}")
        raise SegclipError(f"{a} and {b}: {why} (their outputs would overwrite each other); give each input once, "
                           f"or predict them into separate --out folders")
    stems = [out / n for n in names]
    root = out.resolve()
    for s in stems:  # the guarantee itself, whatever the names: nothing is written outside --out
        if s.resolve().parent != root:
            raise AssertionError(f"predict output {s} is outside --out {out}")
    return stems


class Counts:
    """Per-class pixels and areas (m^2 when georeferenced) of the finished rows, counted ``CHUNK``
    rows at a time so the temporaries stay small whatever the image width."""

    CHUNK = 64

    def __init__(self, k: int):
        self.pixels = np.zeros(k, np.int64)
        self.area = np.zeros(k, np.float64)
        self.nodata = 0
        self.k = k

    def add(self, rows: np.ndarray, valid: Optional[np.ndarray], row_area: Optional[np.ndarray]) -> None:
        k1 = self.k + 1  # bin k = nodata, dropped below
        for r0 in range(0, rows.shape[0], self.CHUNK):
            labels = rows[r0:r0 + self.CHUNK]
            n = labels.shape[0]
            if valid is not None:
                v = valid[r0:r0 + n]
                self.nodata += int(v.size - np.count_nonzero(v))
                labels = np.where(v, labels, self.k)
            # one bincount gives every row's class counts: bin = row * (k + 1) + class
            idx = labels.astype(np.int64) + (np.arange(n, dtype=np.int64) * k1)[:, None]
            per_row = np.bincount(idx.ravel(), minlength=n * k1).reshape(n, k1)[:, : self.k]
            self.pixels += per_row.sum(0)
            if row_area is not None:
                self.area += (per_row * row_area[r0:r0 + n, None]).sum(0)


class Preview:
    """Every ``step``-th row and column of the class map (nearest), kept while rows stream by."""

    def __init__(self, h: int, w: int, ignore: int):
        self.step = max(1, math.ceil(max(h, w) / PREVIEW_MAX))
        self.map = np.full((math.ceil(h / self.step), math.ceil(w / self.step)), ignore, np.int32)

    def add(self, y0: int, rows: np.ndarray, x0: int = 0) -> None:
        ys = np.arange(-(-y0 // self.step) * self.step, y0 + rows.shape[0], self.step)  # kept rows >= y0
        xs = np.arange(-(-x0 // self.step) * self.step, x0 + rows.shape[1], self.step)
        if ys.size and xs.size:
            self.map[np.ix_(ys // self.step, xs // self.step)] = rows[np.ix_(ys - y0, xs - x0)]


def summary_lines(results: list) -> list:
    if not results:
        return []
    lines = [f"{'file':<32} {'size':>13} {'windows':>8} {'s':>8} {'Mpx/s':>7}"]
    for r in results:
        lines.append(f"{Path(r['input']).name[:32]:<32} {r['width']:>6}x{r['height']:<6} {r['windows']:>8} "
                     f"{r['seconds']:>8.1f} {r['megapixels_per_s']:>7.2f}")
    mpx, sec = sum(r["megapixels"] for r in results), sum(r["seconds"] for r in results)
    lines.append(f"{'total':<32} {mpx:>10.1f} Mpx {'':>8} {sec:>8.1f} {mpx / max(sec, 1e-9):>7.2f}")
    return lines


def prediction_preview(runner, dataset, out, n: int = 4, batch: int = 4) -> Path:
    """``out`` (PNG): image | prediction | truth for ``n`` images spread over a labelled ``dataset``,
    with the legend of the classes shown (no-data in the colour every preview gives it): the first
    thing a newcomer wants to see.  The runner sees each image whole (a fixed-size one in windows),
    with its scene when the model has metadata prompts."""
    from segclip.inference.compare import run_all
    from segclip.signature import colorize
    from segclip.viz import IGNORE, add_legend, labelled_grid, nodata_color, save_png

    sig = runner.signature
    pick = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int)
    items = [dataset[int(i)] for i in pick]
    ids = [sig.scene_of(it.get("meta")) for it in items] if sig.scenes else None
    preds = run_all(runner, [it["image"] for it in items], batch, ids, scores=False)["mask"]
    nd = nodata_color(sig.palette)

    def paint(mask):
        col = colorize(mask, sig.palette)
        col[np.asarray(mask) == IGNORE] = nd
        return col

    rows = [[it["image"], paint(p), paint(it["mask"])] for it, p in zip(items, preds)]
    shown = set(np.unique(np.concatenate([np.ravel(p) for p in preds] + [np.ravel(it["mask"]) for it in items])).tolist())
    entries = [(c, col) for i, (c, col) in enumerate(zip(sig.classes, sig.palette)) if i in shown]  # classes shown
    entries += [("no-data", nd)] if IGNORE in shown else []
    save_png(add_legend(labelled_grid(rows, ["image", "prediction", "truth"]), entries, font_size=16), out)
    return Path(out)
