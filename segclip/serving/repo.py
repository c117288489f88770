"""Triton model repositories, generated from an export (its manifest + artifacts), never hand-copied.

    segclip triton-repo EXPORT_DIR --out REPO [--max-batch N] [--queue-delay-us US] [--instances N] [--kind cpu|gpu]

writes, per model, ``REPO/<model>/config.pbtxt``, ``labels.txt``, ``segclip_model.json`` and
``1/<artifact>``:

* ``segclip_onnx``   platform ``onnxruntime_onnx``, ``1/model.onnx``   (NVIDIA's container)
* ``segclip_trt``    platform ``tensorrt_plan``, ``1/model.plan``; only when the export built a
                     passing engine
* ``segclip_python`` backend ``python``, ``1/model.py`` + ``1/model.onnx``: ONNX Runtime inside
                     Triton's python backend, which the pip-installed server can run

Configs are built as ``ModelConfig`` protobufs (Triton's own schema, from tritonclient) and printed
as text, so they always parse; tensor names, dtypes and dims come from ``segclip.signature`` via the
export's manifest, and are checked against the ONNX file before anything is written.  Each model
folder is written beside its destination and renamed into place (other models in REPO are left
alone); an existing model is replaced only with ``force``.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from segclip.errors import SegclipError, one_line
from segclip.contract import (choose_artifact, artifact_file, artifact_problem, batch_profile, check_artifact_unchanged, manifest_signature,
                              read_manifest)
from segclip.runtime.triton import PRECISION_PARAM, SCENE_DEFAULT_PARAM, SIGNATURE_PARAM
from segclip.signature import DEFAULT_SCENE, MASK_NAME, SCENE_NAME, Signature, triton_config_type, triton_dims

MODEL_ONNX = "segclip_onnx"
MODEL_TRT = "segclip_trt"
MODEL_PYTHON = "segclip_python"
ALL_MODELS = (MODEL_ONNX, MODEL_TRT, MODEL_PYTHON)
MODEL_RECORD = "segclip_model.json"
LABELS = "labels.txt"
CONFIG = "config.pbtxt"
VERSION = "1"
PYTHON_BACKEND_SRC = Path(__file__).resolve().parent / "python_backend" / "model.py"

# numpy dtype name <-> ONNX TensorProto elem type
_ONNX_ELEM = {"uint8": 2, "int32": 6, "int64": 7, "float16": 10, "float32": 1}
_ELEM_NAME = {v: k for k, v in _ONNX_ELEM.items()}
_CONFIG_TO_NP = {triton_config_type(k): k for k in _ONNX_ELEM}



def _artifact(manifest: dict, export_dir: Path, key: str, *, required: bool) -> Optional[dict]:
    """The manifest entry of a built artifact that passed its parity gate (``contract.artifact_problem``)."""
    why = artifact_problem(manifest, key, export_dir)
    if why is None:
        return manifest["artifacts"][key]
    if required:
        raise SegclipError(f"{why}; a Triton model is generated only from a passing artifact")
    return None


def _profile_hw(shape) -> Optional[tuple]:
    """(h, w) of a TensorRT profile shape [N, H, W, 3] with positive sizes, else None."""
    if isinstance(shape, (list, tuple)) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape):
        return int(shape[1]), int(shape[2])
    return None


def warmup_hw(manifest: dict, sig: Signature) -> tuple:
    """The spatial size a warmup sample uses: the exported one, else the engine profile's opt, else 512."""
    if not sig.dynamic_size:
        return sig.height, sig.width
    prof = ((manifest.get("artifacts") or {}).get("tensorrt") or {}).get("profile") or {}
    for key in ("opt", "max", "min"):
        hw = _profile_hw(prof.get(key))
        if hw:
            return hw
    return 512, 512


# ---- ONNX I/O ---------------------------------------------------------------------------------------
def onnx_io(onnx_path) -> dict:
    """{"inputs": {name: (dtype, dims)}, "outputs": {...}}; dims ints, None for symbolic/unknown.

    Cached by file identity: building and pre-flighting a repository checks the same (hard-linked)
    ONNX file for several models, and parsing a full model with its weights takes a while."""
    st = os.stat(onnx_path)
    return _onnx_io(str(onnx_path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _onnx_io(onnx_path, *_identity) -> dict:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise SegclipError(f"{onnx_path}: not a readable ONNX model ({one_line(e, 200)}); re-export it with segclip export") from None
    inits = {i.name for i in model.graph.initializer}

    def spec(vi):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        return _ELEM_NAME.get(t.elem_type, f"onnx-elem-{t.elem_type}"), dims

    return {
        "inputs": {v.name: spec(v) for v in model.graph.input if v.name not in inits},
        "outputs": {v.name: spec(v) for v in model.graph.output},
    }


def check_config_against_onnx(cfg: mc.ModelConfig, onnx_path, where: str) -> None:
    """Names, dtypes and dims (without batch) of the config's tensors must match the ONNX graph."""
    io = onnx_io(onnx_path)
    batched = cfg.max_batch_size > 0
    for kind, tensors, onnx_tensors in (("input", cfg.input, io["inputs"]), ("output", cfg.output, io["outputs"])):
        names = [t.name for t in tensors]
        if kind == "input" and sorted(names) != sorted(onnx_tensors):
            raise SegclipError(f"{where}: config inputs {names} do not match the ONNX inputs {sorted(onnx_tensors)} of {onnx_path}")
        for t in tensors:
            if t.name not in onnx_tensors:
                raise SegclipError(f"{where}: config {kind} '{t.name}' is not an ONNX {kind} of {onnx_path} (it has {sorted(onnx_tensors)})")
            dtype, odims = onnx_tensors[t.name]
            cdtype = _CONFIG_TO_NP.get(mc.DataType.Name(t.data_type))
            if cdtype != dtype:
                raise SegclipError(
                    f"{where}: {kind} '{t.name}' is {mc.DataType.Name(t.data_type)} in the config but {dtype} in {onnx_path}"
                )
            if batched:
                if not odims:
                    raise SegclipError(f"{where}: {kind} '{t.name}' has no batch axis in {onnx_path} but max_batch_size is {cfg.max_batch_size}")
                b, odims = odims[0], odims[1:]
                if b is not None and b < cfg.max_batch_size:
                    raise SegclipError(
                        f"{where}: {kind} '{t.name}' has a fixed batch of {b} in {onnx_path} but max_batch_size is {cfg.max_batch_size}"
                    )
            cdims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)  # what the model sees
            ok = len(cdims) == len(odims) and all(o is None or o == c for c, o in zip(cdims, odims))
            if not ok:
                shown = ["?" if o is None else o for o in odims]
                raise SegclipError(
                    f"{where}: {kind} '{t.name}' has dims {cdims} in the config but {shown} in {onnx_path} (batch axis excluded)"
                )


# ---- configs ----------------------------------------------------------------------------------------
def config_text(cfg: mc.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def parse_config(path) -> mc.ModelConfig:
    """Parse a config.pbtxt with Triton's schema; one-line error on failure."""
    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except FileNotFoundError:
        raise SegclipError(f"{path} is missing") from None
    except text_format.ParseError as e:
        raise SegclipError(f"{path}: not a valid Triton model config: {' '.join(str(e).split())}") from None


def config_signature(cfg: mc.ModelConfig) -> Optional[Signature]:
    p = cfg.parameters.get(SIGNATURE_PARAM)
    if p is None or not p.string_value:
        return None
    return Signature.from_json(p.string_value)


def model_config(name: str, sig: Signature, *, max_batch: int, queue_delay_us: int = 100, instances: int = 1,
                 kind: str = "cpu", warmup: tuple = (512, 512), intra_op_threads: int = 0,
                 precision: str = "fp32") -> mc.ModelConfig:
    """The ModelConfig for one of the three segclip models, from the signature only."""
    cfg = mc.ModelConfig(name=name, max_batch_size=int(max_batch))
    if name == MODEL_ONNX:
        cfg.platform = "onnxruntime_onnx"
        cfg.default_model_filename = "model.onnx"
    elif name == MODEL_TRT:
        cfg.platform = "tensorrt_plan"
        cfg.default_model_filename = "model.plan"
    elif name == MODEL_PYTHON:
        cfg.backend = "python"
        cfg.default_model_filename = "model.py"
        cfg.parameters["onnx_file"].string_value = "model.onnx"
        cfg.parameters["intra_op_threads"].string_value = str(int(intra_op_threads))
    else:
        raise SegclipError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    if name == MODEL_ONNX and intra_op_threads:
        cfg.parameters["intra_op_thread_count"].string_value = str(int(intra_op_threads))

    for spec in sig.inputs:
        t = cfg.input.add(name=spec.name, data_type=mc.DataType.Value(triton_config_type(spec.dtype)))
        dims, reshape = triton_dims(spec)
        if max_batch == 0 and spec.name == SCENE_NAME:  # no implicit batch axis: the model takes [1] as is
            reshape = None
        t.dims.extend(dims)
        if reshape is not None:
            t.reshape.shape.extend(reshape)
        if spec.name == SCENE_NAME:
            # scene_id (metadata prompts): the python model fills the default for requests without
            # it; NVIDIA's ONNX Runtime/TensorRT backends feed graphs that need it, so they require it.
            t.optional = name == MODEL_PYTHON
            cfg.parameters[SCENE_DEFAULT_PARAM].string_value = str(DEFAULT_SCENE)
    for spec in sig.outputs:
        t = cfg.output.add(name=spec.name, data_type=mc.DataType.Value(triton_config_type(spec.dtype)))
        t.dims.extend(spec.shape[1:])
        if spec.name == MASK_NAME:
            t.label_filename = LABELS  # class index -> name
    cfg.parameters[PRECISION_PARAM].string_value = precision
    cfg.parameters[SIGNATURE_PARAM].string_value = json.dumps(replace(sig, max_batch=int(max_batch)).to_dict(), sort_keys=True)

    if max_batch > 0:
        cfg.dynamic_batching.max_queue_delay_microseconds = int(queue_delay_us)
    gk = {"cpu": mc.ModelInstanceGroup.KIND_CPU, "gpu": mc.ModelInstanceGroup.KIND_GPU}[kind]
    cfg.instance_group.add(count=int(instances), kind=gk)

    # not ready before it is warm: one sample of the exported shape through the whole model
    w = cfg.model_warmup.add(name="sample_uint8", batch_size=1 if max_batch > 0 else 0)
    spec = sig.inputs[0]
    h, wd = (sig.height, sig.width) if not sig.dynamic_size else warmup
    inp = w.inputs[spec.name]
    inp.data_type = mc.DataType.Value(triton_config_type(spec.dtype))
    inp.dims.extend([int(h), int(wd), 3])
    inp.random_data = True
    if sig.scenes:  # warm the scene path too (the generic scene)
        sc = w.inputs[SCENE_NAME]
        sc.data_type = mc.DataType.Value(triton_config_type(sig.inputs[1].dtype))
        sc.dims.extend(triton_dims(sig.inputs[1])[0])
        sc.zero_data = True
    return cfg


# ---- building a repository --------------------------------------------------------------------------
def _place(src: Path, dst: Path) -> None:
    """Hard-link when possible (same filesystem, no copy of a large model), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# Triton container release -> the TensorRT it ships, from NVIDIA's Triton release notes ("Triton Inference
# Server Container Versions", docs.nvidia.com/deeplearning/triton-inference-server/release-notes/
# rel-YY-MM.html) and the Frameworks Support Matrix; extend it from the same table.  An engine runs only on
# the TensorRT version that built it (TensorRT developer guide, "Version Compatibility": "By default,
# TensorRT engines are compatible only with the version of TensorRT used to build them").
TRITON_TENSORRT = {"24.05": "10.0.1", "24.06": "10.1.0", "24.07": "10.2.0", "24.08": "10.3.0", "24.09": "10.4.0",
                   "24.10": "10.5.0", "24.11": "10.6.0", "24.12": "10.7.0", "25.01": "10.8.0", "25.02": "10.8.0"}
TRT_MAJORS = ("10", "11")  # the engines segclip builds (strongly typed, TensorRT >= 10)
TRT_README = "README.md"


def _v3(version: str) -> tuple:
    return tuple(str(version).split(".")[:3])


def triton_releases(trt_version: Optional[str]) -> list:
    """The Triton container releases (of ``TRITON_TENSORRT``) whose TensorRT runs an engine of ``trt_version``."""
    return [r for r, v in TRITON_TENSORRT.items() if trt_version and _v3(v) == _v3(trt_version)]


def check_trt_for_triton(entry: dict, profile: dict, triton_release: Optional[str] = None) -> Optional[str]:
    """Refuse, with one line, a TensorRT engine Triton would not load; returns the engine's TensorRT version.

    Triton's TensorRT backend runs a request only on an optimisation profile that covers its batch, and
    its warm-up and single-image requests are batch 1: a profile starting above 1 fails them."""
    lo, opt, hi = (int(profile.get(k) or 1) for k in ("min", "opt", "max"))
    if lo != 1:
        raise SegclipError(f"segclip_trt: the engine's batch profile starts at {lo} ({lo}:{opt}:{hi}) and Triton sends "
                           f"batches from 1 (warm-up, single requests); re-export with --batch 1:{opt}:{hi}, "
                           f"or leave it out with --models segclip_onnx,segclip_python")
    v = entry.get("tensorrt_version")
    if v and str(v).split(".")[0] not in TRT_MAJORS:
        raise SegclipError(f"segclip_trt: the engine was built with TensorRT {v}, segclip serves TensorRT "
                           f"{' or '.join(TRT_MAJORS)} engines; rebuild it with the export's trtexec.sh")
    if triton_release is not None:
        want = TRITON_TENSORRT.get(str(triton_release))
        if want is None:
            raise SegclipError(f"--triton-release {triton_release}: not in segclip's table ({', '.join(TRITON_TENSORRT)}); "
                               f"leave it out and check the release's TensorRT in NVIDIA's Triton release notes")
        if v and _v3(v) != _v3(want):
            kind = "another TensorRT major" if _v3(v)[0] != _v3(want)[0] else "another TensorRT version"
            fits = triton_releases(v)
            raise SegclipError(f"segclip_trt: the engine was built with TensorRT {v}, Triton {triton_release} ships TensorRT "
                               f"{want} ({kind}: engines run only on the version that built them); "
                               + (f"serve it with Triton {', '.join(fits)}" if fits else
                                  f"rebuild it inside nvcr.io/nvidia/tritonserver:{triton_release}-py3 with the export's trtexec.sh"))
    return v


def trt_readme(trt_version: Optional[str], profile: dict) -> str:
    """The README of the segclip_trt model folder: which Triton container runs this engine."""
    fits = triton_releases(trt_version)
    if not trt_version:
        where = ("The engine was built on the target by `trtexec.sh`; serve it with the Triton container whose "
                 "TensorRT is the one trtexec ran with (NVIDIA's Triton release notes list each release's TensorRT).")
    elif fits:
        where = ("Serve it with " + ", ".join(f"`nvcr.io/nvidia/tritonserver:{r}-py3`" for r in fits)
                 + f" (TensorRT {TRITON_TENSORRT[fits[0]]}).")
    else:
        where = (f"No Triton release in segclip's table ships TensorRT {trt_version}: pick the one whose TensorRT is "
                 f"{'.'.join(_v3(trt_version))} in NVIDIA's Triton release notes, or rebuild the engine inside the "
                 f"container you run with the export's `trtexec.sh`.")
    return (f"# segclip_trt\n\nTensorRT engine `1/model.plan`, built with TensorRT {trt_version or 'unknown'}, batch profile "
            f"{profile.get('min')}:{profile.get('opt')}:{profile.get('max')}.\n\nTensorRT engines run only on the TensorRT "
            f"version (and GPU architecture) that built them. {where}\n")


def _trt_plan(manifest: dict, export_dir: Path) -> Optional[Path]:
    """The passing TensorRT engine of the export, or None."""
    art = _artifact(manifest, export_dir, "tensorrt", required=False)
    return None if art is None else export_dir / artifact_file(art, export_dir)


def onnx_choice(manifest: dict, export_dir, kind: str, precision: Optional[str] = None) -> tuple:
    """(artifact key, precision, ``contract.Choice``) of the ONNX model segclip_onnx/segclip_python serve:
    ``precision`` when given, else the artifact measured fastest on ONNX Runtime (what both models run)
    on this machine's CPU (``kind`` cpu) or GPU (gpu), else FP32 (``contract.choose_artifact``)."""
    keys = {"fp32": "onnx", "fp16": "onnx_fp16", "int8": "onnx_int8" if kind == "gpu" else "onnx_int8_cpu"}
    if precision is not None and precision not in keys:
        raise SegclipError(f"--precision {precision!r}: not a precision; give --precision {', '.join(keys)}")
    choice = choose_artifact(manifest, export_dir, format=keys.get(precision), runtime="onnxruntime",
                             device="cuda" if kind == "gpu" else "cpu", among=tuple(keys.values()))
    return choice.format, {v: k for k, v in keys.items()}[choice.format], choice


def build_repository(export_dir, out=None, *, models: Optional[Iterable[str]] = None, max_batch: Optional[int] = None,
                     queue_delay_us: int = 100, instances: int = 1, kind: str = "cpu", intra_op_threads: int = 0,
                     precision: Optional[str] = None, force: bool = False,
                     triton_release: Optional[str] = None) -> dict:
    """Generate the Triton models for an export into ``out`` (the repository folder, ``--out`` on the
    command line); returns ``{model: folder}``.

    ``models`` defaults to every model the export supports (segclip_trt only with a passing engine).
    ``max_batch`` defaults to the export's profile max (it may not exceed a TensorRT profile's max).
    ``precision`` picks the ONNX artifact that segclip_onnx/segclip_python serve: "fp32" (``onnx``)
    or "fp16" (``onnx_fp16``) or "int8": the symmetric Q/DQ ``onnx_int8`` for GPU instances (TensorRT
    and CUDA run it), the u8/s8 ``onnx_int8_cpu`` that ONNX Runtime runs fastest for CPU instances;
    None (default): the one of those measured fastest on ONNX Runtime on this machine (``onnx_choice``).
    ``segclip_trt`` needs an engine profile starting at batch 1 and a TensorRT 10/11 engine; with
    ``triton_release`` ("24.08", ...) the engine's TensorRT must be that container's.  Its folder's
    README.md and segclip_model.json name the engine's TensorRT version and the matching containers.
    """
    from segclip.atomic import atomic_dir

    if out is None:
        raise SegclipError("build_repository: no repository folder; give out=DIR (--out on the command line)")
    export_dir, repo_dir = Path(export_dir), Path(out)
    if kind not in ("cpu", "gpu"):
        raise SegclipError(f"--kind {kind!r}: not a kind; give --kind cpu or --kind gpu")
    if instances < 1:
        raise SegclipError(f"--instances {instances}: must be >= 1; give e.g. --instances 1")
    if queue_delay_us < 0:
        raise SegclipError(f"--queue-delay-us {queue_delay_us}: must be >= 0; give e.g. --queue-delay-us 100")
    manifest = read_manifest(export_dir)
    sig = manifest_signature(manifest)
    onnx_key, precision, choice = onnx_choice(manifest, export_dir, kind, precision)
    onnx_art = _artifact(manifest, export_dir, onnx_key, required=True)
    onnx_path = export_dir / onnx_art["file"]
    check_artifact_unchanged(onnx_art, onnx_path)
    plan = _trt_plan(manifest, export_dir)

    profile_max = int(batch_profile(manifest).get("max") or sig.max_batch)
    mb = int(max_batch) if max_batch is not None else int(profile_max)
    if mb < 1:
        raise SegclipError(f"--max-batch {mb}: must be >= 1; give e.g. --max-batch 8")

    wanted = list(models) if models else [m for m in ALL_MODELS if m != MODEL_TRT or plan]
    for m in wanted:
        if m not in ALL_MODELS:
            raise SegclipError(f"unknown model {m!r}; choose from {', '.join(ALL_MODELS)}")
    if MODEL_TRT in wanted:
        if plan is None:
            raise SegclipError(f"{export_dir}: the export has no passing TensorRT engine; re-export with --trt on a GPU machine")
        if mb > profile_max:
            raise SegclipError(f"--max-batch {mb} exceeds the TensorRT profile's max batch {profile_max}; re-export with a larger batch profile")
        trt_version = check_trt_for_triton(manifest["artifacts"]["tensorrt"], batch_profile(manifest), triton_release)
    existing = [m for m in wanted if (repo_dir / m).exists()]
    if existing and not force:
        raise SegclipError(f"{repo_dir} already has {', '.join(existing)}; pass --force to replace")

    hw = warmup_hw(manifest, sig)
    record_base = {
        "generated_by": "segclip triton-repo",
        "export_dir": str(export_dir.resolve()),
        "onnx_artifact": onnx_key,
        "onnx_sha256": onnx_art.get("sha256"),
        "choice": choice.to_dict(),
        "options": {"max_batch": mb, "precision": precision, "queue_delay_us": queue_delay_us, "instances": instances, "kind": kind,
                    "intra_op_threads": intra_op_threads},
    }
    written = {}
    for m in wanted:
        cfg = model_config(m, sig, max_batch=mb, queue_delay_us=queue_delay_us, instances=instances,
                           kind="gpu" if m == MODEL_TRT else kind, warmup=hw,
                           intra_op_threads=intra_op_threads,
                           precision=manifest["artifacts"]["tensorrt"]["precision"] if m == MODEL_TRT else onnx_art.get("precision", precision))
        if m in (MODEL_ONNX, MODEL_PYTHON):
            check_config_against_onnx(cfg, onnx_path, f"{m} (generated from {export_dir})")
        with atomic_dir(repo_dir / m, replace=force) as tmp:
            vdir = tmp / VERSION
            vdir.mkdir()
            if m in (MODEL_ONNX, MODEL_PYTHON):
                _place(onnx_path, vdir / "model.onnx")
            if m == MODEL_PYTHON:
                shutil.copyfile(PYTHON_BACKEND_SRC, vdir / "model.py")
            record = {**record_base, "model": m}
            if m == MODEL_TRT:
                _place(plan, vdir / "model.plan")
                record.update(tensorrt_version=trt_version, triton_releases=triton_releases(trt_version))
                (tmp / TRT_README).write_text(trt_readme(trt_version, batch_profile(manifest)))
            (tmp / LABELS).write_text("".join(f"{c}\n" for c in sig.classes))
            (tmp / CONFIG).write_text(config_text(cfg))
            (tmp / MODEL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        written[m] = repo_dir / m
    return written


# ---- checking a repository before serving it --------------------------------------------------------
def list_models(repo_dir) -> list:
    repo_dir = Path(repo_dir)
    return sorted(p.name for p in repo_dir.iterdir() if p.is_dir() and (p / CONFIG).is_file()) if repo_dir.is_dir() else []


def check_model(repo_dir, name: str) -> mc.ModelConfig:
    """Check one model folder as Triton will load it; raise a one-line SegclipError naming the file."""
    repo_dir = Path(repo_dir)
    mdir = repo_dir / name
    regen = f"regenerate it with `segclip triton-repo EXPORT_DIR --out {repo_dir} --force`"
    if not mdir.is_dir():
        raise SegclipError(f"repository {repo_dir} has no model '{name}' (it has: {', '.join(list_models(repo_dir)) or 'none'}); pick one of those")
    if not (mdir / CONFIG).is_file():
        raise SegclipError(f"{mdir / CONFIG} is missing; {regen}")
    cfg = parse_config(mdir / CONFIG)
    if cfg.name and cfg.name != name:
        raise SegclipError(f"{mdir / CONFIG}: name '{cfg.name}' does not match its folder '{name}'")
    versions = sorted(p.name for p in mdir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise SegclipError(f"{mdir} has no version folder (e.g. {mdir / VERSION}); {regen}")
    vdir = mdir / versions[-1]
    if cfg.backend == "python":
        files = [cfg.default_model_filename or "model.py"]
        p = cfg.parameters.get("onnx_file")
        files.append(p.string_value if p is not None and p.string_value else "model.onnx")
    elif cfg.cc_model_filenames:
        files = list(cfg.cc_model_filenames.values())
    else:
        files = [cfg.default_model_filename or {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}.get(cfg.platform, "model")]
    for f in files:
        if not (vdir / f).is_file():
            raise SegclipError(f"{vdir / f} is missing (model '{name}'); {regen}")
    for out in cfg.output:
        if out.label_filename and not (mdir / out.label_filename).is_file():
            raise SegclipError(f"{mdir / out.label_filename} is missing (label_filename of output '{out.name}'); {regen}")
    onnx_file = next((vdir / f for f in files if f.endswith(".onnx")), None)
    if onnx_file is not None:
        check_config_against_onnx(cfg, onnx_file, f"{mdir / CONFIG}")
    try:
        sig = config_signature(cfg)
    except Exception as e:
        raise SegclipError(f"{mdir / CONFIG}: parameter '{SIGNATURE_PARAM}' is not a segclip signature ({e})") from None
    if sig is not None:
        names = [(t.name, t.data_type) for t in cfg.input] + [(t.name, t.data_type) for t in cfg.output]
        want = [(s.name, mc.DataType.Value(triton_config_type(s.dtype))) for s in sig.inputs + sig.outputs]
        if sorted(names) != sorted(want):
            raise SegclipError(f"{mdir / CONFIG}: inputs/outputs {names} do not match its segclip signature {want}")
    return cfg


def check_repository(repo_dir, models: Optional[Iterable[str]] = None) -> dict:
    """Check the given (default: all) models of a repository; ``{name: ModelConfig}``."""
    repo_dir = Path(repo_dir)
    if not repo_dir.is_dir():
        raise SegclipError(f"model repository {repo_dir} does not exist; create it with `segclip triton-repo EXPORT_DIR --out {repo_dir}`")
    names = list(models) if models else list_models(repo_dir)
    if not names:
        raise SegclipError(f"model repository {repo_dir} has no models; create them with `segclip triton-repo EXPORT_DIR --out {repo_dir}`")
    return {n: check_model(repo_dir, n) for n in names}


# ---- example configs (committed under serving/triton_repo/examples) --------------------------------
def example_signature(size: int = 512, max_batch: int = 8) -> Signature:
    """The signature of the sample model (``segclip quickstart``: the sample set's classes) at ``size``."""
    from segclip.data import dataset_info

    from segclip.data.gsd import DATASET_GSD

    info = dataset_info("sample")
    return Signature(classes=info["classes"], palette=info["palette"], height=size, width=size, max_batch=max_batch,
                     gsd=DATASET_GSD["sample"])


def example_configs(size: int = 512, max_batch: int = 8) -> dict:
    """{"<model>/config.pbtxt": text, "<model>/labels.txt": text} for every segclip model, exactly as
    ``build_repository`` writes them for an export of the sample model at ``size`` (text only, no model files)."""
    sig = example_signature(size, max_batch)
    out = {}
    for m in ALL_MODELS:
        cfg = model_config(m, sig, max_batch=max_batch, kind="gpu" if m == MODEL_TRT else "cpu",
                           precision="fp16" if m == MODEL_TRT else "fp32")
        out[f"{m}/{CONFIG}"] = config_text(cfg)
        out[f"{m}/{LABELS}"] = "".join(f"{c}\n" for c in sig.classes)
    return out


def write_examples(dest) -> list:
    """Write ``example_configs()`` under ``dest`` (``serving/triton_repo/examples`` in the source tree)."""
    from segclip.atomic import atomic_write_text

    return [atomic_write_text(Path(dest) / rel, text) for rel, text in example_configs().items()]
