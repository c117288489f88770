"""``segclip predict`` on whole rasters: GeoTIFF in and out, streamed sliding windows, 16-bit and
multiband input, nodata, counts, bad input.

The model is a real ONNX graph run by ONNX Runtime whose class map is a known function of absolute
position: the test images encode each pixel's (y, x) in its RGB values, so any window placed,
blended or written at the wrong offset shows up as wrong classes.  The reference is computed
directly from coordinates with numpy.  (Triton endpoints: tests/test_serving_predict.py.)
"""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import Affine

from segclip.cli import main

SIZE = 64
K = 7
CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128))
CRS = "EPSG:32633"
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0)


def encode(h: int, w: int) -> np.ndarray:
    """H x W x 3 uint8 whose pixels carry their own (y, x): R = y % 256, G = x % 256, B = high bits."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy % 256, xx % 256, (yy // 256) * 16 + xx // 256], -1).astype(np.uint8)


def reference(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy // 37 + xx // 53) % K).astype(np.uint8)


def _local(n: int = SIZE) -> np.ndarray:
    """A class offset by position inside the window: overlapping windows disagree, the blend decides."""
    i, j = np.mgrid[0:n, 0:n]
    return ((i // 16 + 2 * (j // 16)) % K).astype(np.int32)


def _position_onnx(path, scores: bool, local: bool = False):
    """uint8 N x 64 x 64 x 3 -> mask = (y // 37 + x // 53 [+ _local()]) % 7 decoded from the pixel values
    [+ scores 1.0 for that class, 0.1 for the others]."""
    import onnx
    from onnx import TensorProto, helper

    from segclip.signature import Signature

    def const(name, v):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT32, [], [v]))

    nodes = [const(f"c{v}", v) for v in (16, 37, 53, 256, K)]
    if local:
        nodes += [helper.make_node("Constant", [], ["local"], value=helper.make_tensor(
            "local", TensorProto.INT32, [SIZE, SIZE], _local().ravel().tolist()))]
    nodes += [helper.make_node("Cast", ["image"], ["xi"], to=TensorProto.INT32)]
    for i, ch in enumerate("rgb"):
        nodes += [helper.make_node("Constant", [], [f"i{i}"], value=helper.make_tensor(f"i{i}", TensorProto.INT64, [], [i])),
                  helper.make_node("Gather", ["xi", f"i{i}"], [ch], axis=3)]
    nodes += [
        helper.make_node("Div", ["b", "c16"], ["bhi"]), helper.make_node("Mod", ["b", "c16"], ["blo"]),
        helper.make_node("Mul", ["bhi", "c256"], ["yh"]), helper.make_node("Add", ["r", "yh"], ["y"]),
        helper.make_node("Mul", ["blo", "c256"], ["xh"]), helper.make_node("Add", ["g", "xh"], ["x"]),
        helper.make_node("Div", ["y", "c37"], ["yq"]), helper.make_node("Div", ["x", "c53"], ["xq"]),
        helper.make_node("Add", ["yq", "xq"], ["s0"]),
        helper.make_node("Add", ["s0", "local"], ["s"]) if local else helper.make_node("Identity", ["s0"], ["s"]),
        helper.make_node("Mod", ["s", f"c{K}"], ["cls"]),
        helper.make_node("Cast", ["cls"], ["mask"], to=TensorProto.UINT8),
    ]
    outputs = [helper.make_tensor_value_info("mask", TensorProto.UINT8, ["N", SIZE, SIZE])]
    if scores:
        nodes += [helper.make_node("Constant", [], ["vals"], value=helper.make_tensor("vals", TensorProto.FLOAT, [2], [0.1, 1.0])),
                  helper.make_node("OneHot", ["cls", f"c{K}", "vals"], ["scores"], axis=1)]
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", K, SIZE, SIZE]))
    graph = helper.make_graph(nodes, "position", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
                              outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime in use reads
    sig = Signature(classes=CLASSES, palette=PALETTE, height=SIZE, width=SIZE, scores=scores, max_batch=8)
    helper.set_model_props(model, {"segclip.signature": sig.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module", params=["mask", "scores"])
def model(request, tmp_path_factory):
    return _position_onnx(tmp_path_factory.mktemp("pos") / f"position_{request.param}.onnx", request.param == "scores")


@pytest.fixture(scope="module")
def mask_model(tmp_path_factory):
    return _position_onnx(tmp_path_factory.mktemp("posm") / "position.onnx", False)


def write_geotiff(path, bands: np.ndarray, nodata=None, crs=CRS, transform=TRANSFORM):
    """bands: C x H x W."""
    c, h, w = bands.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=bands.dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=128, blockysize=128) as d:
        d.write(bands)
    return path


def predict(*args):
    res = CliRunner().invoke(main, ["predict", "--quiet", *map(str, args)])
    return res


def read(path):
    with rasterio.open(path) as d:
        return d.read(1), d.profile, d.tags(ns="IMAGE_STRUCTURE")


def one_error(res, *needles):
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert lines and all(any(n in ln for ln in lines) for n in needles), res.output


# ---- geometry and stitching ---------------------------------------------------------------------
def test_geotiff_in_cog_out_same_grid_and_tiled_equals_whole(tmp_path, model):
    h, w = 300, 437  # several tiles each way, not a multiple of the tile or stride
    src = write_geotiff(tmp_path / "scene.tif", np.moveaxis(encode(h, w), -1, 0))
    res = predict("--model", model, src, "--out", tmp_path / "out", "--batch", 3)
    assert res.exit_code == 0, res.output
    mask, prof, tags = read(tmp_path / "out" / "scene_mask.tif")
    assert (prof["width"], prof["height"]) == (w, h)
    assert prof["crs"] == rasterio.crs.CRS.from_string(CRS) and prof["transform"] == TRANSFORM
    assert prof["tiled"] and prof["compress"] == "deflate" and tags.get("LAYOUT") == "COG"
    assert prof["nodata"] == 255
    np.testing.assert_array_equal(mask, reference(h, w))
    assert "Mpx/s" in res.output and "scene.tif" in res.output
    preview = Image.open(tmp_path / "out" / "scene_preview.png")
    assert preview.size[0] > w and preview.size[1] >= h  # the map plus a legend panel
    assert np.array_equal(np.asarray(preview.convert("RGB"))[:h, :w], np.array(PALETTE, np.uint8)[reference(h, w)])


def test_big_raster_outputs_overviews_and_downsampled_preview(tmp_path, mask_model):
    h, w = 2100, 1500  # long side > the preview's 2048
    src = write_geotiff(tmp_path / "big.tif", np.moveaxis(encode(h, w), -1, 0))
    res = predict("--model", mask_model, src, "--out", tmp_path / "out", "--overlap", 0)
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "out" / "big_mask.tif") as d:
        assert d.overviews(1)  # COG with overviews
        np.testing.assert_array_equal(d.read(1), reference(h, w))
    preview = np.asarray(Image.open(tmp_path / "out" / "big_preview.png").convert("RGB"))
    want = np.array(PALETTE, np.uint8)[reference(h, w)[::2, ::2]]
    np.testing.assert_array_equal(preview[: want.shape[0], : want.shape[1]], want)


def test_plain_image_smaller_than_a_tile_is_padded_png_out(tmp_path, mask_model):
    Image.fromarray(encode(40, 50)).save(tmp_path / "small.png")
    res = predict("--model", mask_model, tmp_path / "small.png", "--out", tmp_path / "out", "--overlay")
    assert res.exit_code == 0, res.output
    m = Image.open(tmp_path / "out" / "small_mask.png")
    assert m.mode == "P" and m.size == (50, 40)
    assert [tuple(c) for c in np.array(m.getpalette()[: 3 * K]).reshape(K, 3)] == list(PALETTE)
    np.testing.assert_array_equal(np.asarray(m), reference(40, 50))
    assert (tmp_path / "out" / "small_overlay.png").is_file()
    doc = json.loads((tmp_path / "out" / "small_counts.json").read_text())
    assert doc["crs"] is None and doc["area_unit"] is None


# ---- 16-bit, bands, nodata, counts --------------------------------------------------------------
def test_16bit_multiband_band_selection_nodata_and_counts(tmp_path, model):
    h, w = 260, 330
    rgb = encode(h, w).astype(np.uint16) * 256 + 1  # 16-bit, never 65535
    bands = np.zeros((5, h, w), np.uint16)
    bands[3], bands[1], bands[0] = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # R in band 4, G in 2, B in 1
    bands[2] = bands[4] = 7
    bands[[0, 1, 3], :140, :150] = 65535  # nodata in every selected band: nodata (covers whole windows)
    bands[1, 200:210, 300:330] = 65535  # one band only: still valid
    bands[2, 250:, :] = 65535  # an unselected band: ignored
    src = write_geotiff(tmp_path / "ms.tif", bands, nodata=65535)
    res = predict("--model", model, src, "--out", tmp_path / "out", "--bands", "4,2,1", "--range", "1,65281")
    assert res.exit_code == 0, res.output
    mask, prof, _ = read(tmp_path / "out" / "ms_mask.tif")
    nodata = np.zeros((h, w), bool)
    nodata[:140, :150] = True
    ref = reference(h, w)
    np.testing.assert_array_equal(mask[nodata], 255)
    # pixels whose G band is nodata were still predicted (they just decode a wrong x): only check the rest
    check = ~nodata
    check[200:210, 300:330] = False
    np.testing.assert_array_equal(mask[check], ref[check])
    doc = json.loads((tmp_path / "out" / "ms_counts.json").read_text())
    pixels = {c: v["pixels"] for c, v in doc["classes"].items()}
    assert sum(pixels.values()) == doc["valid_pixels"] == h * w - nodata.sum()
    assert doc["nodata_pixels"] == nodata.sum() and doc["pixels"] == h * w
    want = np.bincount(mask[~nodata].ravel(), minlength=K)
    assert [pixels[c] for c in CLASSES] == want.tolist()
    assert doc["area_unit"] == "m2"
    for c in CLASSES:
        assert doc["classes"][c]["area_m2"] == pytest.approx(pixels[c] * 0.25)


def test_16bit_default_percentile_stretch(tmp_path):
    from segclip.data.raster import RasterSource

    v = (np.arange(200 * 300, dtype=np.uint16).reshape(200, 300) * 3 % 4096).astype(np.uint16)
    path = write_geotiff(tmp_path / "grey16.tif", v[None])
    lo, hi = np.percentile(v, [2, 98])
    want = np.clip(np.floor((v.astype(np.float64) - lo) / (hi - lo) * 255 + 0.5), 0, 255).astype(np.uint8)
    with RasterSource(path) as s:
        got = s.read(0, 0, 200, 300)
    assert got.shape == (200, 300, 3)
    assert np.abs(got[..., 0].astype(int) - want).max() <= 1  # float32 arithmetic vs float64
    assert (got[..., 0] == got[..., 2]).all()


def test_geographic_crs_areas_are_spherical(tmp_path, mask_model):
    h, w = 64, 80
    t = Affine(0.001, 0.0, 10.0, 0.0, -0.001, 50.0)
    src = write_geotiff(tmp_path / "ll.tif", np.moveaxis(encode(h, w), -1, 0), crs="EPSG:4326", transform=t)
    assert predict("--model", mask_model, src, "--out", tmp_path / "out").exit_code == 0
    doc = json.loads((tmp_path / "out" / "ll_counts.json").read_text())
    r = 6371008.8
    lat = np.radians(50.0 - 0.001 * np.arange(h + 1))
    row_area = r * r * np.radians(0.001) * (np.sin(lat[:-1]) - np.sin(lat[1:]))
    ref = reference(h, w)
    for i, c in enumerate(CLASSES):
        assert doc["classes"][c]["area_m2"] == pytest.approx(float(((ref == i) * row_area[:, None]).sum()), rel=1e-6)


def test_foot_crs_areas_in_square_metres(tmp_path, mask_model):
    """EPSG:2263 (NAD83 / New York Long Island, US survey feet): a pixel of a x a ft is
    (0.30480060960121924 a)^2 m^2 -- the US survey foot (1200/3937 m), not the international one."""
    h, w, a = 64, 80, 100.0  # large pixels: the two feet's 4 ppm in area are square metres, not rounding
    t = Affine(a, 0.0, 980000.0, 0.0, -a, 200000.0)
    src = write_geotiff(tmp_path / "ft.tif", np.moveaxis(encode(h, w), -1, 0), crs="EPSG:2263", transform=t)
    assert predict("--model", mask_model, src, "--out", tmp_path / "out").exit_code == 0
    doc = json.loads((tmp_path / "out" / "ft_counts.json").read_text())
    ref = reference(h, w)
    per_pixel = (0.30480060960121924 * a) ** 2
    for i, c in enumerate(CLASSES):
        n = float((ref == i).sum())
        assert doc["classes"][c]["area_m2"] == pytest.approx(n * per_pixel, rel=1e-9, abs=1e-3)
        assert n == 0 or abs(doc["classes"][c]["area_m2"] - n * (0.3048 * a) ** 2) > 1.0  # not the international foot


def test_nan_is_nodata_never_classified_nor_counted(tmp_path, mask_model):
    """float32 rasters: NaN pixels (no nodata value declared) used to be classified as land cover
    (an all-NaN scene gave 90,000 'valid' pixels).  They are the ignore value and not counted."""
    h, w = 120, 150
    bands = np.moveaxis(encode(h, w), -1, 0).astype(np.float32)
    bands[:, :40, :50] = np.nan  # a NaN corner, every band
    bands[1, 100:, 140:] = np.nan  # NaN in one band only: that pixel has no value either
    src = write_geotiff(tmp_path / "f32.tif", bands)
    res = predict("--model", mask_model, src, "--out", tmp_path / "out", "--range", "0,255")
    assert res.exit_code == 0, res.output
    mask, _, _ = read(tmp_path / "out" / "f32_mask.tif")
    nodata = np.zeros((h, w), bool)
    nodata[:40, :50] = True
    nodata[100:, 140:] = True
    np.testing.assert_array_equal(mask[nodata], 255)
    np.testing.assert_array_equal(mask[~nodata], reference(h, w)[~nodata])
    doc = json.loads((tmp_path / "out" / "f32_counts.json").read_text())
    assert doc["nodata_pixels"] == nodata.sum() and doc["valid_pixels"] == h * w - nodata.sum()
    assert sum(v["pixels"] for v in doc["classes"].values()) == h * w - nodata.sum()

    allnan = write_geotiff(tmp_path / "allnan.tif", np.full((3, 300, 300), np.nan, np.float32))
    res = predict("--model", mask_model, allnan, "--out", tmp_path / "out2")
    assert res.exit_code == 0, res.output
    mask, _, _ = read(tmp_path / "out2" / "allnan_mask.tif")
    doc = json.loads((tmp_path / "out2" / "allnan_counts.json").read_text())
    assert (mask == 255).all() and doc["valid_pixels"] == 0 and doc["nodata_pixels"] == 300 * 300


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a plain tile, no CRS
def test_nan_pixels_are_ignored_in_training_labels(tmp_path):
    """The datasets read images as predict does: a NaN pixel's label becomes the ignore index, so it
    is neither trained on nor scored."""
    from segclip.data import build_dataset

    root = tmp_path / "folder"
    for sub in ("images/train", "masks/train"):
        (root / sub).mkdir(parents=True)
    (root / "classes.yaml").write_text("classes: [field, forest]\n")
    rgb = np.moveaxis(encode(64, 64), -1, 0).astype(np.float32)
    rgb[:, :10, :20] = np.nan
    with rasterio.open(root / "images/train/t.tif", "w", driver="GTiff", width=64, height=64, count=3,
                       dtype="float32") as d:
        d.write(rgb)
    Image.fromarray(np.ones((64, 64), np.uint8)).save(root / "masks/train/t.png")
    item = build_dataset("folder", root, "train", value_range=(0, 255))[0]
    assert (item["mask"][:10, :20] == 255).all() and (item["mask"][10:] == 1).all()


# ---- inputs and bad input -----------------------------------------------------------------------
def test_folders_globs_and_same_stems(tmp_path, mask_model):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.fromarray(encode(70, 90)).save(tmp_path / d / "x.png")
    Image.fromarray(encode(30, 30)).save(tmp_path / "a" / "y.jpg", quality=100)
    res = predict("--model", mask_model, tmp_path / "a", str(tmp_path / "b" / "*.png"), "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "out").glob("*_mask.png"))
    assert names == ["a_x_mask.png", "b_x_mask.png", "y_mask.png"], names
    before = (tmp_path / "out" / "y_counts.json").stat().st_mtime_ns
    res = predict("--model", mask_model, tmp_path / "a", "--out", tmp_path / "out")
    one_error(res, "already exists", "--force")
    assert (tmp_path / "out" / "y_counts.json").stat().st_mtime_ns == before
    assert predict("--model", mask_model, tmp_path / "a", "--out", tmp_path / "out", "--force").exit_code == 0


def test_bad_inputs_one_line_exit_2_others_written(tmp_path, mask_model):
    good = write_geotiff(tmp_path / "good.tif", np.moveaxis(encode(100, 120), -1, 0))
    data = good.read_bytes()
    (tmp_path / "trunc.tif").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.tif").write_bytes(b"II*\x00 not a tiff at all")
    res = predict("--model", mask_model, tmp_path / "junk.tif", tmp_path / "trunc.tif", good, "--out", tmp_path / "out")
    one_error(res, "junk.tif", "trunc.tif")
    np.testing.assert_array_equal(read(tmp_path / "out" / "good_mask.tif")[0], reference(100, 120))
    assert not list((tmp_path / "out").glob("trunc*")) and not list((tmp_path / "out").glob("junk*"))
    assert not list((tmp_path / "out").glob(".*"))  # no temporaries left

    res = predict("--model", mask_model, good, "--out", tmp_path / "out2", "--bands", "1,2,9")
    one_error(res, "band 9 does not exist", "good.tif")
    (tmp_path / "afile").write_text("x")
    res = predict("--model", mask_model, good, "--out", tmp_path / "afile")
    one_error(res, "is a file")
    res = predict("--model", mask_model, good, "--out", tmp_path / "out4", "--scene", "rural")
    one_error(res, "scene")
    assert not list((tmp_path / "out4").glob("*_mask*"))
    res = predict("--model", mask_model, tmp_path / "missing.tif", good, "--out", tmp_path / "out3")
    one_error(res, "missing.tif")
    assert (tmp_path / "out3" / "good_mask.tif").is_file()


def test_endpoint_that_never_answers(tmp_path, mask_model):
    good = write_geotiff(tmp_path / "good.tif", np.moveaxis(encode(70, 70), -1, 0))
    with socket.socket() as s:  # accepts connections, never says a word
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"grpc://127.0.0.1:{s.getsockname()[1]}/segclip_python"
        res = predict("--model", url, good, "--out", tmp_path / "out", "--timeout", 1)
        one_error(res, url, "cannot reach Triton")
        assert len(res.output.strip().splitlines()) == 1
        # beside a working model: the dead one is reported, the scene is still predicted
        res = predict("--model", url, "--model", mask_model, good, "--out", tmp_path / "out", "--timeout", 1)
    one_error(res, url)
    np.testing.assert_array_equal(read(tmp_path / "out" / "good_mask.tif")[0], reference(70, 70))


# ---- column strips: bounded in width, seams blended as within a strip -----------------------------
@pytest.fixture(scope="module", params=["mask", "scores"])
def local_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("posl") / f"local_{request.param}.onnx"
    return _position_onnx(path, request.param == "scores", local=True), request.param


def _starts(n, win, stride):
    return [0] if n <= win else list(range(0, n - win, stride)) + [n - win]


def blend_reference(h, w, mode, stride):
    """The documented blend, written out: windows every ``stride`` (the last one at the border),
    row-major; tent weight min(i + 1, n - i) / ceil(n / 2) per axis; scores: argmax of the weighted
    sum, class maps: the class of the window with the highest weight (ties: the earlier window)."""
    t = np.arange(SIZE, dtype=np.float32)
    t = np.minimum(t + 1, SIZE - t) / ((SIZE + 1) // 2)
    weight = t[:, None] * t[None, :]
    acc = np.zeros((K, h, w), np.float32)
    best, cls = np.full((h, w), -1.0, np.float32), np.zeros((h, w), np.uint8)
    for y in _starts(h, SIZE, stride):
        for x in _starts(w, SIZE, stride):
            yy, xx = np.mgrid[y:y + SIZE, x:x + SIZE]
            c = (yy // 37 + xx // 53 + _local()) % K
            if mode == "scores":
                onehot = np.where(np.arange(K)[:, None, None] == c, np.float32(1.0), np.float32(0.1))
                acc[:, y:y + SIZE, x:x + SIZE] += onehot * weight
            else:
                b, k = best[y:y + SIZE, x:x + SIZE], cls[y:y + SIZE, x:x + SIZE]
                win = weight > b
                b[win], k[win] = weight[win], c[win]
    return acc.argmax(0).astype(np.uint8) if mode == "scores" else cls


def test_column_strips_blend_seams_exactly_as_one_strip(tmp_path, monkeypatch, local_model):
    from segclip.data import sliding

    model, mode = local_model
    h, w = 150, 700  # overlap 0.25: stride 48, 14 window columns
    src = write_geotiff(tmp_path / "wide.tif", np.moveaxis(encode(h, w), -1, 0))
    ref = blend_reference(h, w, mode, 48)
    assert (ref != (reference(h, w) + _local(1)[0, 0]) % K).any()  # windows disagree: the blend decides
    res = predict("--model", model, src, "--out", tmp_path / "one", "--overlap", 0.25, "--batch", 5)
    assert res.exit_code == 0, res.output
    one = read(tmp_path / "one" / "wide_mask.tif")[0]
    np.testing.assert_array_equal(one, ref)
    monkeypatch.setattr(sliding, "BLEND_BYTES", 1)  # strips of at most two windows' width (128 px)
    plan = sliding.SlidingPlan(h, w, SIZE, overlap=0.25)
    strips = plan.strips(sliding.blend_bytes_per_pixel(mode, K))
    assert len(strips) >= 5 and max(x1 - x0 for x0, x1, _ in strips) <= 2 * SIZE
    res = predict("--model", model, src, "--out", tmp_path / "strips", "--overlap", 0.25, "--batch", 5)
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read(tmp_path / "strips" / "wide_mask.tif")[0], one)
    doc = json.loads((tmp_path / "strips" / "wide_counts.json").read_text())
    assert [doc["classes"][c]["pixels"] for c in CLASSES] == np.bincount(one.ravel(), minlength=K).tolist()


def test_column_strips_memory_does_not_grow_with_width(tmp_path, monkeypatch, model):
    """The blend buffers and the blocks handed to the writer stay under one bound however wide the
    scene (and, as a check that this measure sees width at all, they grow with one full-width strip)."""
    from segclip.data import raster, sliding

    sizes = {"blend": 0, "block": 0}
    alloc, write = sliding.Blender._alloc, raster.ClassMapSink.write

    def spy_alloc(self, k):
        alloc(self, k)
        held = sum(a.nbytes for a in (self.acc, self.best, self.cls, self.wsum) if a is not None)
        sizes["blend"] = max(sizes["blend"], held)

    def spy_write(self, y0, rows, x0=0):
        sizes["block"] = max(sizes["block"], rows.nbytes)
        write(self, y0, rows, x0)

    monkeypatch.setattr(sliding.Blender, "_alloc", spy_alloc)
    monkeypatch.setattr(raster.ClassMapSink, "write", spy_write)

    def peak(w, budget):
        monkeypatch.setattr(sliding, "BLEND_BYTES", budget)
        sizes.update(blend=0, block=0)
        src = write_geotiff(tmp_path / f"s{w}.tif", np.moveaxis(encode(100, w), -1, 0))
        res = predict("--model", model, src, "--out", tmp_path / f"o{w}_{budget}", "--overlap", 0.25)
        assert res.exit_code == 0, res.output
        np.testing.assert_array_equal(read(tmp_path / f"o{w}_{budget}" / f"s{w}_mask.tif")[0], reference(100, w))
        return dict(sizes)

    bpp = sliding.blend_bytes_per_pixel("scores" if "scores" in model.name else "mask", K)
    for w in (500, 1000, 2000):  # strips at most two windows wide: window_h x 2 window_w x bytes per pixel
        got = peak(w, 1)
        assert 0 < got["blend"] <= SIZE * 2 * SIZE * bpp and 0 < got["block"] <= SIZE * 2 * SIZE, (w, got)
    whole_narrow, whole_wide = peak(500, 1 << 30), peak(1000, 1 << 30)
    assert whole_wide["blend"] > 1.9 * whole_narrow["blend"] and whole_wide["block"] > 1.9 * whole_narrow["block"]


# ---- one decoder for 8-bit PNG/JPEG: predict and the datasets see the same pixels ------------------
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_predict_and_dataset_decode_png_and_jpeg_alike(tmp_path):
    from segclip.data import build_dataset
    from segclip.data.raster import RasterSource

    h, w = 96, 130
    rgb = encode(h, w)
    rgb[::9] = rgb[::9, ::-1] ^ 0x5A  # sharp colour edges: where chroma upsampling shows
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rgb).save(images / "rgb420.jpg", quality=75, subsampling=2)
    Image.fromarray(rgb[..., 1]).save(images / "grey.jpeg", quality=90)
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=50).save(images / "palette.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(images / "rgba.png")
    Image.fromarray(rgb[..., 0] > 100).save(images / "bits.png")  # 1-bit grey
    (tmp_path / "classes.yaml").write_text("classes: [a, b]\n")
    ds = build_dataset("folder", tmp_path, "train")
    assert len(ds) == 5
    for i in range(len(ds)):
        item = ds[i]
        path = item["meta"]["path"]
        with RasterSource(path) as src:  # what predict's windows are cut from
            fed = src.read(0, 0, h, w)
        np.testing.assert_array_equal(item["image"], fed, err_msg=path)
        pil = np.asarray(Image.open(path).convert("RGB"))
        if path.endswith("rgb420.jpg"):  # the two JPEG decoders really differ: the test can tell them apart
            assert (pil != fed).mean() > 0.01
        elif path.endswith(".png"):  # lossless: the pixels PIL sees too
            np.testing.assert_array_equal(pil, fed, err_msg=path)


def test_batch_default_follows_the_window_on_cpu_and_explicit_batch_kept(tmp_path, mask_model):
    from segclip.inference.predict import predict_paths

    src = write_geotiff(tmp_path / "b.tif", np.moveaxis(encode(100, 100), -1, 0))
    runs = {}
    for batch in (None, 5):
        res, errors = predict_paths([mask_model], [src], tmp_path / f"out{batch}", batch=batch, progress=False,
                                    log=lambda *a: None)
        assert not errors
        runs[batch] = res[0]["batch"]
    # ONNX Runtime on the CPU with this model's small windows: 8 per request (two 1024 px windows' pixels, at
    # most 8) unless told otherwise
    assert runs == {None: 8, 5: 5}


def test_column_strips_all_nodata_strips_are_still_written(tmp_path, monkeypatch, model):
    from segclip.data import sliding

    monkeypatch.setattr(sliding, "BLEND_BYTES", 1)  # strips of at most 128 px
    h, w = 100, 600
    bands = np.moveaxis(encode(h, w), -1, 0).astype(np.uint16) + 1
    bands[:, :, 100:330] = 0  # whole strips (and the windows in them) are nodata
    bands[:, 60:, 500:] = 0
    src = write_geotiff(tmp_path / "holes.tif", bands, nodata=0)
    res = predict("--model", model, src, "--out", tmp_path / "out", "--overlap", 0.25, "--range", "1,256")
    assert res.exit_code == 0, res.output
    mask = read(tmp_path / "out" / "holes_mask.tif")[0]
    nodata = (bands == 0).all(0)
    np.testing.assert_array_equal(mask[nodata], 255)
    np.testing.assert_array_equal(mask[~nodata], reference(h, w)[~nodata])
