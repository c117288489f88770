"""``segclip benchmark`` / ``segclip.benchmarks``: end to end on the small preset at 64 px with a tiny
time budget.  Checks the report's documented JSON schema (benchmarks/README.md), the status rows of
backends that cannot run here, the files, and the Triton concurrency sweep against a real server
(skipped only when no Triton server env exists).  No timing assertions: only that numbers exist.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import default_signals


SIZE = 64
FAST = dict(reps=2, warmup=1, budget_s=0.01, threads=2, limit=2, plot=True)

# the documented schema, written out independently of segclip/benchmarks/report.py
NUM, OPT_NUM = (int, float), (int, float, type(None))
OPT_STR, OPT_INT = (str, type(None)), (int, type(None))
ROW_SCHEMA = {
    "backend": str, "name": OPT_STR, "precision": OPT_STR, "status": str, "device": OPT_STR, "artifact": OPT_STR,
    "size_mib": OPT_NUM, "batch": OPT_INT, "height": OPT_INT, "width": OPT_INT, "p50_ms": OPT_NUM, "p90_ms": OPT_NUM,
    "p99_ms": OPT_NUM, "mean_ms": OPT_NUM, "reps": OPT_INT, "throughput_ips": OPT_NUM, "speedup_vs_torch": OPT_NUM,
    "miou": OPT_NUM, "pixel_agreement": OPT_NUM, "miou_delta": OPT_NUM, "accuracy_images": OPT_INT, "notes": OPT_STR,
    "other_cpu": OPT_NUM, "busy": bool,
}
LOAD_SCHEMA = {
    "protocol": str, "url": str, "tool": str, "status": str, "concurrency": int, "batch": int, "requests": OPT_INT,
    "failures": int, "throughput_ips": OPT_NUM, "duration_s": OPT_NUM, "p50_ms": OPT_NUM, "p90_ms": OPT_NUM,
    "p99_ms": OPT_NUM, "mean_ms": OPT_NUM, "server_queue_ms": OPT_NUM, "server_compute_ms": OPT_NUM,
    "server_compute_input_ms": OPT_NUM, "server_compute_infer_ms": OPT_NUM, "server_compute_output_ms": OPT_NUM,
    "server_batches": OPT_INT, "server_mean_batch": OPT_NUM, "output_checks": int, "output_mismatches": int,
    "output_min_agreement": OPT_NUM, "errors": list, "other_cpu": OPT_NUM, "busy": bool,
}


def assert_schema(report: dict) -> None:
    from segclip.benchmarks import check_report

    for k in ("schema_version", "machine", "config", "rows", "triton_load", "summary", "table"):
        assert k in report, k
    m = report["machine"]
    for k in ("cpu", "cpu_cores", "gpu", "threads", "versions", "load_average"):
        assert k in m, k
    for k in ("torch", "onnxruntime", "tensorrt", "tritonclient", "segclip", "python"):
        assert k in m["versions"], k
    assert m["versions"]["segclip"] and m["versions"]["torch"]
    assert isinstance(m["cpu"], str) and m["cpu_cores"]["usable"] >= 1
    for k in ("backends", "batches", "sizes", "threads", "warmup", "min_reps", "accuracy_method", "latency"):
        assert k in report["config"], k
    for i, row in enumerate(report["rows"]):
        assert set(ROW_SCHEMA) <= set(row), (i, set(ROW_SCHEMA) - set(row))
        for k, t in ROW_SCHEMA.items():
            assert isinstance(row[k], t) and (t is bool or not isinstance(row[k], bool)), (i, k, row[k])
        st = row["status"]
        assert st == "ok" or st.split(": ", 1)[0] in ("unavailable", "failed", "skipped", "not run") and len(st.split(": ", 1)[1]) > 5, st
        if st == "ok":
            for k in ("batch", "height", "width", "p50_ms", "p90_ms", "p99_ms", "throughput_ips", "reps"):
                assert row[k] is not None and row[k] > 0, (k, row)
            assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    for i, row in enumerate(report["triton_load"]):
        assert set(LOAD_SCHEMA) <= set(row), (i, set(LOAD_SCHEMA) - set(row))
        for k, t in LOAD_SCHEMA.items():
            assert isinstance(row[k], t) and (t is bool or not isinstance(row[k], bool)), (i, k, row[k])
    assert check_report(report) == []
    json.dumps(report)  # plain JSON all the way down


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_dir(trained_checkpoint, sample_data, tmp_path_factory):
    from segclip.export import export

    d = tmp_path_factory.mktemp("bench") / "export"
    # the benchmark measures agreement itself; the export gate is not under test here (this tiny model's
    # FP16 graph agrees on about 97.5 % of the parity images' pixels, below the 99.5 % default gate)
    export(trained_checkpoint, d, fp16=True, size=SIZE, batch=(1, 1, 4), data=sample_data, parity_images=2,
           fp16_threshold=0.9, log=lambda *a, **k: None, tune=False)  # no speed record: Triton serves FP32
    return d


@pytest.fixture(scope="module")
def sample_data(trained_checkpoint, tmp_path_factory):
    """FOLDER:ROOT:SPLIT of the parity images (64 px, LoveDA classes, their rendered labels).  Agreement
    between backends only means something if the reference differs pixel to pixel and image to image:
    asserted here, before any test compares backends on it."""
    import yaml
    from PIL import Image

    from conftest import LOVEDA_CLASSES, parity_problems, rendered_scenes
    from segclip.runtime import load_runner

    imgs, labs = rendered_scenes(4, 2 * SIZE, 11)  # parity_images(4): the same crops
    imgs, labs = imgs[:, 20:20 + SIZE, 30:30 + SIZE], labs[:, 20:20 + SIZE, 30:30 + SIZE]
    root = tmp_path_factory.mktemp("bench_data") / "parity"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump({"classes": list(LOVEDA_CLASSES)}))
    for i, (im, lb) in enumerate(zip(imgs, labs)):
        Image.fromarray(np.ascontiguousarray(im)).save(root / "images" / f"{i}.png")
        Image.fromarray(lb.astype(np.uint8), mode="L").save(root / "masks" / f"{i}.png")
    with load_runner(trained_checkpoint) as r:
        ref = r.infer(np.ascontiguousarray(imgs))["mask"]
    assert parity_problems(ref) == []
    assert all((ref[i] != ref[i + 1]).mean() > 0.05 for i in range(len(ref) - 1))
    return f"folder:{root}:val"


# ---- end to end -------------------------------------------------------------------------------------
def test_cli_end_to_end_schema_files_and_unavailable_rows(export_dir, sample_data, tmp_path):
    from click.testing import CliRunner

    from segclip.cli import main

    out = tmp_path / "bench"
    res = CliRunner().invoke(main, [
        "benchmark", str(export_dir), "--backends", "torch,onnxruntime,onnxruntime-fp16,tensorrt",
        "--batch", "1,2", "--reps", "2", "--warmup", "1", "--budget", "0.01", "--threads", "2", "--limit", "2",
        "--data", sample_data, "--out", str(out)])
    assert res.exit_code == 0, res.output + str(res.exception)
    report = json.loads((out / "benchmark.json").read_text())
    assert_schema(report)
    rows = report["rows"]
    by = {}
    for r in rows:
        by.setdefault(r["backend"], []).append(r)
    assert set(by) == {"torch", "onnxruntime", "onnxruntime-fp16", "tensorrt"}
    for b in ("torch", "onnxruntime", "onnxruntime-fp16"):
        assert [r["batch"] for r in by[b]] == [1, 2] and all(r["status"] == "ok" for r in by[b]), by[b]
        for r in by[b]:
            assert (r["height"], r["width"]) == (SIZE, SIZE)
            assert 0 <= r["miou"] <= 1 and 0.9 <= r["pixel_agreement"] <= 1 and r["accuracy_images"] == 2
            assert r["speedup_vs_torch"] > 0 and r["size_mib"] > 0
    assert by["onnxruntime-fp16"][0]["precision"] == "fp16" and by["onnxruntime"][0]["precision"] == "fp32"
    for r in by["torch"]:  # the reference agrees with itself
        assert r["pixel_agreement"] == 1.0 and r["miou_delta"] == 0.0 and r["speedup_vs_torch"] == 1.0
    if not _gpu():  # no GPU: one status row with the reason, not a crash
        (trt,) = by["tensorrt"]
        assert trt["status"].startswith("unavailable: ") and "GPU" in trt["status"], trt["status"]
        assert trt["p50_ms"] is None and trt["batch"] is None
        assert "tensorrt" in report["summary"]["unavailable"]
    # files: CSV with the row columns, a PNG, the table on stdout
    with open(out / "benchmark.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and set(ROW_SCHEMA) <= set(csv_rows[0])
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "onnxruntime-fp16" in res.stdout and "p50 ms" in res.stdout and "unavailable" in res.stdout
    assert report["config"]["data"] == sample_data and report["config"]["threads"] == 2
    s = report["summary"]
    assert s["size"] == f"{SIZE}x{SIZE}" and s["batch"] == 1 and s["fastest"] in by
    assert s["backends"]["onnxruntime"]["speedup_vs_torch"] > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_finished_rows_and_names_the_rest(export_dir, sample_data, tmp_path, sig):
    """The real command in its own process, interrupted once its first row is on disk: the JSON and CSV
    keep every finished row, the rows not reached say "not run", the table on stderr says so too."""
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "segclip", "benchmark", str(export_dir), "--backends", "torch,onnxruntime",
           "--batch", "1,2", "--reps", "2", "--warmup", "0", "--budget", "4", "--threads", "1", "--limit", "1",
           "--data", sample_data, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 240
        first = None
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                rows = json.loads((out / "benchmark.json").read_text())["rows"]  # atomic: never half a file
                if any(r["status"] == "ok" for r in rows):
                    first = rows
                    break
            time.sleep(0.05)
        assert first is not None, "no row written before the deadline"
        assert not json.loads((out / "benchmark.json").read_text())["summary"]["complete"]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM), err
    report = json.loads((out / "benchmark.json").read_text())
    assert_schema(report)
    status = {(r["backend"], r["batch"]): r["status"] for r in report["rows"]}
    assert set(status) == {("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2)}, status
    assert status[("torch", 1)] == "ok"
    assert status[("onnxruntime", 2)] == "not run: interrupted (Ctrl-C or SIGTERM)", status
    assert report["summary"]["complete"] is False and report["summary"]["not_run"] >= 1
    with open(out / "benchmark.csv") as f:
        assert [(r["backend"], r["status"]) for r in csv.DictReader(f)] == [(r["backend"], r["status"]) for r in report["rows"]]
    assert "not run" in err and "kept" in err and "benchmark:" in err  # the table, the note, the progress bar


def test_quick_api_as_the_quickstart_calls_it(export_dir, sample_data, tmp_path):
    from segclip.benchmarks import QUICK_BACKENDS, run_benchmark

    report = run_benchmark(export_dir, out=tmp_path / "q", data=sample_data, quick=True, log=None)
    assert_schema(report)
    assert [(r["backend"], r["batch"], r["status"]) for r in report["rows"]] == [(b, 1, "ok") for b in QUICK_BACKENDS]
    assert report["triton_load"] == [] and report["config"]["quick"] is True
    s = report["summary"]
    assert set(s["backends"]) == set(QUICK_BACKENDS)
    assert all(v["miou"] is not None and v["pixel_agreement"] is not None for v in s["backends"].values())
    json.dumps(s)
    assert (tmp_path / "q" / "benchmark.json").is_file()


def test_eval_and_benchmark_give_one_miou_on_the_same_images(export_dir, trained_checkpoint, tmp_path):
    """`segclip eval` and the benchmark's accuracy column: the same number on the same images, window and
    scenes -- images larger than the window, so both slide and blend.  Both say what it is over."""
    import yaml
    from click.testing import CliRunner
    from PIL import Image

    from conftest import LOVEDA_CLASSES, rendered_scenes
    from segclip.benchmarks import run_benchmark
    from segclip.cli import main

    imgs, labs = rendered_scenes(3, 2 * SIZE, 5)
    root = tmp_path / "big"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump({"classes": list(LOVEDA_CLASSES)}))
    for i, (im, lb) in enumerate(zip(imgs, labs)):  # 96 x 112: not a multiple of the 64 px window
        Image.fromarray(np.ascontiguousarray(im[:96, :112])).save(root / "images" / f"{i}.png")
        Image.fromarray(lb[:96, :112].astype(np.uint8), mode="L").save(root / "masks" / f"{i}.png")
    data = f"folder:{root}:val"
    res = CliRunner().invoke(main, ["eval", str(export_dir), "--format", "onnx", "--data", data, "--out",
                                    str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["computed_on"].startswith(f"3 image(s) of {data}, whole images in {SIZE}x{SIZE} windows"), ev["computed_on"]
    assert f"mIoU {100 * ev['miou']:.1f}%" in res.output and ev["computed_on"] in res.output  # percent, one decimal
    report = run_benchmark(export_dir, data=data, backends="onnxruntime", batch=[1], log=None,
                           **{**FAST, "limit": 3, "plot": False})
    (row,) = report["rows"]
    assert row["accuracy_images"] == 3 and "3 of 3 images" in report["config"]["accuracy_images"]
    assert 0 < ev["miou"] < 1
    assert abs(row["miou"] - ev["miou"]) < 1e-5, (row["miou"], ev["miou"])
    assert f"{100 * row['miou']:.1f}" in report["table"] and "mIoU % on " in report["table"]


def test_checkpoint_source_and_other_size_export_on_demand(small_checkpoint, export_dir, tmp_path):
    """A checkpoint is exported for the benchmark; a fixed-size export is re-exported (from its
    checkpoint) for another size; without --data accuracy is pixel agreement on random images."""
    from segclip.benchmarks import run_benchmark

    out = tmp_path / "b"
    report = run_benchmark(export_dir, out=out, backends="onnxruntime", size=[SIZE, 96], batch=[1], log=None, **FAST)
    assert_schema(report)
    assert [(r["height"], r["status"]) for r in report["rows"]] == [(SIZE, "ok"), (96, "ok")]
    assert (out / "exports" / "96x96" / "manifest.json").is_file() and not (out / "exports" / f"{SIZE}x{SIZE}").exists()
    assert all(r["pixel_agreement"] is not None and r["miou"] is None for r in report["rows"])  # torch reference, no labels

    out2 = tmp_path / "c"
    report = run_benchmark(small_checkpoint, out=out2, backends="torch,onnxruntime", size=SIZE, batch=1, log=None, **FAST)
    assert [r["status"] for r in report["rows"]] == ["ok", "ok"]
    assert (out2 / "exports" / f"{SIZE}x{SIZE}" / "model.onnx").is_file()


def test_status_rows_instead_of_crashes(export_dir, tmp_path):
    from segclip.benchmarks import run_benchmark

    # an export whose checkpoint is not on this machine: no torch reference, a reason
    moved = tmp_path / "moved"
    shutil.copytree(export_dir, moved)
    m = json.loads((moved / "manifest.json").read_text())
    m["source"]["checkpoint"] = str(tmp_path / "gone.pt")
    (moved / "manifest.json").write_text(json.dumps(m))
    url = "grpc://127.0.0.1:1/segclip_python"  # nothing listens on port 1
    report = run_benchmark(moved, out=tmp_path / "o", backends="torch,onnxruntime,triton-grpc,triton-http", batch=[1, 8],
                           triton_url=url, concurrency=[1], log=None, **FAST)
    assert_schema(report)
    st = {(r["backend"], r["batch"]): r["status"] for r in report["rows"]}
    assert st[("torch", None)].startswith("unavailable: ") and "gone.pt" in st[("torch", None)]
    assert st[("onnxruntime", 1)] == "ok"
    assert st[("onnxruntime", 8)] == "ok"  # ONNX takes any batch
    assert st[("triton-grpc", None)].startswith("unavailable: ") and "127.0.0.1:1" in st[("triton-grpc", None)]
    assert st[("triton-http", None)].startswith("unavailable: ") and "http://" in st[("triton-http", None)]
    ort = [r for r in report["rows"] if r["backend"] == "onnxruntime"]
    assert all(r["speedup_vs_torch"] is None and r["miou_delta"] is None for r in ort)


def test_cli_rejects_bad_arguments(export_dir, tmp_path):
    from click.testing import CliRunner

    from segclip.cli import main

    for args, words in ((["--backends", "torch,nope"], "unknown backend 'nope'"), (["--size", "100"], "multiples of 32"),
                        (["--batch", "0"], ">= 1"), (["--data", "sample"], "DATASET:ROOT:SPLIT")):
        res = CliRunner().invoke(main, ["benchmark", str(export_dir), "--out", str(tmp_path / "x"), *args])
        assert res.exit_code == 2 and words in res.output, (args, res.output)
        assert "Traceback" not in res.output


# ---- pieces -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def busy_neighbours(n: int, seconds: float = 120):
    """``n`` busy-loop processes that are NOT descendants of this one (started through a shell that
    exits at once, so they are reparented away): other users' jobs on a shared machine."""
    code = f"import time; end = time.time() + {seconds}\nwhile time.time() < end: pass"
    pids = []
    try:
        for _ in range(n):
            r = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{code}" >/dev/null 2>&1 & echo $!'],
                               capture_output=True, text=True, check=True)
            pids.append(int(r.stdout.strip()))
        time.sleep(0.3)
        yield pids
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def _ticks(pid) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU accounting reads Linux /proc")
def test_cpu_meter_counts_other_processes_and_not_ours():
    from segclip.benchmarks.timing import CpuMeter, descendant_pids

    with busy_neighbours(1) as (pid,):
        assert pid not in descendant_pids()
        meter = CpuMeter.for_this_tree()
        p0, a = _ticks(pid), meter.snapshot()
        time.sleep(1.5)
        p1, b = _ticks(pid), meter.snapshot()
        loop_share = (p1 - p0) / (b[1] - a[1])
        assert loop_share > 0.02, loop_share  # the neighbour did run (a loaded machine gives it little)
        assert CpuMeter.foreign_share(a, b) >= loop_share - 0.05
    # our own work (this process) is not "other": the share excludes it
    m0, a = _machine_ticks(), meter.snapshot()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        pass
    m1, b = _machine_ticks(), meter.snapshot()
    own, total = b[2] - a[2], m1[1] - m0[1]
    assert own / total > 0.02
    assert CpuMeter.foreign_share(a, b) <= ((m1[0] - m0[0]) - own) / total + 0.05


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU accounting reads Linux /proc")
def test_busy_machine_rows_are_flagged(export_dir, tmp_path):
    """A benchmark with busy loops beside it flags its rows in the table, JSON, summary and plot."""
    from click.testing import CliRunner

    from segclip.cli import main

    out = tmp_path / "busy"
    with busy_neighbours(os.cpu_count() or 2):
        res = CliRunner().invoke(main, ["benchmark", str(export_dir), "--backends", "onnxruntime", "--batch", "1",
                                        "--reps", "5", "--warmup", "1", "--budget", "1", "--threads", "2",
                                        "--busy-threshold", "0.1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "benchmark.json").read_text())
    assert_schema(report)
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert ok and all(r["busy"] and r["other_cpu"] > 0.1 for r in ok), ok
    assert report["summary"]["clean"] is False and report["summary"]["busy_rows"] == len(ok)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("onnxruntime "))
    assert line.rstrip().endswith("!"), line
    assert "! busy: other processes took more than 10% of the CPUs" in res.stdout
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "not reliable" in warn[0], res.stderr
    with open(out / "benchmark.csv") as f:
        assert [r["busy"] for r in csv.DictReader(f)] == ["True"] * len(ok)


def _fake_report(backends, batches=(1,), busy=()):
    rows = [{"backend": b, "status": "ok", "height": 64, "width": 64, "batch": n, "p50_ms": 10.0 + i, "p90_ms": 12.0 + i,
             "throughput_ips": 50.0 - i, "busy": b in busy, "other_cpu": 0.5 if b in busy else 0.0}
            for i, b in enumerate(backends) for n in batches]
    return {"rows": rows, "triton_load": [], "machine": {}, "config": {"busy_threshold": 0.1}}


def _has_colour(png, hex_colour: str) -> bool:
    from PIL import Image

    rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    a = np.asarray(Image.open(png).convert("RGB"))
    return int(np.all(a == rgb, axis=-1).sum()) > 200


def test_plot_bars_for_one_batch_with_fixed_backend_colours(tmp_path):
    from segclip.benchmarks.report import write_plot

    torch_c, ort_c, fp16_c = "#1f77b4", "#ff7f0e", "#2ca02c"  # tab10, as documented in benchmarks/README.md
    write_plot(_fake_report(["torch", "onnxruntime"]), tmp_path / "a.png")
    write_plot(_fake_report(["onnxruntime-fp16", "torch"], busy=("torch",)), tmp_path / "b.png")
    assert _has_colour(tmp_path / "a.png", torch_c) and _has_colour(tmp_path / "a.png", ort_c)
    assert not _has_colour(tmp_path / "a.png", fp16_c)
    assert _has_colour(tmp_path / "b.png", torch_c) and _has_colour(tmp_path / "b.png", fp16_c)
    assert not _has_colour(tmp_path / "b.png", ort_c)
    write_plot(_fake_report(["torch"], batches=(1, 2, 4)), tmp_path / "c.png")  # several batches: lines
    assert (tmp_path / "c.png").stat().st_size > 0


def test_plot_value_labels_are_readable_on_every_bar(tmp_path, monkeypatch):
    """Value labels stand above their bar and its p90 whisker on a white box (they were black text in
    the middle of dark and hatched bars, and torch's crossed its whisker)."""
    import matplotlib.pyplot as plt

    from segclip.benchmarks.report import write_plot

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    report = _fake_report(["torch", "onnxruntime-fp16", "openvino-int8"], busy=("torch",))
    write_plot(report, tmp_path / "p.png")
    lat, thr = figs[0].axes[:2]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    for ax, top in ((lat, [r["p90_ms"] for r in ok]), (thr, [r["throughput_ips"] for r in ok])):
        labels = [t for t in ax.texts if t.get_text()]
        assert len(labels) == len(ok)
        for t, y in zip(labels, top):
            assert t.xy[1] >= y, (t.get_text(), t.xy, y)  # at the top of the bar / whisker, not inside
            box = t.get_bbox_patch()
            assert box is not None and tuple(box.get_facecolor()[:3]) == (1.0, 1.0, 1.0)
    monkeypatch.undo()
    plt.close("all")


def test_timing_rules():
    from segclip.benchmarks.timing import measure, random_batches

    xs = random_batches(2, 32, 32, count=3)
    assert len({x.tobytes() for x in xs}) == 3 and all(x.min() >= 1 and x.dtype == np.uint8 for x in xs)
    seen = []
    t = measure(lambda x: seen.append(x), xs, warmup=2, min_reps=5, budget_s=0.0)
    assert t.reps == 5 and len(seen) == 7 and t.warmup == 2 and t.batch == 2
    assert {id(x) for x in seen} == {id(x) for x in xs}  # inputs rotated
    d = t.to_dict()
    assert d["p50_ms"] <= d["p90_ms"] <= d["p99_ms"] and d["throughput_ips"] > 0


def test_flop_counts_agree(export_dir):
    """The ONNX graph count (used by the targets) and torch's FlopCounterMode agree."""
    from segclip.benchmarks.flops import onnx_flops, torch_flops
    from segclip.checkpoint import load_checkpoint, model_from_checkpoint
    from segclip.contract import read_manifest
    from segclip.modeling import SegCLIPInference

    g = onnx_flops(export_dir / "model.onnx", batch=1)
    assert g["num_unknown"] == 0 and g["flops"] > 0 and {"Conv", "MatMul"} <= set(g["by_op_gflops"])
    ck = load_checkpoint(read_manifest(export_dir)["source"]["checkpoint"])
    t = torch_flops(SegCLIPInference(model_from_checkpoint(ck)), SIZE, SIZE)
    assert abs(g["flops"] - t["flops"]) / t["flops"] < 0.02, (g, t)


# ---- Triton -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_env():
    from segclip.serving.env import env_candidate, find_server_env

    path, source = env_candidate()
    if not path.exists():
        pytest.skip(f"no Triton server env at {path} ({source}); create one with `segclip serve-env`")
    return find_server_env()


@pytest.fixture(scope="module")
def triton(export_dir, server_env, tmp_path_factory):
    from segclip.serving.repo import build_repository
    from segclip.serving.server import TritonServer, free_ports

    repo = tmp_path_factory.mktemp("bench_repo") / "repo"
    build_repository(export_dir, repo, queue_delay_us=2000, intra_op_threads=2)
    http, grpc, metrics = free_ports(3)
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, env=server_env.path, native=False,
                      startup_timeout=180) as srv:
        yield srv


def test_triton_rows_and_concurrency_sweep(triton, export_dir, sample_data, tmp_path):
    from segclip.benchmarks import run_benchmark

    model = triton.models[0]
    urls = [triton.model_url(model, "grpc"), triton.model_url(model, "http")]
    report = run_benchmark(export_dir, out=tmp_path / "t", backends="onnxruntime,triton-grpc,triton-http", batch=[1],
                           concurrency=[1, 3], triton_url=urls, load_duration_s=1.0, data=sample_data, log=None, **FAST)
    assert_schema(report)
    rows = {r["backend"]: r for r in report["rows"]}
    for b in ("triton-grpc", "triton-http"):
        assert rows[b]["status"] == "ok" and rows[b]["pixel_agreement"] == 1.0, rows[b]
    load = report["triton_load"]
    assert [(r["protocol"], r["concurrency"]) for r in load] == [("grpc", 1), ("grpc", 3), ("http", 1), ("http", 3)]
    for r in load:
        assert r["status"] == "ok" and r["failures"] == 0 and r["requests"] >= 2 * r["concurrency"], r
        assert r["output_checks"] >= 1 and r["output_mismatches"] == 0 and r["output_min_agreement"] == 1.0, r
        assert r["server_queue_ms"] is not None and r["server_compute_ms"] > 0 and r["server_batches"] >= 1, r
        assert r["throughput_ips"] > 0 and r["p50_ms"] <= r["p99_ms"]
    assert report["summary"]["triton_best"]["throughput_ips"] > 0 and report["summary"]["triton_failures"] == 0
    assert (tmp_path / "t" / "triton_load.csv").is_file()


def test_benchmark_starts_its_own_server(export_dir, server_env, tmp_path, monkeypatch):
    """No --triton-url: the benchmark builds a repository from the export and serves it itself."""
    from segclip.benchmarks import run_benchmark
    from segclip.serving.server import process_group_pids

    monkeypatch.setenv("SEGCLIP_TRITON_ENV", str(server_env.path))
    started = []
    import segclip.serving.server as srv_mod

    orig = srv_mod.TritonServer.start

    def spy(self):
        out = orig(self)
        started.append(self.pid)
        return out

    monkeypatch.setattr(srv_mod.TritonServer, "start", spy)
    report = run_benchmark(export_dir, out=tmp_path / "s", backends="triton-grpc", batch=[1], concurrency=[2],
                           load_duration_s=0.5, log=None, **FAST)
    assert_schema(report)
    assert report["rows"][0]["status"] == "ok" and report["rows"][0]["pixel_agreement"] == 1.0
    assert [r["status"] for r in report["triton_load"]] == ["ok"]
    assert started and all(process_group_pids(p) == [] for p in started)  # the server is gone afterwards


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


# ---- arithmetic on hand-built rows ------------------------------------------------------------------
def _row(backend, batch, p50, status="ok", size=(SIZE, SIZE)):
    return {"backend": backend, "status": status, "height": size[0], "width": size[1], "batch": batch, "p50_ms": p50,
            "precision": None, "throughput_ips": None, "speedup_vs_torch": None, "miou": None, "pixel_agreement": None,
            "miou_delta": None, "size_mib": None}


def test_speedup_is_torch_time_over_backend_time():
    from segclip.benchmarks.core import _speedups, summarize
    from segclip.benchmarks.machine import machine_info

    rows = [_row("torch", 1, 40.0), _row("onnxruntime", 1, 10.0), _row("torch", 2, 45.0), _row("onnxruntime", 2, 30.0),
            _row("onnxruntime", 4, 12.0),  # no torch row at batch 4: no speedup
            _row("onnxruntime-fp16", 1, None, status="failed: boom"), _row("onnxruntime", 1, 80.0, size=(96, 96))]
    _speedups(rows)
    assert [r["speedup_vs_torch"] for r in rows] == [1.0, 4.0, 1.0, 1.5, None, None, None]
    s = summarize(rows, [], machine_info(1))
    assert s["batch"] == 1 and s["size"] == f"{SIZE}x{SIZE}" and s["fastest"] == "onnxruntime"
    assert s["backends"]["onnxruntime"]["speedup_vs_torch"] == 4.0 and s["backends"]["torch"]["p50_ms"] == 40.0


def test_percentiles_and_throughput_of_known_samples():
    from segclip.benchmarks.timing import Timing

    t = Timing(batch=2, reps=3, warmup=1, wall_s=1.0, samples_ms=[30.0, 10.0, 20.0])
    st = t.stats
    assert (st["p50_ms"], st["mean_ms"], st["min_ms"], st["max_ms"]) == (20.0, 20.0, 10.0, 30.0)
    assert st["p90_ms"] == pytest.approx(28.0) and st["p99_ms"] == pytest.approx(29.8)  # linear interpolation
    assert t.throughput_ips == 100.0  # 2 images x 3 calls in 60 ms
    assert Timing(batch=1, reps=4, warmup=0, wall_s=1.0, samples_ms=[5.0] * 4).throughput_ips == 200.0


def test_pixel_agreement_and_miou_of_known_maps():
    from segclip.benchmarks.accuracy import labels_of
    from segclip.inference.compare import agreement, miou  # the benchmark's accuracy columns use the parity comparator

    a = [np.array([[0, 1], [2, 3]]), np.array([[1, 1, 1, 1]])]
    b = [np.array([[0, 1], [2, 0]]), np.array([[1, 1, 0, 1]])]
    assert agreement(a, b) == 0.75 and agreement(a, a) == 1.0 and agreement(a, b[:1]) is None
    items = [{"mask": np.array([[0, 1], [2, 255]])}, {"mask": np.array([[1, 1, 1, 1]])}]
    # kept pixels (truth, pred): (0,0), (1,1), (2,2), (1,1) x4 -> every present class perfect; class 3 is ignore-only
    assert miou(a, labels_of(items), 4) == 1.0  # a fraction, as in every segclip JSON
    # b: one class-1 pixel predicted 0 -> class 0 IoU 1/2, class 1 IoU 4/5, class 2 IoU 1
    assert miou(b, labels_of(items), 4) == pytest.approx((1 / 2 + 4 / 5 + 1) / 3, abs=1e-5)


def test_server_split_divides_by_requests_and_batches():
    from segclip.benchmarks.triton_load import server_split

    def stats(success, queue_ns, infer_ns, execs, infs):
        d = {k: (0, 0) for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")}
        d.update(success=(success, 0), queue=(success, queue_ns), compute_infer=(success, infer_ns),
                 compute_input=(success, 1_000_000 * success), compute_output=(success, 0))
        d.update(execution_count=execs, inference_count=infs)
        return d

    s = server_split(stats(10, 0, 0, 2, 10), stats(30, 100_000_000, 300_000_000, 10, 30))
    assert s["server_queue_ms"] == 5.0 and s["server_compute_infer_ms"] == 15.0  # 100 ms / 20 requests, 300 / 20
    assert s["server_compute_input_ms"] == 1.0 and s["server_compute_ms"] == 16.0
    assert s["server_batches"] == 8 and s["server_mean_batch"] == 2.5  # 20 requests in 8 executions


def test_every_backend_has_its_own_plot_colour():
    from segclip.benchmarks.backends import BACKENDS
    from segclip.benchmarks.report import BACKEND_COLORS

    assert set(BACKENDS) <= set(BACKEND_COLORS), set(BACKENDS) - set(BACKEND_COLORS)
    assert len(set(BACKEND_COLORS.values())) == len(BACKEND_COLORS) and "#7f7f7f" not in BACKEND_COLORS.values()


def test_miou_units_and_what_a_parity_mIoU_is_over():
    from segclip.inference.compare import describe_set, pct, pts

    assert (pct(0.17823), pct(None), pts(0.007665), pts(-0.0004)) == ("17.8%", "n/a", "+0.77 pts", "-0.04 pts")
    # the export's parity gate runs every image under every scene: 24 rows are 8 images
    got = describe_set({"images": 24, "scenes": 3, "image_size": [64, 64], "window": [64, 64]})
    assert got == "8 image(s) over 3 scenes (every image under each) of 64x64, window 64x64"
    assert describe_set({"images": 5, "scenes": None, "image_size": None, "window": None}) == "5 image(s) of mixed sizes"
