"""Legends: drawn beside every preview/overlay, holding the colour of every class present."""
import numpy as np
from click.testing import CliRunner
from PIL import Image

from segclip.cli import main
from segclip.viz import add_legend, class_shares, legend_entries, overlay_with_legend

CLASSES = ("a", "b", "c", "d")
PALETTE = ((200, 10, 10), (10, 200, 10), (10, 10, 200), (123, 45, 67))


def _colour_pixels(img: np.ndarray, rgb) -> int:
    return int(np.all(img == np.array(rgb, np.uint8), axis=-1).sum())


def test_legend_beside_overlay_holds_every_present_class_colour():
    h, w = 60, 80
    mask = np.zeros((h, w), np.uint8)
    mask[:, 50:] = 2          # c: 30/80 of the pixels
    mask[:10, :10] = 255      # no-data
    image = np.full((h, w, 3), 100, np.uint8)
    out = overlay_with_legend(image, mask, CLASSES, PALETTE)
    assert out.shape[0] >= h and out.shape[1] > w
    # left part is the plain alpha-0.5 blend, computed here independently
    ref = np.where(mask[..., None] == 255, (100 + 255) / 2, (100 + np.array(PALETTE + ((0, 0, 0),) * 252)[mask]) / 2)
    np.testing.assert_array_equal(out[:h, :w], np.round(ref + 1e-9).astype(np.uint8)[:h, :w])
    panel = out[:, w:]
    for cid in (0, 2):  # present: a full-colour swatch each
        assert _colour_pixels(panel, PALETTE[cid]) >= 25, CLASSES[cid]
    for cid in (1, 3):  # absent: not listed
        assert _colour_pixels(panel, PALETTE[cid]) == 0, CLASSES[cid]


def test_legend_taller_than_image_pads_it():
    entries = [(f"class {i}", (i * 10, 0, 0)) for i in range(20)]
    out = add_legend(np.zeros((16, 16, 3), np.uint8), entries)
    assert out.shape[0] > 16 and out.shape[1] > 16
    assert np.all(out[16:, :16] == 255)


def test_class_shares_sorted_and_complete():
    mask = np.array([[0, 1, 1, 1], [2, 2, 255, 1]], np.uint8)
    assert class_shares(mask, 3) == [(1, 0.5), (2, 0.25), (0, 0.125), (255, 0.125)]
    assert [e[0] for e in legend_entries(("x", "y", "z"), PALETTE[:3], mask)] == ["y 50.0%", "z 25.0%", "x 12.5%", "no-data 12.5%"]


def test_sample_preview_has_a_legend(tmp_path):
    from segclip.data.loveda import PALETTE as LOVEDA

    r = CliRunner().invoke(main, ["sample-data", "--out", str(tmp_path / "d"), "--num-train", "2", "--num-val", "1",
                                  "--size", "64", "--seed", "4"])
    assert r.exit_code == 0, r.output
    prev = np.asarray(Image.open(tmp_path / "d" / "preview.png").convert("RGB"))
    assert prev.shape[1] > 2 * 64 + 4
    present = set()
    for p in (tmp_path / "d" / "Train").rglob("masks_png/*.png"):
        present |= {int(v) for v in np.unique(np.asarray(Image.open(p)))}
    panel = prev[:, 2 * 64 + 3 * 4:]  # gap | image | gap | labels | gap | legend
    for v in present - {0}:  # LoveDA ids 1..7 -> class v-1 (0 = no-data, shown black)
        assert _colour_pixels(panel, LOVEDA[v - 1]) >= 25, v
    # column headings above the pictures: dark text in the white strip over each column
    head = prev[:18, : 2 * 64 + 3 * 4]
    assert (head == 255).all(-1).mean() > 0.7  # a white strip, not the pictures' top rows
    assert (head[:, :68] < 100).all(-1).sum() >= 15 and (head[:, 68:] < 100).all(-1).sum() >= 15


def test_legend_png_is_readable_and_tells_no_data_from_background():
    """legend.png drew background (white in LoveDA) and no-data both white, 145 px wide: no-data now
    has the previews' colour (black here), labelled, in a font as large as the previews'."""
    from segclip.data.loveda import CLASSES as NAMES, PALETTE as LOVEDA
    from segclip.viz import legend_image, nodata_color

    assert LOVEDA[0] == (255, 255, 255) and nodata_color(LOVEDA) == (0, 0, 0)
    with_nd, without = legend_image(NAMES, LOVEDA), legend_image(NAMES, LOVEDA, ignore=False)
    assert with_nd.shape[0] >= 8 * 24 and with_nd.shape[1] >= 300  # 20 px text, 8 entries
    # the extra entry is a black swatch (the text adds black too, the swatch a solid square of it)
    assert _colour_pixels(with_nd, (0, 0, 0)) - _colour_pixels(without, (0, 0, 0)) >= 20 * 20
    assert nodata_color([(0, 0, 0), (64, 64, 64)]) == (128, 128, 128)  # never a class's colour


def test_prediction_preview_shows_image_prediction_and_truth(trained_checkpoint, tmp_path):
    """The quickstart's preview_val.png: headed columns image | prediction | truth, the prediction the
    runner's own class map in the palette's colours, no-data in the previews' colour, a legend."""
    from segclip.data import build_dataset
    from segclip.data.loveda import PALETTE as LOVEDA
    from segclip.inference.outputs import prediction_preview
    from segclip.runtime import load_runner
    from segclip.signature import colorize

    r = CliRunner().invoke(main, ["sample-data", "--out", str(tmp_path / "d"), "--num-train", "1", "--num-val", "2",
                                  "--size", "64", "--seed", "3"])
    assert r.exit_code == 0, r.output
    ds = build_dataset("sample", str(tmp_path / "d"), "val")
    with load_runner(trained_checkpoint) as runner:
        out = prediction_preview(runner, ds, tmp_path / "p.png", n=2)
        want = runner.infer(np.stack([ds[i]["image"] for i in range(2)]))["mask"]
    img = np.asarray(Image.open(out).convert("RGB"))
    top, gap = 12 + 2 * 4, 4  # labelled_grid: a 12 px heading (64 px columns) between two 4 px gaps
    for row in range(2):
        y = top + row * (64 + gap)
        np.testing.assert_array_equal(img[y:y + 64, gap:gap + 64], ds[row]["image"])
        np.testing.assert_array_equal(img[y:y + 64, 2 * gap + 64:2 * gap + 128], colorize(want[row], LOVEDA))
        truth = colorize(ds[row]["mask"], LOVEDA)
        truth[ds[row]["mask"] == 255] = (0, 0, 0)
        np.testing.assert_array_equal(img[y:y + 64, 3 * gap + 128:3 * gap + 192], truth)
    assert (img[:top, : 3 * gap + 192] < 100).all(-1).sum() >= 30  # the headings
    assert img.shape[1] > 4 * gap + 192 + 40  # the legend panel
    # the quickstart writes it into its stage, records it, and names it by where it will be
    from segclip.cli.train_cmds import QUICKSTART_PREVIEW, _quickstart_preview

    summary = {"artifacts": {}}
    (tmp_path / "stage").mkdir()
    _quickstart_preview(trained_checkpoint, tmp_path / "stage", tmp_path / "qs", summary, ds, "cpu")
    assert summary["artifacts"]["prediction_preview"] == str(tmp_path / "stage" / QUICKSTART_PREVIEW)
    assert Image.open(tmp_path / "stage" / QUICKSTART_PREVIEW).size[0] > 3 * 64


def test_train_and_quickstart_val_miou_say_what_they_are_over(tmp_path):
    """The val mIoU train and the quickstart print and store (eval_val.json, summary.json) names its set."""
    import dataclasses

    from conftest import make_small_model
    from segclip.cli.train_cmds import _evaluate_model
    from segclip.config import PRESETS
    from segclip.data import build_dataset

    r = CliRunner().invoke(main, ["sample-data", "--out", str(tmp_path / "d"), "--num-train", "1", "--num-val", "2",
                                  "--size", "64"])
    assert r.exit_code == 0, r.output
    tcfg = dataclasses.replace(PRESETS["segclip-small"].train, crop_size=64, eval_size=64)
    m = _evaluate_model(make_small_model().eval(), build_dataset("sample", str(tmp_path / "d"), "val"), tcfg, "cpu",
                        progress=False)
    assert m["computed_on"] == "2 val image(s), whole images in 64x64 windows, metadata off"
