"""Fast by default: which artifact predict/eval/triton-repo run follows the export's speed records
(``contract.choose_artifact``), measured by ``segclip export`` / ``segclip tune`` (``inference.speed``).

The choice tests use hand-written timing entries: they check the decision, never a timing."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from segclip.cli import main
from segclip.contract import SPEED, choose_artifact, this_machine

OTHER_CPU = {"cpu": "Some Other CPU 9000", "isa": "avx2", "cpus": 2}


def _rec(machine: dict, *rows) -> dict:
    return {"machine": machine, "measured": "2026-12-07T00:00:00Z", "window": [64, 64], "calls": 3,
            "rows": [{"artifact": a, "runtime": rt, "device": "cpu", "batch": 2, "ms": ms} for a, rt, ms in rows]}


def _fake_export(tmp_path, statuses: dict, records: list):
    """A manifest-only export: the choice reads statuses and files, never runs them."""
    d = tmp_path / "exp"
    d.mkdir()
    arts = {}
    for key, status in statuses.items():
        fname = f"{key}.onnx"
        if status != "missing":
            (d / fname).write_bytes(b"")
        arts[key] = {"file": fname, "format": "onnx", "status": "ok" if status == "missing" else status}
    m = {"format": "segclip-export", "format_version": 1, "artifacts": arts, SPEED: records}
    return d, m


def test_default_is_the_recorded_fastest_gated_pair(tmp_path):
    here = this_machine()
    d, m = _fake_export(tmp_path, {"onnx": "ok", "onnx_fp16": "ok", "onnx_int8_cpu": "ok"}, [
        _rec(here, ("onnx", "onnxruntime", 40.0), ("onnx_int8_cpu", "onnxruntime", 25.0),
             ("onnx_int8_cpu", "openvino", 16.0), ("onnx_fp16", "openvino", 50.0))])
    c = choose_artifact(m, d)
    assert (c.format, c.runtime, c.how, c.speedup) == ("onnx_int8_cpu", "openvino", "measured", 2.5)
    assert c.line() == ("using onnx_int8_cpu on OpenVINO: fastest gated artifact measured here (2.5x ORT FP32); "
                        "--format/--runtime to choose")
    # --runtime narrows the measured choice; --format is taken as asked (ONNX Runtime unless --runtime)
    c = choose_artifact(m, d, runtime="onnxruntime")
    assert (c.format, c.runtime, c.how) == ("onnx_int8_cpu", "onnxruntime", "measured")
    c = choose_artifact(m, d, format="onnx")
    assert (c.format, c.runtime, c.how) == ("onnx", "onnxruntime", "explicit")
    # a GPU was asked for: CPU measurements do not decide
    c = choose_artifact(m, d, device="cuda")
    assert (c.format, c.how) == ("onnx", "fallback")


def test_failed_or_missing_artifact_is_never_chosen_even_when_fastest(tmp_path):
    here = this_machine()
    d, m = _fake_export(tmp_path, {"onnx": "ok", "onnx_int8": "failed", "onnx_int8_cpu": "missing", "onnx_fp16": "ok"}, [
        _rec(here, ("onnx", "onnxruntime", 40.0), ("onnx_int8", "openvino", 10.0), ("onnx_int8_cpu", "onnxruntime", 12.0),
             ("onnx_fp16", "openvino", 30.0))])
    c = choose_artifact(m, d)
    assert (c.format, c.runtime, c.how) == ("onnx_fp16", "openvino", "measured")
    # a failed FP32 graph (every other derives from it): no measurement decides; it stays first, so the
    # loader refuses the export by default as before (--allow-failed or --format to use it anyway)
    m["artifacts"]["onnx"]["status"] = "failed"
    c = choose_artifact(m, d)
    assert (c.format, c.how) == ("onnx", "fallback") and "FP32 ONNX artifact did not pass its gate" in c.line()


def test_a_measurement_from_another_cpu_is_not_used(tmp_path):
    d, m = _fake_export(tmp_path, {"onnx": "ok", "onnx_int8_cpu": "ok"}, [
        _rec(OTHER_CPU, ("onnx", "onnxruntime", 40.0), ("onnx_int8_cpu", "openvino", 5.0))])
    c = choose_artifact(m, d)
    assert (c.format, c.runtime, c.how) == ("onnx", "onnxruntime", "fallback")
    assert "Some Other CPU 9000" in c.line() and "segclip tune" in c.line()
    # same model name, other instruction set (e.g. a VM without VNNI): not this machine either
    (tmp_path / "b").mkdir()
    d2, m2 = _fake_export(tmp_path / "b", {"onnx": "ok", "onnx_int8_cpu": "ok"}, [
        _rec({**this_machine(), "isa": "other-isa"}, ("onnx_int8_cpu", "openvino", 5.0))])
    assert choose_artifact(m2, d2).how == "fallback"


def _copy_export(export_dir, tmp_path, *rows):
    src, _ = export_dir
    d = tmp_path / "export"
    shutil.copytree(src, d)
    m = json.loads((d / "manifest.json").read_text())
    m[SPEED] = [_rec(this_machine(), *rows)] if rows else []
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_providers_keep_the_choice_on_onnx_runtime(export_dir, tmp_path):
    """``providers=`` is ONNX Runtime's option (a name or a list of provider names): the measured choice
    is made among ONNX Runtime rows of that device.  It used to pick the OpenVINO row, whose runner
    refuses a 'providers' option, and a list was matched as no device at all."""
    from segclip.runtime import load_runner

    d = _copy_export(export_dir, tmp_path, ("onnx", "onnxruntime", 40.0), ("onnx_fp16", "openvino", 20.0),
                     ("onnx_fp16", "onnxruntime", 30.0))
    for providers in ("cpu", ["CPUExecutionProvider"], [("CPUExecutionProvider", {})]):
        r = load_runner(d, providers=providers)
        assert (r.backend, r.precision, r.choice.how) == ("onnxruntime", "fp16", "measured"), providers
    r = load_runner(d, optimization="basic")  # another option only ONNX Runtime's runner takes
    assert (r.backend, r.precision, r.optimization) == ("onnxruntime", "fp16", "basic")


def test_runner_predict_and_format_follow_the_record(export_dir, tmp_path):
    """load_runner and segclip predict run the recorded fastest pair, say so in one line and in
    _counts.json; --format onnx still gives ONNX Runtime FP32."""
    from PIL import Image

    from conftest import parity_images
    from segclip.runtime import load_runner

    d = _copy_export(export_dir, tmp_path, ("onnx", "onnxruntime", 40.0), ("onnx_fp16", "openvino", 20.0),
                     ("onnx", "openvino", 30.0))
    r = load_runner(d)
    assert (r.backend, r.name, r.precision) == ("openvino", "onnx_fp16", "fp16")
    assert r.choice.how == "measured" and r.choice.speedup == 2.0
    r = load_runner(d, format="onnx")
    assert (r.backend, r.precision, r.choice.how) == ("onnxruntime", "fp32", "explicit")

    Image.fromarray(parity_images(1, size=96)[0]).save(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["predict", "--quiet", "--model", str(d), str(tmp_path / "a.png"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "using onnx_fp16 on OpenVINO: fastest gated artifact measured here (2.0x ORT FP32)" in res.output
    counts = json.loads((tmp_path / "p" / "a_counts.json").read_text())
    assert counts["runner"]["choice"]["format"] == "onnx_fp16" and counts["runner"]["backend"] == "openvino"
    res = CliRunner().invoke(main, ["predict", "--quiet", "--model", str(d), str(tmp_path / "a.png"), "--out", str(tmp_path / "q"),
                                    "--format", "onnx"])
    assert res.exit_code == 0, res.output
    counts = json.loads((tmp_path / "q" / "a_counts.json").read_text())
    assert counts["runner"]["precision"] == "fp32" and counts["runner"]["backend"] == "onnxruntime"
    assert counts["runner"]["choice"]["how"] == "explicit"

    # eval: the same choice, printed and in its JSON; --runtime narrows it
    from segclip.data.sample import generate_sample_dataset

    data = generate_sample_dataset(tmp_path / "data", num_train=1, num_val=1, size=64)
    res = CliRunner().invoke(main, ["eval", str(d), "--data", f"sample:{data}:val", "--out", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("using onnx_fp16 on OpenVINO: fastest gated artifact measured here")
    runner = json.loads((tmp_path / "e.json").read_text())["runner"]
    assert (runner["backend"], runner["artifact"], runner["choice"]["how"]) == ("openvino", "onnx_fp16", "measured")
    res = CliRunner().invoke(main, ["eval", str(d), "--data", f"sample:{data}:val", "--out", str(tmp_path / "f.json"),
                                    "--runtime", "onnxruntime"])
    assert res.exit_code == 0, res.output
    runner = json.loads((tmp_path / "f.json").read_text())["runner"]
    assert (runner["backend"], runner["precision"], runner["choice"]["how"]) == ("onnxruntime", "fp32", "measured")


def test_tune_records_this_machine(export_dir, tmp_path):
    """segclip tune times every gated artifact on every runtime here and keeps other machines' records."""
    d = _copy_export(export_dir, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m[SPEED] = [_rec(OTHER_CPU, ("onnx", "onnxruntime", 1.0))]
    (d / "manifest.json").write_text(json.dumps(m))
    res = CliRunner().invoke(main, ["tune", str(d), "--calls", "1"])
    assert res.exit_code == 0, res.output
    m = json.loads((d / "manifest.json").read_text())
    assert [r["machine"]["cpu"] for r in m[SPEED]] == [OTHER_CPU["cpu"], this_machine()["cpu"]]
    rows = m[SPEED][-1]["rows"]
    assert {(r["artifact"], r["runtime"]) for r in rows} == {(a, rt) for a in ("onnx", "onnx_fp16") for rt in ("onnxruntime", "openvino")}
    assert all(r["ms"] > 0 and r["batch"] == 8 for r in rows), rows  # predict's default for 64 px windows on a CPU
    assert "fastest gated artifact measured here" in res.output.splitlines()[-1]
    res = CliRunner().invoke(main, ["tune", str(tmp_path)])
    assert res.exit_code == 2 and "no manifest.json" in res.output


def test_triton_repo_serves_the_onnx_artifact_measured_fastest_on_onnx_runtime(export_dir, tmp_path):
    """Triton's ONNX models run ONNX Runtime: OpenVINO rows do not decide; --precision wins."""
    from segclip.serving.repo import MODEL_RECORD, build_repository

    d = _copy_export(export_dir, tmp_path, ("onnx", "onnxruntime", 40.0), ("onnx_fp16", "onnxruntime", 30.0),
                     ("onnx", "openvino", 10.0))
    written = build_repository(d, tmp_path / "repo", models=["segclip_python"])
    rec = json.loads((written["segclip_python"] / MODEL_RECORD).read_text())
    assert rec["onnx_artifact"] == "onnx_fp16" and rec["options"]["precision"] == "fp16"
    assert rec["choice"]["how"] == "measured"
    res = CliRunner().invoke(main, ["triton-repo", str(d), "--out", str(tmp_path / "repo2"), "--models", "segclip_python",
                                    "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    assert "using onnx on ONNX Runtime: as asked (--precision)" in res.output
    rec = json.loads((tmp_path / "repo2" / "segclip_python" / MODEL_RECORD).read_text())
    assert rec["onnx_artifact"] == "onnx" and rec["choice"]["how"] == "explicit"


def test_quickstart_exports_int8_and_its_summary_lists_the_gate(trained_checkpoint, tmp_path):
    """The quickstart's export step exports INT8 too (calibrated on the sample set, gated on held-out
    images as usual): its summary lists each INT8 artifact with its gate, and the artifact predict runs
    here by default -- a gated one (export timed them)."""
    from pathlib import Path

    from segclip.cli.train_cmds import _quickstart_export
    from segclip.data.sample import generate_sample_dataset

    stage = tmp_path / "qs"
    generate_sample_dataset(stage / "data", num_train=1, num_val=16, size=64)
    run = stage / "run"
    run.mkdir()
    shutil.copy(trained_checkpoint, run / "model_final.pt")
    summary = {"artifacts": {}}
    _quickstart_export(run, stage, summary)
    for key in ("onnx_int8", "onnx_int8_cpu"):
        e = summary["export"][key]
        assert e["status"] in ("ok", "failed") and Path(e["file"]).is_file(), e
        assert e["gate"]["threshold"] == 0.98 and 0 < e["gate"]["pixel_agreement"] <= 1 and "miou_tolerance" in e["gate"], e
    c = summary["default_runner"]
    assert summary["export"][c["format"]]["status"] == "ok" and c["how"] in ("measured", "fallback")
    m = json.loads((stage / "export" / "manifest.json").read_text())
    assert c["how"] == "measured" and m["artifacts"]["onnx"]["status"] == "ok"  # timed even when an INT8 gate was missed


def test_default_batch_follows_the_window_on_a_cpu():
    """Two 1024 px windows' worth of pixels per request on the CPU (small windows batch up, at most 8;
    a window larger than that runs alone); 8 on a GPU."""
    from segclip.inference.predict import default_batch

    class Fake:
        def __init__(self, device):
            self.device = device

        def describe(self):
            return {"device": self.device}

    cpu = Fake("cpu")
    assert [default_batch(cpu, (s, s)) for s in (2048, 1024, 768, 512, 128)] == [1, 2, 3, 8, 8]
    assert default_batch(cpu) == 2 and default_batch(Fake("cuda:0"), (128, 128)) == 8


def test_an_explicit_format_on_a_runtime_it_does_not_run_is_one_line_up_front(export_dir):
    """--format onnx_int8_cpu --runtime openvino used to print "using ... as asked" and then fail inside
    OpenVINO's compiler; the format table knows the pair cannot run."""
    from segclip.contract import choose_artifact, read_manifest
    from segclip.errors import SegclipError

    d = export_dir[0]
    with pytest.raises(SegclipError) as e:
        choose_artifact(read_manifest(d), d, format="onnx_int8_cpu", runtime="openvino")
    msg = str(e.value)
    assert "\n" not in msg and "runs on ONNX Runtime only, not OpenVINO" in msg and "onnx_int8" in msg
    assert choose_artifact(read_manifest(d), d, format="onnx", runtime="openvino").runtime == "openvino"
