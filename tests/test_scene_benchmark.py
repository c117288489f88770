"""segclip benchmark --scene: predict end to end per backend on a whole raster (a tiny one here), in
the same JSON, CSV and PNG as the latency table.  Checks what is written, never how fast."""
from __future__ import annotations

import csv
import json

import numpy as np
from click.testing import CliRunner

from segclip.cli import main

FAST = ["--batch", "1", "--reps", "1", "--warmup", "0", "--budget", "0.01", "--threads", "2", "--limit", "1"]


def test_scene_rows_in_json_csv_png_and_table(export_dir, tmp_path):
    from segclip.benchmarks.report import SCENE_KEYS, check_report
    from segclip.benchmarks.scene import make_scene

    exp, _ = export_dir
    scene = make_scene(tmp_path / "tiny.tif", size=160, seed=1)  # 160 px: several 64 px windows and two strips
    out = tmp_path / "bench"
    res = CliRunner().invoke(main, ["benchmark", str(exp), "--backends", "onnxruntime,openvino", *FAST, "--scene", str(scene),
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "benchmark.json").read_text())
    assert not check_report(report)
    rows = {r["backend"]: r for r in report["scene"]}
    assert set(rows) == {"onnxruntime", "openvino", "default"}
    for r in rows.values():
        assert r["status"] == "ok" and set(r) == set(SCENE_KEYS), r
        assert (r["width"], r["height"], r["window"]) == (160, 160, 64)
        assert r["mpx_s"] > 0 and r["runner_s"] > 0 and r["peak_rss_mib"] > 50
        # efficiency = measured / runner-bound Mpx/s = runner time / wall time: a fraction, never above 1 with one slot
        assert 0 < r["pipeline_efficiency"] <= 1 and np.isclose(r["pipeline_efficiency"], r["runner_share"], atol=0.01)
        assert all(r[k] is not None and r[k] >= 0 for k in ("read_s", "blend_s", "write_s"))
    assert (rows["onnxruntime"]["artifact"], rows["onnxruntime"]["runtime"]) == ("onnx", "onnxruntime")
    assert (rows["openvino"]["artifact"], rows["openvino"]["runtime"]) == ("onnx", "openvino")
    # the fixture export has no speed record: the default row runs the documented fallback, ONNX Runtime FP32
    assert (rows["default"]["artifact"], rows["default"]["runtime"]) == ("onnx", "onnxruntime")
    s = report["summary"]["scene"]
    assert s["fastest"] in ("onnxruntime", "openvino") and s["fastest_over_default"] > 0
    with open(out / "scene.csv") as f:
        assert [r["backend"] for r in csv.DictReader(f)] == ["onnxruntime", "openvino", "default"]
    assert (out / "latency.png").is_file() and report["files"]["scene_csv"] == str(out / "scene.csv")
    assert "whole scene" in res.output and "efficiency" in res.output


def test_scene_that_is_not_a_file_is_refused_before_any_work(export_dir, tmp_path):
    exp, _ = export_dir
    res = CliRunner().invoke(main, ["benchmark", str(exp), "--scene", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--scene" in res.output and "nope.tif" in res.output
    assert not (tmp_path / "b").exists()
