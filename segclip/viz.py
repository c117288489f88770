"""Pictures a person looks at: palette masks, overlays, and the one class legend drawn beside them.

Every preview (``sample-data``'s preview.png, ``predict --overlay``, the predict/GeoTIFF preview,
the legend written beside palette masks) goes through :func:`add_legend`, so class names and
colours are shown the same way everywhere.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from segclip.signature import colorize

IGNORE = 255  # no-data / ignore label in every class map (white in colorize)
# no-data in pictures: the first of these the palette does not use (black for LoveDA-like palettes,
# whose background is white), the same in previews, overlays and legend.png
NODATA_RGBS = ((0, 0, 0), (64, 64, 64), (128, 128, 128), (255, 255, 255))


def nodata_color(palette) -> tuple:
    """The colour no-data (255) gets in every picture of a model with this palette."""
    used = {tuple(int(c) for c in p) for p in palette}
    return next((c for c in NODATA_RGBS if c not in used), NODATA_RGBS[0])


def class_shares(mask: np.ndarray, num_classes: int, ignore: int = IGNORE) -> list:
    """[(class id, share of pixels)] for the ids present in ``mask``, largest share first.

    ``ignore`` pixels are counted too (as id ``ignore``) so the shares add up to 1."""
    ids, counts = np.unique(np.asarray(mask), return_counts=True)
    total = max(int(counts.sum()), 1)
    rows = [(int(i), int(c) / total) for i, c in zip(ids, counts) if i < num_classes or i == ignore]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def describe_shares(shares, classes: Sequence[str], ignore_name: str = "no-data") -> str:
    """``"road 48.1%, building 30.2%, ..."``: every class present, nothing cut."""
    return ", ".join(f"{classes[i] if i < len(classes) else ignore_name} {s:.1%}" for i, s in shares)


def legend_entries(classes: Sequence[str], palette: Sequence, mask: np.ndarray | None = None, *,
                   shares: Sequence | None = None, ignore_name: str = "no-data", ignore_color=(255, 255, 255)) -> list:
    """[(label, (r, g, b))]: the classes present in ``mask`` (or given as ``shares``, what
    ``class_shares`` returns, for maps too large to hold) with their share (largest first), or
    every class when neither is given.  Ignore pixels get an ``ignore_name`` entry."""
    pal = [tuple(int(c) for c in p) for p in palette]
    if mask is None and shares is None:
        return list(zip(classes, pal))
    out = []
    for i, share in (class_shares(mask, len(classes)) if shares is None else shares):
        name, col = (classes[i], pal[i]) if i < len(classes) else (ignore_name, tuple(ignore_color))
        out.append((f"{name} {share:.1%}", col))
    return out


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    # matplotlib (a dependency) ships DejaVu Sans: readable at any size, unlike PIL's bitmap font.  Its file
    # is opened where the package keeps it: importing matplotlib's font_manager to find it cost ~0.1 s of
    # every predict (the preview's legend), 2-3% of a 2048 px scene's run
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default(size)


def add_legend(image: np.ndarray, entries: Sequence, *, title: str | None = None, font_size: int | None = None) -> np.ndarray:
    """``image`` (H x W x 3 uint8) with a white legend panel on its right: one colour swatch and
    label per entry (``(label, (r, g, b))``).  The image is padded at the bottom, never scaled,
    when the legend is taller than it.  ``font_size``: default from the image's height."""
    from PIL import Image, ImageDraw

    image = np.asarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    fs = font_size or int(np.clip(h / 24, 11, 22))  # text size follows the picture, within readable bounds
    font, pad, sw = _font(fs), max(4, fs // 2), fs + 2
    line = sw + max(3, fs // 4)
    lines = ([title] if title else []) + [str(e[0]) for e in entries]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((probe.textlength(t, font=font) for t in lines), default=0)
    panel_w = int(pad * 3 + sw + text_w + 1)
    panel_h = int(pad * 2 + line * len(lines))
    H = max(h, panel_h)
    canvas = Image.new("RGB", (w + panel_w, H), (255, 255, 255))
    if h and w:
        canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = w + pad, pad
    if title:
        draw.text((x, y), title, fill=(0, 0, 0), font=font)
        y += line
    for label, rgb in entries:
        draw.rectangle([x, y, x + sw - 1, y + sw - 1], fill=tuple(int(c) for c in rgb), outline=(0, 0, 0))
        draw.text((x + sw + pad, y + (sw - fs) // 2), str(label), fill=(0, 0, 0), font=font)
        y += line
    return np.asarray(canvas)


def overlay_image(image: np.ndarray, mask: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Class colours blended over the image (H x W x 3 uint8)."""
    col = colorize(mask, palette).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + col * alpha).round().clip(0, 255).astype(np.uint8)


def overlay_with_legend(image: np.ndarray, mask: np.ndarray, classes: Sequence[str], palette, alpha: float = 0.5) -> np.ndarray:
    """The overlay with a legend of the classes present and their pixel shares."""
    return add_legend(overlay_image(image, mask, palette, alpha), legend_entries(classes, palette, mask))


def legend_image(classes: Sequence[str], palette, title: str | None = "class id: name", ignore: bool = True,
                 font_size: int = 20) -> np.ndarray:
    """The legend alone (``legend.png``), every class as ``id: name`` in its palette colour; ``ignore``:
    also the 255 no-data entry in the colour previews give it (``nodata_color``; the mask files
    make it transparent), never a class's colour."""
    labels = [f"{i}: {c}" for i, c in enumerate(classes)]
    pal = [tuple(p) for p in palette]
    if ignore:
        labels.append(f"{IGNORE}: no-data (transparent in the mask files)")
        pal.append(nodata_color(palette))
    return add_legend(np.full((0, 0, 3), 255, np.uint8), list(zip(labels, pal)), title=title, font_size=font_size)


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], headings: Sequence[str], gap: int = 4,
                  font_size: int | None = None) -> np.ndarray:
    """Pictures in rows and columns (each H x W x 3 uint8; a row's pictures share a height) on white,
    with a heading above every column: e.g. image | prediction | truth."""
    from PIL import Image, ImageDraw

    widths = [max(r[j].shape[1] for r in rows) for j in range(len(headings))]
    heights = [max(p.shape[0] for p in r) for r in rows]
    fs = font_size or int(np.clip(min(widths) / 7, 12, 20))
    font = _font(fs)
    top = fs + 2 * gap
    W = sum(widths) + gap * (len(widths) + 1)
    H = top + sum(heights) + gap * len(rows)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = gap
    for j, text in enumerate(headings):
        draw.text((x + (widths[j] - draw.textlength(text, font=font)) / 2, gap), text, fill=(0, 0, 0), font=font)
        x += widths[j] + gap
    y = top
    for r, h in zip(rows, heights):
        x = gap
        for j, pic in enumerate(r):
            canvas.paste(Image.fromarray(np.asarray(pic, np.uint8)), (x, y))
            x += widths[j] + gap
        y += h + gap
    return np.asarray(canvas)


def save_png(img, path) -> None:
    """Write a PIL image or an H x W x 3 array as PNG, atomically."""
    from PIL import Image

    from segclip.atomic import atomic_file

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    with atomic_file(path) as tmp:
        img.save(tmp, format="PNG")
