"""More data-layer contracts: folder splits, on-the-fly tiling, prompt templates, sample-set reuse,
atomic prepare, bounded sliding-window memory, augmentation padding.  Real tiny files, no mocks."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from segclip.cli import main
from segclip.data import DATASETS, build_dataset, dataset_info
from segclip.data.sample import MANIFEST, generate_sample_dataset
from segclip.data.sliding import sliding_window_predict
from segclip.data.tiling import tile_coords
from segclip.data.transforms import TrainAugment
from segclip.errors import SegclipError


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _isaid(root, h=13, w=21):
    mask = np.zeros((h, w, 3), np.uint8)
    mask[:, w // 2:] = (0, 0, 63)  # ship (iSAID's published colour) on the right half
    img = _rgb(h, w, 3)
    _png(root / "train" / "images" / "P0001.png", img)
    _png(root / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png", mask)
    return img, np.where(np.arange(w) >= w // 2, 1, 0)[None].repeat(h, 0)


# ---------------------------------------------------------------- info / prompts ---------------
def test_dataset_info_needs_no_files():
    assert set(DATASETS) == {"loveda", "isaid", "uavid", "folder", "sample"}
    assert dataset_info("sample")["classes"] == dataset_info("loveda")["classes"]
    isaid = dataset_info("isaid")
    assert len(isaid["classes"]) == 16 and isaid["palette"][15] == (0, 100, 155)
    assert dataset_info("uavid", label_order="official")["classes"][0] == "clutter"
    with pytest.raises(SegclipError, match="classes.yaml"):
        dataset_info("folder")


def test_prompt_template_and_bad_template(tmp_path):
    img, _ = _isaid(tmp_path)
    ds = build_dataset("isaid", tmp_path, "train", prompt_template="an aerial image of a {}",
                       prompts={"ship": "a ship at sea"})
    assert ds.prompts[2] == "an aerial image of a storage tank" and ds.prompts[1] == "a ship at sea"
    with pytest.raises(SegclipError, match="placeholder"):
        build_dataset("isaid", tmp_path, "train", prompt_template="no placeholder")
    with pytest.raises(SegclipError, match="unknown option 'domain'"):
        build_dataset("isaid", tmp_path, "train", domain="urban")


# ---------------------------------------------------------------- folder splits --------------
def _folder(root, stems, sub=""):
    root.mkdir(exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump({"classes": ["a", "b"]}))
    for i, s in enumerate(stems):
        _png(root / "images" / sub / f"{s}.jpg" if i % 2 else root / "images" / sub / f"{s}.png", _rgb(4, 5, i))
        _png(root / "masks" / sub / f"{s}.png", np.full((4, 5), i % 2, np.uint8), mode="L")


def test_folder_split_rules(tmp_path):
    sub = tmp_path / "sub"
    _folder(sub, ["x", "y"], "train")
    _folder(sub, ["z"], "val")
    assert len(build_dataset("folder", sub, "train")) == 2 and len(build_dataset("folder", sub, "val")) == 1
    with pytest.raises(SegclipError, match=r"no split 'test'.*found: train, val"):
        build_dataset("folder", sub, "test")

    lists = tmp_path / "lists"
    _folder(lists, ["p", "q", "r"])
    (lists / "splits").mkdir()
    (lists / "splits" / "val.txt").write_text("# held out\nq\n\n")
    ds = build_dataset("folder", lists, "val")
    assert [it["meta"]["stem"] for it in ds] == ["q"]
    np.testing.assert_array_equal(ds[0]["mask"], np.ones((4, 5)))
    with pytest.raises(SegclipError, match=r"no train.txt.*found splits: val"):
        build_dataset("folder", lists, "train")

    flat = tmp_path / "flat"
    _folder(flat, ["m", "n"])
    assert len(build_dataset("folder", flat, "train")) == len(build_dataset("folder", flat, "val")) == 2


# ---------------------------------------------------------------- tiling option --------------
def test_on_the_fly_tiles_match_the_image_and_pad_with_ignore(tmp_path):
    img, expected = _isaid(tmp_path)
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


# ---------------------------------------------------------------- prepare atomicity ----------
def test_prepare_failing_midway_leaves_nothing_and_force_replaces(tmp_path):
    src = tmp_path / "iSAID"
    _isaid(src)
    _png(src / "train" / "images" / "P0002.png", _rgb(13, 21))
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


# ---------------------------------------------------------------- sample set reuse -----------
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


# ---------------------------------------------------------------- sliding memory -------------
def test_sliding_window_memory_is_bounded_by_a_band():
    h, w, k, win = 1200, 900, 16, 128
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 7 % 251)[None]

    def predict(batch):
        s = np.zeros((batch.shape[0], k) + batch.shape[1:3], np.float32)
        s[:, 3] = batch[..., 0] / 255.0
        s[:, 5] = 0.5
        return s

    tracemalloc.start()
    mask = sliding_window_predict(predict, img, win, batch_size=4, num_classes=k)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full = k * h * w * 4
    assert peak < full / 3, (peak, full)
    np.testing.assert_array_equal(mask, np.where(img[..., 0] / 255.0 > 0.5, 3, 5))
    assert mask.dtype == np.uint8
    with pytest.raises(SegclipError, match="uint8"):
        sliding_window_predict(predict, img.astype(np.float32), win)


# ---------------------------------------------------------------- augment padding ------------
def test_augment_pads_small_images_and_avoids_all_ignore_crops(tmp_path):
    img, _ = _isaid(tmp_path)
    ds = build_dataset("isaid", tmp_path, "train")
    aug = TrainAugment(ds, (24, 40), seed=0, scale_range=(1.0, 1.0), color_jitter=0.0)
    for e in range(3):
        aug.set_epoch(e)
        out = aug[0]
        assert out["image"].shape == (24, 40, 3) and out["mask"].shape == (24, 40)
        assert out["image"].dtype == np.uint8 and out["mask"].dtype == np.int64
        valid = out["mask"] != 255
        assert valid.sum() == 13 * 21 and (out["image"][~valid] == 0).all()


def test_loveda_file_ids_round_trip_through_the_reader(tmp_path):
    """predict --label-ids dataset writes what the LoveDA reader reads back as the same classes."""
    from segclip.data import dataset_label_ids
    from segclip.data.loveda import CLASSES

    name, encode, table = dataset_label_ids(CLASSES)
    assert name == "loveda" and table[0][0] == "no-data" and table[3][0] == "road"
    mask = np.array([[0, 1, 2, 3], [4, 5, 6, 255]], np.uint8)
    ids = encode(mask)
    np.testing.assert_array_equal(ids, [[1, 2, 3, 4], [5, 6, 7, 0]])
    root = tmp_path / "L"
    for sub in ("images_png", "masks_png"):
        (root / "Val" / "Urban" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(root / "Val" / "Urban" / "images_png" / "0.png")
    Image.fromarray(ids, "L").save(root / "Val" / "Urban" / "masks_png" / "0.png")
    np.testing.assert_array_equal(build_dataset("loveda", root, "val")[0]["mask"], mask)
    assert dataset_label_ids(("a", "b")) is None
