"""``load_runner``: anything a user can point segclip at -> a ``Runner`` (see ``segclip.runtime``)."""
from __future__ import annotations

import sys
from pathlib import Path

from segclip.contract import (FORMATS, ONNX_RUNTIMES, RUNNABLE, artifact_file, artifact_for_file, artifact_problem, check_artifact_unchanged, choose_artifact,
                              is_export_dir, manifest_signature, read_manifest, resolve_source)
from segclip.errors import SegclipError
from segclip.parsers import check_options
from segclip.runtime.base import Runner


def runner_from_export_dir(directory, format: str | None = None, allow_failed: bool = False, **opts) -> Runner:
    d = Path(directory)
    m = read_manifest(d)
    # the one decision (contract.choose_artifact): explicit --format wins, else the fastest gated artifact
    # measured on this machine, else the documented fallback order; the runner carries it (.choice)
    # an option only ONNX Runtime's runner takes (providers, ...) keeps the choice there: OpenVINO's would refuse it
    runtime = opts.get("runtime") or ("onnxruntime" if any(opts.get(k) is not None for k in _ORT_ONLY) else None)
    choice = choose_artifact(m, d, format=format, runtime=runtime, device=_choice_device(opts), among=_loadable(m, d, format))
    format = choice.format
    if choice.how != "explicit" and format != "tensorrt":
        opts["runtime"] = choice.runtime
    why = artifact_problem(m, format, d, allow_failed=allow_failed)
    if why:
        raise SegclipError(why)
    entry = m["artifacts"][format]
    sig = manifest_signature(m)
    path = d / artifact_file(entry, d)
    warn_if_failed(entry, path)
    name = opts.pop("name", format)
    runner = FORMATS[format].runner  # the format table says which runner family loads it
    if runner == "tensorrt":
        from segclip.runtime.tensorrt_runner import TensorRTRunner

        return _chosen(_make(TensorRTRunner, str(path), path, signature=sig, manifest_entry=entry, name=name,
                             precision=entry.get("precision"), **opts), choice)
    check_artifact_unchanged(entry, path)  # an engine may differ: trtexec.sh rebuilds it on the target
    if runner == "geodeep":  # float NCHW 0..1 in, probabilities out: its own runner (ONNX Runtime, as GeoDeep)
        cls = geodeep_runner_class(opts.pop("runtime", None))
    else:
        cls = onnx_runner_class(opts.pop("runtime", None))
    made = _make(cls, str(path), path, signature=sig, name=name, precision=entry.get("precision"), **opts)
    _warn_int8_isa(made, entry, m, path)
    return _chosen(made, choice)


def _loadable(m: dict, d: Path, format) -> tuple:
    """The artifacts the default choice may pick: not one whose OpenVINO kernel (``ov_extension``) can neither be
    loaded nor built here -- a speed record from another machine may rank it fastest (said in one line)."""
    if format is not None:
        return RUNNABLE
    keep = []
    for key in RUNNABLE:
        record = ((m.get("artifacts") or {}).get(key) or {}).get("openvino_extension")
        if record is not None and artifact_problem(m, key, d) is None:
            from segclip.runtime import ov_extension

            why = ov_extension.loads_here(record, d)
            if why:
                print(f"note: {FORMATS[key].file} left out of the default choice: {why}", file=sys.stderr)
                continue
        keep.append(key)
    return tuple(keep)


_ORT_ONLY = ("providers", "device_id", "optimization", "memory_arena")  # OnnxRunner options OpenVINORunner lacks


def _choice_device(opts: dict):
    """The device a runner's options ask for, as ``choose_artifact`` matches speed rows: ``device``, or ONNX
    Runtime's ``providers`` ("cuda", "tensorrt", "cpu" or a list of provider names) as cpu or cuda."""
    p = opts.get("providers")
    if opts.get("device") or p is None:
        return opts.get("device")
    names = [p] if isinstance(p, str) else [x[0] if isinstance(x, (tuple, list)) else x for x in p]
    return "cuda" if any(str(n).lower().startswith(("cuda", "tensorrt")) for n in names) else "cpu"


def _warn_int8_isa(runner: Runner, entry: dict, manifest: dict, path: Path) -> None:
    """One line on stderr when an INT8 graph runs on this CPU's saturating u8 x s8 arithmetic and its
    gate did not measure that (``segclip.cpu.int8_warning``), naming the export command that re-gates it here."""
    record = entry.get("int8")
    if entry.get("precision") != "int8" or not isinstance(record, dict) or runner._device() != "cpu":
        return
    from segclip.cpu import int8_warning

    ckpt = (manifest.get("source") or {}).get("checkpoint") or "CHECKPOINT"
    data = (record.get("calibration") or {}).get("source") or ""
    # the --data it was calibrated on ("data:SPEC", export's parity_dataset); the rendered sample set has none
    data = data[len("data:"):] if data.startswith("data:") else "DATASET:ROOT:SPLIT"
    line = int8_warning(path.name, record, regate=f"segclip export {ckpt} --int8 --data {data} --out NEW_DIR")
    if line:
        print(line, file=sys.stderr)


def geodeep_runner_class(runtime: str | None):
    if runtime not in (None, "onnxruntime", "ort"):
        raise SegclipError(f"runtime {runtime!r}: the geodeep artifact runs on ONNX Runtime, as GeoDeep and Deepness "
                           f"run it; drop --runtime")
    from segclip.runtime.geodeep_runner import GeoDeepRunner

    return GeoDeepRunner


def _chosen(runner: Runner, choice) -> Runner:
    runner.choice = choice  # what predict/eval print and record (Choice.line(), Choice.to_dict())
    return runner


RUNTIMES = ONNX_RUNTIMES  # the format table's runtimes of ONNX files (contract.FORMATS)


def onnx_runner_class(runtime: str | None):
    """``runtime`` option -> the runner class for ONNX files: ONNX Runtime (default) or OpenVINO."""
    if runtime in (None, "onnxruntime", "ort"):
        from segclip.runtime.onnx_runner import OnnxRunner

        return OnnxRunner
    if runtime == "openvino":
        from segclip.runtime.openvino_runner import OpenVINORunner

        return OpenVINORunner
    raise SegclipError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)} for ONNX artifacts")


def _make(cls, what: str, *args, **opts):
    check_options(cls.__init__, opts, what, f"{cls.backend} runner")
    return cls(*args, **opts)


def _check_beside_manifest(path: Path, allow_failed: bool = False) -> None:
    """An ONNX file given by path inside an export folder is checked against its manifest entry too:
    unchanged, and gated -- the same rule as for the export folder (a failed one only with allow_failed)."""
    if not is_export_dir(path.parent):
        return
    try:
        m = read_manifest(path.parent)
        found = artifact_for_file(m, path)
    except SegclipError:  # an unreadable manifest beside a model file says nothing about the file
        return
    if found:
        check_artifact_unchanged(found[1], path)
        why = artifact_problem(m, found[0], path.parent, allow_failed=allow_failed)
        if why:
            raise SegclipError(why)
        warn_if_failed(found[1], path)


def warn_if_failed(entry: dict, path) -> None:
    """One line on stderr when a runner is made from an artifact that failed its parity gate (allowed by
    --allow-failed, or by segclip benchmark, which measures every artifact and flags it): its results
    may differ from PyTorch's."""
    if str(entry.get("status")) == "failed":
        print(f"warning: {path}: this artifact failed its parity gate at export (see manifest.json); its results may "
              f"differ from PyTorch's (it runs only because failed artifacts were allowed)", file=sys.stderr)


def load_runner(path_or_url, **opts) -> Runner:
    """Anything a user can point segclip at -> a ``Runner`` (not yet activated)."""
    src = resolve_source(path_or_url)
    if src.kind == "url":
        try:
            from segclip.runtime.triton import TritonRunner
        except ImportError as e:
            raise SegclipError(f"{src}: the Triton client runner is not available ({e}); pip install 'tritonclient[grpc,http]'") from None
        return _make(TritonRunner, str(src), str(src), **opts)
    if src.kind == "export":
        return runner_from_export_dir(src.path, **opts)
    if src.kind in ("run", "checkpoint"):
        from segclip.runtime.torch_runner import TorchRunner

        return _make(TorchRunner, str(src), src.path, **opts)
    opts.pop("format", None)
    if src.kind == "onnx":
        _check_beside_manifest(src.path, bool(opts.pop("allow_failed", False)))
        from segclip.contract import META_ARTIFACT
        from segclip.runtime.onnx_runner import read_onnx_metadata

        runtime = opts.pop("runtime", None)
        geodeep = read_onnx_metadata(src.path).get(META_ARTIFACT) == "geodeep"
        return _make(geodeep_runner_class(runtime) if geodeep else onnx_runner_class(runtime), str(src), src.path, **opts)
    from segclip.runtime.tensorrt_runner import TensorRTRunner

    return _make(TensorRTRunner, str(src), src.path, **opts)

