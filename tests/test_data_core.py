"""Datasets in their exact on-disk formats, tiling, sliding window, augmentation, sample set, bad input.

Fixtures are tiny real PNG files with known content; decoded masks are checked pixel for pixel.
"""
from __future__ import annotations


import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from data_files import png as _png, rgb as _rgb
from segclip.cli import main
from segclip.data import build_dataset, dataset_info
from segclip.data.sliding import sliding_window_predict
from segclip.data.tiling import tile_coords
from segclip.data.transforms import TrainAugment, collate
from segclip.errors import SegclipError

# Palettes written out from each dataset's published definition, never from segclip's constants.
# LoveDA (github.com/Junjue-Wang/LoveDA, COLOR_MAP): mask values 1..7 are these classes, 0 is no-data.
LOVEDA = (("background", (255, 255, 255)), ("building", (255, 0, 0)), ("road", (255, 255, 0)), ("water", (0, 0, 255)),
          ("barren", (159, 129, 183)), ("forest", (0, 255, 0)), ("agriculture", (255, 195, 128)))
# iSAID (iSAID_Devkit helpers/labels.py; mmsegmentation's iSAID converter): RGB colour of each class id.
ISAID = (("background", (0, 0, 0)), ("ship", (0, 0, 63)), ("storage_tank", (0, 63, 63)),
         ("baseball_diamond", (0, 63, 0)), ("tennis_court", (0, 63, 127)), ("basketball_court", (0, 63, 191)),
         ("ground_track_field", (0, 63, 255)), ("bridge", (0, 127, 63)), ("large_vehicle", (0, 127, 127)),
         ("small_vehicle", (0, 0, 127)), ("helicopter", (0, 0, 191)), ("swimming_pool", (0, 0, 255)),
         ("roundabout", (0, 191, 127)), ("soccer_ball_field", (0, 127, 191)), ("plane", (0, 127, 255)),
         ("harbor", (0, 100, 155)))
ISAID_PALETTE = tuple(c for _, c in ISAID)
# UAVid (UAVidToolKit colorTransformer; official ids: clutter 0 .. human 7).
UAVID_COLORS = {"clutter": (0, 0, 0), "building": (128, 0, 0), "road": (128, 64, 128), "tree": (0, 128, 0),
                "low_vegetation": (128, 128, 0), "moving_car": (64, 0, 128), "static_car": (192, 0, 192),
                "human": (64, 64, 0)}
UAVID_OFFICIAL = ("clutter", "building", "road", "tree", "low_vegetation", "moving_car", "static_car", "human")


# ---------------------------------------------------------------- LoveDA ----------------------
@pytest.fixture
def loveda_root(tmp_path):
    root = tmp_path / "LoveDA"
    raw = np.arange(8, dtype=np.uint8).repeat(4)[None].repeat(6, 0)  # 6 x 32, values 0..7 (0 = no data)
    for split in ("Train", "Val"):
        for dom, seed in (("Urban", 1), ("Rural", 2)):
            for i in (1, 2, 10):
                _png(root / split / dom / "images_png" / f"{i}.png", _rgb(6, 32, seed + i))
                _png(root / split / dom / "masks_png" / f"{i}.png", raw)
    _png(root / "Test" / "Urban" / "images_png" / "5.png", _rgb(6, 32))
    return root


def test_palettes_are_the_published_ones():
    assert dataset_info("loveda")["classes"] == tuple(n for n, _ in LOVEDA)
    assert dataset_info("loveda")["palette"] == tuple(c for _, c in LOVEDA)
    assert dataset_info("sample")["palette"] == tuple(c for _, c in LOVEDA)
    assert dataset_info("isaid")["classes"] == tuple(n for n, _ in ISAID)
    assert dataset_info("isaid")["palette"] == ISAID_PALETTE
    official = dataset_info("uavid", label_order="official")
    assert official["classes"] == UAVID_OFFICIAL and official["palette"] == tuple(UAVID_COLORS[c] for c in UAVID_OFFICIAL)
    paper = dataset_info("uavid")  # the paper's order: clutter last
    assert paper["classes"] == UAVID_OFFICIAL[1:] + UAVID_OFFICIAL[:1]
    assert paper["palette"] == tuple(UAVID_COLORS[c] for c in paper["classes"])


def test_loveda_decodes_no_data_and_classes_pixel_for_pixel(loveda_root):
    ds = build_dataset("loveda", loveda_root, "train")
    assert ds.classes == tuple(n for n, _ in LOVEDA) and ds.palette == tuple(c for _, c in LOVEDA)
    assert len(ds) == 6 and ds.has_labels
    item = ds[0]
    expected = np.where(np.arange(8) == 0, 255, np.arange(8) - 1).repeat(4)[None].repeat(6, 0)
    np.testing.assert_array_equal(item["mask"], expected)
    assert item["mask"].dtype == np.int64 and item["image"].dtype == np.uint8 and item["image"].shape == (6, 32, 3)
    np.testing.assert_array_equal(item["image"], np.asarray(Image.open(item["meta"]["path"]).convert("RGB")))
    # natural order (2 before 10), both domains
    names = [(d["meta"]["domain"], d["meta"]["path"].split("/")[-1]) for d in (ds[i] for i in range(len(ds)))]
    assert sorted(set(n[0] for n in names)) == ["rural", "urban"]
    urban = [n for d, n in names if d == "urban"]
    assert urban == ["1.png", "2.png", "10.png"]
    assert len(build_dataset("loveda", loveda_root, "VAL", domains=("rural",))) == 3
    test = build_dataset("loveda", loveda_root, "test")
    assert not test.has_labels and "mask" not in test[0]


def test_prompts_default_and_override(loveda_root):
    ds = build_dataset("loveda", loveda_root, "train", prompts={"road": "an asphalt road"})
    assert ds.prompts[0] == "a photo with a background" and ds.prompts[2] == "an asphalt road"
    with pytest.raises(SegclipError, match="unknown class 'roads'"):
        build_dataset("loveda", loveda_root, "train", prompts={"roads": "x"})


# ---------------------------------------------------------------- iSAID -----------------------
def test_isaid_colour_masks_and_unknown_colour_warning(tmp_path):
    root = tmp_path / "iSAID"
    mask = np.zeros((4, 16, 3), np.uint8)
    for k in range(16):
        mask[:, k] = ISAID_PALETTE[k]
    mask[0, 0] = (1, 2, 3)  # matches no class
    _png(root / "train" / "images" / "P0001.png", _rgb(4, 16))
    _png(root / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png", mask)
    ds = build_dataset("isaid", root, "train")
    assert len(ds.classes) == 16 and ds.classes[15] == "harbor"
    with pytest.warns(UserWarning, match=r"P0001_instance_color_RGB.png.*1 pixel"):
        m = ds[0]["mask"]
    expected = np.arange(16)[None].repeat(4, 0)
    expected[0, 0] = 255
    np.testing.assert_array_equal(m, expected)


# ---------------------------------------------------------------- UAVid -----------------------
def test_uavid_both_label_orders(tmp_path):
    root = tmp_path / "uavid"
    paper = dataset_info("uavid")["classes"]
    mask = np.zeros((2, 8, 3), np.uint8)
    for k, name in enumerate(paper):
        mask[:, k] = UAVID_COLORS[name]
    _png(root / "uavid_train" / "seq1" / "Images" / "000000.png", _rgb(2, 8))
    _png(root / "uavid_train" / "seq1" / "Labels" / "000000.png", mask)
    ds = build_dataset("uavid", root, "train")
    assert ds.classes == tuple(paper) and ds.classes[0] == "building" and ds.classes[7] == "clutter"
    np.testing.assert_array_equal(ds[0]["mask"], np.arange(8)[None].repeat(2, 0))
    off = build_dataset("uavid", root, "train", label_order="official")
    assert off.classes[0] == "clutter"
    np.testing.assert_array_equal(np.array(off.classes)[off[0]["mask"][0]], np.array(paper))
    assert ds[0]["meta"]["sequence"] == "seq1"


# ---------------------------------------------------------------- folder ----------------------
def test_folder_index_and_palette_masks_with_yaml(tmp_path):
    root = tmp_path / "tiles"
    (root).mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump({"classes": [
        {"name": "road", "color": [128, 64, 128], "prompt": "a paved road from a drone"},
        {"name": "tree", "color": [0, 128, 0]}], "ignore_index": 9}))
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[:, :2] = (128, 64, 128)
    rgb[:, 2:] = (0, 128, 0)
    _png(root / "images" / "a.png", _rgb(3, 4))
    _png(root / "masks" / "a.png", rgb)
    ds = build_dataset("folder", root, "anything")
    assert ds.classes == ("road", "tree") and ds.prompts == ("a paved road from a drone", "a photo with a tree")
    np.testing.assert_array_equal(ds[0]["mask"], np.array([[0, 0, 1, 1]] * 3))
    idx = np.array([[0, 1, 9, 0]] * 3, np.uint8)
    _png(root / "masks" / "a.png", idx, mode="L")
    np.testing.assert_array_equal(build_dataset("folder", root, "x")[0]["mask"], np.array([[0, 1, 255, 0]] * 3))
    _png(root / "masks" / "a.png", np.full((3, 4), 5, np.uint8), mode="L")
    with pytest.raises(SegclipError, match=r"a.png: mask value 5"):
        build_dataset("folder", root, "x")[0]


# ---------------------------------------------------------------- tiling / sliding ------------
@pytest.mark.parametrize("h,w,tile,stride", [(1000, 700, 896, 512), (896, 896, 896, 512), (300, 200, 896, 512),
                                              (2160, 3840, 1024, 1024), (13, 29, 8, 5)])
def test_tile_coords_cover_every_pixel_inside_bounds(h, w, tile, stride):
    cov = np.zeros((h, w), np.int32)
    coords = tile_coords(h, w, tile, stride)
    for y0, x0, y1, x1 in coords:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert y1 - y0 == min(tile, h) and x1 - x0 == min(tile, w)  # full tiles, shifted back at the border
        cov[y0:y1, x0:x1] += 1
    assert cov.min() >= 1
    ys = sorted({c[0] for c in coords})
    assert all(b - a <= stride for a, b in zip(ys, ys[1:]))


def _position_image(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy % 256, xx % 256, (yy // 256) * 16 + xx // 256], -1).astype(np.uint8)


def _position_scores(batch, k=5):
    """Scores that are a known function of absolute position, decoded from the pixel values."""
    y = batch[..., 0].astype(int) + 256 * (batch[..., 2].astype(int) // 16)
    x = batch[..., 1].astype(int) + 256 * (batch[..., 2].astype(int) % 16)
    cls = (y // 37 + x // 53) % k
    s = np.full((batch.shape[0], k) + batch.shape[1:3], 0.1, np.float32)
    np.put_along_axis(s, cls[:, None], 1.0, axis=1)
    return s


@pytest.mark.parametrize("window", [(64, 64), (100, 60), (300, 437), (512, 512)])
def test_sliding_window_equals_whole_image(window):
    img = _position_image(300, 437)  # smaller than, equal to and not a multiple of the windows
    whole_scores = _position_scores(img[None])[0]
    mask, scores = sliding_window_predict(_position_scores, img, window, batch_size=3, return_scores=True)
    np.testing.assert_array_equal(mask, whole_scores.argmax(0))
    np.testing.assert_allclose(scores, whole_scores, rtol=1e-5)
    np.testing.assert_array_equal(sliding_window_predict(_position_scores, img, window, batch_size=2), mask)



def _window_origin_class(batch):
    """Class map of a window = a code of the window's own top-left position (windows disagree)."""
    y = batch[:, 0, 0, 0].astype(int) + 256 * (batch[:, 0, 0, 2].astype(int) // 16)
    x = batch[:, 0, 0, 1].astype(int) + 256 * (batch[:, 0, 0, 2].astype(int) % 16)
    return np.broadcast_to(((y * 7 + x * 3) % 251).astype(np.uint8)[:, None, None], batch.shape[:3]).copy()


@pytest.mark.parametrize("window,stride", [((64, 64), (40, 48)), ((100, 60), (75, 45))])
def test_mask_mode_centre_region_wins(window, stride):
    h, w = 230, 170
    img = _position_image(h, w)
    got = sliding_window_predict(_window_origin_class, img, window, stride=stride, batch_size=5, mode="mask")
    # brute force: every pixel takes the window whose centre is nearest (L-inf in tent units, product rule)
    best = np.full((h, w), -1.0)
    ref = np.zeros((h, w), np.uint8)
    wh, ww = window
    for y0, x0, y1, x1 in tile_coords(h, w, window, stride):
        yy, xx = np.mgrid[0:wh, 0:ww]
        wgt = (np.minimum(yy + 1, wh - yy) / ((wh + 1) // 2)) * (np.minimum(xx + 1, ww - xx) / ((ww + 1) // 2))
        cls = (y0 * 7 + x0 * 3) % 251
        region = best[y0:y1, x0:x1]
        win = wgt > region
        region[win] = wgt[win]
        ref[y0:y1, x0:x1][win] = cls
    np.testing.assert_array_equal(got, ref)
    # windows that agree (a function of position) stitch to the whole-image answer in mask mode too
    whole = _position_scores(img[None])[0].argmax(0)
    np.testing.assert_array_equal(
        sliding_window_predict(lambda b: _position_scores(b).argmax(1), img, window, stride=stride, mode="mask"), whole)


def test_blender_streams_row_bands_and_skips_windows():
    from segclip.data.sliding import Blender, SlidingPlan

    img = _position_image(300, 437)
    plan = SlidingPlan(300, 437, (64, 64), overlap=0.25)
    blender = Blender(plan, mode="scores")
    bands, skipped = [], {3, 4, len(plan) - 1}
    for b in range(0, len(plan), 7):
        ids = [i for i in range(b, min(b + 7, len(plan))) if i not in skipped]
        if ids:
            bands += blender.add(ids, _position_scores(np.stack([plan.crop(img, plan.coords[i]) for i in ids])))
    bands += blender.finish()
    assert blender.done
    ys = [(y0, y1) for y0, y1, _ in bands]
    assert ys[0][0] == 0 and ys[-1][1] == 300 and all(a[1] == b[0] for a, b in zip(ys, ys[1:]))
    out = np.concatenate([r for _, _, r in bands])
    whole = _position_scores(img[None])[0].argmax(0)
    covered = np.zeros((300, 437), bool)
    for i, (y0, x0, y1, x1) in enumerate(plan.coords):
        if i not in skipped:
            covered[y0:y1, x0:x1] = True
    assert not covered.all()
    np.testing.assert_array_equal(out[covered], whole[covered])
    with pytest.raises(SegclipError, match="out of order"):
        Blender(plan, 5).add([2, 1], np.zeros((2, 5, 64, 64), np.float32))


def _window_scores(batch, k=4):
    """Scores that depend on the absolute position AND on the position inside the window, so that
    overlapping windows disagree and only the blend decides the result."""
    b = batch.astype(np.float64)
    y = b[..., 0] + 256 * (b[..., 2] // 16)
    x = b[..., 1] + 256 * (b[..., 2] % 16)
    i, j = np.mgrid[0:batch.shape[1], 0:batch.shape[2]]
    c = np.arange(k)[None, :, None, None]
    s = (np.cos(0.05 * y[:, None] * (c + 1)) + np.sin(0.07 * x[:, None] + c)
         + 0.9 * np.sin(0.31 * i[None, None] + 0.17 * j[None, None] + 1.3 * c))
    return s.astype(np.float32)


def _starts(n, win, stride):
    return [0] if n <= win else list(range(0, n - win, stride)) + [n - win]


@pytest.mark.parametrize("window,stride", [((64, 64), (40, 40)), ((100, 60), (67, 30)), ((150, 200), (100, 150))])
def test_sliding_window_blend_equals_tent_weighted_mean(window, stride):
    """Each pixel's score is sum(tent * window score) / sum(tent) over the windows covering it, with
    the tent min(i + 1, n - i) along each axis of a window (written out here, not the code's)."""
    h, w = 150, 437
    img = _position_image(h, w)
    (wh, ww), (sh, sw) = window, stride
    ty = np.minimum(np.arange(wh) + 1, wh - np.arange(wh)).astype(np.float64)
    tx = np.minimum(np.arange(ww) + 1, ww - np.arange(ww)).astype(np.float64)
    num, den = np.zeros((4, h, w)), np.zeros((h, w))
    for y0 in _starts(h, wh, sh):
        for x0 in _starts(w, ww, sw):
            sc = _window_scores(img[None, y0:y0 + wh, x0:x0 + ww])[0].astype(np.float64)
            num[:, y0:y0 + wh, x0:x0 + ww] += ty[:, None] * tx[None] * sc
            den[y0:y0 + wh, x0:x0 + ww] += ty[:, None] * tx[None]
    ref = num / den
    mask, scores = sliding_window_predict(_window_scores, img, window, stride=stride, batch_size=3, return_scores=True)
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-5)
    top2 = np.sort(ref, 0)[-2:]
    clear = top2[1] - top2[0] > 1e-4  # pixels where the reference argmax is not a near-tie
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(mask[clear], ref.argmax(0)[clear])
    banded = sliding_window_predict(_window_scores, img, window, stride=stride, batch_size=2)  # the ring-buffer path
    np.testing.assert_array_equal(banded[clear], ref.argmax(0)[clear])


# ---------------------------------------------------------------- sample / augment -------------
def test_sample_dataset_is_deterministic_and_loveda_format(tmp_path):
    from segclip.data.sample import generate_sample_dataset

    a = generate_sample_dataset(tmp_path / "a", seed=3, num_train=4, num_val=2, size=96)
    b = generate_sample_dataset(tmp_path / "b", seed=3, num_train=4, num_val=2, size=96)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert {f.parts[0] for f in files} == {"Train", "Val"} and {f.parts[1] for f in files} == {"Urban", "Rural"}
    values = np.unique(np.concatenate([np.unique(np.asarray(Image.open(a / f))) for f in files if "masks_png" in f.parts]))
    assert set(values.tolist()) <= set(range(8)) and set(range(1, 8)) <= set(values.tolist())
    ds = build_dataset("sample", a, "train")
    assert len(ds) == 4 and ds.name == "sample"


def test_train_augment_is_seeded_by_seed_epoch_index(tmp_path):
    ds = build_dataset("sample", tmp_path / "s", "train")  # generates the default set on first use
    aug = TrainAugment(ds, 64, seed=7)
    a, b = aug[3], aug[3]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert a["image"].shape == (64, 64, 3) and a["mask"].shape == (64, 64)
    aug.set_epoch(1)
    assert not np.array_equal(aug[3]["image"], a["image"])
    batch = collate([aug[0], aug[1]])
    assert tuple(batch["image"].shape) == (2, 64, 64, 3) and str(batch["mask"].dtype) == "torch.int64"


# ---------------------------------------------------------------- bad input -------------------
def test_wrong_root_and_split_list_what_was_found(loveda_root, tmp_path):
    with pytest.raises(SegclipError, match="does not exist"):
        build_dataset("loveda", tmp_path / "missing", "train")
    with pytest.raises(SegclipError, match="valid splits: train, val, test"):
        build_dataset("loveda", loveda_root, "training")
    with pytest.raises(SegclipError, match="unknown dataset"):
        build_dataset("lovedaa", loveda_root, "train")


def test_image_without_mask_and_size_mismatch_and_corrupt_png(loveda_root):
    (loveda_root / "Train" / "Urban" / "masks_png" / "2.png").unlink()
    with pytest.raises(SegclipError, match=r"2.png") as e:
        build_dataset("loveda", loveda_root, "train")
    assert "\n" not in str(e.value)
    _png(loveda_root / "Train" / "Urban" / "masks_png" / "2.png", np.ones((5, 5), np.uint8))
    with pytest.raises(SegclipError, match=r"masks_png/2.png: mask is 5x5 but its image 2.png is 32x6"):
        build_dataset("loveda", loveda_root, "train")[1]
    (loveda_root / "Train" / "Urban" / "images_png" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(SegclipError, match=r"images_png/1.png"):
        build_dataset("loveda", loveda_root, "train")[0]


def test_colour_mask_where_index_mask_expected(loveda_root):
    _png(loveda_root / "Val" / "Rural" / "masks_png" / "1.png", _rgb(6, 32))
    with pytest.raises(SegclipError, match=r"masks_png/1.png"):
        ds = build_dataset("loveda", loveda_root, "val", domains=("rural",))
        ds[0]


def test_cli_bad_input_exit_2_one_line_and_nothing_written(loveda_root, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["prepare", "isaid", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "out").exists()
    r = runner.invoke(main, ["sample-data", "--out", str(loveda_root)])  # a non-empty folder that is not the sample set
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    assert (loveda_root / "Train" / "Urban" / "images_png" / "1.png").exists()


def test_prepare_isaid_patches_and_reads_back(tmp_path):
    src = tmp_path / "iSAID"
    mask = np.zeros((1000, 700, 3), np.uint8)
    mask[:, 350:] = ISAID_PALETTE[14]  # plane
    img = _rgb(1000, 700)
    _png(src / "train" / "images" / "P0007.png", img)
    _png(src / "train" / "Semantic_masks" / "images" / "P0007_instance_color_RGB.png", mask)
    r = CliRunner().invoke(main, ["prepare", "isaid", str(src), "--out", str(tmp_path / "patches")])
    assert r.exit_code == 0, r.output
    ds = build_dataset("isaid", tmp_path / "patches", "train")
    coords = tile_coords(1000, 700, 896, 512)
    assert len(ds) == len(coords)
    for i in range(len(ds)):
        it = ds[i]
        y0, x0 = it["meta"]["origin"]
        assert it["image"].shape == (896, 896, 3)
        h, w = min(896, 1000 - y0), min(896, 700 - x0)
        np.testing.assert_array_equal(it["image"][:h, :w], img[y0:y0 + h, x0:x0 + w])
        assert (it["mask"][:h, :w] == np.where(np.arange(x0, x0 + w) >= 350, 14, 0)[None]).all()
        assert (it["mask"][:, w:] == 255).all()  # padding is ignore
    r = CliRunner().invoke(main, ["prepare", "isaid", str(src), "--out", str(tmp_path / "patches")])
    assert r.exit_code == 2 and "--force" in r.output


def test_mask_value_outside_class_list_names_file_and_value(loveda_root):
    _png(loveda_root / "Train" / "Rural" / "masks_png" / "2.png", np.full((6, 32), 9, np.uint8))
    ds = build_dataset("loveda", loveda_root, "train", domains=("rural",))
    with pytest.raises(SegclipError, match=r"Rural/masks_png/2.png: mask value 9 outside"):
        ds[1]


def test_prepare_uavid_tiles_with_custom_tile(tmp_path):
    src = tmp_path / "uavid"
    classes = dataset_info("uavid")["classes"]
    mask = np.zeros((90, 150, 3), np.uint8)
    mask[:, :] = UAVID_COLORS[classes[1]]  # road
    mask[:, 100:] = UAVID_COLORS[classes[2]]  # tree
    img = _rgb(90, 150, 5)
    _png(src / "uavid_train" / "seq3" / "Images" / "000100.png", img)
    _png(src / "uavid_train" / "seq3" / "Labels" / "000100.png", mask)
    r = CliRunner().invoke(main, ["prepare", "uavid", str(src), "--out", str(tmp_path / "tiles"), "--tile", "64"])
    assert r.exit_code == 0, r.output
    ds = build_dataset("uavid", tmp_path / "tiles", "train")
    assert ds.classes == classes and len(ds) == len(tile_coords(90, 150, 64, 64))
    for i in range(len(ds)):
        it = ds[i]
        y0, x0 = it["meta"]["origin"]
        np.testing.assert_array_equal(it["image"], img[y0:y0 + 64, x0:x0 + 64])
        np.testing.assert_array_equal(it["mask"], np.where(np.arange(x0, x0 + 64) >= 100, 2, 1)[None].repeat(64, 0))
    # eval reads whole frames: the patches reassembled, every pixel once (patches overlap at 90 and 150)
    from segclip.data.prepare import whole_images

    frames = whole_images(ds)
    assert len(frames) == 1
    f = frames[0]
    assert f["image"].shape == (90, 150, 3) and int((f["mask"] != 255).sum()) == 90 * 150
    np.testing.assert_array_equal(f["image"], img)
    np.testing.assert_array_equal(f["mask"], np.where(np.arange(150) >= 100, 2, 1)[None].repeat(90, 0))
