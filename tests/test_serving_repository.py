"""Generated Triton model repositories: configs parse with Triton's schema and match the ONNX graph,
overwrite rules, the TensorRT model, the triton-repo and serve-env CLI, the committed example configs,
the scene_id input of a metadata-prompt export.  Fixtures: serving_fixtures.py.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from segclip.errors import SegclipError
from serving_fixtures import MAX_BATCH, REPO_ROOT, SIZE, onnx_tensors, parse_config


def test_generated_configs_parse_and_match_onnx(repo, serving_export):
    from tritonclient.grpc import model_config_pb2 as mc

    from segclip.contract import read_manifest
    from segclip.signature import Signature, triton_config_type

    sig = Signature.from_dict(read_manifest(serving_export)["signature"])
    assert sorted(p.name for p in repo.iterdir()) == ["segclip_onnx", "segclip_python"]  # no engine: no segclip_trt
    for name, platform in (("segclip_onnx", "onnxruntime_onnx"), ("segclip_python", "")):
        cfg = parse_config(repo / name / "config.pbtxt")
        assert cfg.name == name and cfg.platform == platform
        assert cfg.backend == ("python" if name == "segclip_python" else "")
        assert cfg.max_batch_size == MAX_BATCH
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
        onnx_file = repo / name / "1" / "model.onnx"
        ins, outs = onnx_tensors(onnx_file)
        for tensors, onnx_t, specs in ((cfg.input, ins, sig.inputs), (cfg.output, outs, sig.outputs)):
            assert [t.name for t in tensors] == [s.name for s in specs] and sorted(onnx_t) == sorted(s.name for s in specs)
            for t, s in zip(tensors, specs):
                assert mc.DataType.Name(t.data_type) == triton_config_type(s.dtype)
                np_dtype, dims = onnx_t[t.name]
                assert np.dtype(np_dtype).name == s.dtype
                assert dims[0] is None  # dynamic batch
                assert len(t.dims) == len(dims) - 1
                assert all(o is None or o == c for c, o in zip(t.dims, dims[1:])), (t.name, list(t.dims), dims)
                assert list(t.dims) == list(s.shape[1:])
        (w,) = cfg.model_warmup
        assert w.batch_size == 1 and list(w.inputs["image"].dims) == [SIZE, SIZE, 3]
        assert w.inputs["image"].data_type == mc.TYPE_UINT8
        assert cfg.output[0].label_filename == "labels.txt"
        assert (repo / name / "labels.txt").read_text().split("\n")[:-1] == list(sig.classes)
        assert Signature.from_json(cfg.parameters["segclip_signature"].string_value).classes == sig.classes
    assert (repo / "segclip_python" / "1" / "model.py").is_file()


def test_repository_overwrite_needs_force_and_checks(serving_export, repo, tmp_path):
    from segclip.serving.repo import build_repository, check_repository

    d = tmp_path / "r"
    build_repository(serving_export, d, models=["segclip_python"], max_batch=2, instances=2)
    with pytest.raises(SegclipError, match="already has segclip_python; pass --force"):
        build_repository(serving_export, d, models=["segclip_python"])
    build_repository(serving_export, d, models=["segclip_python"], force=True, queue_delay_us=0)
    cfg = parse_config(d / "segclip_python" / "config.pbtxt")
    assert cfg.max_batch_size == MAX_BATCH and cfg.dynamic_batching.max_queue_delay_microseconds == 0
    assert not [p for p in tmp_path.rglob(".*partial*")], "temporary folders left behind"
    assert set(check_repository(repo)) == {"segclip_onnx", "segclip_python"}
    with pytest.raises(SegclipError, match="has no passing TensorRT engine"):
        build_repository(serving_export, tmp_path / "t", models=["segclip_trt"])


def test_tensorrt_model_from_engine_entry(serving_export, tmp_path):
    """segclip_trt from an export whose engine passed: platform, plan file, GPU instances."""
    from tritonclient.grpc import model_config_pb2 as mc

    from segclip.contract import read_manifest, write_manifest
    from segclip.serving.repo import build_repository, check_repository

    exp = tmp_path / "exp"
    shutil.copytree(serving_export, exp)
    m = read_manifest(exp)
    (exp / "model.plan").write_bytes(b"not a real engine")
    m["artifacts"]["tensorrt"] = {"file": "model.plan", "format": "tensorrt", "precision": "fp16", "status": "ok",
                                  "compute_capability": "8.9",
                                  "profile": {"min": [1, SIZE, SIZE, 3], "opt": [1, SIZE, SIZE, 3], "max": [MAX_BATCH, SIZE, SIZE, 3]}}
    write_manifest(exp, m)
    written = build_repository(exp, tmp_path / "repo", kind="cpu")
    assert set(written) == {"segclip_onnx", "segclip_trt", "segclip_python"}
    cfg = parse_config(tmp_path / "repo" / "segclip_trt" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert cfg.parameters["segclip_precision"].string_value == "fp16"
    assert (tmp_path / "repo" / "segclip_trt" / "1" / "model.plan").read_bytes() == b"not a real engine"
    with pytest.raises(SegclipError, match="exceeds the TensorRT profile"):
        build_repository(exp, tmp_path / "repo", models=["segclip_trt"], max_batch=MAX_BATCH * 2, force=True)

    check_repository(tmp_path / "repo", ["segclip_trt"])


def test_triton_repo_and_serve_env_cli(serving_export, tmp_path, server_env):
    from click.testing import CliRunner

    from segclip.cli import main

    out = tmp_path / "repo"
    args = ["triton-repo", str(serving_export), "--out", str(out), "--models", "segclip_python", "--max-batch", "2", "--instances", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    cfg = parse_config(out / "segclip_python" / "config.pbtxt")
    assert cfg.max_batch_size == 2 and cfg.instance_group[0].count == 2
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "pass --force" in res.stderr
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0
    res = CliRunner().invoke(main, ["triton-repo", str(tmp_path / "noexport"), "--out", str(out)])
    assert res.exit_code == 2 and "manifest.json" in res.stderr
    # an existing, usable env is reused (install scripts may run serve-env again)
    res = CliRunner().invoke(main, ["serve-env", "--path", str(server_env.path)])
    assert res.exit_code == 0 and "already there" in res.stderr and res.stdout.strip() == str(server_env.path)


def test_scene_configs_include_the_optional_input(scene_repo, repo):
    from segclip.serving.repo import check_repository

    cfgs = check_repository(scene_repo)
    for name, cfg in cfgs.items():
        sc = {t.name: t for t in cfg.input}["scene_id"]
        assert (list(sc.dims), list(sc.reshape.shape), sc.HasField("reshape")) == ([1], [], True)
        assert sc.optional == (name == "segclip_python")  # the python model fills the default itself
        assert cfg.parameters["segclip_scene_default"].string_value == "0"
        assert "scene_id" in cfg.model_warmup[0].inputs
    assert "scene_id" not in {t.name for t in parse_config(repo / "segclip_python" / "config.pbtxt").input}


def test_committed_example_configs_are_current_and_parse():
    """serving/triton_repo/examples holds what build_repository writes for the sample model (text only)."""
    from segclip.data import dataset_info
    from segclip.serving.repo import example_configs

    examples = REPO_ROOT / "serving" / "triton_repo" / "examples"
    want = example_configs()
    have = {str(p.relative_to(examples)): p.read_text() for p in examples.rglob("*") if p.is_file()}
    assert have == want, "regenerate: python -c \"from segclip.serving.repo import write_examples; write_examples('serving/triton_repo/examples')\""
    classes = list(dataset_info("sample")["classes"])
    for model in ("segclip_onnx", "segclip_trt", "segclip_python"):
        cfg = parse_config(examples / model / "config.pbtxt")
        assert cfg.name == model and cfg.max_batch_size == 8
        assert [(t.name, list(t.dims)) for t in cfg.input] == [("image", [512, 512, 3])]
        assert [(t.name, list(t.dims)) for t in cfg.output] == [("mask", [512, 512])]
        assert (examples / model / "labels.txt").read_text().split("\n")[:-1] == classes
