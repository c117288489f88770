"""TensorRT on a real NVIDIA GPU: strongly typed engine from the FP16 ONNX, runner, parity vs PyTorch.

Skipped with the reason ("no NVIDIA GPU" / "tensorrt not installed") elsewhere.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from test_export_helpers import SIZE, images

pytest_plugins = ["test_export_helpers"]  # one session-wide trained checkpoint and export for all modules


def _gpu_skip_reason():
    try:
        import torch

        if not torch.cuda.is_available():
            return "no NVIDIA GPU"
    except Exception:
        return "no NVIDIA GPU"
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt not installed"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_gpu_skip_reason() is not None, reason=_gpu_skip_reason() or "")]


@pytest.fixture(scope="module")
def trt_export(trained_ckpt, tmp_path_factory):
    from segclip.export import export

    out = tmp_path_factory.mktemp("trt") / "export"
    manifest = export(trained_ckpt, out, fp16=True, trt=True, batch=(1, 2, 4), parity_images=4, log=lambda *a: None)
    return out, manifest


def test_engine_from_fp16_onnx_passes_gate(trt_export):
    import tensorrt as trt
    import torch

    out, m = trt_export
    a = m["artifacts"]["tensorrt"]
    assert a["status"] == "ok" and a["onnx"] == "model_fp16.onnx" and a["precision"] == "fp16"
    assert a["strongly_typed"] is True and a["tensorrt_version"] == trt.__version__
    cc = torch.cuda.get_device_capability(0)
    assert a["compute_capability"] == f"{cc[0]}.{cc[1]}"
    assert a["profile"]["max"] == [4, SIZE, SIZE, 3]
    assert a["parity"]["pixel_agreement"] >= 0.995
    assert (out / "model.plan").is_file() and (out / "timing.cache").is_file() and (out / "trtexec.sh").is_file()


def test_tensorrt_runner_matches_torch_and_enforces_profile(trt_export, trained_ckpt):
    from segclip.errors import SegclipError
    from segclip.runtime import load_runner

    out, _ = trt_export
    x = images(4, seed=8)
    with load_runner(out, format="tensorrt") as r, load_runner(trained_ckpt) as ref:
        assert r.backend == "tensorrt" and r.max_batch == 4
        got1 = r.infer(x[:1])["mask"]
        got = r.infer(x)["mask"]
        want = ref.infer(x)["mask"]
        assert got.dtype == np.uint8 and got.shape == (4, SIZE, SIZE)
        assert np.array_equal(got1[0], got[0]) or (got1[0] == got[0]).mean() > 0.999
        assert (got == want).mean() >= 0.995
        with pytest.raises(SegclipError, match="maximum batch 4"):
            r.infer(images(5))
        with pytest.raises(SegclipError, match="uint8"):
            r.infer(x.astype(np.float32))
        d = r.describe()
        assert d["backend"] == "tensorrt" and d["tensorrt_version"]


def test_engine_from_other_gpu_is_refused_with_rebuild_hint(trt_export, tmp_path):
    import shutil

    from segclip.errors import SegclipError
    from segclip.runtime import load_runner

    import copy

    out, m = trt_export
    m = copy.deepcopy(m)
    d = tmp_path / "copy"
    shutil.copytree(out, d)
    m["artifacts"]["tensorrt"]["compute_capability"] = "1.0"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SegclipError, match="rebuild"):
        load_runner(d, format="tensorrt").activate()


def test_timing_cache_is_reused_on_rebuild(trt_export, trained_ckpt):
    from segclip.export import export

    out, _ = trt_export
    m = export(trained_ckpt, out, fp16=True, trt=True, batch=(1, 2, 4), parity_images=1, force=True, log=lambda *a: None)
    assert m["artifacts"]["tensorrt"]["timing_cache_reused"] is True
