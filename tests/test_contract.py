"""The export-directory contract (segclip.contract) on hand-written export folders: what a path is,
which artifacts can be used and why not, and manifest validation."""
from __future__ import annotations

import json

import pytest

from segclip.contract import artifact_problem, read_manifest, resolve_source, usable_artifacts
from segclip.errors import SegclipError


def _export(d, artifacts, version=1):
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"format": "segclip-export", "format_version": version, "artifacts": artifacts}))
    return d


def test_resolve_source_says_what_a_path_is(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    exp = _export(tmp_path / "exp", {})
    for name in ("m.pt", "m.onnx", "m.plan", "m.engine"):
        (tmp_path / name).write_bytes(b"x")
    kinds = {str(p): resolve_source(p).kind for p in (run, exp, tmp_path / "m.pt", tmp_path / "m.onnx", tmp_path / "m.plan",
                                                        tmp_path / "m.engine")}
    assert list(kinds.values()) == ["run", "export", "checkpoint", "onnx", "engine", "engine"]
    src = resolve_source("grpc://127.0.0.1:8001/segclip_python")
    assert src.kind == "url" and src.path is None and str(src) == "grpc://127.0.0.1:8001/segclip_python"
    with pytest.raises(SegclipError, match="no such file or directory"):
        resolve_source(tmp_path / "nope")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(SegclipError, match="unknown model file type '.bin'"):
        resolve_source(tmp_path / "m.bin")


def test_artifact_problem_names_the_reason_and_the_fix(tmp_path):
    d = _export(tmp_path / "exp", {
        "onnx": {"file": "model.onnx", "status": "ok"},
        "onnx_fp16": {"file": "model_fp16.onnx", "status": "failed"},
        "tensorrt": {"file": None, "status": "not_built", "reason": "no NVIDIA GPU is visible here"},
    })
    m = read_manifest(d)
    assert "model.onnx is missing (listed in manifest.json)" in artifact_problem(m, "onnx", d)
    (d / "model.onnx").write_bytes(b"x")
    (d / "model_fp16.onnx").write_bytes(b"x")
    assert artifact_problem(m, "onnx", d) is None
    assert "failed its parity gate" in artifact_problem(m, "onnx_fp16", d)
    assert artifact_problem(m, "onnx_fp16", d, allow_failed=True) is None
    why = artifact_problem(m, "tensorrt", d)
    assert "tensorrt not_built: no NVIDIA GPU is visible here" in why and "trtexec.sh" in why
    m2 = read_manifest(_export(tmp_path / "exp2", {"onnx": {"file": "model.onnx", "status": "ok"}}))
    assert "no onnx_fp16 artifact in this export (it has: onnx); re-export with segclip export --fp16" in artifact_problem(m2, "onnx_fp16")
    assert "onnx" in usable_artifacts(m, d) and "tensorrt" not in usable_artifacts(m, d)


def test_read_manifest_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(SegclipError, match="no manifest.json"):
        read_manifest(tmp_path)
    with pytest.raises(SegclipError, match="newer than this segclip reads"):
        read_manifest(_export(tmp_path / "new", {}, version=99))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SegclipError, match="not a segclip export manifest"):
        read_manifest(tmp_path / "other")
    d = _export(tmp_path / "arts", [])
    with pytest.raises(SegclipError, match="'artifacts' is not a mapping"):
        read_manifest(d)
    # the manifest of the directory holding an artifact file
    assert read_manifest(_export(tmp_path / "exp", {}) / "model.plan")["format"] == "segclip-export"


def test_one_format_table_for_exporter_loader_and_benchmark():
    """The exporter's file names, the speed measurement's runtimes and the benchmark's artifact rows all
    come from contract.FORMATS: no second list of formats to fall out of step with it."""
    from segclip.benchmarks.backends import BACKENDS
    from segclip.contract import FORMATS, RUNNABLE
    from segclip.export import exporter, geodeep, int8, tensorrt

    assert [f.file for f in FORMATS.values()] == [exporter.ONNX_NAME, exporter.ONNX_FP16_NAME, int8.INT8_NAME,
                                                  int8.INT8_CPU_NAME, FORMATS[exporter.MSDA_INT8_KEY].file,
                                                  int8.INT8_FP16_NAME, tensorrt.ENGINE_NAME, geodeep.GEODEEP_NAME]
    assert all(k == f.key for k, f in FORMATS.items()) and len({f.file for f in FORMATS.values()}) == len(FORMATS)
    assert set(RUNNABLE) == {"onnx", "onnx_fp16", "onnx_int8", "onnx_int8_cpu", "onnx_int8_msda", "tensorrt"}
    for spec in BACKENDS.values():  # every artifact row of the benchmark runs a format on a runtime the table lists
        if spec.source == "artifact":
            runtime = "openvino" if spec.name.startswith("openvino") else spec.name.split("-")[0]
            assert runtime in FORMATS[spec.artifact].runtimes, spec.name
