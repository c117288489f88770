"""The export-directory contract: the one owner of what ``segclip export`` writes and everything
else reads (runners, Triton repositories, benchmarks, the CLI).

It sits below ``runtime`` and ``export`` (it imports only ``errors``, ``atomic`` and ``signature``),
so a runner can open an export without importing the exporter.

An export directory holds ``manifest.json`` (schema ``format_version`` 1)::

    {
      "format": "segclip-export", "format_version": 1,
      "segclip_version": "0.1.0", "created": "2026-11-21T05:40:00Z",
      "status": "ok" | "failed",                 # failed: some artifact failed its parity gate
      "source": {"checkpoint": path, "sha256": ..., "dataset": ..., "model_config": {...}},
      "signature": Signature.to_dict(),          # the same for every artifact of the directory
      "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "height": H|null, "width": W|null,
                "dynamic_size": bool, "batch": {"min": 1, "opt": 1, "max": 8},
                "normalization": {"mean": [...], "std": [...], "scale": "0..255", "inside_graph": true}},
      "classes": [...], "palette": [[r, g, b], ...],
      "scenes": null | {"input": "scene_id", "dtype": "int32", "default": 0, "keys": ["domain"],
                        "table": [{"id": 0, "name": "generic", "prompt": "a remote sensing image"}, ...]},
      "opset": 17,
      "parity": {"images": N, "source": "sample:..."|"data:..."|"synthetic", "labels": bool,
                 "reference": {"name": "torch-fp32", "miou": ...}, "table": "<the printed table>"},
      "artifacts": {
        "onnx":      {"file": "model.onnx", "format": "onnx", "precision": "fp32", "status": "ok",
                      "sha256": <file bytes>, "graph_sha256": <sha256 of the serialised GraphProto>,
                      "size_bytes": ..., "opset": 17, "ops": {"Conv": 26, ...}, "export_seconds": ...,
                      "parity": {"pixel_agreement": ..., "max_abs_diff": ..., "mean_abs_diff": ...,
                                 "miou": ..., "miou_delta": ..., "threshold": 0.999, "status": "ok"}},
        "onnx_fp16": {..., "precision": "fp16", "fp16": {"fp32_nodes": [{"name", "op_type", "reason"}], ...}},
        "geodeep":   {"file": "model_geodeep.onnx", "precision": "fp32", "input": {float32 NCHW 0..1},
                      "output": {probabilities NCHW}, "scene": {"id", "name"}, "gis_metadata": {...}},
        "tensorrt":  {"file": "model.plan", "precision": ..., "onnx": "model_fp16.onnx", "onnx_sha256": ...,
                      "tensorrt_version": ..., "gpu": ..., "compute_capability": "8.7",
                      "profile": {"min": [...], "opt": [...], "max": [...]}, "timing_cache": "timing.cache",
                      "strongly_typed": true,
                      "msda": {"form": "plugin" | "gridsample", "onnx": ..., "plugin_version": ..., "reason": ...}}
                   | {"status": "not_built", "reason": ..., "trtexec": "trtexec.sh", "msda": {...}},
        "onnx_int8_msda": {..., "file": "model_int8_msda.onnx", "openvino_extension": {"file": "libsegclip_ov_msda.so",
                           "openvino": ..., "source_sha256": ..., "sha256": ...}}  # --int8 (segclip.runtime.ov_extension)
        "onnx_plugin": {..., "file": "model_plugin.onnx"}  # --trt: TensorRT-only graph (segclip.export.msda);
        "onnx_plugin_fp16": {..., "file": "model_plugin_fp16.onnx"}  # not in FORMATS: no runtime loads it
      },
      "trtexec": "trtexec.sh",                   # when --trt was asked for
      "speed": [{"machine": {...}, "rows": [{"artifact", "runtime", "ms"}, ...]}, ...]  # see choose_artifact
    }

Hashes: ``sha256`` is the sha256 of the artifact file as written (check it with ``sha256sum``).
``graph_sha256`` is the sha256 of ``model.graph.SerializeToString(deterministic=True)``: nodes and
weights without the metadata, so it is also stored *inside* the ONNX metadata
(``segclip.graph_sha256``) and identifies the computation independently of the metadata.
mIoU values are fractions in 0..1 (tables show them as percent).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from segclip.atomic import atomic_write_text
from segclip.errors import SegclipError, one_line
from segclip.signature import DEFAULT_SCENE, SCENE_DTYPE, SCENE_NAME, Signature, default_palette

MANIFEST_NAME = "manifest.json"
FORMAT = "segclip-export"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ArtifactFormat:
    """One row of the format table: the manifest key, the file the exporter writes, its precision
    (None: the build's, TensorRT), the runtimes ``segclip predict``/``eval`` run it on (empty: it only
    feeds TensorRT builds), where it computes, and which runner family loads it."""
    key: str
    file: str
    precision: Optional[str]
    runtimes: tuple
    devices: str  # "cpu+gpu" | "cpu" | "gpu"
    runner: str   # "onnx" (segclip's uint8 NHWC contract) | "geodeep" (float NCHW 0..1) | "tensorrt"


# The one format table: the exporter names its files from it, the loader picks the runner from it, the
# speed measurement and the benchmark's backends take their runtimes and artifact keys from it.
# INT8: the symmetric Q/DQ graph (TensorRT explicit quantization; OpenVINO), the u8/s8 one ONNX Runtime runs
# fastest on x86 (OpenVINO cannot compile it), and the symmetric one with FP16 elsewhere (INT8 + FP16
# TensorRT engines only).  onnx_int8_msda: the symmetric INT8 graph with each deformable-attention core as one
# plugin node, run by segclip's OpenVINO kernel (segclip.runtime.ov_extension).  geodeep: the GIS tools'
# contract (segclip.export.geodeep).
FORMATS = {f.key: f for f in (
    ArtifactFormat("onnx", "model.onnx", "fp32", ("onnxruntime", "openvino"), "cpu+gpu", "onnx"),
    ArtifactFormat("onnx_fp16", "model_fp16.onnx", "fp16", ("onnxruntime", "openvino"), "cpu+gpu", "onnx"),
    ArtifactFormat("onnx_int8", "model_int8.onnx", "int8", ("onnxruntime", "openvino"), "cpu+gpu", "onnx"),
    ArtifactFormat("onnx_int8_cpu", "model_int8_cpu.onnx", "int8", ("onnxruntime",), "cpu", "onnx"),
    ArtifactFormat("onnx_int8_msda", "model_int8_msda.onnx", "int8", ("openvino",), "cpu", "onnx"),
    ArtifactFormat("onnx_int8_fp16", "model_int8_fp16.onnx", "int8", (), "gpu", "onnx"),
    ArtifactFormat("tensorrt", "model.plan", None, ("tensorrt",), "gpu", "tensorrt"),
    ArtifactFormat("geodeep", "model_geodeep.onnx", "fp32", ("onnxruntime",), "cpu+gpu", "geodeep"),
)}
TRTEXEC_NAME = "trtexec.sh"
# what ``segclip export --int8`` writes for CPUs (the TensorRT INT8 + FP16 graph needs --fp16 --trt too)
INT8_KEYS = tuple(k for k, f in FORMATS.items() if f.precision == "int8" and "cpu" in f.devices)

# artifact "status" values
OK, FAILED, NOT_BUILT, PENDING = "ok", "failed", "not_built", "pending"

# ONNX metadata_props written by the exporter and read by runners (``segclip.<key>``)
META_PREFIX = "segclip."
META_SIGNATURE = META_PREFIX + "signature"
META_PRECISION = META_PREFIX + "precision"
META_GRAPH_SHA256 = META_PREFIX + "graph_sha256"
META_SOURCE_SHA256 = META_PREFIX + "source_sha256"
# an artifact in another tensor contract than the signature's uint8 NHWC one ("geodeep": float NCHW 0..1
# in, class probabilities out) and its fixed scene: a runner opening the bare file reads these
META_ARTIFACT = META_PREFIX + "artifact"
META_SCENE = META_PREFIX + "scene"

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
URL_SCHEMES = ("grpc://", "http://", "https://")


# ---- files and hashes ------------------------------------------------------------------------------
def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_HASHED: dict = {}  # (path, size, mtime_ns, inode) -> sha256: a file is hashed once per process, not per load


def artifact_changed(entry: dict, path) -> bool:
    """Whether ``path`` is not the file the manifest ``entry`` describes: its recorded sha256
    differs (an entry without one -- older exports -- is taken as it is).  Streamed, and cached by
    the file's size, mtime and inode, so loading a multi-GB artifact again costs a stat."""
    recorded = (entry or {}).get("sha256")
    if not recorded:
        return False
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key] != recorded


def check_artifact_unchanged(entry: dict, path) -> None:
    """A one-line error for an export artifact replaced or edited after export (another model's
    same-shape ``model.onnx`` would otherwise run as if it were the exported one)."""
    if artifact_changed(entry, path):
        raise SegclipError(f"{path}: not the file this export wrote (its sha256 differs from the one in "
                           f"{manifest_path(path)}: replaced or changed after export); re-export with segclip export")


def is_export_dir(path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST_NAME).is_file()


# ---- the manifest ----------------------------------------------------------------------------------
def write_manifest(directory, manifest: dict) -> Path:
    return atomic_write_text(Path(directory) / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def manifest_path(path) -> Path:
    """The manifest of an export directory, or the one beside an artifact file."""
    d = Path(path)
    return d if d.name == MANIFEST_NAME else (d / MANIFEST_NAME if d.is_dir() else d.parent / MANIFEST_NAME)


def read_manifest(directory) -> dict:
    """The validated manifest of an export directory (or of the directory holding a given artifact file)."""
    d = Path(directory)
    path = manifest_path(d)
    if not path.is_file():
        raise SegclipError(f"{d}: no {MANIFEST_NAME}; is this a segclip export directory (made by segclip export)?")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SegclipError(f"{path}: unreadable export manifest ({type(e).__name__}: {one_line(e, 100)}); "
                           f"re-export with segclip export") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise SegclipError(f"{path}: not a segclip export manifest (no '{FORMAT}' marker)")
    try:
        version = int(m.get("format_version", 0))
    except (TypeError, ValueError):
        raise SegclipError(f"{path}: format_version {m.get('format_version')!r} is not a number; re-export with segclip export") from None
    if version > FORMAT_VERSION:
        raise SegclipError(f"{path}: export manifest v{version} is newer than this segclip reads (v{FORMAT_VERSION}); upgrade segclip")
    if not isinstance(m.get("artifacts", {}), dict):
        raise SegclipError(f"{path}: 'artifacts' is not a mapping; re-export with segclip export")
    return m


def manifest_signature(manifest: dict) -> Signature:
    try:
        return Signature.from_dict(manifest["signature"])
    except (KeyError, TypeError, ValueError) as e:
        raise SegclipError(f"export manifest: unreadable signature ({type(e).__name__}: {e}); re-export with segclip export") from None


def artifact_for_file(manifest: dict, path) -> Optional[tuple]:
    """(key, entry) of the manifest artifact whose file is ``path``'s name, or None."""
    name = Path(path).name
    for key, a in (manifest.get("artifacts") or {}).items():
        if isinstance(a, dict) and name in (a.get("file"), a.get("engine")):
            return key, a
    return None


def batch_profile(manifest: dict) -> dict:
    """The export's batch profile ``{"min", "opt", "max"}`` (``input.batch``)."""
    return dict((manifest.get("input") or {}).get("batch") or {})


# ---- the checkpoint side ---------------------------------------------------------------------------
def signature_from_checkpoint(ckpt: dict, *, height=None, width=None, scores=True, max_batch=8) -> Signature:
    """The signature an export of this (loaded) checkpoint has: its classes and palette."""
    classes = list(ckpt["classes"])
    palette = ckpt.get("palette") or default_palette(len(classes))
    table = ckpt.get("scenes") or {}  # metadata prompts: the scene table's names and keys
    return Signature(classes=classes, palette=palette, height=height, width=width, scores=scores, max_batch=max_batch,
                     scenes=table.get("names") or (), scene_keys=table.get("keys") or (),
                     value_range=(ckpt.get("train_config") or {}).get("value_range") or (),
                     gsd=(ckpt.get("train_config") or {}).get("gsd"))


def scene_manifest(ckpt: dict) -> Optional[dict]:
    """The manifest's ``scenes`` entry of a checkpoint trained with metadata prompts (None without):
    the ``scene_id`` input, its default and the table of ids, names and prompts a person reads."""
    sc = ckpt.get("scenes")
    if not sc:
        return None
    table = [{"id": i, "name": n, "prompt": p} for i, (n, p) in enumerate(zip(sc["names"], sc["prompts"]))]
    return {"input": SCENE_NAME, "dtype": SCENE_DTYPE, "default": DEFAULT_SCENE, "keys": list(sc["keys"]), "table": table}


# ---- what a path is ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Source:
    """What a user pointed segclip at. ``kind``: "url" | "export" | "run" | "checkpoint" | "onnx" | "engine"."""

    kind: str
    path: Optional[Path] = None  # None for a URL
    url: Optional[str] = None

    def __str__(self) -> str:
        return self.url or str(self.path)


def resolve_source(path_or_url) -> Source:
    """A run directory, checkpoint, export directory, model file or Triton URL -> ``Source``;
    a one-line ``SegclipError`` for anything else."""
    s = str(path_or_url)
    if s.startswith(URL_SCHEMES):
        return Source("url", url=s)
    p = Path(s)
    if not p.exists():
        raise SegclipError(f"{p}: no such file or directory; give a checkpoint, run directory, .onnx, .plan, "
                           f"export directory or grpc://host:port/model URL")
    if p.is_dir():
        return Source("export" if is_export_dir(p) else "run", p)
    suffix = p.suffix.lower()
    for kind, suffixes in (("onnx", ONNX_SUFFIXES), ("engine", ENGINE_SUFFIXES), ("checkpoint", CHECKPOINT_SUFFIXES)):
        if suffix in suffixes:
            return Source(kind, p)
    raise SegclipError(f"{p}: unknown model file type {suffix!r}; give a checkpoint (.pt), .onnx, .plan/.engine or an export directory")


# ---- can an artifact be used? ------------------------------------------------------------------------
def tensorrt_unavailable_reason() -> Optional[str]:
    """None when TensorRT engines can be built and run here, else why not (one line)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return "no NVIDIA GPU is visible here (torch.cuda.is_available() is False)"
    except Exception as e:  # pragma: no cover
        return f"torch cannot query CUDA ({type(e).__name__})"
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed (pip install 'segclip[gpu]' or use the JetPack one)"
    return None


_FLAGS = {"onnx_fp16": " --fp16", "tensorrt": " --trt", "onnx_int8": " --int8", "onnx_int8_cpu": " --int8", "onnx_int8_msda": " --int8",
          "onnx_int8_fp16": " --int8 --fp16 --trt", "geodeep": " --geodeep"}


def artifact_file(art: dict, directory=None) -> Optional[str]:
    """The file name of an artifact entry: its ``file``, or for an engine the export could not build,
    the ``engine`` its trtexec.sh writes, once that file exists in ``directory``."""
    if art.get("file"):
        return art["file"]
    engine = art.get("engine")
    if engine and art.get("status") == NOT_BUILT and directory is not None and (Path(directory) / engine).is_file():
        return engine
    return None


def artifact_problem(manifest: dict, key: str, directory=None, *, allow_failed: bool = False) -> Optional[str]:
    """None when artifact ``key`` of this export can be used, else why not (one line with what to do).

    The one status check for runners, Triton repositories and benchmarks: the entry must exist,
    have been built (``not_built`` engines carry their reason), have its file in ``directory`` (when
    given) and have passed its parity gate (a ``failed`` one only with ``allow_failed``)."""
    arts = manifest.get("artifacts") or {}
    art = arts.get(key)
    where = f"{directory}: " if directory is not None else ""
    if not isinstance(art, dict):
        have = ", ".join(sorted(k for k, a in arts.items() if isinstance(a, dict) and a.get("file"))) or "none"
        return f"{where}no {key} artifact in this export (it has: {have}); re-export with segclip export{_FLAGS.get(key, '')}"
    status = str(art.get("status", OK))
    if not art.get("file"):
        if artifact_file(art, directory):
            return None  # built on the target by trtexec.sh from the gated ONNX (segclip benchmark measures its parity)
        hint = (f"run its {TRTEXEC_NAME} on the target or export with --trt on a GPU machine" if key == "tensorrt"
                else "re-export with segclip export")
        return f"{where}{key} {status}: {art.get('reason') or 'no file was written'}; {hint}"
    if directory is not None and not (Path(directory) / art["file"]).is_file():
        return f"{Path(directory) / art['file']} is missing (listed in {MANIFEST_NAME}); re-export with segclip export"
    if status == FAILED and not allow_failed:
        return (f"{where}the {key} artifact failed its parity gate at export (see {MANIFEST_NAME}); "
                f"re-export, or pass --allow-failed (Python: allow_failed=True) to use it anyway")
    if status not in (OK, FAILED):
        return f"{where}{key} {status}: {art.get('reason') or 'the export did not finish'}; re-export with segclip export"
    return None


def usable_artifacts(manifest: dict, directory, *, allow_failed: bool = True) -> list:
    """The artifact keys of ``FORMATS`` that ``artifact_problem`` accepts, in the fallback order
    ``FALLBACK`` (a TensorRT engine first only where TensorRT runs here)."""
    ok = [k for k in FORMATS if artifact_problem(manifest, k, directory, allow_failed=allow_failed) is None]
    # probe TensorRT only when the export has an engine: the probe imports torch (~0.7 GB of RSS)
    trt_first = "tensorrt" in ok and tensorrt_unavailable_reason() is None
    return [k for k in (["tensorrt"] if trt_first else []) + list(FALLBACK[1:]) if k in ok]


# ---- which artifact runs by default: the fastest gated one measured on this machine ----------------
# ``segclip export`` times every gated artifact on every runtime it finds (segclip.inference.speed) and
# ``segclip tune EXPORT`` again on another machine; the manifest keeps one record per machine:
#   "speed": [{"machine": {"cpu": model name, "isa": segclip.cpu.int8_isa(), "cpus": usable CPUs, "threads",
#                          "gpu", "versions": {...}},
#              "measured": time, "window": [h, w], "batch": n, "calls": n,
#              "rows": [{"artifact": key, "runtime": "onnxruntime"|"openvino"|"tensorrt", "device": "cpu"|"cuda:0",
#                        "ms": median ms per call} | {"artifact", "runtime", "error": why it could not run}]}]
# Which path is fastest depends on the CPU (VNNI or not), the model and the window (benchmarks/RESULTS.md),
# so a measurement counts only on the same CPU model and INT8 instruction set.
SPEED = "speed"
# the artifacts a runner of segclip predict/eval can run (onnx_int8_fp16 only feeds TensorRT builds;
# geodeep takes float NCHW input for the GIS tools), and the runtimes of ONNX files
RUNNABLE = tuple(k for k, f in FORMATS.items() if f.runtimes and f.runner != "geodeep")
ONNX_RUNTIMES = FORMATS["onnx"].runtimes
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}
# without a measurement from this machine: TensorRT where it runs, then the FP32 graph on ONNX Runtime
# (the reference's own arithmetic), then FP16; INT8 only when asked for or measured faster here
FALLBACK = ("tensorrt", "onnx", "onnx_fp16")


def this_machine() -> dict:
    """What a speed measurement is matched on (``cpu``, ``isa``) and what else it records."""
    from segclip.cpu import cpu_model, int8_isa

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return {"cpu": cpu_model(), "isa": int8_isa(), "cpus": cpus}


def same_machine(a: dict, b: dict) -> bool:
    """Whether two ``machine`` records name the same CPU model with the same INT8 instruction set."""
    return bool(a) and bool(b) and a.get("cpu") == b.get("cpu") and a.get("isa") == b.get("isa")


def speed_record(manifest: dict, machine: Optional[dict] = None) -> Optional[dict]:
    """The manifest's latest speed record measured on ``machine`` (default: this one), or None."""
    machine = machine or this_machine()
    recs = [r for r in manifest.get(SPEED) or [] if isinstance(r, dict) and same_machine(r.get("machine") or {}, machine)]
    return max(recs, key=lambda r: str(r.get("measured", ""))) if recs else None


def runtime_of(format: str, runtime: Optional[str] = None) -> str:
    """The runtime an artifact runs on: TensorRT engines on TensorRT, ONNX files on ``runtime``
    (default ONNX Runtime)."""
    return "tensorrt" if FORMATS[format].runner == "tensorrt" else (runtime or "onnxruntime")


def _runtime_missing(runtime: str) -> Optional[str]:
    import importlib.util

    if runtime == "tensorrt":
        return tensorrt_unavailable_reason()
    return None if importlib.util.find_spec(runtime) else f"{runtime} is not installed"


def _device_matches(row_device, device: Optional[str]) -> bool:
    if not device:
        return True
    want, have = str(device).split(":")[0].lower(), str(row_device or "cpu").split(":")[0].lower()
    return want == have


@dataclasses.dataclass(frozen=True)
class Choice:
    """Which artifact and runtime a runner of an export directory uses, and why: ``how`` is
    "explicit" (--format/--runtime), "measured" (the fastest gated pair measured on this machine)
    or "fallback" (``FALLBACK`` order; ``note`` says why no measurement decided)."""

    format: str
    runtime: str
    how: str
    speedup: Optional[float] = None  # measured speed over ONNX Runtime FP32 on this machine
    ms: Optional[float] = None
    note: str = ""

    def line(self) -> str:
        what = f"using {self.format} on {RUNTIME_NAMES.get(self.runtime, self.runtime)}"
        if self.how == "explicit":
            return f"{what}: as asked (--format/--runtime)"
        if self.how == "measured":
            ref = f" ({self.speedup:.1f}x ORT FP32)" if self.speedup else ""
            return f"{what}: fastest gated artifact measured here{ref}; --format/--runtime to choose"
        return f"{what}: {self.note}; --format/--runtime to choose"

    def to_dict(self) -> dict:
        return {"format": self.format, "runtime": self.runtime, "how": self.how, "speedup_vs_ort_fp32": self.speedup,
                "measured_ms": self.ms, "line": self.line()}


def _saturates_here(manifest: dict, row: dict) -> bool:
    """A speed row of an INT8 graph on this CPU whose gate did not measure this CPU's saturating 8-bit
    arithmetic (``segclip.cpu.int8_warning``, e.g. TensorRT's 8-bit graph on an AVX2-only CPU): never chosen
    by speed -- it is fast there by adding its products in 16-bit lanes that saturate."""
    from segclip.cpu import int8_warning

    record = ((manifest.get("artifacts") or {}).get(row.get("artifact")) or {}).get("int8")
    on_cpu = not str(row.get("device") or "cpu").startswith("cuda") and row.get("runtime") != "tensorrt"
    return isinstance(record, dict) and on_cpu and int8_warning(str(row.get("artifact")), record) is not None


def choose_artifact(manifest: dict, directory, *, format: Optional[str] = None, runtime: Optional[str] = None,
                    device: Optional[str] = None, machine: Optional[dict] = None, among=RUNNABLE) -> Choice:
    """The one decision of which artifact/runtime a runner of this export uses.

    An explicit ``format`` wins (its runtime: ``runtime``, default ONNX Runtime).  Otherwise the
    fastest pair of the speed record measured on ``machine`` (default: this one) among artifacts that
    passed their parity gate and are present (``artifact_problem``), on runtimes installed here, matching
    ``runtime`` and ``device`` when given; a failed or missing artifact is never chosen however fast it
    was.  ``among``: the artifact keys to choose from (Triton's ONNX models: the ONNX ones).  With no
    such measurement: the first usable artifact of ``FALLBACK``, and ``note`` says why."""
    if format is not None:
        if format not in FORMATS:
            raise SegclipError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
        f = FORMATS[format]
        # e.g. OpenVINO cannot compile the u8/s8 graph (an engine runs on TensorRT whatever the runtime option)
        if runtime is not None and f.runner != "tensorrt" and f.runtimes and runtime not in f.runtimes:
            there = [k for k in RUNNABLE if runtime in FORMATS[k].runtimes]
            raise SegclipError(f"--format {format} runs on {', '.join(RUNTIME_NAMES.get(r, r) for r in f.runtimes)} only, not "
                               f"{RUNTIME_NAMES.get(runtime, runtime)}; drop --runtime, or choose a format it runs "
                               f"({', '.join(there) or 'none'})")
        return Choice(format, runtime_of(format, runtime), "explicit")
    rec = speed_record(manifest, machine)
    gated = {k for k in among if artifact_problem(manifest, k, directory) is None}
    if artifact_problem(manifest, "onnx", directory) is not None:  # the graph every other derives from: refused below
        note = "the FP32 ONNX artifact did not pass its gate"
    elif rec is None:
        others = sorted({(r.get("machine") or {}).get("cpu", "?") for r in manifest.get(SPEED) or [] if isinstance(r, dict)})
        note = (f"measured only on {', '.join(others)}, not this CPU; `segclip tune {directory}` measures here" if others
                else f"no speed measured on this machine; `segclip tune {directory}` measures")
    else:
        rows = [r for r in rec.get("rows") or [] if isinstance(r, dict) and isinstance(r.get("ms"), (int, float))]
        ok = sorted((r for r in rows if r.get("artifact") in gated and (runtime is None or r.get("runtime") == runtime)
                     and _device_matches(r.get("device"), device) and not _saturates_here(manifest, r)), key=lambda r: r["ms"])
        ref = next((r["ms"] for r in rows if r.get("artifact") == "onnx" and r.get("runtime") == "onnxruntime"), None)
        for r in ok:
            if r.get("runtime") in RUNTIME_NAMES and _runtime_missing(r["runtime"]) is None:
                return Choice(r["artifact"], r["runtime"], "measured", round(ref / r["ms"], 2) if ref else None, r["ms"])
        note = "no gated artifact of this machine's speed measurement runs here"
    # a failed FP32 graph stays first, so the loader refuses it (without allow_failed) rather than run another
    usable = [k for k in usable_artifacts(manifest, directory) if k in among]
    if runtime not in (None, "tensorrt") or (device and not str(device).startswith("cuda")):
        usable = [k for k in usable if k != "tensorrt"]
    if not usable:
        listed = sorted((manifest.get("artifacts") or {})) or "none"
        raise SegclipError(f"{directory}: the export holds no usable artifact (manifest lists {listed})")
    return Choice(usable[0], runtime_of(usable[0], runtime), "fallback", note=note)


__all__ = [
    "MANIFEST_NAME", "FORMAT", "FORMAT_VERSION", "ArtifactFormat", "FORMATS", "OK", "FAILED", "NOT_BUILT", "PENDING",
    "META_PREFIX", "META_SIGNATURE", "META_PRECISION", "META_GRAPH_SHA256", "META_SOURCE_SHA256", "META_ARTIFACT", "META_SCENE",
    "sha256_file", "artifact_changed", "check_artifact_unchanged", "is_export_dir", "write_manifest", "manifest_path", "read_manifest", "manifest_signature",
    "artifact_for_file", "batch_profile", "signature_from_checkpoint", "scene_manifest", "Source", "resolve_source",
    "tensorrt_unavailable_reason", "artifact_file", "artifact_problem", "usable_artifacts",
    "SPEED", "RUNNABLE", "ONNX_RUNTIMES", "RUNTIME_NAMES", "FALLBACK", "this_machine", "same_machine", "speed_record",
    "runtime_of", "Choice", "choose_artifact",
]
