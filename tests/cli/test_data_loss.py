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

from .support import fingerprint, tree_diff


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
