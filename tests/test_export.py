"""Export: ONNX FP32/FP16 on CPU with real ONNX Runtime, parity gate, manifest, CLI errors."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from export_fixtures import FP16_AGREEMENT, SIZE, assert_one_error, images

import onnx

from segclip.signature import Signature

REPO = Path(__file__).resolve().parents[1]


def _cli(*args):
    from segclip.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _elem(vi):
    return vi.type.tensor_type.elem_type


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


# ---- the FP32 export ---------------------------------------------------------------------------
def test_fp32_export_passes_gate_with_uint8_io(export_dir):
    out, manifest = export_dir
    assert manifest["status"] == "ok"
    a = manifest["artifacts"]["onnx"]
    assert a["status"] == "ok" and a["precision"] == "fp32"
    assert a["tensorrt_check"] == "ok" and manifest["artifacts"]["onnx_fp16"]["tensorrt_check"] == "ok"
    p = a["parity"]
    assert p["pixel_agreement"] >= 0.999 and p["threshold"] == 0.999
    assert p["max_abs_diff"] < 1e-3  # scores measured through the scores-enabled twin
    assert manifest["parity"]["images"] == 4 and "torch" in manifest["parity"]["table"]
    m = onnx.load(str(out / "model.onnx"))
    (inp,) = m.graph.input
    assert inp.name == "image" and _elem(inp) == onnx.TensorProto.UINT8
    assert _dims(inp)[1:] == [SIZE, SIZE, 3] and isinstance(_dims(inp)[0], str)  # dynamic batch, fixed size
    assert [o.name for o in m.graph.output] == ["mask"]  # no scores unless --scores
    assert _elem(m.graph.output[0]) == onnx.TensorProto.UINT8
    assert sorted(os.listdir(out)) == ["manifest.json", "model.onnx", "model_fp16.onnx"]


def test_onnx_is_checked_standard_and_opset17(export_dir):
    out, _ = export_dir
    for name in ("model.onnx", "model_fp16.onnx"):
        m = onnx.load(str(out / name))
        onnx.checker.check_model(m, full_check=True)
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
        assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}
        assert all(o.domain in ("", "ai.onnx") for o in m.opset_import)
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
        # TensorRT converts uint8 only to/from float: the image is cast first, the mask comes from a float cast
        (first,) = [n for n in m.graph.node if "image" in n.input]
        assert first.op_type == "Cast"
        prod = {o: n for n in m.graph.node for o in n.output}
        last = prod["mask"]
        assert last.op_type == "Cast" and prod[last.input[0]].op_type == "Cast"


def test_metadata_round_trips_and_hashes(export_dir):
    from segclip.contract import manifest_signature, read_manifest
    from segclip.export.onnx_export import graph_sha256
    from segclip.runtime.onnx_runner import signature_from_onnx

    out, manifest = export_dir
    assert read_manifest(out) == json.loads((out / "manifest.json").read_text())
    sig_manifest = manifest_signature(manifest)
    for key, fname in (("onnx", "model.onnx"), ("onnx_fp16", "model_fp16.onnx")):
        sig_onnx = signature_from_onnx(out / fname)
        assert sig_onnx == sig_manifest
        assert sig_onnx.to_dict() == Signature.from_json(sig_manifest.to_json()).to_dict()
        m = onnx.load(str(out / fname))
        meta = {p.key: p.value for p in m.metadata_props}
        assert json.loads(meta["segclip.classes"]) == list(sig_manifest.classes)
        assert meta["segclip.input_size"] == f"{SIZE}x{SIZE}"
        assert meta["segclip.graph_sha256"] == graph_sha256(m) == manifest["artifacts"][key]["graph_sha256"]
        assert hashlib.sha256((out / fname).read_bytes()).hexdigest() == manifest["artifacts"][key]["sha256"]
        assert json.loads(meta["segclip.normalization"])["mean"] == list(sig_manifest.pixel_mean)
    assert sig_manifest.height == sig_manifest.width == SIZE and sig_manifest.max_batch == 4
    assert manifest["input"]["batch"] == {"min": 1, "opt": 2, "max": 4}


def test_dynamic_batch_1_and_3_match_torch(export_dir, trained_checkpoint):
    from segclip.runtime import load_runner

    out, _ = export_dir
    x = images(3)
    with load_runner(out / "model.onnx", providers="cpu") as r, load_runner(trained_checkpoint) as ref:
        want = ref.infer(x)["mask"]
        one = r.infer(x[:1])["mask"]
        three = r.infer(x)["mask"]
    assert one.shape == (1, SIZE, SIZE) and three.shape == (3, SIZE, SIZE) and three.dtype == np.uint8
    assert np.array_equal(one[0], three[0])
    assert (three == want).mean() >= 0.999


def test_gate_slides_the_artifacts_windows_over_larger_images(export_dir, trained_checkpoint):
    """Parity images larger than the export (and of mixed sizes) take the one sliding-window path for
    every runner: PyTorch, which takes any size, slides the artifact's 64 px windows too, so the FP32
    ONNX graph agrees with it; mIoU is a fraction."""
    from conftest import rendered_scenes
    from segclip.inference.compare import compare, run_all
    from segclip.runtime import load_runner

    imgs, labs = rendered_scenes(2, 2 * SIZE, 11)
    images, labels = [imgs[0], imgs[1][:100, :90]], [labs[0], labs[1][:100, :90]]
    ref, cand = load_runner(trained_checkpoint, scores=False), load_runner(export_dir[0], format="onnx")
    res = compare(ref, [cand], images, labels)
    row = res["rows"][0]
    assert res["images"] == 2 and res["image_size"] is None and res["labels"]
    assert row["pixel_agreement"] >= 0.999, row
    assert 0 < res["reference"]["miou"] <= 1 and abs(row["miou_delta"]) <= 0.005, (res["reference"], row)
    with ref, cand:
        maps = run_all(cand, images)["mask"]
        assert [m.shape for m in maps] == [(2 * SIZE, 2 * SIZE), (100, 90)]
        # pixels only the first window covers (the next starts 43 px in) carry that window's own prediction
        first = cand.infer(np.ascontiguousarray(images[0][None, :SIZE, :SIZE]))["mask"][0]
        assert np.array_equal(maps[0][:43, :43], first[:43, :43])
        # and the windows matter: PyTorch on the whole image decides many pixels otherwise
        whole = ref.infer(images[0][None])["mask"][0]
        assert (whole != maps[0]).mean() > 0.01


def test_text_side_is_baked_no_clip_weights(export_dir, trained_checkpoint):
    from segclip.checkpoint import load_checkpoint, model_from_checkpoint
    from segclip.modeling import SegCLIPInference

    out, _ = export_dir
    ckpt = load_checkpoint(trained_checkpoint)
    k, width = ckpt["text_embeddings"].shape
    m = onnx.load(str(out / "model.onnx"))
    shapes = [tuple(t.dims) for t in m.graph.initializer]
    assert (k, width) not in shapes  # the cached CLIP text embeddings are not in the graph
    assert not any(49408 in s or 77 in s for s in shapes)  # no CLIP vocabulary / context tables
    total = sum(int(np.prod(s)) for s in shapes)
    image_path = sum(p.numel() for p in SegCLIPInference(model_from_checkpoint(ckpt)).parameters())
    assert 0.9 * image_path <= total <= 1.05 * image_path, (total, image_path)


def test_runtime_and_export_never_import_open_clip(tmp_path, trained_checkpoint):
    code = f"""
import sys
import numpy as np
import segclip.runtime, segclip.export
from segclip.runtime import load_runner
m = segclip.export.export({str(trained_checkpoint)!r}, {str(tmp_path / 'e')!r}, parity_images=1, log=lambda *a: None)
x = np.zeros((1, {SIZE}, {SIZE}, 3), np.uint8)
for src in ({str(tmp_path / 'e')!r}, {str(tmp_path / 'e' / 'model.onnx')!r}, {str(trained_checkpoint)!r}):
    with load_runner(src) as r:
        r.infer(x)
print("OPEN_CLIP_LOADED" if any(k == "open_clip" or k.startswith("open_clip.") for k in sys.modules) else "CLEAN")
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "CLEAN"


# ---- FP16 ----------------------------------------------------------------------------------------
def test_fp16_runs_on_ort_cpu_and_passes_gate(export_dir, trained_checkpoint):
    from segclip.runtime import load_runner

    out, manifest = export_dir
    a = manifest["artifacts"]["onnx_fp16"]
    assert a["status"] == "ok" and a["precision"] == "fp16"
    assert a["parity"]["pixel_agreement"] >= FP16_AGREEMENT and a["parity"]["threshold"] == FP16_AGREEMENT
    p, p32 = a["parity"], manifest["artifacts"]["onnx"]["parity"]
    # FP16 scores differ from PyTorch's, but by FP16 rounding only: well above the FP32 graph's
    # differences (so this really is the FP16 graph) and below a wrong-class margin: the parity fixture's
    # median top-1/top-2 score margin is ~0.17; its fragile random body puts FP16's worst pixel at ~0.06
    assert 0 < p["mean_abs_diff"] < 0.01 and p["mean_abs_diff"] <= p["max_abs_diff"] < 0.1, p
    assert p["max_abs_diff"] > 10 * p32["max_abs_diff"], (p, p32)
    assert (out / "model_fp16.onnx").stat().st_size < 0.6 * (out / "model.onnx").stat().st_size
    x = images(4)
    with load_runner(out, format="onnx_fp16", providers="cpu") as r, load_runner(trained_checkpoint) as ref:
        got = r.infer(x)
        want = ref.infer(x)["mask"]
    assert got["mask"].dtype == np.uint8 and (got["mask"] == want).mean() >= FP16_AGREEMENT


def test_fp16_keeps_listed_ops_fp32_and_io_types(export_dir):
    from segclip.export.fp16 import FP32_OP_TYPES

    out, manifest = export_dir
    m = onnx.shape_inference.infer_shapes(onnx.load(str(out / "model_fp16.onnx")))
    types = {vi.name: _elem(vi) for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    seen = collections.Counter()
    for n in m.graph.node:
        if n.op_type in FP32_OP_TYPES:
            seen[n.op_type] += 1
            float_in = [types[i] for i in n.input if i and types.get(i) in (F32, F16)]
            assert float_in and all(t == F32 for t in float_in), (n.name, float_in)
            if n.op_type != "ArgMax":
                assert all(types.get(o) == F32 for o in n.output), n.name
    assert {"LayerNormalization", "Softmax", "InstanceNormalization", "ArgMax"} <= set(seen)
    # most of the network is FP16; I/O unchanged
    elems = collections.Counter()
    for t in m.graph.initializer:
        elems[t.data_type] += int(np.prod(t.dims))
    assert elems[F16] > 50 * max(1, elems[F32])  # FP32 keeps only norm scales/biases
    assert _elem(m.graph.input[0]) == onnx.TensorProto.UINT8
    assert _elem(m.graph.output[0]) == onnx.TensorProto.UINT8
    report = manifest["artifacts"]["onnx_fp16"]["fp16"]
    kept = {d["op_type"] for d in report["fp32_nodes"]}
    assert {"LayerNormalization", "Softmax"} <= kept and all(d["reason"] for d in report["fp32_nodes"])
    assert report["overflow_limit"] == 3e4 and report["calibration_images"] == 4


def test_fp16_range_pass_keeps_overflowing_nodes_fp32():
    """A node whose measured activation exceeds the FP16-safe range is kept FP32 with its consumers."""
    from onnx import TensorProto, helper

    from segclip.export.fp16 import activation_ranges, choose_fp32_nodes, convert_fp16

    g = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["f"], name="cast", to=TensorProto.FLOAT),
         helper.make_node("Mul", ["f", "big"], ["y"], name="mul_big"),
         helper.make_node("Div", ["y", "big"], ["z"], name="div_back"),
         helper.make_node("ReduceSum", ["z"], ["s"], name="sum", keepdims=0)],
        "t", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 4, 4, 3])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor("big", TensorProto.FLOAT, [], [1000.0])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.full((2, 4, 4, 3), 200, np.uint8)
    ranges = activation_ranges(model, x)
    assert ranges["y"]["max_abs"] == pytest.approx(200000.0)
    keep, ops, over, _ = choose_fp32_nodes(model, ranges)
    assert {"mul_big", "div_back"} <= set(keep) and over[0]["tensor"] == "y"
    h = convert_fp16(model, keep, ops)
    onnx.checker.check_model(h, full_check=True)
    import onnxruntime as ort

    got = ort.InferenceSession(h.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x[:1]})[0]
    assert np.isfinite(got) and got == pytest.approx(200.0 * 48, rel=1e-3)


# ---- gates, errors, CLI ----------------------------------------------------------------------------
def test_failing_gate_exits_1_and_marks_manifest(tmp_path, trained_checkpoint):
    """(Also the --scores export: FP32 scores from both the FP32 and the FP16 graph.)"""
    out = tmp_path / "gated"
    res = _cli("export", trained_checkpoint, "--out", out, "--parity-images", 1, "--fp32-threshold", 1.01, "--scores", "--fp16")
    assert_one_error(res, 1, "parity gate failed")
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed" and m["artifacts"]["onnx"]["status"] == "failed"
    assert m["artifacts"]["onnx_fp16"]["status"] == "ok"  # only the gate that was missed fails
    assert (out / "model.onnx").is_file()  # kept
    from segclip.errors import SegclipError
    from segclip.runtime import load_runner

    with pytest.raises(SegclipError, match="failed its parity gate"):
        load_runner(out)
    for fname in ("model.onnx", "model_fp16.onnx"):
        g = onnx.load(str(out / fname)).graph
        assert [(o.name, _elem(o)) for o in g.output] == [("mask", onnx.TensorProto.UINT8), ("scores", onnx.TensorProto.FLOAT)]
    with load_runner(out, allow_failed=True) as r:
        res = r.infer(images(2))
    assert r.signature.scores and res["scores"].shape == (2, 7, SIZE, SIZE) and res["scores"].dtype == np.float32
    assert np.array_equal(res["scores"].argmax(1), res["mask"])


def test_force_never_replaces_a_directory_that_is_not_an_export(trained_checkpoint):
    before = sorted(p.name for p in trained_checkpoint.parent.iterdir())
    res = _cli("export", trained_checkpoint, "--out", trained_checkpoint.parent, "--force")
    assert_one_error(res, 2, "not a segclip export")
    assert sorted(p.name for p in trained_checkpoint.parent.iterdir()) == before


def test_existing_export_refused_with_clear_error(export_dir, trained_checkpoint):
    out, _ = export_dir
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.iterdir()}
    res = _cli("export", trained_checkpoint, "--out", out, "--fp16")
    assert_one_error(res, 2, "already holds an export", "--force")
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_failed_force_rebuild_keeps_the_previous_export(tmp_path, export_dir, trained_checkpoint):
    """--force rebuilds into a staging folder: a rebuild that fails after writing model.onnx (its parity
    data has a corrupt image) leaves the previous export byte for byte and no staging folder."""
    import shutil

    from PIL import Image

    out, _ = export_dir
    old = tmp_path / "exp"
    shutil.copytree(out, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    root = tmp_path / "LoveDA"
    for dom in ("Urban", "Rural"):
        (root / "Val" / dom / "images_png").mkdir(parents=True)
        (root / "Val" / dom / "masks_png").mkdir(parents=True)
        Image.fromarray(images(1)[0]).save(root / "Val" / dom / "images_png" / "1.png")
        Image.fromarray(np.ones((SIZE, SIZE), np.uint8)).save(root / "Val" / dom / "masks_png" / "1.png")
    (root / "Val" / "Urban" / "images_png" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    res = _cli("export", trained_checkpoint, "--out", old, "--force", "--fp16", "--parity-images", 2, "--data", f"loveda:{root}:val")
    assert_one_error(res, 2, "images_png/1.png")
    assert "onnx: wrote model.onnx" in res.output  # it failed mid-rebuild, not before starting
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LoveDA", "exp"]


def _run_trtexec_script(out, tmp_path):
    """``sh OUT/trtexec.sh`` with $TRTEXEC set to a stand-in that records its arguments (trtexec.args)
    and writes --saveEngine's file, as trtexec does after a build."""
    fake = tmp_path / "fake-trtexec"
    fake.write_text('#!/bin/sh\necho "$@" > trtexec.args\n'
                    'for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";; esac; done\n')
    fake.chmod(0o755)
    return subprocess.run(["sh", str(out / "trtexec.sh")], env=dict(os.environ, TRTEXEC=str(fake)), capture_output=True,
                          text=True)


def test_trt_without_gpu_notes_the_target_build_and_require_engine_exits_2(tmp_path, trained_checkpoint):
    from segclip.contract import tensorrt_unavailable_reason as trt_unavailable_reason

    if trt_unavailable_reason() is None:
        pytest.skip("a GPU with tensorrt is present: --trt builds an engine here (see test_runtime_gpu)")
    out = tmp_path / "trt"
    res = _cli("export", trained_checkpoint, "--out", out, "--trt", "--parity-images", 1, "--batch", "1:2:4")
    # export here, build on the target: exit 0 and one note (it was 'error:' and exit 2)
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.output.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "trtexec.sh" in notes[0] and "not_built" in notes[0], res.output
    assert "error" not in res.output.lower()
    assert json.loads((out / "manifest.json").read_text())["artifacts"]["tensorrt"]["status"] == "not_built"
    res = _cli("export", trained_checkpoint, "--out", tmp_path / "req", "--trt", "--require-engine", "--parity-images", 1)
    assert_one_error(res, 2, "--require-engine", "trtexec.sh")
    script = (out / "trtexec.sh").read_text()
    # --msda auto: the engine takes the plugin graph; ONNX=model.onnx builds the GridSample one (test_msda_plugin)
    for part in ("trtexec", '"--onnx=${ONNX:-model_plugin.onnx}"', "--saveEngine=model.plan", "--stronglyTyped", "--noTF32",
                 f"--minShapes=image:1x{SIZE}x{SIZE}x3", f"--optShapes=image:2x{SIZE}x{SIZE}x3",
                 f"--maxShapes=image:4x{SIZE}x{SIZE}x3", "--timingCacheFile=timing.cache", "--skipInference"):
        assert part in script, part
    assert os.access(out / "trtexec.sh", os.X_OK)
    assert not (out / "model.plan").exists()  # never a fake engine
    # the script runs the trtexec of $TRTEXEC, else PATH's, else JetPack's /usr/src/tensorrt/bin/trtexec
    r = _run_trtexec_script(out, tmp_path)
    assert r.returncode == 0, r.stderr
    args = (out / "trtexec.args").read_text().split()
    assert args[:3] == ["--onnx=model_plugin.onnx", "--saveEngine=model.plan", "--stronglyTyped"], args
    (out / "trtexec.args").unlink()
    r = subprocess.run(["sh", str(out / "trtexec.sh")], env=dict(os.environ, PATH="/usr/bin:/bin"), capture_output=True, text=True)
    assert r.returncode != 0 and "/usr/src/tensorrt/bin/trtexec" in r.stderr, r.stderr


def test_engine_built_by_trtexec_script_is_used_from_the_export(tmp_path, trained_checkpoint):
    """After `sh trtexec.sh` on the target, the export directory serves the engine it wrote: load_runner,
    predict and triton-repo find it (the manifest said where it goes), with the profile of the export."""
    from segclip.contract import artifact_problem, read_manifest
    from segclip.errors import SegclipError
    from segclip.runtime import load_runner
    from segclip.runtime.tensorrt_runner import TensorRTRunner

    from segclip.contract import tensorrt_unavailable_reason

    if tensorrt_unavailable_reason() is None:
        pytest.skip("a GPU with tensorrt is present: --trt builds the engine itself")
    out = tmp_path / "trt"
    res = _cli("export", trained_checkpoint, "--out", out, "--trt", "--fp16", "--parity-images", 1, "--batch", "1:2:4")
    assert res.exit_code == 0, res.output
    assert "not_built" in artifact_problem(read_manifest(out), "tensorrt", out)
    _run_trtexec_script(out, tmp_path).check_returncode()
    assert artifact_problem(read_manifest(out), "tensorrt", out) is None
    r = load_runner(out, format="tensorrt")
    assert isinstance(r, TensorRTRunner) and r.path == out / "model.plan"
    assert r.precision == "fp16" and r.max_batch == 4 and r.min_batch == 1
    with pytest.raises(SegclipError) as e:  # no TensorRT / GPU here: one line, not a traceback
        r.infer(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    assert "\n" not in str(e.value)
    m = json.loads((out / "manifest.json").read_text())
    assert m["artifacts"]["tensorrt"]["status"] == "not_built" and m["artifacts"]["onnx"]["status"] == "ok"


def test_dynamic_size_export_runs_at_other_sizes(tmp_path, trained_checkpoint):
    """--dynamic-size gives a graph with symbolic H and W that matches PyTorch at sizes it was not traced at."""
    from segclip.runtime import load_runner

    res = _cli("export", trained_checkpoint, "--out", tmp_path / "dyn", "--dynamic-size", "--parity-images", 1)
    assert res.exit_code == 0, res.output
    r = load_runner(tmp_path / "dyn" / "model.onnx")
    ref = load_runner(trained_checkpoint)
    assert r.signature.height is None and r.signature.width is None
    for n, h, w in ((1, 96, 96), (2, 64, 160)):
        x = np.random.default_rng(h).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        got, want = r.infer(x)["mask"], ref.infer(x)["mask"]
        assert got.shape == (n, h, w)
        assert (got == want).mean() >= 0.999


@pytest.mark.parametrize("args,needle", [
    (["--batch", "4:2:8"], "--batch"),
    (["--batch", "x"], "--batch"),
    (["--size", "100x100"], "multiples of 32"),
    (["--opset", "13"], "opset"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, trained_checkpoint, args, needle):
    res = _cli("export", trained_checkpoint, "--out", tmp_path / "bad", *args)
    assert_one_error(res, 2, needle)
    assert not (tmp_path / "bad").exists()


def test_predict_cli_direct_tiled_and_corrupt(tmp_path, export_dir):
    from PIL import Image

    out, manifest = export_dir
    small = images(1)[0]
    big = np.concatenate([images(1, seed=4)[0]] * 2, axis=1)[:50]  # 50 x 128: smaller and larger than 64 (PNG: lossless, so the reference reads the same pixels)
    Image.fromarray(small).save(tmp_path / "a.png")
    Image.fromarray(big).save(tmp_path / "b.png")
    res = _cli("predict", "--model", out, tmp_path / "a.png", tmp_path / "b.png", "--out", tmp_path / "pred", "--overlay",
               "--overlap", 0.25)
    assert res.exit_code == 0, res.output
    ma = Image.open(tmp_path / "pred" / "a_mask.png")
    mb = Image.open(tmp_path / "pred" / "b_mask.png")
    assert ma.mode == "P" and ma.size == (SIZE, SIZE) and mb.size == (128, 50)
    pal = np.array(ma.getpalette()[:21]).reshape(7, 3)
    assert [tuple(c) for c in pal] == [tuple(c) for c in manifest["palette"]]
    ov = np.asarray(Image.open(tmp_path / "pred" / "b_overlay.png").convert("RGB"))
    assert ov.shape[0] >= 50 and ov.shape[1] > 128  # the overlay and its legend
    for c in np.unique(np.asarray(mb)):
        assert np.all(ov[:, 128:] == manifest["palette"][c], axis=-1).sum() >= 25, c
    assert (tmp_path / "pred" / "legend.png").is_file()
    ids, counts = np.unique(np.asarray(ma), return_counts=True)  # every class present, largest share first
    order = np.argsort(-counts, kind="stable")
    want = ", ".join(f"{manifest['classes'][ids[i]]} {100 * counts[i] / counts.sum():.1f}%" for i in order)
    assert f"({want})" in next(ln for ln in res.output.splitlines() if ln.startswith("a.png"))
    # same classes as the runner gives directly
    from segclip.runtime import load_runner

    with load_runner(out) as r:
        assert np.array_equal(np.asarray(ma), r.infer(small[None])["mask"][0])
        # the tiled image, by content: 50 x 128 through 64 px windows at overlap 0.25 (columns start at
        # 0, 48 and 64; the 50 rows mirror-padded to 64): a pixel that one window alone covers has
        # that window's prediction
        b = np.asarray(Image.open(tmp_path / "b.png").convert("RGB"))
        padded = np.pad(b, ((0, SIZE - 50), (0, 0), (0, 0)), mode="symmetric")
        first = r.infer(padded[None, :, :SIZE])["mask"][0, :50]
        last = r.infer(padded[None, :, 128 - SIZE:])["mask"][0, :50]
    mbn = np.asarray(mb)
    np.testing.assert_array_equal(mbn[:, :48], first[:, :48])
    np.testing.assert_array_equal(mbn[:, 112:], last[:, 48:])
    assert len(np.unique(mbn)) >= 2
    # --label-ids dataset: LoveDA mask-file ids (class + 1, 0 = no-data), colours still the class colours
    assert tuple(manifest["classes"]) == ("background", "building", "road", "water", "barren", "forest", "agriculture")
    res = _cli("predict", "--model", out, tmp_path / "a.png", "--out", tmp_path / "ids", "--label-ids", "dataset")
    assert res.exit_code == 0, res.output
    ids = Image.open(tmp_path / "ids" / "a_mask.png")
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(ma).astype(np.int16) + 1)
    pal = np.array(ids.getpalette()[3:24]).reshape(7, 3)
    assert [tuple(c) for c in pal] == [tuple(c) for c in manifest["palette"]]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    res = _cli("predict", "--model", out, tmp_path / "bad.png", "--out", tmp_path / "pred")
    assert_one_error(res, 2, "bad.png")


def test_eval_on_deployed_artifacts_matches_its_checkpoint(tmp_path, trained_checkpoint):
    """`segclip eval` scores a checkpoint, an export directory and a bare .onnx the same way: on the
    parity fixture, the exported model's mIoU is the checkpoint's within the parity gate."""
    from PIL import Image

    from conftest import PARITY_MAX, PARITY_SIZE, rendered_scenes
    from segclip.export import export

    out = tmp_path / "export"
    export(trained_checkpoint, out=out, size=PARITY_SIZE, batch=(1, 2, 4), parity_images=2, log=lambda *a: None)
    # a labelled LoveDA-format split of the fixture's images (file ids = class + 1, 0 = no-data)
    imgs, labs = rendered_scenes(PARITY_MAX, 2 * PARITY_SIZE, 11)
    crop = np.s_[:, 20:20 + PARITY_SIZE, 30:30 + PARITY_SIZE]
    root = tmp_path / "loveda"
    for sub in ("images_png", "masks_png"):
        (root / "Val" / "Urban" / sub).mkdir(parents=True)
    for i, (im, lb) in enumerate(zip(imgs[crop], labs[crop])):
        Image.fromarray(im).save(root / "Val" / "Urban" / "images_png" / f"{i}.png")
        Image.fromarray(np.where(lb == 255, 0, lb + 1).astype(np.uint8), "L").save(root / "Val" / "Urban" / "masks_png" / f"{i}.png")
    data = f"loveda:{root}:val"
    got = {}
    for key, model in (("ckpt", trained_checkpoint), ("export", out), ("onnx", out / "model.onnx")):
        res = _cli("eval", model, "--data", data, "--device", "cpu", "--out", tmp_path / f"{key}.json")
        assert res.exit_code == 0, res.output
        got[key] = json.loads((tmp_path / f"{key}.json").read_text())
        assert got[key]["images"] == PARITY_MAX and got[key]["window"] == [PARITY_SIZE, PARITY_SIZE]
    assert got["ckpt"]["backend"] == "torch" and got["onnx"]["backend"] == "onnxruntime"
    assert sum(v is not None for v in got["ckpt"]["per_class_iou"].values()) >= 3  # a real score, not one class
    for key in ("export", "onnx"):
        assert abs(got[key]["miou"] - got["ckpt"]["miou"]) <= 0.005, (key, got[key]["miou"], got["ckpt"]["miou"])
    # the default JSON goes inside the export folder, one name per artifact (the folder or its file alike)
    for model in (out, out / "model.onnx"):
        res = _cli("eval", model, "--data", data, "--limit", 1, "--format", "onnx")
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in out.glob("*eval*")) == ["eval_val_first1.model.onnx.json"]  # --limit: spot-check name
    assert not list(out.parent.glob("*eval*"))
    assert_one_error(_cli("eval", out, "--data", data, "--size", "128x128"), 2, "--size 128x128",
                     f"{PARITY_SIZE}x{PARITY_SIZE}")
