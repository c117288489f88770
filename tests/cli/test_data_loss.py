"""What used to be lost or corrupted with exit 0: each check compares against the file or the
numbers that were there before, not against segclip's own output."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segclip.cli import main
from segclip.data.imageio import read_rgb

from .support import error_line, fingerprint, tree_diff


def test_eval_limit_never_overwrites_the_full_evaluation(cli_ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    full = cli_ws["run"] / "eval_val.json"
    before = full.read_bytes()
    res = CliRunner().invoke(main, ["eval", str(cli_ws["run"]), "--data", f"sample:{cli_ws['data']}", "--limit", "1",
                                    "--device", "cpu"])
    try:
        assert res.exit_code == 0, res.output
        assert full.read_bytes() == before
        spot = cli_ws["run"] / "eval_val_first1.json"
        assert json.loads(spot.read_text())["limit"] == 1 and str(spot) in res.output
    finally:
        (cli_ws["run"] / "eval_val_first1.json").unlink(missing_ok=True)  # the shared workspace stays as it was


def test_predict_force_replaces_and_the_run_before_is_refused(cli_ws, tmp_path):
    out = tmp_path / "p"
    args = ["predict", "--model", str(cli_ws["export"]), str(cli_ws["img"]), "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    first = fingerprint(out)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--force" in again.output and tree_diff(first, fingerprint(out)) == []
    forced = CliRunner().invoke(main, args + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert any(d.startswith("changed: img_mask.png") for d in tree_diff(first, fingerprint(out)))


def test_predict_inputs_with_the_same_stem_get_separate_outputs(cli_ws, tmp_path):
    a, b = cli_ws["root"] / "a" / "x.png", cli_ws["root"] / "b" / "x.png"
    res = CliRunner().invoke(main, ["predict", "--model", str(cli_ws["export"]), str(a), str(b), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    masks = sorted((tmp_path / "p").glob("*_mask.*"))
    assert len(masks) == 2, [m.name for m in masks]


def test_16bit_grey_is_stretched_not_clipped(tmp_path):
    """Values 1000..4000 (typical 16-bit imagery): PIL's own conversion makes almost every pixel
    255; the percentile stretch keeps the ordering and spreads the values over 0..255."""
    rng = np.random.default_rng(0)
    a = rng.integers(1000, 4001, (64, 64)).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I")
    clipped = np.asarray(Image.open(path).convert("RGB"))[..., 0]
    assert (clipped == 255).mean() > 0.9  # what PIL alone does (the defect)
    notes = []
    rgb = read_rgb(path, note=notes.append)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    g = rgb[..., 0].astype(int)
    assert (g == 255).mean() < 0.05 and (g == 0).mean() < 0.05  # 2 % at each end by construction
    lo, hi = np.percentile(a, 2), np.percentile(a, 98)
    inside = (a > lo + 5) & (a < hi - 5)
    expect = (a[inside] - lo) / (hi - lo) * 255
    assert np.abs(g[inside] - expect).max() <= 1.0
    order = np.argsort(a[inside], kind="stable")
    assert np.all(np.diff(g[inside][order]) >= 0)  # brighter stays brighter
    assert len(notes) == 1 and "p2-p98 stretch" in notes[0]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a plain tile, no CRS
def test_16bit_multiband_tiff_trains_on_the_pixels_predict_sees(tmp_path):
    """A 4-band uint16 tile (PIL cannot open it): the dataset reader gives the pixels predict's
    windowed reader gives, bands 1-3 stretched per band by one rule (they used to differ: PIL
    stretched all channels together, GDAL each band)."""
    import rasterio

    from segclip.data.imageio import image_size
    from segclip.data.raster import RasterSource

    rng = np.random.default_rng(1)
    bands = np.stack([rng.integers(lo, lo + 3000, (48, 80)) for lo in (200, 1500, 4000, 9000)]).astype(np.uint16)
    path = tmp_path / "tile.tif"
    with rasterio.open(path, "w", driver="GTiff", width=80, height=48, count=4, dtype="uint16") as ds:
        ds.write(bands)
    notes = []
    rgb = read_rgb(path, note=notes.append)
    assert rgb.shape == (48, 80, 3) and image_size(path) == (48, 80)
    with RasterSource(path) as src:
        windows = np.concatenate([src.read(0, 0, 20, 80), src.read(20, 0, 48, 80)])
    np.testing.assert_array_equal(rgb, windows)
    for c in range(3):  # each band over the full 0..255 range, independently of the others' levels
        lo, hi = np.percentile(bands[c], (2, 98))
        expect = np.clip((bands[c] - lo) * 255.0 / (hi - lo), 0, 255)
        assert np.abs(rgb[..., c] - expect).max() <= 1.0, c
    assert len(notes) == 1 and "uint16 p2-p98 stretch" in notes[0]


# ---- issue 22: never write outside --out, never destroy a user's folder, refuse swapped artifacts --------
def _invoke(args, cwd=None):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_never_writes_into_a_folder_that_is_not_a_run(cli_ws, tmp_path):
    """A folder of the user's with their own config.json and metrics.csv: train used to replace the
    one and cut the other to its header (its "already holds a run" check looked for checkpoints only)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}\n')
    (mine / "metrics.csv").write_text("epoch,acc\n1,0.5\n2,0.7\n")
    before = fingerprint(mine)
    for extra in ([], ["--resume"]):
        res = _invoke(["train", "--data", f"sample:{cli_ws['data']}", "--preset", "segclip-small", "--out", mine,
                       "--max-steps", 1, "--size", 64, "--batch", 2, "--backbone-weights", "none", "--clip-checkpoint",
                       "none", "--device", "cpu", "--no-eval", *extra])
        line = error_line(res.output, 2, res.exit_code)
        assert str(mine) in line and "not a segclip training run" in line and "--force" not in line
        assert tree_diff(before, fingerprint(mine)) == []


def test_quickstart_force_never_deletes_a_folder_that_is_not_a_quickstart(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{article}\n")
    (thesis / "summary.json").write_text('{"chapter": 1}\n')  # a summary.json, but not a quickstart's
    before = fingerprint(thesis)
    res = _invoke(["quickstart", "--out", thesis, "--force", "--max-steps", 1, "--device", "cpu"])
    line = error_line(res.output, 2, res.exit_code)
    assert str(thesis) in line and "not a segclip quickstart" in line
    assert tree_diff(before, fingerprint(thesis)) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def _swap_a_weight(onnx_path):
    """Another model of the same shape: one weight of the FP32 graph changed (what a user who copied
    another export's model.onnx over this one has)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(onnx_path))
    init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    a = numpy_helper.to_array(init).copy()
    a.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(a, init.name))
    onnx.save(m, str(onnx_path))


def test_an_export_whose_model_was_replaced_is_refused(cli_ws, tmp_path):
    """eval/predict on ONNX Runtime and OpenVINO, by folder and by file: one line naming the file
    and the fix, instead of the other model's results reported as the export's (exit 0)."""
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(cli_ws["export"], exp)
    _swap_a_weight(exp / "model.onnx")
    before = fingerprint(tmp_path)
    cases = [["eval", exp, "--data", f"sample:{cli_ws['data']}", "--out", tmp_path / "e.json"],
             ["predict", "--model", exp, cli_ws["img"], "--out", tmp_path / "p"],
             ["predict", "--model", exp, cli_ws["img"], "--out", tmp_path / "p", "--runtime", "openvino"],
             ["predict", "--model", exp / "model.onnx", cli_ws["img"], "--out", tmp_path / "p"]]
    for args in cases:
        res = _invoke(args)
        line = error_line(res.output, 2, res.exit_code)
        assert str(exp / "model.onnx") in line and "sha256" in line and "re-export" in line, line
    assert tree_diff(before, fingerprint(tmp_path)) == []


def test_predict_never_writes_outside_out(cli_ws, tmp_path, monkeypatch):
    """x.png and x.tif in one folder: the parent-folder rule reached the filesystem root and wrote
    /_..._x_mask.png, the second input over the first.  The extension now tells them apart."""
    import shutil

    monkeypatch.chdir(tmp_path)
    d = tmp_path / "dir"
    d.mkdir()
    shutil.copy(cli_ws["img"], d / "x.png")
    shutil.copy(cli_ws["img"], d / "x.tif")  # GDAL reads by content: a PNG named .tif is read as PNG
    out = tmp_path / "pred"
    res = _invoke(["predict", "--model", cli_ws["export"], d / "x.png", d / "x.tif", "--out", out])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*_mask.*")) == ["x_png_mask.png", "x_tif_mask.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "pred"]
    # x.png, x.tif and x_png.tif: no name tells them apart (x_png twice): refused before any work
    shutil.copy(cli_ws["img"], d / "x_png.tif")
    res = _invoke(["predict", "--model", cli_ws["export"], d / "x.png", d / "x.tif", d / "x_png.tif", "--out", tmp_path / "q"])
    assert "no name tells their outputs apart" in error_line(res.output, 2, res.exit_code)
    assert not (tmp_path / "q").exists()


def test_refused_predict_leaves_no_empty_out_and_sweeps_a_killed_runs_partial(cli_ws, tmp_path):
    import subprocess
    import sys

    for args in (["--size", 256], ["--scene", "moon"]):  # refused once the model is open: --out was made by then
        res = _invoke(["predict", "--model", cli_ws["export"], cli_ws["img"], "--out", tmp_path / "p", *args])
        assert str(args[0]) in error_line(res.output, 2, res.exit_code)
        assert not (tmp_path / "p").exists()
    # a predict killed mid-file left a partial; the rerun is refused (an earlier output), the partial still goes
    out = tmp_path / "preds"
    out.mkdir()
    (out / "img_mask.png").write_bytes(b"an earlier result")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    partial = out / f".img_mask.partial-{int(dead.stdout)}-abc123.tif"
    partial.write_bytes(b"half a class map")
    res = _invoke(["predict", "--model", cli_ws["export"], cli_ws["img"], "--out", out])
    assert "--force" in error_line(res.output, 2, res.exit_code)
    assert not partial.exists() and sorted(p.name for p in out.iterdir()) == ["img_mask.png"]
