"""The generated sample set: reused when its manifest matches, refused when partial or different
unless --force; segclip sample-data writes a preview.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from segclip.cli import main
from segclip.data import build_dataset
from segclip.data.sample import MANIFEST, generate_sample_dataset
from segclip.errors import SegclipError


def test_sample_set_reuse_partial_and_force(tmp_path):
    kw = dict(seed=1, num_train=2, num_val=2, size=64)
    root = generate_sample_dataset(tmp_path / "s", **kw)
    m = json.loads((root / MANIFEST).read_text())
    assert m["seed"] == 1 and m["size"] == 64
    f = root / "Train" / "Rural" / "images_png" / "0.png"
    stamp = f.stat().st_mtime_ns
    assert generate_sample_dataset(root, **kw) == root and f.stat().st_mtime_ns == stamp  # reused
    with pytest.raises(SegclipError, match="seed=1.*--force"):
        generate_sample_dataset(root, **{**kw, "seed": 2})
    generate_sample_dataset(root, **{**kw, "seed": 2}, force=True)
    assert json.loads((root / MANIFEST).read_text())["seed"] == 2
    (root / "Val" / "Urban" / "masks_png" / "3.png").unlink()  # now partial
    with pytest.raises(SegclipError, match="not empty"):
        generate_sample_dataset(root, **{**kw, "seed": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_cli_sample_data_writes_preview(tmp_path):
    r = CliRunner().invoke(main, ["sample-data", "--out", str(tmp_path / "d"), "--num-train", "2", "--num-val", "1",
                                  "--size", "64", "--seed", "4"])
    assert r.exit_code == 0, r.output
    prev = Image.open(tmp_path / "d" / "preview.png")
    assert prev.mode == "RGB" and prev.size[0] > 2 * 64 + 4  # images, masks and the legend
    assert len(build_dataset("sample", tmp_path / "d", "val")) == 1
