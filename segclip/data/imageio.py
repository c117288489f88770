"""Reading images and masks, turning every failure into a one-line error naming the file.  Images
in PNG/JPEG/TIFF are decoded with GDAL, as ``segclip predict`` reads them (``segclip.data.raster``);
masks and other formats with PIL.

Remote-sensing scenes are large (iSAID reaches ~13k px on a side), beyond PIL's default
decompression-bomb limit, so the limit is raised to 20k x 20k here (never lowered, and left alone
if someone disabled it).  Colour masks are decoded with a sorted lookup of packed 24-bit colours
in row chunks, so a 13k x 13k mask never needs an int64 copy of itself.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segclip.data.raster import IMAGE_SUFFIXES, raster_size, read_image
from segclip.errors import SegclipError

MAX_PIXELS = 20000 * 20000
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

INDEX_MODES = ("L", "P", "I", "I;16", "1")
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except FileNotFoundError:
        raise SegclipError(f"{path}: file not found; check the path") from None
    except IsADirectoryError:
        raise SegclipError(f"{path}: is a folder, not an image; give image files") from None
    except _READ_ERRORS as e:
        raise SegclipError(f"{path}: cannot read image ({type(e).__name__}: {e}); re-download or remove the file") from None


def image_size(path: Path) -> tuple:
    """(h, w) from the header, without decoding pixels."""
    if Path(path).suffix.lower() in (".tif", ".tiff"):  # PIL opens few of the TIFFs GDAL reads
        return raster_size(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except _READ_ERRORS as e:
        raise SegclipError(f"{path}: cannot read image ({type(e).__name__}: {e}); re-download or remove the file") from None


def read_rgb(path: Path, note=None, value_range=None, with_valid: bool = False):
    """H x W x 3 uint8 RGB (alpha dropped, grey/palette images expanded).  PNG/JPEG/TIFF, 16-bit
    and float included, are decoded by GDAL exactly as ``segclip predict`` decodes them
    (``raster.read_image``: why; ``note(message)`` is told of a 16-bit stretch; ``value_range``:
    its (low, high), default the image's own p2-p98).  Other formats
    (BMP, WebP, ...) through PIL, 8-bit only.  ``with_valid``: -> (rgb, validity or None), the
    pixels predict treats as nodata (NaN, GDAL nodata/alpha) False."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path, note, value_range, with_valid=with_valid)
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # PIL's conversion would clip at 255
        raise SegclipError(f"{path}: {im.mode} image deeper than 8 bits in a format segclip reads with PIL; "
                           f"save it as PNG or (Geo)TIFF, which are scaled to 8 bits as predict does")
    if im.mode != "RGB":
        im = im.convert("RGB")
    rgb = np.array(im, dtype=np.uint8)  # writable (np.asarray of a PIL image is read-only)
    return (rgb, None) if with_valid else rgb


def read_index_mask(path: Path) -> np.ndarray:
    """A mask whose pixel values are class indices (mode L/P/I).  Colour masks are refused.

    An RGB file whose three channels are identical is accepted: it is a grey index mask saved
    by a tool that always writes RGB.
    """
    im = _open(path)
    if im.mode in INDEX_MODES:
        return np.asarray(im)
    if im.mode in ("RGB", "RGBA", "LA"):
        a = np.asarray(im)
        if im.mode == "LA" or (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])):
            return np.ascontiguousarray(a[..., 0])
        raise SegclipError(f"{path}: this is a colour ({im.mode}) mask but an index mask (one class index per pixel, "
                           f"mode L or P) is expected; convert it, or give class colours so colours can be decoded")
    raise SegclipError(f"{path}: unsupported mask mode {im.mode}; save masks as 8-bit PNG (mode L or P)")


def read_color_mask(path: Path, colors: Sequence, chunk_rows: int = 1024) -> np.ndarray:
    """RGB mask -> uint8 class indices by exact colour match; unknown colours -> 255 with a warning."""
    im = _open(path)
    if im.mode in ("L", "I", "I;16", "1", "LA"):
        raise SegclipError(f"{path}: single-channel ({im.mode}) mask where an RGB colour mask is expected; "
                           f"use the colour (RGB) label files of this dataset")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return decode_colors(np.asarray(im), colors, str(path), chunk_rows)


def decode_colors(rgb: np.ndarray, colors: Sequence, where: str, chunk_rows: int = 1024) -> np.ndarray:
    codes = np.array([(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in colors], np.int32)
    if len(np.unique(codes)) != len(codes):
        raise SegclipError(f"{where}: two classes share a colour; give every class a distinct colour")
    order = np.argsort(codes)
    sorted_codes, sorted_ids = codes[order], order.astype(np.uint8)
    out = np.empty(rgb.shape[:2], np.uint8)
    unmatched = 0
    for y in range(0, rgb.shape[0], chunk_rows):
        c = rgb[y:y + chunk_rows].astype(np.int32)
        packed = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
        pos = np.minimum(np.searchsorted(sorted_codes, packed), len(codes) - 1)
        hit = sorted_codes[pos] == packed
        out[y:y + chunk_rows] = np.where(hit, sorted_ids[pos], 255)
        unmatched += int(hit.size - np.count_nonzero(hit))
    if unmatched:
        warnings.warn(f"{where}: {unmatched} pixel(s) have a colour that matches no class; labelled ignore (255)",
                      stacklevel=3)
    return out


def read_mask(path: Path, colors=None) -> tuple:
    """``(array, decoded)``: raw index values (``decoded=False``), or -- when class colours are
    known and the file is RGB -- class indices decoded by colour (``decoded=True``)."""
    if colors is None:
        return read_index_mask(path), False
    im = _open(path)
    if im.mode in INDEX_MODES:
        return np.asarray(im), False
    return decode_colors(np.asarray(im.convert("RGB")), colors, str(path)), True
