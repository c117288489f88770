"""Runners: one interface over checkpoint / ONNX / export dir, one-line input errors, corrupt files."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from export_fixtures import SIZE, assert_one_error, images
from segclip.errors import SegclipError
from segclip.runtime import Runner, load_runner


def _cli(*args):
    from segclip.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(trained_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    shutil.copy(trained_checkpoint, d / "model_final.pt")
    return d


def test_load_runner_same_interface_and_outputs(export_dir, trained_checkpoint, run_dir):
    out, manifest = export_dir
    x = images(2, seed=21)
    sources = {
        "checkpoint": (trained_checkpoint, {}, "torch"),
        "run_dir": (run_dir, {}, "torch"),
        "onnx": (out / "model.onnx", {"providers": "cpu", "threads": 2}, "onnxruntime"),
        "export_dir": (out, {}, "onnxruntime"),
        "export_dir_fp16": (out, {"format": "onnx_fp16", "providers": "cpu"}, "onnxruntime"),
    }
    masks = {}
    for key, (src, opts, backend) in sources.items():
        r = load_runner(src, **opts)
        assert isinstance(r, Runner) and r.backend == backend and not r.is_active
        assert r.signature.classes == tuple(manifest["classes"])
        assert r.signature.inputs[0].name == "image" and r.signature.outputs[0].name == "mask"
        with r:
            assert r.is_active
            res = r.infer(x)
            assert r.last_inference_time is not None and r.last_inference_time > 0
        assert not r.is_active
        assert res["mask"].dtype == np.uint8 and res["mask"].shape == (2, SIZE, SIZE)
        d = r.describe()
        assert {"name", "backend", "precision", "artifact", "size_mib", "device", "providers"} <= set(d)
        assert d["backend"] == backend
        masks[key] = res["mask"]
        if backend == "torch":
            assert "scores" in res and res["scores"].shape == (2, 7, SIZE, SIZE)  # a checkpoint always can
        else:
            assert "scores" not in res  # this export has no --scores
    assert load_runner(out).precision == "fp32" and load_runner(out, format="onnx_fp16").precision == "fp16"
    assert load_runner(out / "model.onnx").describe()["size_mib"] > 1
    assert np.array_equal(masks["checkpoint"], masks["run_dir"])
    for key in ("onnx", "export_dir"):
        assert (masks[key] == masks["checkpoint"]).mean() >= 0.999
    assert (masks["export_dir_fp16"] == masks["checkpoint"]).mean() >= 0.995


@pytest.mark.parametrize("bad,needle", [
    (lambda x: x.astype(np.float32), "uint8"),
    (lambda x: x[0], "batch"),
    (lambda x: x[..., :2], "N x H x W x 3"),
    (lambda x: np.zeros((1, SIZE + 32, SIZE, 3), np.uint8), f"{SIZE}x{SIZE}"),
])
def test_wrong_input_is_one_line_error_for_every_backend(export_dir, trained_checkpoint, bad, needle):
    out, _ = export_dir
    x = images(1)
    for src, opts in ((out / "model.onnx", {"providers": "cpu"}), (out, {"format": "onnx_fp16"}),
                      (trained_checkpoint, {"size": (SIZE, SIZE)})):
        r = load_runner(src, **opts)
        with pytest.raises(SegclipError, match=re.escape(needle)) as e:
            r.infer(bad(x))
        msg = str(e.value)
        assert needle in msg and "\n" not in msg, msg


def test_batch_limit_of_fixed_profile_artifacts(export_dir):
    out, _ = export_dir
    r = load_runner(out / "model.onnx", providers="cpu")
    assert r.max_batch is None  # ONNX has a dynamic batch
    r.max_batch = 2  # as a TensorRT engine with profile max 2 sets it
    with pytest.raises(SegclipError, match="maximum batch 2"):
        r.infer(images(3))


def test_runtime_error_becomes_one_line(export_dir):
    """An error raised inside ONNX Runtime (here: a signature that lies about the size) is one line."""
    import dataclasses

    out, _ = export_dir
    r = load_runner(out / "model.onnx", providers="cpu")
    r.signature = dataclasses.replace(r.signature, height=SIZE + 32)
    with pytest.raises(SegclipError, match="'image'") as e:
        r.infer(np.zeros((1, SIZE + 32, SIZE, 3), np.uint8))
    assert "\n" not in str(e.value) and "'image'" in str(e.value)


def test_truncated_onnx_is_one_line_error(tmp_path, export_dir):
    out, _ = export_dir
    data = (out / "model.onnx").read_bytes()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(SegclipError, match="truncated or corrupt; re-export with segclip export") as e:
        load_runner(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    (tmp_path / "img.png").write_bytes(b"")
    from PIL import Image

    Image.fromarray(images(1)[0]).save(tmp_path / "img.png")
    res = _cli("predict", "--model", bad, tmp_path / "img.png", "--out", tmp_path / "p")
    assert_one_error(res, 2, "cannot load ONNX model", "truncated or corrupt")


def test_export_dir_choices_and_errors(tmp_path, export_dir, trained_checkpoint):
    out, _ = export_dir
    with pytest.raises(SegclipError, match="no tensorrt artifact"):
        load_runner(out, format="tensorrt")
    with pytest.raises(SegclipError, match="format 'plan'"):
        load_runner(out, format="plan")
    with pytest.raises(SegclipError, match="do not apply"):
        load_runner(trained_checkpoint, providers="cpu")
    with pytest.raises(SegclipError, match="no such file"):
        load_runner(tmp_path / "missing.onnx")
    with pytest.raises(SegclipError, match="unknown model file type"):
        (tmp_path / "x.bin").write_bytes(b"1")
        load_runner(tmp_path / "x.bin")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("{not json")
    with pytest.raises(SegclipError, match="unreadable export manifest"):
        load_runner(tmp_path / "m")


def test_tensorrt_runner_refuses_other_arch_or_version_before_loading(tmp_path, export_dir):
    """The manifest is checked before deserialising: a clear error saying how to rebuild."""
    from segclip.runtime.tensorrt_runner import TensorRTRunner

    out, manifest = export_dir
    d = tmp_path / "trt"
    d.mkdir()
    (d / "model.plan").write_bytes(b"not an engine")
    entry = {"file": "model.plan", "format": "tensorrt", "precision": "fp16", "status": "ok",
             "tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu": "Orin",
             "profile": {"min": [1, SIZE, SIZE, 3], "opt": [1, SIZE, SIZE, 3], "max": [2, SIZE, SIZE, 3]}}
    (d / "manifest.json").write_text(json.dumps({**manifest, "artifacts": {"tensorrt": entry}}))
    r = load_runner(d / "model.plan")
    assert isinstance(r, TensorRTRunner) and r.max_batch == 2 and r.precision == "fp16"
    with pytest.raises(SegclipError, match="engine built for") as e:
        r.check_compatible("10.8.0", "9.0", "NVIDIA H100")
    msg = str(e.value)
    assert "TensorRT 10.3.0" in msg and "compute capability 8.7" in msg and "rebuild" in msg and "\n" not in msg
    r.check_compatible("10.3.0.26", "8.7", "Orin")  # same version and architecture: fine
    # the export was copied to another GPU and its trtexec.sh rebuilt model.plan there: the recorded
    # version and GPU describe the old engine (sha256 differs), so they no longer refuse it
    from segclip.contract import sha256_file

    r.entry = {**entry, "sha256": sha256_file(d / "model.plan")}
    assert not r.rebuilt()
    with pytest.raises(SegclipError, match="engine built for"):
        r.check_compatible("10.8.0", "9.0", "NVIDIA H100")
    (d / "model.plan").write_bytes(b"rebuilt by trtexec.sh on the H100")
    assert r.rebuilt()
    r.check_compatible("10.8.0", "9.0", "NVIDIA H100")
    # here: no tensorrt / no GPU / another GPU than the Orin it was "built" for -> one line, no crash
    with pytest.raises(SegclipError, match="tensorrt Python package is not installed|need an NVIDIA GPU|engine built for") as e:
        r.infer(images(1))
    assert "\n" not in str(e.value)
    with pytest.raises(SegclipError, match="maximum batch 2"):
        r.infer(images(3))
    with pytest.raises(SegclipError, match="runs on an NVIDIA GPU, not on 'cpu'.*--format onnx") as e:
        load_runner(d / "model.plan", device="cpu")  # e.g. predict --format tensorrt --device cpu
    assert "\n" not in str(e.value)


def test_any_activation_failure_is_one_line(export_dir):
    """A runtime that fails to load with its own exception type (not a SegclipError) still gives one
    line naming the runner, never a traceback."""
    out, _ = export_dir
    r = load_runner(out / "model.onnx", providers="cpu")

    def broken():
        raise RuntimeError("CUDA driver version is insufficient\nfor CUDA runtime version")

    r._activate = broken
    with pytest.raises(SegclipError, match="onnx.*could not load .*model.onnx: .*CUDA driver") as e:
        r.infer(images(1))
    assert "\n" not in str(e.value) and not r.is_active


def test_triton_urls_dispatch_to_triton_runner():
    with pytest.raises(SegclipError, match=r"cannot reach Triton at 127\.0\.0\.1:1"):
        load_runner("grpc://127.0.0.1:1/segclip_onnx", timeout=1)
