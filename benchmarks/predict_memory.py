#!/usr/bin/env python
"""Peak memory (RSS) and throughput of ``segclip predict`` on synthetic georeferenced scenes of
growing size: streaming means the peak must stay flat as the scene grows.

    .venv/bin/python benchmarks/predict_memory.py --model exports/small --sizes 2000,5000,10000 --out /tmp/pm
    .venv/bin/python benchmarks/predict_memory.py --model exports/small --sizes 20000 --out /tmp/pm --keep
    .venv/bin/python benchmarks/predict_memory.py --model exports/small --sizes 2048x5000,2048x20000 --out /tmp/pm

Each size (S for S x S, or HxW: wide scenes show that width costs no memory either) gets a 3-band
uint8 GeoTIFF (written strip by strip, never whole), then ``segclip predict`` runs in its own
process; its peak RSS is the kernel's ``ru_maxrss`` for that child (os.wait4), its throughput the
file's megapixels over the command's wall time (model loading included).
Prints a Markdown table and writes ``predict_memory.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from segclip.parsers import parse_size


def make_scene(path: Path, size, block: int = 512) -> Path:
    """A W x H (``size``: (W, H) or one side) RGB GeoTIFF of smooth fields and edges (compresses, looks
    like land cover), written in ``block`` x 8 ``block`` chunks.  Small chunks matter: the predict
    child inherits this process's peak RSS as its own starting ``ru_maxrss`` (Linux keeps the
    high-water mark across fork and exec), so a scene built in full-width strips would inflate it."""
    import rasterio
    from rasterio.transform import Affine

    width, height = (size, size) if isinstance(size, int) else size
    if path.exists():
        return path
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.3, 0, 500000, 0, -0.3, 5000000), tiled=True, blockxsize=512, blockysize=512,
                       compress="deflate", BIGTIFF="IF_SAFER") as d:
        for y0 in range(0, height, block):
            yy = np.arange(y0, min(y0 + block, height), dtype=np.float32)[:, None]
            for x0 in range(0, width, 8 * block):
                xx = np.arange(x0, min(x0 + 8 * block, width), dtype=np.float32)[None, :]
                a = np.sin(xx / 97.0) * np.cos(yy / 131.0)
                b = np.sin((xx + yy) / 53.0)
                c = ((xx // 211 + yy // 173) % 3) / 2.0
                rgb = np.stack([a * 60 + 120 + c * 40, b * 50 + 110, (a * b) * 70 + 90 + c * 30]).clip(0, 255).astype(np.uint8)
                d.write(rgb, window=rasterio.windows.Window(x0, y0, rgb.shape[2], rgb.shape[1]))
    os.replace(tmp, path)
    return path


def run_predict(model: str, scene: Path, out: Path, extra: list) -> dict:
    cmd = [sys.executable, "-m", "segclip", "predict", "--model", model, str(scene), "--out", str(out), "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"segclip predict failed ({code}):\n{output}")
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1), "output": output.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="anything segclip predict takes (export dir, .onnx, checkpoint, URL)")
    ap.add_argument("--sizes", default="2000,5000,10000", help="scene sizes in pixels (S or HxW), comma separated")
    ap.add_argument("--out", required=True, help="work folder (scenes are kept there for re-runs)")
    ap.add_argument("--keep", action="store_true", help="keep the predictions")
    ap.add_argument("args", nargs="*", help="extra predict arguments after --, e.g. -- --size 1024 --batch 4")
    a = ap.parse_args()
    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for text in a.sizes.split(","):
        h, w = parse_size(text, "sizes", multiple_of=1)
        size = str(w) if w == h else f"{h}x{w}"  # square scenes keep their old names (re-used between runs)
        scene = make_scene(work / f"scene_{size}.tif", (w, h))
        r = run_predict(a.model, scene, work / f"pred_{size}", a.args)
        mpx = w * h / 1e6
        rows.append({"size": size, "width": w, "height": h, "megapixels": mpx, **r,
                     "megapixels_per_s": round(mpx / r["seconds"], 3)})
        print(f"{h}x{w}: peak RSS {r['peak_rss_mib']} MiB, {r['seconds']} s, {rows[-1]['megapixels_per_s']} Mpx/s",
              flush=True)
        if not a.keep:
            import shutil

            shutil.rmtree(work / f"pred_{size}", ignore_errors=True)
    print("\n| scene (H x W) | Mpx | peak RSS (MiB) | wall (s) | Mpx/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['height']}x{r['width']} | {r['megapixels']:.0f} | {r['peak_rss_mib']} | {r['seconds']} | {r['megapixels_per_s']} |")
    (work / "predict_memory.json").write_text(json.dumps({"model": a.model, "args": a.args, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
