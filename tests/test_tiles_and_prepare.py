"""Tiles: the on-the-fly tiling option matches the image and pads with ignore; segclip prepare is atomic
(a failure midway leaves nothing) and --force replaces.  Real tiny files, no mocks.
"""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from data_files import isaid_scene, png, rgb
from segclip.cli import main
from segclip.data import build_dataset
from segclip.data.tiling import tile_coords


def test_on_the_fly_tiles_match_the_image_and_pad_with_ignore(tmp_path):
    img, expected = isaid_scene(tmp_path)
    ds = build_dataset("isaid", tmp_path, "train", tile=8, stride=5)
    coords = tile_coords(13, 21, 8, 5)
    assert len(ds) == len(coords) and ds.classes[1] == "ship"
    for i, (y0, x0, y1, x1) in enumerate(coords):
        it = ds[i]
        assert it["meta"]["tile"] == (y0, x0, y1, x1) and it["image"].shape == (8, 8, 3)
        np.testing.assert_array_equal(it["image"][: y1 - y0, : x1 - x0], img[y0:y1, x0:x1])
        np.testing.assert_array_equal(it["mask"][: y1 - y0, : x1 - x0], expected[y0:y1, x0:x1])
    small = build_dataset("isaid", tmp_path, "train", tile=32)  # bigger than the image: one padded tile
    it = small[0]
    assert len(small) == 1 and it["image"].shape == (32, 32, 3)
    assert (it["mask"][13:] == 255).all() and (it["mask"][:, 21:] == 255).all() and (it["image"][13:] == 0).all()


def test_prepare_failing_midway_leaves_nothing_and_force_replaces(tmp_path):
    src = tmp_path / "iSAID"
    isaid_scene(src)
    png(src / "train" / "images" / "P0002.png", rgb(13, 21))
    (src / "train" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png").write_bytes(b"not a png")
    dst = tmp_path / "out" / "patches"
    r = CliRunner().invoke(main, ["prepare", "isaid", str(src), "--out", str(dst), "--tile", "8"])
    last = r.output.strip().splitlines()[-1]  # (the lines before are the tqdm progress bar on stderr)
    assert r.exit_code == 2 and last.startswith("error: ") and "P0002_instance_color_RGB.png" in last
    assert not dst.exists() and list((tmp_path / "out").iterdir()) == []  # no temp folder left behind
    (src / "train" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png").unlink()
    (src / "train" / "images" / "P0002.png").unlink()
    assert CliRunner().invoke(main, ["prepare", "isaid", str(src), "--out", str(dst), "--tile", "8"]).exit_code == 0
    r = CliRunner().invoke(main, ["prepare", "isaid", str(src), "--out", str(dst), "--tile", "16", "--force"])
    assert r.exit_code == 0, r.output
    assert json.loads((dst / "prepare_manifest.json").read_text())["tile"] == 16
    assert len(build_dataset("isaid", dst, "train")) == len(tile_coords(13, 21, 16, 16))
    assert sorted(p.name for p in dst.parent.iterdir()) == ["patches"]
