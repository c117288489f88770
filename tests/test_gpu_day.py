"""The GPU paths, checked where no GPU is: the gate of the public engine, INT8 + FP16 Q/DQ scales,
no silent CPU fallback of ONNX Runtime, non-finite losses under DDP, ``export --trt`` on a CPU box.

GPU parts are played by stand-ins written from their documentation (a runner that changes given
pixels of a real runner's masks stands in for a TensorRT engine whose build differs); ONNX Runtime
and gloo are the real ones.
"""
from __future__ import annotations

import numpy as np
import pytest

from export_fixtures import SIZE, images
from segclip.errors import SegclipError
from segclip.runtime.base import Runner


class Perturbed(Runner):
    """Stand-in for an engine: a real runner's outputs with the first ``pixels`` pixels of every mask
    moved to the next class (what a build with other kernels does to pixels near a class boundary)."""

    backend = "stand-in"

    def __init__(self, inner: Runner, pixels: int, name=None):
        super().__init__(inner.signature, name=name or inner.name, precision=inner.precision, artifact=inner.artifact)
        self.inner, self.pixels = inner, pixels

    def _activate(self):
        self.inner.activate()

    def _deactivate(self):
        self.inner.deactivate()

    def _infer(self, images, scene_ids=None):
        out = dict(self.inner.infer(images, scene_ids))
        m = np.array(out["mask"])
        flat = m.reshape(len(m), -1)
        flat[:, :self.pixels] = (flat[:, :self.pixels].astype(np.int64) + 1) % self.signature.num_classes
        out["mask"] = m
        return out


# ---- 1. the gate judges the engine the user gets -------------------------------------------------------
def test_public_engine_differing_from_its_twin_in_one_pixel_passes_and_a_worse_one_fails(export_dir):
    from segclip.export.exporter import judge_public, public_twin_agreement
    from segclip.export.parity_images import windows
    from segclip.runtime.onnx_runner import OnnxRunner

    out, _ = export_dir
    twin = OnnxRunner(out / "model.onnx", providers="cpu", name="tensorrt+scores")
    calls = windows(list(images(2)), SIZE, SIZE)
    one = public_twin_agreement(Perturbed(OnnxRunner(out / "model.onnx", providers="cpu"), 1), twin, calls, 2)
    assert one == pytest.approx(1 - 1 / (SIZE * SIZE))  # not bit-identical ...
    row = judge_public({"name": "tensorrt", "threshold": 0.999, "status": "ok"}, one)
    assert row["status"] == "ok" and row["public_twin_agreement"] < 1  # ... and accepted (np.array_equal refused it)
    worse = public_twin_agreement(Perturbed(OnnxRunner(out / "model.onnx", providers="cpu"), SIZE * SIZE // 20), twin, calls, 2)
    row = judge_public({"name": "tensorrt", "threshold": 0.999, "status": "ok"}, worse)
    assert row["status"] == "failed" and "twin" in row["note"] and "99.900%" in row["note"]


def test_gate_still_refuses_an_engine_below_its_threshold(export_dir, trained_checkpoint):
    from segclip.inference.compare import compare
    from segclip.runtime.onnx_runner import OnnxRunner
    from segclip.runtime.torch_runner import TorchRunner

    out, _ = export_dir
    ref = TorchRunner(trained_checkpoint, name="torch-fp32")
    good = OnnxRunner(out / "model.onnx", providers="cpu", name="good")
    bad = Perturbed(OnnxRunner(out / "model.onnx", providers="cpu"), SIZE * SIZE // 50, name="tensorrt")  # 2% of pixels
    res = compare(ref, [good, bad], images(2), thresholds={"good": 0.999, "tensorrt": 0.995})
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["good"]["status"] == "ok"
    assert rows["tensorrt"]["status"] == "failed" and rows["tensorrt"]["pixel_agreement"] < 0.995


# ---- 2. INT8 + FP16 for TensorRT: Q/DQ scales stay FP32 --------------------------------------------------
def _tiny_qdq_model():
    """image uint8 NHWC -> float -> NCHW -> Q/DQ -> Conv (per-channel DQ weights) -> Relu -> Q/DQ -> Conv ->
    scores: the Q/DQ placement of the exporter's symmetric INT8 graph, at 8 x 8."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    rng = np.random.default_rng(0)
    w1 = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w2 = rng.integers(-127, 128, (5, 4, 1, 1)).astype(np.int8)
    inits = [nh.from_array(w1, "w1_q"), nh.from_array(np.full(4, 0.002, np.float32), "w1_s"),
             nh.from_array(np.zeros(4, np.int8), "w1_z"), nh.from_array(w2, "w2_q"),
             nh.from_array(np.full(5, 0.004, np.float32), "w2_s"), nh.from_array(np.zeros(5, np.int8), "w2_z"),
             nh.from_array(np.array(2.0 / 127, np.float32), "a_s"), nh.from_array(np.array(0, np.int8), "a_z"),
             nh.from_array(np.array(0.05, np.float32), "b_s"), nh.from_array(np.array(0, np.int8), "b_z"),
             nh.from_array(np.full(4, 0.1, np.float32), "b1"), nh.from_array(np.float32(1 / 127.5), "k"),
             nh.from_array(np.float32(1.0), "one")]
    nodes = [
        h.make_node("Cast", ["image"], ["x"], to=T.FLOAT, name="cast"),
        h.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2], name="nchw"),
        h.make_node("Mul", ["xt", "k"], ["xs"], name="scale"),
        h.make_node("Sub", ["xs", "one"], ["xn"], name="center"),
        h.make_node("QuantizeLinear", ["xn", "a_s", "a_z"], ["xq"], name="q1"),
        h.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xd"], name="dq1"),
        h.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_z"], ["w1"], axis=0, name="dqw1"),
        h.make_node("Conv", ["xd", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        h.make_node("Relu", ["c1"], ["r1"], name="relu"),
        h.make_node("QuantizeLinear", ["r1", "b_s", "b_z"], ["rq"], name="q2"),
        h.make_node("DequantizeLinear", ["rq", "b_s", "b_z"], ["rd"], name="dq2"),
        h.make_node("DequantizeLinear", ["w2_q", "w2_s", "w2_z"], ["w2"], axis=0, name="dqw2"),
        h.make_node("Conv", ["rd", "w2"], ["scores"], name="conv2"),
    ]
    g = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("image", T.UINT8, ["N", 8, 8, 3])],
                     [h.make_tensor_value_info("scores", T.FLOAT, ["N", 5, 8, 8])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def test_int8_fp16_graph_keeps_fp32_qdq_scales_and_computes_what_the_qdq_graph_does():
    import onnx
    import onnxruntime as ort

    from segclip.export import int8 as q8
    from segclip.export.trt_check import check_model

    m = _tiny_qdq_model()
    x = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    m16, report = q8.with_fp16(m, x)
    assert q8.qdq_scale_types(m16) == {onnx.TensorProto.FLOAT}  # FP32 scales, every Q/DQ (the old code made them FP16)
    assert [o.version for o in m16.opset_import if o.domain in ("", "ai.onnx")] == [17]  # no opset-19 bump needed
    convs = {n.name for n in m16.graph.node if n.op_type == "Conv"}
    inits = {t.name: t.data_type for t in m16.graph.initializer}
    assert inits["b1"] == onnx.TensorProto.FLOAT16 and "conv1" in convs  # ... and the float parts are FP16
    for version in ("10", "11"):  # TensorRT's documented ONNX support (segclip trt-check)
        assert check_model(m16, version) == [], version
    run = lambda model: ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    (s32,), (s16,) = run(m), run(m16)
    # FP16 rounding in front of a QuantizeLinear may move a value by one quantization step, no more
    assert s16.dtype == np.float32 and np.abs(s16 - s32).max() < 0.05 * np.abs(s32).max()


# ---- 4. no silent CPU fallback of ONNX Runtime ------------------------------------------------------------
def test_session_asked_for_cuda_that_runs_on_cpu_is_a_one_line_error(export_dir):
    """This onnxruntime is a CPU build: asked for CUDA it creates the session anyway, on the CPU, with a
    warning only -- as onnxruntime-gpu does when cuDNN or libcudart fail to load."""
    import onnxruntime as ort

    from segclip.runtime.onnx_runner import OnnxRunner, check_providers

    out, _ = export_dir
    asked = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    so = ort.SessionOptions()
    so.log_severity_level = 3  # segclip's sessions: the fallback warning is not even printed
    sess = ort.InferenceSession(str(out / "model.onnx"), so, providers=asked)
    assert sess.get_providers() == ["CPUExecutionProvider"]  # the silent fallback this guards against
    with pytest.raises(SegclipError) as e:
        check_providers(sess, asked, out / "model.onnx")
    msg = str(e.value)
    assert "\n" not in msg and "CUDAExecutionProvider" in msg and "libcudnn.so.9" in msg and "providers='cpu'" in msg
    check_providers(sess, ["CPUExecutionProvider"], out / "model.onnx")  # CPU asked, CPU got: fine
    with pytest.raises(SegclipError) as e:  # the runner refuses before a session when the build lacks the provider
        OnnxRunner(out / "model.onnx", providers="tensorrt")
    assert "\n" not in str(e.value) and "TensorrtExecutionProvider" in str(e.value)


# ---- 3. a Triton repository that loads ---------------------------------------------------------------------
def _with_engine(serving_export, tmp_path, batch=(1, 1, 4), version="10.3.0.26"):
    """A copy of the export with a passing engine entry (a stand-in plan file: Triton is not run here)."""
    import shutil

    from segclip.contract import read_manifest, write_manifest
    from serving_fixtures import SIZE

    exp = tmp_path / "exp"
    shutil.copytree(serving_export, exp)
    m = read_manifest(exp)
    (exp / "model.plan").write_bytes(b"stand-in engine")
    m["input"]["batch"] = dict(zip(("min", "opt", "max"), batch))
    m["artifacts"]["tensorrt"] = {"file": "model.plan", "format": "tensorrt", "precision": "fp16", "status": "ok",
                                  "tensorrt_version": version, "compute_capability": "8.7",
                                  "profile": {k: [b, SIZE, SIZE, 3] for k, b in zip(("min", "opt", "max"), batch)}}
    write_manifest(exp, m)
    return exp


def test_triton_repo_refuses_an_engine_profile_that_does_not_start_at_batch_1(serving_export, tmp_path):
    from segclip.serving.repo import build_repository

    exp = _with_engine(serving_export, tmp_path, batch=(2, 4, 8))
    with pytest.raises(SegclipError) as e:
        build_repository(exp, tmp_path / "repo", max_batch=4)
    msg = str(e.value)
    assert "\n" not in msg and "2:4:8" in msg and "--batch 1:4:8" in msg
    assert not (tmp_path / "repo").exists()  # nothing written
    build_repository(exp, tmp_path / "repo", models=["segclip_onnx"], max_batch=4)  # the ONNX model is still served


def test_triton_repo_records_the_engine_tensorrt_and_refuses_another_containers(serving_export, tmp_path):
    import json

    from segclip.serving.repo import build_repository

    exp = _with_engine(serving_export, tmp_path, version="10.3.0.26")
    build_repository(exp, tmp_path / "repo", models=["segclip_trt"], triton_release="24.08")
    d = tmp_path / "repo" / "segclip_trt"
    rec = json.loads((d / "segclip_model.json").read_text())
    assert rec["tensorrt_version"] == "10.3.0.26" and rec["triton_releases"] == ["24.08"]
    assert "nvcr.io/nvidia/tritonserver:24.08-py3" in (d / "README.md").read_text()
    with pytest.raises(SegclipError) as e:  # a TensorRT 10.8 container
        build_repository(exp, tmp_path / "r2", models=["segclip_trt"], triton_release="25.01")
    assert "\n" not in str(e.value) and "10.3.0.26" in str(e.value) and "10.8.0" in str(e.value) and "24.08" in str(e.value)
    exp11 = _with_engine(serving_export, tmp_path / "b", version="11.0.0.5")
    with pytest.raises(SegclipError, match="another TensorRT major") as e:
        build_repository(exp11, tmp_path / "r3", models=["segclip_trt"], triton_release="24.08")
    assert "11.0.0.5" in str(e.value) and "10.3.0" in str(e.value)
    exp9 = _with_engine(serving_export, tmp_path / "c", version="9.2.0")
    with pytest.raises(SegclipError, match="TensorRT 9.2.0, segclip serves TensorRT 10 or 11"):
        build_repository(exp9, tmp_path / "r4", models=["segclip_trt"])


# ---- 5. DDP fails together ---------------------------------------------------------------------------------
def test_ddp_ranks_skip_an_isolated_nan_step_together_and_stop_together_on_a_run(tmp_path):
    """Two gloo processes (torchrun); rank 1's loss becomes NaN at step 1 (isolated) and from step 3 on.
    Before, rank 1 raised alone and rank 0 waited in its next all-reduce until the timeout."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from segclip.data.sample import generate_sample_dataset
    from segclip.engine.stability import MAX_NONFINITE_IN_A_ROW

    root = generate_sample_dataset(tmp_path / "data", seed=0, num_train=4, num_val=2, size=64)
    script = tmp_path / "ddp_nan.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import segclip.engine.trainer as T
        from segclip.errors import SegclipError

        class Diverging(torch.nn.Module):
            # stand-in for a loss that blows up on this rank at given steps (a bad batch, a diverged replica)
            def __init__(self, inner, trainer, steps):
                super().__init__()
                self.inner, self.trainer, self.steps = inner, trainer, steps
            def forward(self, *a, **k):
                out = self.inner(*a, **k)
                return {{n: v * float("nan") for n, v in out.items()}} if self.trainer.step in self.steps else out

        fit = T.Trainer.fit
        def patched(self):
            if self.rank == 1:
                self.criterion = Diverging(self.criterion, self, {{1}} | set(range(3, 100)))
            return fit(self)
        T.Trainer.fit = patched
        from segclip.cli.train_cmds import run_training
        try:
            run_training("sample", {str(root)!r}, "segclip-small", {str(tmp_path / 'run')!r}, max_steps=20,
                         batch_size=1, crop_size=64, backbone_weights="none", clip_checkpoint="none", device="cpu",
                         progress=False, checkpoint_every=100)
            result = "FINISHED"
        except SegclipError as e:
            result = "STOP " + str(e)
        # one file per rank (torchrun's RANK: a stopped run has torn its process group down): the two processes
        # share stdout, where their lines can interleave
        open({str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.txt", "w").write(result)
    """))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                             "--master_port", str(port), str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)  # a rank left waiting would block for the 30-minute gloo timeout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    stops = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert all(s.startswith("STOP ") for s in stops), stops  # both ranks stopped, neither finished nor hung
    msgs = {s[5:] for s in stops}
    assert len(msgs) == 1, stops  # the same message on both ranks
    msg = msgs.pop()
    last = 3 + MAX_NONFINITE_IN_A_ROW - 1
    assert f"{MAX_NONFINITE_IN_A_ROW} steps in a row (steps 3-{last}, last on rank 1" in msg, msg
    assert f"{MAX_NONFINITE_IN_A_ROW + 1} step(s) skipped" in msg, msg  # step 1 was skipped and counted too
    assert "step 1 skipped on every rank" in err and "step 2 skipped" not in err, err[-3000:]


# ---- 8. one acceptance command --------------------------------------------------------------------------
def test_doctor_gpu_without_a_gpu_gives_a_no_gpu_verdict_listing_what_it_would_run(tmp_path):
    import json

    from click.testing import CliRunner

    from segclip.benchmarks.gpu_acceptance import STEPS, no_gpu_reason
    from segclip.cli import main

    if no_gpu_reason() is None:
        pytest.skip("a GPU is visible: doctor --gpu runs for real (tests/test_runtime_gpu.py)")
    r = CliRunner().invoke(main, ["doctor", "--gpu", "--out", str(tmp_path / "acc")])
    assert r.exit_code == 1, r.output
    assert "verdict: no GPU" in r.output and "nothing was run" in r.output and "Traceback" not in r.output
    for step in STEPS:  # what it would run, every step named
        assert step in r.output, step
    v = json.loads((tmp_path / "acc" / "gpu_acceptance.json").read_text())
    assert v["verdict"] == "no GPU" and [s["step"] for s in v["would_run"]] == list(STEPS)
    assert "no GPU" in (tmp_path / "acc" / "gpu_acceptance.md").read_text()
    assert not (tmp_path / "acc" / "run").exists()  # nothing trained
    r = CliRunner().invoke(main, ["doctor"])
    assert r.exit_code == 0 and "doctor --gpu" in r.output
    r = CliRunner().invoke(main, ["doctor", "--gpu", "--out", str(tmp_path / "acc")])  # its own folder: run again
    assert r.exit_code == 1 and "verdict: no GPU" in r.output, r.output


def test_doctor_gpu_refuses_a_folder_it_did_not_make(tmp_path):
    """--out naming a user's non-empty folder: one error line, nothing written (it wrote its verdict,
    and on a GPU machine data, run and exports, into it)."""
    from click.testing import CliRunner

    from cli.support import error_line
    from segclip.cli import main

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine\n")
    r = CliRunner().invoke(main, ["doctor", "--gpu", "--out", str(tmp_path / "mine")])
    assert "not a segclip GPU acceptance folder" in error_line(r.output, 2, r.exit_code)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_fp16_engine_rows_are_bounded_on_scores_too():
    from segclip.export.exporter import FP16_SCORE_MEAN_BOUND, bound_fp16_scores

    row = lambda d, backend="tensorrt", precision="fp16": {"name": "tensorrt", "backend": backend, "precision": precision,
                                                           "mean_abs_diff": d, "status": "ok"}
    assert bound_fp16_scores(row(FP16_SCORE_MEAN_BOUND / 4))["status"] == "ok"
    r = bound_fp16_scores(row(FP16_SCORE_MEAN_BOUND * 3))  # masks may agree while the scores drift
    assert r["status"] == "failed" and "FP16 scores" in r["note"]
    assert bound_fp16_scores(row(0.5, backend="onnxruntime"))["status"] == "ok"  # the GPU engine's gate, not ORT's
    assert bound_fp16_scores(row(None))["status"] == "ok"  # no scores compared: nothing to bound


def test_acceptance_trains_again_into_its_own_earlier_folder(tmp_path):
    """doctor --gpu twice into one --out (its default is one folder): the second run's training step
    replaces the first's run (it failed: 'already holds a training run; pass --resume'); a run in a
    folder without an acceptance verdict is someone's and stays refused.  On the CPU here: the
    training step is the same code with autocast off."""
    from segclip.benchmarks.gpu_acceptance import Acceptance, write_verdict
    from segclip.cli.train_cmds import run_training

    acc = Acceptance(tmp_path / "acc", device="cpu", train_steps=1, log=lambda *a: None, train_fn=run_training)
    assert acc.train()["steps"] == 1
    write_verdict(acc.out, {"verdict": "failed", "failed": [], "steps": [], "seconds": 0})
    first = sorted(p.name for p in (acc.out / "run").iterdir())
    assert Acceptance(acc.out, device="cpu", train_steps=1, log=lambda *a: None, train_fn=run_training).train()["steps"] == 1
    assert sorted(p.name for p in (acc.out / "run").iterdir()) == first
    (acc.out / "gpu_acceptance.json").unlink()  # not an acceptance folder (as far as it can tell): the run is kept
    with pytest.raises(SegclipError, match="already holds a training run"):
        Acceptance(acc.out, device="cpu", train_steps=1, log=lambda *a: None, train_fn=run_training).train()
