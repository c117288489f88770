"""Runners: one interface over PyTorch, ONNX Runtime, TensorRT and Triton.

``load_runner(path_or_url, **opts)`` picks the backend from what it is given:

* a checkpoint file (``.pt``/``.pth``) or a training run directory -> ``TorchRunner``
  (``device="cpu"|"cuda"``, ``precision``, ``scores``, ``size``);
* an ``.onnx`` file -> ``OnnxRunner`` (``providers="cpu"|"cuda"|"tensorrt"|[...]``, ``threads``);
* a TensorRT engine ``.plan``/``.engine`` -> ``TensorRTRunner`` (``device``);
* an export directory (has ``manifest.json``) -> the artifact named by ``format="onnx"|"onnx_fp16"|
  "tensorrt"`` (default: ``tensorrt`` when built and usable here, else ``onnx``, else ``onnx_fp16``);
  an artifact that failed its parity gate is refused unless ``allow_failed=True``;
* ``grpc://host:port/model`` or ``http://host:port/model`` -> ``segclip.runtime.triton.TritonRunner``.

No runner imports open_clip: the text side is baked into every artifact.
"""
from __future__ import annotations

from pathlib import Path

from segclip.errors import SegclipError
from segclip.runtime.base import Runner

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
FORMATS = ("onnx", "onnx_fp16", "tensorrt")


def _tensorrt_usable() -> bool:
    try:
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            return False
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def runner_from_export_dir(directory, format: str | None = None, allow_failed: bool = False, **opts) -> Runner:
    from segclip.export.manifest import manifest_signature, read_manifest

    d = Path(directory)
    m = read_manifest(d)
    arts = {k: v for k, v in (m.get("artifacts") or {}).items() if isinstance(v, dict) and v.get("file")}
    built = {k: v for k, v in arts.items() if (d / v["file"]).is_file()}
    if format is None:
        order = (["tensorrt"] if _tensorrt_usable() else []) + ["onnx", "onnx_fp16"]
        format = next((f for f in order if f in built), None)
        if format is None:
            raise SegclipError(f"{d}: the export holds no usable artifact (manifest lists {sorted(arts) or 'none'})")
    if format not in FORMATS:
        raise SegclipError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
    if format not in built:
        have = ", ".join(sorted(built)) or "none"
        hint = " (run its trtexec.sh on the target or export with --trt on a GPU machine)" if format == "tensorrt" else ""
        raise SegclipError(f"{d}: no {format} artifact in this export (it has: {have}){hint}")
    entry = built[format]
    if entry.get("status") == "failed" and not allow_failed:
        raise SegclipError(f"{d}: the {format} artifact failed its parity gate at export (see manifest.json); "
                           f"re-export, or pass allow_failed=True to use it anyway")
    sig = manifest_signature(m)
    path = d / entry["file"]
    name = opts.pop("name", format)
    if format == "tensorrt":
        from segclip.runtime.tensorrt_runner import TensorRTRunner

        return _make(TensorRTRunner, str(path), path, signature=sig, manifest_entry=entry, name=name,
                     precision=entry.get("precision"), **opts)
    from segclip.runtime.onnx_runner import OnnxRunner

    return _make(OnnxRunner, str(path), path, signature=sig, name=name, precision=entry.get("precision"), **opts)


def _make(cls, what: str, *args, **opts):
    import inspect

    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        bad = sorted(k for k in opts if k not in params)
        if bad:
            valid = sorted(k for k, p in params.items() if k != "self" and p.kind == p.KEYWORD_ONLY)
            raise SegclipError(f"{what}: option(s) {', '.join(bad)} do not apply to a {cls.backend} runner (valid: {', '.join(valid)})")
    return cls(*args, **opts)


def load_runner(path_or_url, **opts) -> Runner:
    """Anything a user can point segclip at -> a ``Runner`` (not yet activated)."""
    s = str(path_or_url)
    if s.startswith(("grpc://", "http://", "https://")):
        try:
            from segclip.runtime.triton import TritonRunner
        except ImportError as e:
            raise SegclipError(f"{s}: the Triton client runner is not available ({e}); pip install 'tritonclient[grpc,http]'") from None
        return _make(TritonRunner, s, s, **opts)
    p = Path(s)
    if not p.exists():
        raise SegclipError(f"{p}: no such file or directory (expected a checkpoint, run directory, .onnx, .plan, export directory or grpc://host:port/model URL)")
    if p.is_dir():
        if (p / "manifest.json").is_file():
            return runner_from_export_dir(p, **opts)
        from segclip.runtime.torch_runner import TorchRunner

        return _make(TorchRunner, str(p), p, **opts)
    suffix = p.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from segclip.runtime.onnx_runner import OnnxRunner

        opts.pop("format", None)
        return _make(OnnxRunner, str(p), p, **opts)
    if suffix in ENGINE_SUFFIXES:
        from segclip.runtime.tensorrt_runner import TensorRTRunner

        opts.pop("format", None)
        return _make(TensorRTRunner, str(p), p, **opts)
    if suffix in CHECKPOINT_SUFFIXES:
        from segclip.runtime.torch_runner import TorchRunner

        return _make(TorchRunner, str(p), p, **opts)
    raise SegclipError(f"{p}: unknown model file type {suffix!r}; give a checkpoint (.pt), .onnx, .plan/.engine or an export directory")


__all__ = ["Runner", "load_runner", "runner_from_export_dir", "FORMATS"]
