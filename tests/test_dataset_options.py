"""Dataset options and registry: dataset_info without files, prompt templates, folder split rules, LoveDA
file ids round-tripping through the reader.  Real tiny files, no mocks.
"""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from data_files import isaid_scene, png, rgb
from segclip.data import DATASETS, build_dataset, dataset_info
from segclip.errors import SegclipError


def test_dataset_info_needs_no_files():
    assert set(DATASETS) == {"loveda", "isaid", "uavid", "folder", "sample"}
    assert dataset_info("sample")["classes"] == dataset_info("loveda")["classes"]
    isaid = dataset_info("isaid")
    assert len(isaid["classes"]) == 16 and isaid["palette"][15] == (0, 100, 155)
    assert dataset_info("uavid", label_order="official")["classes"][0] == "clutter"
    with pytest.raises(SegclipError, match="classes.yaml"):
        dataset_info("folder")


def test_prompt_template_and_bad_template(tmp_path):
    img, _ = isaid_scene(tmp_path)
    ds = build_dataset("isaid", tmp_path, "train", prompt_template="an aerial image of a {}",
                       prompts={"ship": "a ship at sea"})
    assert ds.prompts[2] == "an aerial image of a storage tank" and ds.prompts[1] == "a ship at sea"
    with pytest.raises(SegclipError, match="placeholder"):
        build_dataset("isaid", tmp_path, "train", prompt_template="no placeholder")
    with pytest.raises(SegclipError, match="unknown option 'domain'"):
        build_dataset("isaid", tmp_path, "train", domain="urban")


def _folder(root, stems, sub=""):
    root.mkdir(exist_ok=True)
    (root / "classes.yaml").write_text(yaml.safe_dump({"classes": ["a", "b"]}))
    for i, s in enumerate(stems):
        png(root / "images" / sub / f"{s}.jpg" if i % 2 else root / "images" / sub / f"{s}.png", rgb(4, 5, i))
        png(root / "masks" / sub / f"{s}.png", np.full((4, 5), i % 2, np.uint8), mode="L")


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
