"""``benchmarks/run_targets.py`` end to end, so the target script cannot rot: a real run of targets
1-2 (and 3-4 reported as not measured) at 64 px on the parity fixture's export, and ``--render``
of the committed RESULTS.json, which must give the committed RESULTS.md byte for byte.
No timing assertions: benchmarks report speed, tests check that the figures exist and agree."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_targets():
    spec = importlib.util.spec_from_file_location("run_targets", ROOT / "benchmarks" / "run_targets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_render_of_committed_results_is_committed_results_md(run_targets, tmp_path):
    out = tmp_path / "RESULTS.md"
    assert run_targets.main(["--render", str(ROOT / "benchmarks" / "RESULTS.json"), "--results", str(out)]) == 0
    assert out.read_text() == (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads((ROOT / "benchmarks" / "RESULTS.json").read_text())
    # the stated targets, applied to the committed figures, are the committed verdicts
    res = json.loads((ROOT / "benchmarks" / "RESULTS.json").read_text())
    assert run_targets.targets_1_to_4(res, 512, 1024) + run_targets.target_5(res) == res["targets"]


def test_a_tiny_run_measures_targets_1_and_2(run_targets, trained_checkpoint, export_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # the work folder as a second run finds it: its checkpoint and the export at 64 px are reused
    shutil.copy(trained_checkpoint, work / "segclip-small-random.pt")
    shutil.copytree(export_dir[0], work / "export_64")
    results = tmp_path / "res" / "RESULTS.md"
    argv = ["--preset", "segclip-small", "--sizes", "64", "--reps", "2", "--warmup", "0", "--no-wait-clean", "--gemm", "256",
            "--skip-triton", "--gpu-size", "64", "--profile", "all", "--variants", "none", "--threads", "2",
            "--out", str(work), "--results", str(results)]
    assert run_targets.main(argv) == 0
    res = json.loads(results.with_suffix(".json").read_text())
    assert json.loads((work / "targets.json").read_text()) == res
    r = res["cpu"]["64"]
    assert r["torch"]["reps"] == r["onnxruntime"]["reps"] == 2 and r["basis"] in ("clean", "all")
    assert r["speedup"] == pytest.approx(r["torch_p50"] / r["ort_p50"], rel=1e-2)
    assert r["pixel_agreement"] > 0.99  # ONNX Runtime FP32 computes torch's class map
    assert r["flops"]["gflops"] > 0 and 0 < r["flop_share"] and r["profile_onnxruntime"]["ops"] and r["profile_torch"]["ops"]
    assert res["flops_check"]["size"] == 64 and res["gemm"]["n"] == 256
    assert [t["id"] for t in res["targets"]] == ["1", "2", "3", "4"]
    assert res["targets"][2]["verdict"]["result"] == "NOT MEASURED" and "--skip-triton" in res["targets"][2]["measured_text"]
    md = results.read_text()
    assert "| 1 | ORT CPU FP32 vs PyTorch eager FP32, 64x64 batch 1 |" in md and "### Profile at 64x64" in md
    # --render of that run's JSON re-writes the same RESULTS.md
    again = tmp_path / "again" / "RESULTS.md"
    assert run_targets.main(["--render", str(results.with_suffix(".json")), "--results", str(again)]) == 0
    assert again.read_text() == md


def test_bad_sizes_and_a_missing_earlier_run(run_targets, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_targets.main(["--sizes", "512x768", "--out", str(tmp_path)])
    assert e.value.code == 2 and "square" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_targets.main(["--sizes", "500", "--out", str(tmp_path)])
    assert e.value.code == 2 and "multiples of 32" in capsys.readouterr().err
    assert run_targets.main(["--only", "int8", "--sizes", "64", "--results", str(tmp_path / "R.md"), "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_triton_target_serves_the_export_and_stops_the_server(trained_checkpoint, export_dir, server_env, tmp_path,
                                                               monkeypatch):
    """Target 3's measurement: a server started for the export (serving.server.serve_export), the
    in-process ONNX Runtime and Triton gRPC (plain and shared memory) interleaved, the server gone afterwards."""
    import segclip.serving.server as srv_mod
    from segclip.benchmarks import targets as tg
    from segclip.contract import read_manifest

    monkeypatch.setenv("SEGCLIP_TRITON_ENV", str(server_env.path))
    started, start = [], srv_mod.TritonServer.start

    def spy(self):
        out = start(self)
        started.append(self.pid)
        return out

    monkeypatch.setattr(srv_mod.TritonServer, "start", spy)
    s = tg.Setup(trained_checkpoint, tmp_path, threads=2, reps=2, warmup=0, wait_clean=False, log=lambda m: None)
    res = tg.triton_target(s, 64, (export_dir[0], read_manifest(export_dir[0])))
    assert res["status"] == "measured", res
    assert res["pixel_agreement"] == 1.0 and res["onnxruntime"]["reps"] == res["triton-grpc"]["reps"] == 2
    assert res["ratio_grpc"] == pytest.approx(res["p50"]["triton-grpc"] / res["p50"]["onnxruntime"], rel=1e-3)
    assert ("triton-grpc-shm" in res) != bool(res["shm_note"]) and res["ratio"] <= res["ratio_grpc"]
    assert started and all(srv_mod.process_group_pids(p) == [] for p in started)
