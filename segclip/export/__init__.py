"""``segclip export``: checkpoint -> ONNX (FP32), FP16 ONNX, TensorRT engine, each behind a parity gate.

    from segclip.export import export, read_manifest
    manifest = export("runs/small", fp16=True)          # -> runs/small/export/{model.onnx, model_fp16.onnx, manifest.json}

One method per format (Ultralytics style): ``Exporter.export_onnx``, ``export_fp16``,
``export_tensorrt``; ``parity`` runs the PyTorch runner and every artifact on the same images.  All
files are written into a hidden staging folder beside the destination and renamed into place at the
end, so an interrupted export never leaves a half-written directory; an existing export is only
replaced with ``force=True``.  A failed parity gate keeps the artifacts, marks them
``"status": "failed"`` in the manifest and raises ``GateFailed`` (exit 1).
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from segclip.errors import GateFailed, SegclipError
from segclip.runtime.torch_runner import signature_from_checkpoint
from segclip.signature import SCORES_NAME
from segclip.atomic import atomic_dir
from segclip.data import build_dataset
from segclip.data.sample import generate_sample_dataset
from segclip.export.manifest import FORMAT, FORMAT_VERSION, MANIFEST_NAME, manifest_signature, read_manifest, sha256_file, write_manifest

__all__ = ["export", "read_manifest", "manifest_signature", "Exporter", "parse_batch", "parse_size", "parse_data"]

ONNX_NAME = "model.onnx"
ONNX_FP16_NAME = "model_fp16.onnx"
DEFAULT_SIZE = 512


# ---- argument parsing (shared with the CLI) ------------------------------------------------------
def parse_batch(batch) -> tuple:
    """"MIN:OPT:MAX" | "N" | (min, opt, max) -> validated triple."""
    try:
        if isinstance(batch, str):
            parts = [int(x) for x in batch.split(":")]
        elif isinstance(batch, int):
            parts = [batch]
        else:
            parts = [int(x) for x in batch]
        if len(parts) == 1:
            parts = [1, parts[0], parts[0]]
        if len(parts) != 3:
            raise ValueError
    except (TypeError, ValueError):
        raise SegclipError(f"--batch {batch!r}: expected MIN:OPT:MAX, e.g. 1:4:8") from None
    mn, opt, mx = parts
    if not 1 <= mn <= opt <= mx:
        raise SegclipError(f"--batch {batch!r}: need 1 <= MIN <= OPT <= MAX")
    return mn, opt, mx


def parse_size(size) -> Optional[tuple]:
    """"HxW" | "S" | int | (h, w) | None -> (h, w) multiples of 32, or None."""
    if size is None:
        return None
    try:
        if isinstance(size, str):
            parts = [int(x) for x in size.lower().replace("*", "x").split("x")]
        elif isinstance(size, int):
            parts = [size]
        else:
            parts = [int(x) for x in size]
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or min(parts) <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise SegclipError(f"--size {size!r}: expected HxW, e.g. 512x512") from None
    h, w = parts
    if h % 32 or w % 32:
        raise SegclipError(f"--size {h}x{w}: height and width must be multiples of 32 (the backbone's stride)")
    return h, w


def parse_data(data) -> Optional[tuple]:
    """"DATASET:ROOT:SPLIT" | (name, root, split) | None."""
    if data is None:
        return None
    if isinstance(data, str):
        parts = data.split(":")
        if len(parts) < 3 or not parts[0] or not parts[-1]:
            raise SegclipError(f"--data {data!r}: expected DATASET:ROOT:SPLIT, e.g. loveda:data/LoveDA:val")
        return parts[0], ":".join(parts[1:-1]), parts[-1]
    name, root, split = data
    return str(name), str(root), str(split)


# ---- parity images -------------------------------------------------------------------------------
def _fit(image: np.ndarray, mask: Optional[np.ndarray], h: int, w: int):
    """Centre-crop to h x w when the image is large enough, else resize (bilinear / nearest)."""
    ih, iw = image.shape[:2]
    if ih >= h and iw >= w:
        y, x = (ih - h) // 2, (iw - w) // 2
        return image[y:y + h, x:x + w], None if mask is None else mask[y:y + h, x:x + w]
    from PIL import Image

    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST)).astype(np.int64)
    return img, mask


def synthetic_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Deterministic scene-like images: smooth colour fields with rectangles and discs (not white noise,
    so class maps have regions and boundaries like real imagery)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        coarse = rng.uniform(40, 200, (4, 4, 3))
        ys = np.linspace(0, 3, h)
        xs = np.linspace(0, 3, w)
        y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        c = coarse
        img = (c[y0][:, x0] * (1 - fy) * (1 - fx) + c[y0 + 1][:, x0] * fy * (1 - fx)
               + c[y0][:, x0 + 1] * (1 - fy) * fx + c[y0 + 1][:, x0 + 1] * fy * fx)
        for _ in range(rng.integers(3, 8)):
            col = rng.uniform(0, 255, 3)
            if rng.random() < 0.5:
                a, b = sorted(rng.integers(0, h, 2)), sorted(rng.integers(0, w, 2))
                img[a[0]:a[1] + 4, b[0]:b[1] + 4] = col
            else:
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, max(5, min(h, w) // 4))
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = col
        img += rng.normal(0, 6, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _from_dataset(ds, n: int, h: int, w: int, classes) -> tuple:
    total = len(ds)
    if total == 0:
        raise SegclipError("the parity dataset is empty")
    idx = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    images, labels = [], []
    for i in idx:
        item = ds[int(i)]
        img, m = _fit(np.asarray(item["image"], dtype=np.uint8), None if item.get("mask") is None else np.asarray(item["mask"]), h, w)
        images.append(img)
        labels.append(m)
    ds_classes = getattr(ds, "classes", None)
    same = ds_classes is None or tuple(ds_classes) == tuple(classes)
    lab = np.stack(labels).astype(np.int64) if same and all(m is not None for m in labels) else None
    return np.stack(images), lab


def parity_images(data, n: int, h: int, w: int, classes, log=print) -> tuple:
    """-> (images N x h x w x 3 uint8, labels N x h x w int64 or None, source description)."""
    if n <= 0:
        raise SegclipError("--parity-images must be at least 1")
    spec = parse_data(data)
    if spec is not None:
        ds = build_dataset(*spec)
        images, labels = _from_dataset(ds, n, h, w, classes)
        return images, labels, f"data:{spec[0]}:{spec[1]}:{spec[2]}"
    tmp = Path(tempfile.mkdtemp(prefix="segclip-parity-"))
    try:
        # the sample set's own val split (a few 256 px LoveDA-format scenes), rendered in a second
        root = generate_sample_dataset(tmp / "sample", num_train=1, num_val=max(2, n), size=max(256, h, w))
        ds = build_dataset("loveda", root, "val")
        images, labels = _from_dataset(ds, n, h, w, classes)
        return images, labels, "sample:loveda:val"
    except Exception as e:  # the sample generator is a convenience; never block an export on it
        log(f"parity: sample data unavailable ({type(e).__name__}: {str(e)[:100]}); using synthetic images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return synthetic_images(n, h, w), None, "synthetic"


# ---- the exporter --------------------------------------------------------------------------------
def default_out_dir(source) -> Path:
    p = Path(source)
    return p / "export" if p.is_dir() else p.parent / "export"


def _nonempty(p: Path) -> bool:
    return p.exists() and (not p.is_dir() or any(p.iterdir()))


@dataclasses.dataclass
class Exporter:
    source: str
    out_dir: Optional[str] = None
    onnx: bool = True
    fp16: bool = False
    trt: bool = False
    batch: tuple = (1, 1, 8)
    size: Optional[tuple] = None
    dynamic_size: bool = False
    scores: bool = False
    opset: int = 17
    data: object = None
    parity_images: int = 8
    force: bool = False
    fp32_threshold: float = 0.999
    fp16_threshold: float = 0.995
    workspace_mb: int = 4096
    device: Optional[str] = None  # torch reference + TensorRT GPU; None: cpu reference, cuda:0 engine
    log: object = print

    def __post_init__(self):
        from segclip.engine.checkpoint import load_checkpoint, resolve_checkpoint

        self.batch = parse_batch(self.batch)
        self.size = parse_size(self.size)
        self.ckpt_path = resolve_checkpoint(self.source)
        self.out = Path(self.out_dir) if self.out_dir else default_out_dir(self.source)
        if self.out.exists() and not self.out.is_dir():
            raise SegclipError(f"{self.out}: exists and is not a directory; choose another --out")
        if _nonempty(self.out):
            if not (self.out / MANIFEST_NAME).is_file():
                raise SegclipError(f"{self.out} is not empty and is not a segclip export (no {MANIFEST_NAME}); "
                                   f"refusing to replace it{' even with --force' if self.force else ''}: choose another --out")
            if not self.force:
                raise SegclipError(f"{self.out} already holds an export ({MANIFEST_NAME}); pass --force to replace it "
                                   f"or choose another --out")
        if not (self.onnx or self.fp16 or self.trt):
            raise SegclipError("nothing to export: give --onnx, --fp16 and/or --trt")
        for name in ("fp32_threshold", "fp16_threshold"):
            v = getattr(self, name)
            if not 0.0 < float(v) <= 1.01:
                raise SegclipError(f"{name} {v}: must be a pixel-agreement fraction in (0, 1]")
        if self.trt and self.dynamic_size:
            raise SegclipError("--trt with --dynamic-size: the TensorRT profile needs a fixed --size; export the engine at a fixed size")
        self.ckpt = load_checkpoint(self.ckpt_path)
        if self.size is None:
            crop = (self.ckpt.get("train_config") or {}).get("crop_size") or DEFAULT_SIZE
            self.size = parse_size(int(crop))
        h, w = (None, None) if self.dynamic_size else self.size
        self.signature = signature_from_checkpoint(self.ckpt, height=h, width=w, scores=self.scores, max_batch=self.batch[2])
        self.twin_signature = dataclasses.replace(self.signature, scores=True)
        self.trt_reason = None
        if self.trt:
            from segclip.export.tensorrt import trt_unavailable_reason

            self.trt_reason = trt_unavailable_reason()
        self.source_sha256 = sha256_file(self.ckpt_path)
        self.artifacts = {}
        self.twins = {}  # format -> scores-enabled twin file (for score differences in the gate)

    # ---- formats -------------------------------------------------------------------------------
    def export_onnx(self, stage: Path) -> None:
        from segclip.engine.checkpoint import model_from_checkpoint
        from segclip.modeling import SegCLIPInference
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        self.module = SegCLIPInference(model_from_checkpoint(self.ckpt), scores=True)
        twin, info = ox.export_twin(self.module, self.twin_signature if not self.dynamic_size else
                                    dataclasses.replace(self.twin_signature, height=self.size[0], width=self.size[1]),
                                    self.opset, self.dynamic_size)
        if self.dynamic_size:
            ox.probe_dynamic_size(twin, self.module, self.signature)
        self.twin32 = twin
        pub = twin if self.scores else ox.drop_output(twin, SCORES_NAME)
        info["ops"] = ox.check_graph(pub, ONNX_NAME)
        self._write_onnx(stage, ONNX_NAME, pub, twin, "onnx", "fp32", info, t0)

    def _write_onnx(self, stage: Path, fname: str, pub, twin, key: str, precision: str, info: dict, t0: float,
                    extra_meta: Optional[dict] = None) -> None:
        from segclip.export import onnx_export as ox

        gh = ox.set_metadata(pub, self.signature, precision=precision, source_sha256=self.source_sha256, extra=extra_meta)
        path = ox.save(pub, stage / fname)
        if not self.scores:
            ox.set_metadata(twin, self.twin_signature, precision=precision, source_sha256=self.source_sha256)
            tpath = ox.save(twin, stage / ".parity" / f"{key}_scores.onnx")
        else:
            tpath = path
        self.twins[key] = tpath
        n_params = sum(int(np.prod(t.dims)) for t in pub.graph.initializer)
        self.artifacts[key] = {
            **info,  # the twin's trace details first: the public graph's own figures below win
            "file": fname, "format": "onnx", "precision": precision, "status": "pending",
            "sha256": sha256_file(path), "graph_sha256": gh, "size_bytes": path.stat().st_size,
            "opset": self.opset, "initializer_elements": n_params, "nodes": len(pub.graph.node),
            "export_seconds": round(time.perf_counter() - t0, 3),
        }
        self.log(f"{key}: wrote {fname} ({path.stat().st_size / 2**20:.1f} MB, {len(pub.graph.node)} nodes) "
                 f"in {time.perf_counter() - t0:.1f} s")

    def export_fp16(self, stage: Path, images: np.ndarray) -> None:
        from segclip.export import fp16 as f16
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        base = type(self.twin32)()
        base.CopyFrom(self.twin32)
        del base.metadata_props[:]
        out_dtypes = {SCORES_NAME: self.signature.scores_dtype}
        twin16, keep, ops, report = f16.make_fp16(base, images, output_dtypes=out_dtypes)
        ox.check_graph(twin16, ONNX_FP16_NAME)
        pub = twin16 if self.scores else ox.drop_output(twin16, SCORES_NAME)
        info = {"ops": ox.check_graph(pub, ONNX_FP16_NAME), "fp16": report}
        self._write_onnx(stage, ONNX_FP16_NAME, pub, twin16, "onnx_fp16", "fp16", info, t0,
                         extra_meta={"fp32_nodes": str(report["fp32_node_count"])})

    def export_tensorrt(self, stage: Path) -> None:
        from segclip.export.tensorrt import ENGINE_NAME, TIMING_CACHE_NAME, build_engine, write_trtexec_script

        src_key = "onnx_fp16" if self.fp16 else "onnx"
        onnx_name = self.artifacts[src_key]["file"]
        write_trtexec_script(stage, onnx_name, self.batch, self.size, self.workspace_mb)
        precision = self.artifacts[src_key]["precision"]
        if self.trt_reason:
            self.artifacts["tensorrt"] = {"file": None, "format": "tensorrt", "precision": precision,
                                          "status": "not_built", "reason": self.trt_reason, "onnx": onnx_name,
                                          "trtexec": "trtexec.sh"}
            self.log(f"tensorrt: not built ({self.trt_reason}); wrote trtexec.sh to build it on the target")
            return
        old_cache = self.out / TIMING_CACHE_NAME
        if old_cache.is_file():
            shutil.copy2(old_cache, stage / TIMING_CACHE_NAME)
        import torch

        with torch.cuda.device(self._cuda_index()):  # TensorRT builds for the current CUDA device
            info = build_engine(stage / onnx_name, stage / ENGINE_NAME, batch=self.batch, size=self.size,
                                workspace_mb=self.workspace_mb, timing_cache=stage / TIMING_CACHE_NAME, log=self.log)
        path = stage / ENGINE_NAME
        self.artifacts["tensorrt"] = {"file": ENGINE_NAME, "format": "tensorrt", "precision": precision, "status": "pending",
                                      "sha256": sha256_file(path), "size_bytes": path.stat().st_size, **info,
                                      "trtexec": "trtexec.sh"}

    def _cuda_index(self) -> int:
        d = str(self.device or "cuda")
        return int(d.split(":")[1]) if d.startswith("cuda:") else 0

    # ---- parity --------------------------------------------------------------------------------
    def parity(self, stage: Path, images: np.ndarray, labels) -> dict:
        from segclip.runtime.onnx_runner import OnnxRunner
        from segclip.runtime.torch_runner import TorchRunner
        from segclip.export.parity import compare, run_all

        ref = TorchRunner(self.ckpt, scores=True, name="torch-fp32", device=self.device or "cpu")  # the loaded checkpoint: no second torch.load
        candidates, thresholds = [], {}
        for key in ("onnx", "onnx_fp16"):
            if key in self.twins:
                candidates.append(OnnxRunner(self.twins[key], providers="cpu", name=key))
                thresholds[key] = self.fp16_threshold if key == "onnx_fp16" else self.fp32_threshold
        trt = self.artifacts.get("tensorrt")
        if trt and trt.get("status") == "pending":
            from segclip.runtime.tensorrt_runner import TensorRTRunner

            candidates.append(TensorRTRunner(stage / trt["file"], signature=self.signature, manifest_entry=trt, name="tensorrt",
                                             precision=trt["precision"], device=self._cuda_index()))
            thresholds["tensorrt"] = self.fp16_threshold if trt["precision"] == "fp16" else self.fp32_threshold
        bs = min(4, self.batch[2])
        result = compare(ref, candidates, images, labels, thresholds, batch_size=bs)
        # the public artifacts compute exactly what their scores-enabled twins measured
        if not self.scores:
            for key in ("onnx", "onnx_fp16"):
                if key in self.twins:
                    pub = OnnxRunner(stage / self.artifacts[key]["file"], providers="cpu", name=key)
                    twin = OnnxRunner(self.twins[key], providers="cpu", name=key + "+scores")
                    k = min(len(images), 2)
                    same = np.array_equal(run_all(pub, images[:k], bs)["mask"], run_all(twin, images[:k], bs)["mask"])
                    if not same:
                        for r in result["rows"]:
                            if r["name"] == key:
                                r["status"] = "failed"
                                r["note"] = "public graph differs from its scores-enabled twin"
        return result

    # ---- driver --------------------------------------------------------------------------------
    def run(self) -> dict:
        from segclip import __version__
        from segclip.export.parity import failed_rows, format_table

        t_start = time.perf_counter()
        with atomic_dir(self.out, replace=self.force) as stage:
            self.export_onnx(stage)
            h, w = self.size
            images, labels, src = parity_images(self.data, self.parity_images, h, w, self.signature.classes, log=self.log)
            if self.fp16:
                self.export_fp16(stage, images)
            if self.trt:
                self.export_tensorrt(stage)
            self.log(f"parity: {len(images)} image(s) ({src}) through torch and {len(self.twins) + ('tensorrt' in self.artifacts and self.artifacts['tensorrt']['status'] == 'pending')} artifact(s)")
            result = self.parity(stage, images, labels)
            table = format_table(result)
            for row in result["rows"]:
                a = self.artifacts[row["name"]]
                a["parity"] = {k: v for k, v in row.items() if k not in ("name", "backend", "precision")}
                a["status"] = row["status"]
            failed = failed_rows(result)
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "segclip_version": __version__,
                "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "status": "failed" if failed else "ok",
                "source": {"checkpoint": str(self.ckpt_path), "sha256": self.source_sha256,
                           "dataset": self.ckpt.get("dataset"), "model_config": self.ckpt.get("model_config")},
                "signature": self.signature.to_dict(),
                "input": {"name": self.signature.inputs[0].name, "dtype": "uint8", "layout": "NHWC",
                          "height": self.signature.height, "width": self.signature.width,
                          "dynamic_size": self.dynamic_size,
                          "batch": dict(zip(("min", "opt", "max"), self.batch)),
                          "normalization": {"mean": list(self.signature.pixel_mean), "std": list(self.signature.pixel_std),
                                            "scale": "0..255", "inside_graph": True}},
                "classes": list(self.signature.classes),
                "palette": [list(p) for p in self.signature.palette],
                "opset": self.opset,
                "parity": {"images": len(images), "source": src, "labels": labels is not None,
                           "reference": result["reference"], "seconds": result["seconds"], "table": table},
                "artifacts": self.artifacts,
                "export_seconds": round(time.perf_counter() - t_start, 2),
            }
            if self.trt:
                manifest["trtexec"] = "trtexec.sh"
            write_manifest(stage, manifest)
            shutil.rmtree(stage / ".parity", ignore_errors=True)
        self.log(table)
        self.log(f"export: {self.out} ({', '.join(k for k, a in self.artifacts.items() if a.get('file'))}) "
                 f"in {manifest['export_seconds']} s")
        if failed:
            names = ", ".join(f"{r['name']} {100 * r['pixel_agreement']:.3f}% < {100 * r['threshold']:.3f}%" for r in failed)
            raise GateFailed(f"parity gate failed ({names}); artifacts kept in {self.out} and marked failed in {MANIFEST_NAME}")
        if self.trt and self.trt_reason:
            raise SegclipError(f"--trt: {self.trt_reason}; the ONNX export in {self.out} is done and "
                               f"{self.out / 'trtexec.sh'} builds the engine on the target (sh {self.out / 'trtexec.sh'})")
        return manifest

def export(source, out=None, *, onnx: bool = True, fp16: bool = False, trt: bool = False, batch=(1, 1, 8),
           size=None, dynamic_size: bool = False, scores: bool = False, opset: int = 17, data=None,
           parity_images: int = 8, force: bool = False, fp32_threshold: float = 0.999, fp16_threshold: float = 0.995,
           workspace_mb: int = 4096, device: Optional[str] = None, log=print, out_dir=None) -> dict:
    """Export a checkpoint / run directory to ``out``; returns the manifest (also written to ``OUT/manifest.json``).

    ``model.onnx`` (FP32) is always written: the FP16 ONNX and the TensorRT engine derive from it.
    ``device``: "cpu" | "cuda" | "cuda:N" for the PyTorch reference of the parity gate (default cpu)
    and the GPU the TensorRT engine is built and checked on.  ``out_dir`` is the old name of ``out``.
    Raises ``GateFailed`` (exit 1) when an artifact fails its parity gate (artifacts kept, marked
    failed) and ``SegclipError`` (exit 2) for bad arguments, an existing export without ``force``,
    or ``trt=True`` where no engine can be built (after writing the ONNX files and ``trtexec.sh``).
    """
    if out_dir is not None:
        import warnings

        warnings.warn("export(out_dir=...) is deprecated; use export(..., out=...)", DeprecationWarning, stacklevel=2)
        if out is not None and str(out) != str(out_dir):
            raise SegclipError("export: out and out_dir given with different values; use out alone")
        out = out_dir
    return Exporter(source=source, out_dir=out, onnx=onnx, fp16=fp16, trt=trt, batch=batch, size=size,
                    dynamic_size=dynamic_size, scores=scores, opset=opset, data=data, parity_images=parity_images,
                    force=force, fp32_threshold=fp32_threshold, fp16_threshold=fp16_threshold,
                    workspace_mb=workspace_mb, device=device, log=log).run()
