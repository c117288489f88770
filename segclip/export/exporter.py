"""The ``Exporter``: checkpoint -> ONNX (FP32), FP16 ONNX, INT8 Q/DQ ONNX, TensorRT engine, each behind a parity gate.

One method per format (Ultralytics style): ``export_onnx`` (and ``export_onnx_plugin``, the TensorRT
plugin form), ``export_fp16`` (``export_fp16_plugin``), ``export_int8`` (one per flavour of
``int8.FLAVOURS``), ``export_int8_fp16``, ``export_int8_msda`` (the INT8 graph for segclip's OpenVINO
deformable-attention kernel), ``export_geodeep``, ``export_tensorrt``;
a new format adds an ``export_<format>`` method, a line in ``run()`` and, when it can be run
here, its runner in ``parity_candidates``.  ``parity`` runs the PyTorch runner and every artifact
on the same images.  Constructing an ``Exporter`` only checks its arguments; all I/O (checkpoint,
output folder, hashing, TensorRT probe) happens in ``run()``.  All files are written into a hidden
staging folder beside the destination and renamed into place at the end, so an interrupted export
never leaves a half-written directory; an existing export is only replaced with ``force=True``.
A failed parity gate keeps the artifacts, marks them ``"status": "failed"`` in the manifest and
raises ``GateFailed`` (exit 1).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from segclip.atomic import atomic_dir, check_not_being_written, holds_own
from segclip.contract import (FAILED, FORMAT, FORMAT_VERSION, FORMATS, MANIFEST_NAME, NOT_BUILT, OK, PENDING, TRTEXEC_NAME,
                              scene_manifest, sha256_file, signature_from_checkpoint, tensorrt_unavailable_reason,
                              write_manifest)
from segclip.errors import GateFailed, SegclipError, one_line
from segclip.export.int8 import FALLBACK_BUDGET
from segclip.export.parity_images import parity_dataset, parity_images as load_parity_images, windows
from segclip.parsers import parse_batch, parse_size, split_device
from segclip.signature import SCORES_NAME

ONNX_NAME = FORMATS["onnx"].file
ONNX_FP16_NAME = FORMATS["onnx_fp16"].file
MSDA_INT8_KEY = "onnx_int8_msda"
DEFAULT_SIZE = 512


def default_out_dir(source) -> Path:
    p = Path(source)
    return p / "export" if p.is_dir() else p.parent / "export"


@dataclasses.dataclass
class Exporter:
    source: str
    out_dir: Optional[str] = None
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
    int8: bool = False
    calib_images: Optional[int] = None  # None: DEFAULT_CALIB_IMAGES, fewer when --data holds fewer (int8.Int8Images)
    calib_method: str = "minmax"
    int8_threshold: object = None  # "AGREEMENT[:MIOU_POINTS]", default 0.98:1.0
    int8_fallback: int = FALLBACK_BUDGET  # at most this many quantized nodes kept in float when the INT8 gate fails
    geodeep: bool = False  # also model_geodeep.onnx: the GeoDeep / QGIS Deepness contract (segclip.export.geodeep)
    scene: Optional[str] = None  # the one scene baked into the geodeep artifact (metadata prompts); None = generic
    log: object = print
    require_engine: bool = False  # --trt where no engine can be built: an error instead of a note
    tune: bool = True  # time the gated artifacts on every runtime here (segclip.inference.speed): predict's default
    msda: str = "auto"  # --msda auto|plugin|gridsample: the TensorRT graph's deformable attention (segclip.export.msda)

    def __post_init__(self):
        """Argument checks only (no I/O): a bad option fails before anything is read or written."""
        if not isinstance(self.source, (str, os.PathLike)):
            raise SegclipError(f"export: source {self.source!r} ({type(self.source).__name__}) is not a path; give a run "
                               f"directory or checkpoint, e.g. segclip.export('runs/small', out='runs/small/export')")
        self.batch = parse_batch(self.batch)
        self.size = parse_size(self.size)
        for name in ("fp32_threshold", "fp16_threshold"):
            v = getattr(self, name)
            if not 0.0 < float(v) <= 1.01:
                flag = "--" + name.replace("_", "-")
                raise SegclipError(f"{flag} {v}: must be a pixel-agreement fraction in (0, 1]; give e.g. {flag} "
                                   f"{0.995 if 'fp16' in name else 0.999}")
        if self.trt and self.dynamic_size:
            raise SegclipError("--trt with --dynamic-size: the TensorRT profile needs a fixed --size; export the engine at a fixed size")
        if int(self.parity_images) < 1:
            raise SegclipError(f"--parity-images {self.parity_images}: the parity gate needs at least 1 image; give e.g. --parity-images 8")
        from segclip.export.onnx_export import check_opset

        check_opset(self.opset)
        if self.geodeep and self.dynamic_size:
            raise SegclipError("--geodeep with --dynamic-size: GeoDeep and QGIS Deepness take the tile size from the "
                               "model's fixed input shape; export at a fixed --size")
        if self.geodeep and self.size is not None and self.size[0] != self.size[1]:  # the default (crop size) is square
            raise SegclipError(f"--geodeep --size {self.size[0]}x{self.size[1]}: GeoDeep and QGIS Deepness cut square "
                               f"tiles; give a square --size, e.g. --size {max(self.size)}")
        if self.scene is not None and not self.geodeep:
            raise SegclipError(f"--scene {self.scene}: fixes the scene of the --geodeep artifact only (the other artifacts "
                               f"take scene_id per request); add --geodeep or drop --scene")
        self.int8_data = None
        if self.int8:
            from segclip.export import int8 as q8

            if self.dynamic_size:
                raise SegclipError("--int8 with --dynamic-size: calibrate and gate at a fixed --size")
            q8.check_calibration_args(self.calib_images, self.calib_method)
            self.int8_agreement, self.int8_miou_points = q8.parse_int8_threshold(self.int8_threshold)
        self.int8_twins = {}
        self._reference = None  # (PyTorch runner, its outputs on the gate images, window): run once per export
        self.artifacts = {}
        self.twins = {}  # format -> scores-enabled twin file (for score differences in the gate)
        self.trt_twin = None  # scores-enabled twin engine (under .parity/) when the public engine has no scores
        from segclip.export.msda import check_form

        self.msda = check_form(self.msda, trt=self.trt, fp16=self.fp16, int8=self.int8)
        self.msda_tried = []  # --msda auto: the plugin engine's failed tries, before the GridSample form

    def prepare(self) -> None:
        """Resolve and load the checkpoint, check the destination, fix the signature (first step of ``run``)."""
        from segclip.checkpoint import load_checkpoint, resolve_checkpoint

        self.ckpt_path = resolve_checkpoint(self.source)
        self.out = Path(self.out_dir) if self.out_dir else default_out_dir(self.source)
        if holds_own(self.out, lambda d: (d / MANIFEST_NAME).is_file(), "a segclip export", f"no {MANIFEST_NAME}"):
            if not self.force:
                raise SegclipError(f"{self.out} already holds an export ({MANIFEST_NAME}); pass --force to replace it "
                                   f"or choose another --out")
        check_not_being_written(self.out)
        self.ckpt = load_checkpoint(self.ckpt_path)
        if self.device:
            from segclip.parsers import check_device

            check_device(self.device)
        # --data is read and checked here, before the ONNX export (seconds to minutes) starts
        self.parity_data = parity_dataset(self.data, self.ckpt)
        if self.size is None:
            crop = (self.ckpt.get("train_config") or {}).get("crop_size") or DEFAULT_SIZE
            self.size = parse_size(int(crop))
        h, w = (None, None) if self.dynamic_size else self.size
        self.signature = signature_from_checkpoint(self.ckpt, height=h, width=w, scores=self.scores, max_batch=self.batch[2])
        self.twin_signature = dataclasses.replace(self.signature, scores=True)
        if self.geodeep:
            from segclip.export import geodeep as gd

            self.geodeep_scene = gd.scene_id(self.signature, self.scene)
            if self.signature.gsd is None:
                self.log("note: --geodeep: the model's ground sampling distance is unknown (train --gsd), so the artifact "
                         "has no 'resolution': GeoDeep assumes 10 cm/px, Deepness asks the user")
        self.trt_reason = tensorrt_unavailable_reason() if self.trt else None
        if self.trt:  # the plugin version the TensorRT graph names: the local TensorRT's, else the portable one
            from segclip.export.msda import local_trt_version, plugin_version_for

            self.msda_version = plugin_version_for(None if self.trt_reason else local_trt_version())
        if self.int8:  # calibration + held-out gate images: a bad --data fails here, before anything is written
            from segclip.export import int8 as q8

            self.int8_data = q8.Int8Images(self.parity_data, None if self.calib_images is None else int(self.calib_images),
                                           int(self.parity_images), *self.size,
                                           self.signature.classes, log=self.log)
        self.source_sha256 = sha256_file(self.ckpt_path)

    # ---- formats -------------------------------------------------------------------------------
    def export_onnx(self, stage: Path) -> None:
        from segclip.checkpoint import model_from_checkpoint
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
        from segclip.export.msda import auto_form_reason

        if self.trt and self.msda != "gridsample" and auto_form_reason(self.int8) is None:
            self.export_onnx_plugin(stage)

    def export_onnx_plugin(self, stage: Path) -> None:
        """``model_plugin.onnx``: the FP32 TensorRT graph with each deformable-attention core as TensorRT's
        ``MultiscaleDeformableAttnPlugin_TRT`` (segclip.export.msda), gated on the CPU through the plugin's
        reference op like the other ONNX artifacts."""
        from segclip.export import msda
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        plugins = ((msda.PLUGIN_DOMAIN, msda.PLUGIN_NAME),)
        with msda.traced_in_plugin_form(self.module, self.msda_version):
            twin, info = ox.export_twin(self.module, self.twin_signature, self.opset, False, plugins=plugins)
        info["plugin_nodes"] = len(msda.plugin_nodes(twin))
        self.twin_plugin32 = twin  # the FP16 plugin graph derives from it
        pub = twin if self.scores else ox.drop_output(twin, SCORES_NAME)
        info["ops"] = ox.check_graph(pub, msda.PLUGIN_ONNX_NAME, plugins)
        self._write_onnx(stage, msda.PLUGIN_ONNX_NAME, pub, twin, msda.PLUGIN_KEY, "fp32", info, t0,
                         extra_meta={"msda": "plugin", "tensorrt_plugins": msda.PLUGIN_NAME, "plugin_version": self.msda_version})

    def _write_onnx(self, stage: Path, fname: str, pub, twin, key: str, precision: str, info: dict, t0: float,
                    extra_meta: Optional[dict] = None) -> None:
        from segclip.export import onnx_export as ox
        from segclip.export import trt_check

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
            "file": fname, "format": "onnx", "precision": precision, "status": PENDING,
            "sha256": sha256_file(path), "graph_sha256": gh, "size_bytes": path.stat().st_size,
            "opset": self.opset, "initializer_elements": n_params, "nodes": len(pub.graph.node),
            "export_seconds": round(time.perf_counter() - t0, 3),
            # will TensorRT take it? checked here, on the CPU box, before the file travels to a GPU
            **trt_check.manifest_entry(pub),
        }
        problems = self.artifacts[key]["tensorrt_check"]
        # the x86 INT8 flavour (uint8 activations) is not meant for TensorRT: recorded, not shouted
        if problems != "ok" and (extra_meta or {}).get("int8_target") != "cpu":
            self.log(f"{key}: {len(problems)} TensorRT problem(s) (segclip trt-check {fname}): {problems[0]}")
        self.log(f"{key}: wrote {fname} ({path.stat().st_size / 2**20:.1f} MB, {len(pub.graph.node)} nodes) "
                 f"in {time.perf_counter() - t0:.1f} s")

    def scene_cycle(self, n: int) -> Optional[np.ndarray]:
        """Scene ids for the range / calibration / sensitivity passes of a model with metadata prompts:
        image i under scene i % S, so every scene's activations count; None without scenes."""
        return np.arange(n, dtype=np.int32) % len(self.signature.scenes) if self.signature.scenes else None

    def export_fp16(self, stage: Path, images: np.ndarray) -> None:
        from segclip.export import fp16 as f16
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        base = type(self.twin32)()
        base.CopyFrom(self.twin32)
        del base.metadata_props[:]
        out_dtypes = {SCORES_NAME: self.signature.scores_dtype}
        twin16, keep, ops, report = f16.make_fp16(base, images, output_dtypes=out_dtypes, scene_ids=self.scene_cycle(len(images)))
        ox.check_graph(twin16, ONNX_FP16_NAME)
        pub = twin16 if self.scores else ox.drop_output(twin16, SCORES_NAME)
        info = {"ops": ox.check_graph(pub, ONNX_FP16_NAME), "fp16": report}
        self._write_onnx(stage, ONNX_FP16_NAME, pub, twin16, "onnx_fp16", "fp16", info, t0,
                         extra_meta={"fp32_nodes": str(report["fp32_node_count"])})
        from segclip.export.msda import PLUGIN_KEY

        if PLUGIN_KEY in self.artifacts:  # --trt --fp16: the FP16 TensorRT graph in the plugin form too
            self.export_fp16_plugin(stage, images)

    def export_fp16_plugin(self, stage: Path, images: np.ndarray) -> None:
        """``model_plugin_fp16.onnx``: the FP16 conversion of the plugin graph (same range pass and rules as
        ``model_fp16.onnx``), with the plugin itself kept FP32 (``msda.FP16_REASON``)."""
        from segclip.export import fp16 as f16
        from segclip.export import msda
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        base = type(self.twin_plugin32)()
        base.CopyFrom(self.twin_plugin32)
        del base.metadata_props[:]
        plugins = ((msda.PLUGIN_DOMAIN, msda.PLUGIN_NAME),)
        twin16, keep, ops, report = f16.make_fp16(base, images, extra_ops={msda.PLUGIN_NAME: msda.FP16_REASON},
                                                  output_dtypes={SCORES_NAME: self.signature.scores_dtype},
                                                  scene_ids=self.scene_cycle(len(images)))
        ox.check_graph(twin16, msda.PLUGIN_FP16_ONNX_NAME, plugins)
        pub = twin16 if self.scores else ox.drop_output(twin16, SCORES_NAME)
        info = {"ops": ox.check_graph(pub, msda.PLUGIN_FP16_ONNX_NAME, plugins), "fp16": report}
        self._write_onnx(stage, msda.PLUGIN_FP16_ONNX_NAME, pub, twin16, msda.PLUGIN_FP16_KEY, "fp16", info, t0,
                         extra_meta={"fp32_nodes": str(report["fp32_node_count"]), "msda": "plugin",
                                     "tensorrt_plugins": msda.PLUGIN_NAME, "plugin_version": self.msda_version})

    def export_int8(self, stage: Path, key: str, exclude=(), sensitivity=None) -> None:
        """One INT8 flavour (``int8.FLAVOURS[key]``): calibrated Q/DQ graph from the FP32 twin, with the
        quantizable nodes in ``exclude`` kept in float (the sensitivity fallback)."""
        from segclip.export import int8 as q8
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        spec = q8.FLAVOURS[key]
        (stage / ".parity").mkdir(exist_ok=True)
        record = q8.int8_record(key)  # this CPU's ISA decides the weight bits (7 where u8 x s8 saturates)
        twin = q8.quantize(self.twin32, key, self.int8_data.calib, self.calib_method, exclude=exclude,
                           cache=stage / ".parity" / f"calibration_{self.calib_method}.json",
                           scene_ids=self.scene_cycle(len(self.int8_data.calib)), reduce_range=record["weight_bits"] < 8)
        pub = twin if self.scores else ox.drop_output(twin, SCORES_NAME)
        summary = q8.qdq_summary(pub)
        info = {"ops": ox.check_graph(pub, spec["file"]), "int8": {
            "quantizer": "onnxruntime.quantization.quantize_static (QDQ, per-channel weights)",
            "target": spec["target"], "activations": spec["activations"],
            "weights": f"int8 symmetric per-channel, {record['weight_bits']}-bit range", **record,
            "calibration": {"method": self.calib_method, **self.int8_data.describe()},
            "quantized_op_types": list(q8.QUANT_OPS), "float_op_types": list(q8.FLOAT_OPS),
            "quantized_nodes": summary["quantized_nodes"], "float_nodes": summary["float_nodes"],
            "fallback_float_nodes": [{"name": n, "added_error": (sensitivity or {}).get(n)} for n in exclude],
            "fp32_size_bytes": self.artifacts["onnx"]["size_bytes"],
        }}
        self.int8_twins[key] = twin
        self._write_onnx(stage, spec["file"], pub, twin, key, "int8", info, t0,
                         extra_meta={"int8_target": spec["target"], "float_nodes": str(len(summary["float_nodes"]))})
        if record["weight_bits"] < 8 and not exclude:
            self.log(f"{key}: 7-bit weights: this CPU ({record['isa']['isa']}, no VNNI) adds 8-bit products in 16-bit "
                     f"lanes that saturate (ONNX Runtime's reduce_range)")

    def export_int8_msda(self, stage: Path, rows: list) -> None:
        """``model_int8_msda.onnx``: ``model_int8.onnx`` (with the nodes its fallback kept in float) traced in the
        plugin form of the deformable attention, which OpenVINO runs through segclip's kernel instead of 72
        GridSamples (``segclip.runtime.ov_extension``).  Quantized with ``onnx_int8``'s calibrated ranges
        (``int8.transfer_ranges``: ONNX Runtime cannot calibrate through the plugin op), gated on the CPU
        reference of the plugin op like the other plugin graphs; the kernel's library is built next to it."""
        import json

        from segclip.export import int8 as q8
        from segclip.export import msda
        from segclip.export import onnx_export as ox
        from segclip.runtime import ov_extension

        key, fname = MSDA_INT8_KEY, FORMATS[MSDA_INT8_KEY].file
        row = next((r for r in rows if r["name"] == "onnx_int8"), None)
        cache = stage / ".parity" / f"calibration_{self.calib_method}.json"
        reason = ("model_int8.onnx, which it derives from, failed its parity gate" if row is None or row["status"] == FAILED
                  else "onnxruntime < 1.31 cannot quantize from calibrated ranges (calibration_cache_path); pip install -U onnxruntime"
                  if not q8.ranges_reusable()
                  else f"no calibration ranges of model_int8.onnx ({cache.name})" if not cache.is_file() else None)
        if reason:
            self.artifacts[key] = {"file": None, "format": "onnx", "precision": "int8", "status": NOT_BUILT, "reason": reason}
            self.log(f"{key}: not built ({reason})")
            return
        t0 = time.perf_counter()
        plugins = ((msda.PLUGIN_DOMAIN, msda.PLUGIN_NAME),)
        twin32 = getattr(self, "twin_plugin32", None)  # --trt traced it already
        if twin32 is None:
            with msda.traced_in_plugin_form(self.module, "1"):
                twin32, _ = ox.export_twin(self.module, self.twin_signature, self.opset, False, plugins=plugins)
        mapped = stage / ".parity" / f"calibration_{self.calib_method}_msda.json"
        q8.transfer_ranges(self.twin32, twin32, cache, mapped)
        src = self.artifacts["onnx_int8"]["int8"]
        exclude = [n["name"] for n in src["fallback_float_nodes"]]
        twin = q8.quantize(twin32, "onnx_int8", self.int8_data.calib, self.calib_method, exclude=exclude, cache=mapped,
                           reduce_range=src["weight_bits"] < 8)
        try:
            ext = ov_extension.write_library(stage, self.log)
        except (SegclipError, ImportError) as e:  # the graph is still good: runners build the kernel where they run
            ext = {"file": None, "status": NOT_BUILT, "reason": one_line(e)}
            self.log(f"{key}: kernel library not built ({one_line(e)}); OpenVINO runners will build it where they run")
        pub = twin if self.scores else ox.drop_output(twin, SCORES_NAME)
        summary = q8.qdq_summary(pub)
        info = {"ops": ox.check_graph(pub, fname, plugins), "plugin_nodes": len(msda.plugin_nodes(pub)),
                "openvino_extension": ext,
                "int8": {**src, "from": q8.INT8_NAME, "quantized_nodes": summary["quantized_nodes"],
                         "float_nodes": summary["float_nodes"],
                         "calibration": {**src["calibration"], "ranges": "onnx_int8's, by node name (int8.transfer_ranges)"}}}
        self._write_onnx(stage, fname, pub, twin, key, "int8", info, t0,
                         extra_meta={"int8_target": "openvino", "float_nodes": str(len(summary["float_nodes"])), "msda": "plugin",
                                     "tensorrt_plugins": msda.PLUGIN_NAME, "plugin_version": "1",
                                     "openvino_extension": json.dumps(ext)})

    def export_int8_fp16(self, stage: Path, images: np.ndarray) -> None:
        """``model_int8_fp16.onnx``: the TensorRT INT8 graph with FP16 elsewhere (``--int8 --fp16 --trt``)."""
        from segclip.export import int8 as q8
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        twin, report = q8.with_fp16(self.int8_twins["onnx_int8"], images, output_dtypes={SCORES_NAME: self.signature.scores_dtype},
                                    scene_ids=self.scene_cycle(len(images)))
        pub = twin if self.scores else ox.drop_output(twin, SCORES_NAME)
        info = {"ops": ox.check_graph(pub, q8.INT8_FP16_NAME), "fp16": report,
                "int8": {"from": q8.INT8_NAME, "qdq_scales": "float32", **q8.int8_record("onnx_int8_fp16")}}
        self._write_onnx(stage, q8.INT8_FP16_NAME, pub, twin, "onnx_int8_fp16", "int8", info, t0,
                         extra_meta={"int8_target": "tensorrt", "fp32_nodes": str(report["fp32_node_count"])})

    def export_geodeep(self, stage: Path, images: list) -> None:
        """``model_geodeep.onnx`` (``segclip.export.geodeep``): the same inference module behind GeoDeep's and
        Deepness' tensors; its probabilities are checked against the FP32 twin's scores here, its class
        maps against PyTorch in the gate."""
        from segclip.data.gsd import describe
        from segclip.export import geodeep as gd
        from segclip.export import onnx_export as ox

        t0 = time.perf_counter()
        model, info = gd.export_graph(self.module, self.geodeep_scene[0], self.size, self.opset)
        gh = gd.stamp(model, self.twin_signature, size=self.size[0], overlap_percent=gd.TILES_OVERLAP,
                      scene=self.geodeep_scene, source_sha256=self.source_sha256)
        path = ox.save(model, stage / gd.GEODEEP_NAME)
        self.twins["geodeep"] = path  # the file itself: its probabilities are its scores
        self.artifacts["geodeep"] = {
            **info, "file": gd.GEODEEP_NAME, "format": "onnx", "precision": "fp32", "status": PENDING,
            "sha256": sha256_file(path), "graph_sha256": gh, "size_bytes": path.stat().st_size, "opset": self.opset,
            **gd.manifest_entry(self.signature, self.size, gd.TILES_OVERLAP, self.geodeep_scene),
            "probabilities_vs_scores": self._geodeep_probabilities(path, windows(images[:2], *self.size)),
            "export_seconds": round(time.perf_counter() - t0, 3)}
        self.log(f"geodeep: wrote {gd.GEODEEP_NAME} ({path.stat().st_size / 2**20:.1f} MB, scene {self.geodeep_scene[1]}, "
                 f"GSD {describe(self.signature.gsd)}) in {time.perf_counter() - t0:.1f} s")

    def _geodeep_probabilities(self, path: Path, calls: list) -> dict:
        """Its probabilities against the FP32 twin's scores divided by their class sum, on the same windows."""
        from segclip.inference.compare import agreement
        from segclip.runtime.geodeep_runner import GeoDeepRunner
        from segclip.runtime.onnx_runner import OnnxRunner

        x = np.stack(calls)
        ids = np.full(len(x), self.geodeep_scene[0], np.int32) if self.signature.scenes else None
        with OnnxRunner(self.twins["onnx"], providers="cpu") as twin, GeoDeepRunner(path, providers="cpu") as geo:
            ref, got = twin.infer(x, ids), geo.infer(x, ids)
        want = ref[SCORES_NAME] / ref[SCORES_NAME].sum(1, keepdims=True)
        d = np.abs(got[SCORES_NAME] - want)
        return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                "argmax_agreement": agreement([got["mask"]], [ref["mask"]]), "windows": len(x)}

    @staticmethod
    def _undertrained_hint(failed: list, result: dict) -> str:
        """An INT8 gate missed on a model that scores low itself: say the model looks under-trained."""
        from segclip.export.int8 import UNDERTRAINED_MIOU
        from segclip.inference.compare import pct

        ref = (result.get("reference") or {}).get("miou")
        if ref is None or ref >= UNDERTRAINED_MIOU or not any(r.get("precision") == "int8" for r in failed):
            return ""
        return (f"; the FP32 model itself scores mIoU {pct(ref)} on the gate images: it looks under-trained, and a barely "
                f"trained model's class decisions are too close for INT8 to keep -- train longer, or export without --int8")

    def int8_fallback_rounds(self, stage: Path, result: dict, gate: tuple) -> None:
        """Failed INT8 rows: rank quantized nodes by the error they add (on calibration images), keep
        the worst ones in float and re-gate, in rounds within ``int8_fallback`` nodes."""
        from segclip.export import int8 as q8
        from segclip.inference.compare import compare, pts
        from segclip.runtime.onnx_runner import OnnxRunner

        for i, row in enumerate(result["rows"]):
            key = row["name"]
            if key not in q8.FLAVOURS or row["status"] == OK:
                continue
            n_sens = min(q8.SENSITIVITY_IMAGES, len(self.int8_data.calib))
            ranked = q8.sensitivity(self.twin32, self.int8_twins[key], self.int8_data.calib[:n_sens], self.scene_cycle(n_sens))
            added = dict(ranked)
            tried = []
            for k in q8.fallback_schedule(self.int8_fallback):
                exclude = [n for n, _ in ranked[:k]]
                self.log(f"{key}: parity gate failed ({100 * row['pixel_agreement']:.2f}% agreement, dmIoU "
                         f"{pts(row['miou_delta'])}); keeping the {k} most "
                         f"sensitive node(s) in float and re-gating")
                self.export_int8(stage, key, exclude=exclude, sensitivity=added)
                images, labels, scene_ids = gate  # the gate's own (held-out) images, every scene
                ref, ref_out, window = self.reference(images, scene_ids)
                one = compare(ref, [OnnxRunner(self.twins[key], providers="cpu", name=key, **self._onnx_options(key))], images, labels,
                              {key: self.int8_agreement}, batch_size=min(4, self.batch[2]), scene_ids=scene_ids,
                              window=window, reference_out=ref_out)
                row = q8.gate_int8(one["rows"][0], self.int8_miou_points)
                tried.append({"float_nodes": k, "pixel_agreement": row["pixel_agreement"], "miou_delta": row["miou_delta"],
                              "status": row["status"]})
                if row["status"] == OK:
                    break
            row["fallback"] = tried
            result["rows"][i] = row
            self.artifacts[key]["int8"]["fallback_rounds"] = tried

    def export_tensorrt(self, stage: Path) -> None:
        from segclip.export.tensorrt import ENGINE_NAME, TIMING_CACHE_NAME, build_engine, profile_shapes, write_trtexec_script

        from segclip.export.msda import trtexec_note

        src_key = ("onnx_int8_fp16" if self.fp16 else "onnx_int8") if self.int8 else "onnx_fp16" if self.fp16 else "onnx"
        src_key, form = self.msda_form(src_key)
        onnx_name = self.artifacts[src_key]["file"]
        scenes = bool(self.signature.scenes)  # a scene_id input needs its own profile
        write_trtexec_script(stage, onnx_name, self.batch, self.size, self.workspace_mb, scenes=scenes,
                             msda_note=trtexec_note(form))
        self.log(f"tensorrt: the engine takes the {form['form']} form of the deformable attention ({onnx_name}"
                 + (f", {form['plugin']} version {form['plugin_version']})" if form["form"] == "plugin" else f": {form['reason']})"))
        precision = self.artifacts[src_key]["precision"]
        if self.trt_reason:
            self.artifacts["tensorrt"] = {"file": None, "format": "tensorrt", "precision": precision,
                                          "status": NOT_BUILT, "reason": self.trt_reason, "onnx": onnx_name,
                                          "trtexec": TRTEXEC_NAME, "engine": ENGINE_NAME,  # what trtexec.sh writes
                                          "profile": profile_shapes(self.batch, self.size), "msda": form}
            self.log(f"tensorrt: not built ({self.trt_reason}); wrote trtexec.sh to build it on the target")
            return
        old_cache = self.out / TIMING_CACHE_NAME
        if old_cache.is_file():
            shutil.copy2(old_cache, stage / TIMING_CACHE_NAME)
        import torch

        with torch.cuda.device(self._cuda_index()):  # TensorRT builds for the current CUDA device
            try:
                info = build_engine(stage / onnx_name, stage / ENGINE_NAME, batch=self.batch, size=self.size,
                                    workspace_mb=self.workspace_mb, timing_cache=stage / TIMING_CACHE_NAME, log=self.log,
                                    scenes=scenes)
            except SegclipError as e:
                if form["form"] != "plugin" or self.msda != "auto":
                    raise
                # --msda auto: a TensorRT whose parser or builder rejects the plugin builds the GridSample form
                self.msda_tried.append({"form": "plugin", "onnx": onnx_name, "status": "build failed", "reason": str(e)})
                self.log(f"tensorrt: the plugin form failed to build ({e}); building the GridSample form")
                return self.export_tensorrt(stage)
            if self.twins[src_key] != stage / onnx_name:
                # the gate measures scores too: an engine of the scores-enabled twin (same timing cache, so
                # its kernels are the public engine's), checked to give the public engine's masks
                self.trt_twin = stage / ".parity" / "tensorrt_scores.plan"
                build_engine(self.twins[src_key], self.trt_twin, batch=self.batch, size=self.size,
                             workspace_mb=self.workspace_mb, timing_cache=stage / TIMING_CACHE_NAME, log=self.log,
                             scenes=scenes)
        path = stage / ENGINE_NAME
        self.artifacts["tensorrt"] = {"file": ENGINE_NAME, "format": "tensorrt", "precision": precision, "status": PENDING,
                                      "sha256": sha256_file(path), "size_bytes": path.stat().st_size, **info,
                                      "trtexec": TRTEXEC_NAME, "msda": form}

    def msda_form(self, src_key: str) -> tuple:
        """(the ONNX key the engine builds from, the manifest's record of its deformable-attention form)."""
        from segclip.export import msda

        key = msda.PLUGIN_KEYS.get(src_key)
        plugin = self.artifacts.get(key) if key else None
        reason = None
        if self.msda == "gridsample":
            reason = "--msda gridsample"
        elif plugin is None:
            reason = msda.auto_form_reason(self.int8)
        elif self.msda == "auto" and plugin.get("status") == FAILED:
            reason = f"{plugin['file']} failed its parity gate on the CPU reference of the plugin"
        elif self.msda_tried:
            reason = f"--msda auto: the plugin engine {self.msda_tried[-1]['status']}"
        if reason is None:
            return key, {"form": "plugin", "choice": self.msda, "onnx": plugin["file"], "plugin": msda.PLUGIN_NAME,
                                     "plugin_version": self.msda_version, "fallback_onnx": self.artifacts[src_key]["file"]}
        return src_key, {"form": "gridsample", "choice": self.msda, "onnx": self.artifacts[src_key]["file"], "reason": reason,
                         "plugin_onnx": plugin["file"] if plugin else None, "tried": list(self.msda_tried)}

    def msda_fallback(self, stage: Path, images: list, labels, more: dict) -> dict:
        """--msda auto: a plugin engine that failed its gate gives way to the GridSample form, gated in turn."""
        row = next((r for r in more["rows"] if r["name"] == "tensorrt"), None)
        trt = self.artifacts.get("tensorrt") or {}
        if self.msda != "auto" or row is None or row["status"] != FAILED or (trt.get("msda") or {}).get("form") != "plugin":
            return more
        self.msda_tried.append({"form": "plugin", "onnx": trt["onnx"], "status": "failed its parity gate",
                                "pixel_agreement": row.get("pixel_agreement"), "note": row.get("note")})
        self.log(f"tensorrt: the plugin-form engine failed its parity gate ({100 * row['pixel_agreement']:.3f}%); "
                 f"building the GridSample form")
        self.trt_twin = None
        self.export_tensorrt(stage)
        again = self.parity(stage, images, labels, keys=["tensorrt"])
        return {**more, "rows": [r for r in more["rows"] if r["name"] != "tensorrt"] + again["rows"],
                "seconds": round(more["seconds"] + again["seconds"], 3)}

    def _cuda_index(self) -> int:
        return split_device(self.device or "cuda")[1] or 0

    # ---- parity --------------------------------------------------------------------------------
    def threshold(self, precision: str) -> float:
        return {"fp16": self.fp16_threshold, "int8": getattr(self, "int8_agreement", None)}.get(precision, self.fp32_threshold)

    def parity_candidates(self, stage: Path) -> list:
        """A runner per artifact the gate measures (ONNX ones through their scores-enabled twins)."""
        from segclip.runtime.onnx_runner import OnnxRunner

        from segclip.runtime.geodeep_runner import GeoDeepRunner

        candidates = [(GeoDeepRunner if key == "geodeep" else OnnxRunner)(path, providers="cpu", name=key, **self._onnx_options(key))
                      for key, path in self.twins.items()]
        trt = self.artifacts.get("tensorrt")
        if trt and trt.get("status") == PENDING:
            candidates.append(self._trt_runner(stage, twin=True))
        return candidates

    def _onnx_options(self, key: str) -> dict:
        """The plugin graph runs on the CPU through the reference of its TensorRT plugin op; an INT8 graph
        for TensorRT without ONNX Runtime's Q/DQ fusions (``int8.gate_optimization``: no CPU saturation)."""
        from segclip.export import int8 as q8
        from segclip.export.msda import PLUGIN_KEYS

        opts = {"reference_ops": True} if key in PLUGIN_KEYS.values() or key == MSDA_INT8_KEY else {}
        level = q8.gate_optimization((self.artifacts.get(key) or {}).get("int8") or {})
        return {**opts, "optimization": level} if level else opts

    def _trt_runner(self, stage: Path, twin: bool, name: str = "tensorrt"):
        """The public engine, or (``twin``) the engine whose outputs include the scores when there is one."""
        from segclip.runtime.tensorrt_runner import TensorRTRunner

        trt = self.artifacts["tensorrt"]
        path, sig = stage / trt["file"], self.signature
        if twin and self.trt_twin is not None:
            path, sig = self.trt_twin, self.twin_signature
        return TensorRTRunner(path, signature=sig, manifest_entry=trt, name=name, precision=trt["precision"],
                              device=self._cuda_index())

    def reference(self, images: list, scene_ids) -> tuple:
        """(PyTorch runner, its ``run_all`` outputs, window) on the gate images: run once per export, then
        reused by the INT8 fallback rounds and the gate of the artifacts built after it."""
        if self._reference is None:
            from segclip.inference.compare import run_all
            from segclip.runtime.torch_runner import TorchRunner

            # the loaded checkpoint: no second torch.load
            ref = TorchRunner(self.ckpt, scores=True, name="torch-fp32", device=self.device or "cpu")
            window = None if self.dynamic_size else tuple(self.size)  # every artifact's fixed size
            self._reference = (ref, run_all(ref, images, min(4, self.batch[2]), scene_ids, window=window), window)
        return self._reference

    def parity(self, stage: Path, images: list, labels, keys=None) -> dict:
        """Gate the artifacts built so far (``keys``: only these); INT8 rows get the sensitivity fallback."""
        from segclip.inference.compare import compare, every_scene
        from segclip.runtime.onnx_runner import OnnxRunner

        candidates = [c for c in self.parity_candidates(stage) if keys is None or c.name in keys]
        thresholds = {c.name: self.threshold(self.artifacts[c.name]["precision"]) for c in candidates}
        bs = min(4, self.batch[2])
        # the geodeep artifact has one scene baked in: gated under that scene only
        geo = [c for c in candidates if c.name == "geodeep" and self.signature.scenes]
        candidates = [c for c in candidates if c not in geo]
        n = len(images)
        images, labels, scene_ids = every_scene(images, labels, self.signature.scenes)
        ref, ref_out, window = self.reference(images, scene_ids)
        result = compare(ref, candidates, images, labels, thresholds, batch_size=bs, scene_ids=scene_ids,
                         window=window, reference_out=ref_out)
        for row in result["rows"]:
            bound_fp16_scores(row)
        if geo:  # every_scene lays the images out scene by scene: PyTorch's outputs for that scene are a slice
            part = slice(self.geodeep_scene[0] * n, (self.geodeep_scene[0] + 1) * n)
            ref_geo = {"mask": ref_out["mask"][part], "seconds": ref_out["seconds"],
                       "scores": None if ref_out["scores"] is None else ref_out["scores"][part]}
            one = compare(ref, geo, images[part], None if labels is None else labels[part], thresholds, batch_size=bs,
                          scene_ids=scene_ids[part], window=window, reference_out=ref_geo)
            result["rows"] += one["rows"]
        for r in result["rows"]:
            if r["name"] == "geodeep":  # probabilities, not PyTorch's raw scores: see its probabilities_vs_scores
                r["max_abs_diff"] = r["mean_abs_diff"] = None
        if self.int8:  # INT8 rows also need |dmIoU| within tolerance; failing ones get the sensitivity fallback
            from segclip.export import int8 as q8

            for row in result["rows"]:
                if row["precision"] == "int8":
                    q8.gate_int8(row, self.int8_miou_points)
            if self.int8_fallback > 0:
                self.int8_fallback_rounds(stage, result, (images, labels, scene_ids))
        # the public artifacts must agree with the scores-enabled twins the gate measured (judge_public)
        if not self.scores:
            pairs = {key: (OnnxRunner(stage / self.artifacts[key]["file"], providers="cpu", name=key, **self._onnx_options(key)),
                           OnnxRunner(self.twins[key], providers="cpu", name=key + "+scores", **self._onnx_options(key)))
                     for key in self.twins if (keys is None or key in keys) and key != "geodeep"}
            if self.trt_twin is not None and self.artifacts["tensorrt"]["status"] == PENDING and (keys is None or "tensorrt" in keys):
                pairs["tensorrt"] = (self._trt_runner(stage, twin=False), self._trt_runner(stage, twin=True, name="tensorrt+scores"))
            k = min(len(images), 2)
            ids = None if scene_ids is None else scene_ids[:k]
            # call for call (one window each): a graph without scores blends windows by another rule
            calls = images[:k] if self.dynamic_size else windows(images[:k], *self.size)
            for key, (pub, twin) in pairs.items():
                for r in result["rows"]:
                    if r["name"] == key:
                        judge_public(r, public_twin_agreement(pub, twin, calls, bs, ids))
        return result

    # ---- the manifest --------------------------------------------------------------------------
    def build_manifest(self, images: list, labels, src: str, result: dict, table: str, failed: list, t_start: float) -> dict:
        from segclip import __version__

        sig = self.signature
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "segclip_version": __version__,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": FAILED if failed else OK,
            "source": {"checkpoint": str(self.ckpt_path), "sha256": self.source_sha256,
                       "dataset": self.ckpt.get("dataset"), "model_config": self.ckpt.get("model_config")},
            "signature": sig.to_dict(),
            "input": {"name": sig.inputs[0].name, "dtype": "uint8", "layout": "NHWC",
                      "height": sig.height, "width": sig.width, "dynamic_size": self.dynamic_size,
                      "batch": dict(zip(("min", "opt", "max"), self.batch)),
                      "normalization": {"mean": list(sig.pixel_mean), "std": list(sig.pixel_std),
                                        "scale": "0..255", "inside_graph": True}},
            "classes": list(sig.classes),
            "palette": [list(p) for p in sig.palette],
            "scenes": scene_manifest(self.ckpt),
            "opset": self.opset,
            "parity": {"images": len(images), "source": src, "labels": labels is not None,
                       "reference": result["reference"], "seconds": result["seconds"], "table": table},
            "artifacts": self.artifacts,
            "export_seconds": round(time.perf_counter() - t_start, 2),
        }
        if self.trt:
            manifest["trtexec"] = TRTEXEC_NAME
        return manifest

    # ---- driver --------------------------------------------------------------------------------
    def run(self) -> dict:
        from segclip.inference.compare import failed_rows, format_table

        t_start = time.perf_counter()
        self.prepare()
        with atomic_dir(self.out, replace=self.force) as stage:
            # formats, in dependency order: every other format derives from the FP32 ONNX twin
            self.export_onnx(stage)
            h, w = self.size
            if self.int8_data is not None:  # held out from calibration: the gate never sees a calibration image
                images, labels, src = self.int8_data.gate, self.int8_data.labels, self.int8_data.source + " (held out)"
            else:
                images, labels, src = load_parity_images(self.parity_data, self.parity_images, h, w, self.signature.classes, log=self.log)
            if self.fp16:  # the FP16 range pass, too, on calibration images when there are any
                self.export_fp16(stage, np.stack(windows(images, h, w)) if self.int8_data is None else self.int8_data.calib)
            if self.int8:
                from segclip.export.int8 import FLAVOURS

                for key in FLAVOURS:
                    self.export_int8(stage, key)
            if self.geodeep:
                self.export_geodeep(stage, images)
            n_built = sum(a["status"] == PENDING for a in self.artifacts.values())
            self.log(f"parity: {len(images)} image(s) ({src}) through torch and {n_built} artifact(s)")
            result = self.parity(stage, images, labels)
            # what derives from the INT8 graph is built after its gate, from the graph the fallback kept
            first = set(self.artifacts)
            if self.int8 and self.fp16 and self.trt:
                self.export_int8_fp16(stage, self.int8_data.calib)
            if self.int8:
                self.export_int8_msda(stage, result["rows"])
            if self.trt:
                self.export_tensorrt(stage)
            late = [k for k, a in self.artifacts.items() if k not in first and a["status"] == PENDING]
            if late:
                self.log(f"parity: {', '.join(late)} (built from the gated graphs)")
                more = self.msda_fallback(stage, images, labels, self.parity(stage, images, labels, keys=late))
                result["rows"] += more["rows"]
                result["seconds"] = round(result["seconds"] + more["seconds"], 3)
            table = format_table(result)
            for row in result["rows"]:
                a = self.artifacts[row["name"]]
                a["parity"] = {k: v for k, v in row.items() if k not in ("name", "backend", "precision")}
                a["status"] = row["status"]
            failed = failed_rows(result)
            manifest = self.build_manifest(images, labels, src, result, table, failed, t_start)
            write_manifest(stage, manifest)
            # time the gated artifacts (a missed INT8 gate does not stop it; a failed FP32 graph does: such an export
            # is refused by default until re-exported): the fastest becomes predict/eval/triton-repo's default
            if self.tune and self.artifacts["onnx"]["status"] == OK:
                from segclip.contract import choose_artifact
                from segclip.inference.speed import measure, record

                record(manifest, measure(stage, manifest=manifest, size=self.size[0], log=self.log))
                write_manifest(stage, manifest)
                self.log(f"predict/eval/triton-repo here: {choose_artifact(manifest, stage).line()}")
            shutil.rmtree(stage / ".parity", ignore_errors=True)
        self.log(table)
        self.log(f"export: {self.out} ({', '.join(k for k, a in self.artifacts.items() if a.get('file'))}) "
                 f"in {manifest['export_seconds']} s")
        if failed:
            names = ", ".join(r.get("note") or f"{r['name']} {100 * r['pixel_agreement']:.3f}% < {100 * r['threshold']:.3f}%"
                              for r in failed)
            raise GateFailed(f"parity gate failed ({names}); artifacts kept in {self.out} and marked failed in {MANIFEST_NAME}"
                             + self._undertrained_hint(failed, result))
        if self.trt and self.trt_reason:
            if self.require_engine:
                raise SegclipError(f"--trt --require-engine: {self.trt_reason}; the ONNX export in {self.out} is done and "
                                   f"{self.out / TRTEXEC_NAME} builds the engine on the target (sh {self.out / TRTEXEC_NAME})")
            # export here, build on the target (e.g. a Jetson): the documented workflow, not an error
            self.log(f"note: no TensorRT engine built here ({self.trt_reason}); {self.out / TRTEXEC_NAME} builds it on the "
                     f"target, and {MANIFEST_NAME} marks it '{NOT_BUILT}' until then")
        return manifest


# An FP16 engine is held to its scores too, not only to the argmax: mean |score - PyTorch's| at most this
# (scores are class probabilities in 0..1; ONNX Runtime's FP16 graph of a 99.87%-agreement export: 2.3e-3).
FP16_SCORE_MEAN_BOUND = 0.01


def bound_fp16_scores(row: dict, bound: float = FP16_SCORE_MEAN_BOUND) -> dict:
    """Fail an FP16 TensorRT row whose scores drift from PyTorch's by more than ``bound`` on average."""
    if row.get("backend") != "tensorrt" or row.get("precision") != "fp16":
        return row
    row["score_bound"] = bound
    d = row.get("mean_abs_diff")
    if d is not None and d > bound and row["status"] != FAILED:
        row["status"] = FAILED
        row["note"] = f"{row['name']}: FP16 scores differ from PyTorch's by {d:.2e} on average > {bound:g}"
    return row


def public_twin_agreement(public, twin, calls, batch_size: int, scene_ids=None) -> float:
    """Pixel agreement of the public artifact's masks with its scores-enabled twin's, call for call.

    Never bit for bit: two TensorRT builds of one network are typically not bit-identical (TensorRT
    developer guide, "Algorithm Selection and Reproducible Builds": the builder times and picks
    kernels per build), and the twin's extra output changes layer fusion."""
    from segclip.inference.compare import agreement, run_all

    a = run_all(public, calls, batch_size, scene_ids)["mask"]
    b = run_all(twin, calls, batch_size, scene_ids, scores=False)["mask"]
    return agreement(a, b)


def judge_public(row: dict, agree: float) -> dict:
    """The gate of the artifact the user gets: its masks must agree with the twin the gate measured
    at the row's own threshold (the twin itself already passed it against PyTorch)."""
    row["public_twin_agreement"] = round(agree, 6)
    thr = row.get("threshold")
    if thr is not None and agree < thr and row["status"] != FAILED:
        row["status"] = FAILED
        row["note"] = (f"{row['name']}: public artifact agrees {100 * agree:.3f}% with its scores-enabled twin "
                       f"< {100 * thr:.3f}%")
    return row


def export(source, out=None, *, fp16: bool = False, trt: bool = False, batch=(1, 1, 8),
           size=None, dynamic_size: bool = False, scores: bool = False, opset: int = 17, data=None,
           parity_images: int = 8, force: bool = False, fp32_threshold: float = 0.999, fp16_threshold: float = 0.995,
           workspace_mb: int = 4096, device: Optional[str] = None, int8: bool = False, calib_images: Optional[int] = None,
           calib_method: str = "minmax", int8_threshold=None, int8_fallback: int = FALLBACK_BUDGET, log=print,
           tune: bool = True, msda: str = "auto", geodeep: bool = False, scene=None,
           require_engine: bool = False) -> dict:
    """Export a checkpoint / run directory to ``out``; returns the manifest (also written to ``OUT/manifest.json``).

    ``model.onnx`` (FP32) is always written: the FP16 ONNX, the INT8 Q/DQ ONNX (``model_int8.onnx`` for
    TensorRT, ``model_int8_cpu.onnx`` for x86 CPUs; calibrated on ``calib_images`` images of ``data``,
    gated on held-out ones) and the TensorRT engine derive from it.
    ``device``: "cpu" | "cuda" | "cuda:N" for the PyTorch reference of the parity gate (default cpu)
    and the GPU the TensorRT engine is built and checked on.
    Raises ``GateFailed`` (exit 1) when an artifact fails its parity gate (artifacts kept, marked
    failed) and ``SegclipError`` (exit 2) for bad arguments or an existing export without ``force``.
    ``trt=True`` where no engine can be built (no GPU or no ``tensorrt``) writes the ONNX files and
    ``trtexec.sh``, marks the engine not built in the manifest and logs one ``note:`` line: the engine
    is built on the target; ``require_engine=True`` makes that a ``SegclipError`` instead.
    ``tune`` (default on): once every gate passed, each gated artifact is timed on each runtime here
    and the record goes into the manifest (``segclip.inference.speed``); predict, eval and triton-repo
    then run the fastest by default (``segclip.contract.choose_artifact``).
    ``msda`` ("auto" | "plugin" | "gridsample", with ``trt``): the TensorRT graph's deformable attention,
    TensorRT's own ``MultiscaleDeformableAttnPlugin_TRT`` (``model_plugin.onnx``) or GridSample ops;
    "auto" builds the plugin engine first and falls back to GridSample when it fails (``segclip.export.msda``).
    ``geodeep=True`` adds ``model_geodeep.onnx``, the model as GeoDeep and QGIS Deepness load it
    (``segclip.export.geodeep``), with ``scene`` (a name or id; default generic) baked in.
    """
    return Exporter(source=source, out_dir=out, fp16=fp16, trt=trt, batch=batch, size=size,
                    dynamic_size=dynamic_size, scores=scores, opset=opset, data=data, parity_images=parity_images,
                    force=force, fp32_threshold=fp32_threshold, fp16_threshold=fp16_threshold,
                    workspace_mb=workspace_mb, device=device, int8=int8, calib_images=calib_images, calib_method=calib_method,
                    int8_threshold=int8_threshold, int8_fallback=int8_fallback, log=log, tune=tune, msda=msda,
                    geodeep=geodeep, scene=scene, require_engine=require_engine).run()
