"""Rasters in and out through rasterio (GDAL), window by window, so a 20k x 20k orthomosaic never
sits in memory.

Reading (``RasterSource``): PNG/JPEG/TIFF/GeoTIFF and anything else GDAL reads.

* Bands: ``bands`` (1-based) picks 1 or 3 of them; by default the bands GDAL labels red/green/blue,
  else the first three, else the first (grey, repeated to RGB).  A palette band is expanded through
  its colour table.
* 8-bit data passes through (grey PNGs of 1, 2 or 4 bits are spread to 0..255, as PIL does).
  Anything else (16-bit, float) is scaled to 0..255 by a linear stretch:
  ``value_range=(lo, hi)`` for every band, or by default each band's 2nd..98th percentile (the
  common GIS "cumulative cut"), estimated once per file on a decimated read (<= ~1 Mpx) of the
  valid pixels.
* Validity comes from GDAL's masks (nodata value, alpha band or internal mask): a pixel is nodata
  when every selected band is masked.  In float rasters NaN (and +-inf) is nodata too, in any
  selected band, with or without a declared nodata value: GDAL's mask does not flag NaN unless
  the file declares nodata=nan, and a NaN pixel has no value to classify.

PNG, JPEG and TIFF images are decoded here for the datasets too (``read_image``, called by
``imageio.read_rgb``), so ``segclip predict`` and ``segclip train/eval`` see the same pixels,
16-bit ones stretched by the same rule.  GDAL
owns them rather than PIL because only GDAL decodes a window of a scene without the whole image
(predict streams), and the two JPEG decoders disagree: the rasterio wheels bundle IJG libjpeg 9,
Pillow's libjpeg-turbo, which upsample chroma differently (measured on a synthetic 4:2:0 JPEG: a
quarter of the pixels differ, by up to 85 levels at sharp colour edges).  JPEG-compressed GeoTIFFs go through GDAL's
libjpeg anyway.  The cost: JPEG decodes ~2x slower than libjpeg-turbo (PNG decodes faster).

Writing (``ClassMapSink``): row bands of the class map go into a tiled, DEFLATE-compressed GeoTIFF
beside the destination; at the end GDAL copies it -- block by block, never whole -- into a
Cloud-Optimized GeoTIFF with overviews (georeferenced inputs: CRS, transform, nodata = the ignore
value) or a palette PNG (plain images), and the result is renamed into place atomically.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from segclip.errors import SegclipError, one_line

GDAL_CACHE_MB = 128  # GDAL's block cache is RSS too: bound it (its default is a share of the machine's RAM)
STRETCH_PERCENTILES = (2.0, 98.0)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")  # decoded by GDAL for predict and the datasets alike
_SAMPLE_PIXELS = 1 << 20


def gdal_env():
    """GDAL settings for streaming.  Through the process environment, not only ``rasterio.Env``:
    Env options are per thread, and GDAL sizes its one process-wide block cache from whichever
    thread reads first (the reader thread) -- by default 5% of RAM, which holds a whole scene."""
    import rasterio

    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))  # MB (a user's own setting wins)
    os.environ.setdefault("GDAL_NUM_THREADS", "ALL_CPUS")
    return rasterio.Env()


def _read_error(path, e) -> SegclipError:
    return SegclipError(f"{path}: cannot read raster ({one_line(e)}); check the file is complete and a format GDAL reads")


def _check_png(path: Path) -> None:
    """GDAL's PNG driver returns zeros for the missing rows of a truncated PNG with only a warning,
    so a cut-off download would be predicted as if it were whole.  PIL's ``verify`` walks the chunks
    and their CRCs (streaming, without decoding the pixels) and fails on truncation."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:
        raise SegclipError(f"{path}: damaged or truncated PNG ({type(e).__name__}: {one_line(e)}); re-download or "
                           f"re-export the file") from None


class Closing:
    """``with source:`` closes it: the one context-manager face of the raster sources (``close`` their own)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RasterSource(Closing):
    """One input raster.  ``read(y0, x0, y1, x1)`` -> uint8 h x w x 3; ``valid(y0, x0, y1, x1)`` ->
    bool h x w (or None when the raster has no nodata at all).  Not thread-safe: each thread opens
    its own with ``reopen()`` (same band choice and scaling, no second statistics pass)."""

    def __init__(self, path, bands: Optional[Sequence[int]] = None, value_range: Optional[tuple] = None,
                 _scaling=None):
        import rasterio
        from rasterio.enums import ColorInterp, MaskFlags

        self.path = Path(path)
        if _scaling is None and self.path.suffix.lower() == ".png" and self.path.is_file():
            _check_png(self.path)
        try:
            self.ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as e:
            if not self.path.exists():
                raise SegclipError(f"{self.path}: no such file") from None
            raise _read_error(self.path, e) from None
        ds = self.ds
        self.height, self.width, self.count = ds.height, ds.width, ds.count
        if bands is not None:
            bad = [b for b in bands if b > ds.count]
            if bad:
                ds.close()
                raise SegclipError(f"{self.path}: band {bad[0]} does not exist (the file has {ds.count} band"
                                   f"{'s' if ds.count != 1 else ''}); choose --bands from 1..{ds.count}")
            self.bands = tuple(bands)
        else:
            ci = list(ds.colorinterp)
            rgb = [ci.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in ci]
            self.bands = tuple(rgb) if len(rgb) == 3 else ((1, 2, 3) if ds.count >= 3 else (1,))
        self.colormap = None
        if len(self.bands) == 1 and ds.colorinterp[self.bands[0] - 1] == ColorInterp.palette:
            cmap = ds.colormap(self.bands[0])
            self.colormap = np.zeros((65536 if ds.dtypes[0] == "uint16" else 256, 3), np.uint8)
            for i, c in cmap.items():
                if i < len(self.colormap):
                    self.colormap[i] = c[:3]
        self.dtype = np.dtype(ds.dtypes[self.bands[0] - 1])
        nbits = int(ds.tags(self.bands[0], ns="IMAGE_STRUCTURE").get("NBITS", 8))
        # grey PNGs of 1/2/4 bits come as 0..2^n-1: spread to 0..255 (x255, x85, x17), as PIL decodes them
        self.spread = 255 // (2 ** nbits - 1) if self.dtype == np.uint8 and nbits < 8 and self.colormap is None else 1
        flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
        self.float = self.dtype.kind == "f"  # NaN = nodata: looked for in every window
        self.has_nodata = self.float or not all(MaskFlags.all_valid in f for f in flags)
        self.nodata = ds.nodata
        self.crs, self.transform = ds.crs, ds.transform
        self.georeferenced = ds.crs is not None
        self.value_range = value_range
        try:
            self.scaling = _scaling if _scaling is not None else self._scaling()
        except SegclipError:
            ds.close()
            raise
        except Exception as e:
            ds.close()
            raise _read_error(self.path, e) from None

    def reopen(self) -> "RasterSource":
        return RasterSource(self.path, self.bands, self.value_range, _scaling=self.scaling)

    # ---- scaling -----------------------------------------------------------------------------------
    def _scaling(self):
        """None (uint8 or palette: as is) or per-band (lo, hi) arrays for the linear stretch."""
        if self.dtype == np.uint8 or self.colormap is not None:
            return None
        n = len(self.bands)
        if self.value_range is not None:
            return np.full(n, self.value_range[0], np.float64), np.full(n, self.value_range[1], np.float64)
        f = max(1, math.ceil(math.sqrt(self.height * self.width / _SAMPLE_PIXELS)))
        shape = (n, max(1, self.height // f), max(1, self.width // f))
        data = self.ds.read(self.bands, out_shape=shape, masked=True)
        lo, hi = np.zeros(n), np.ones(n)
        for i in range(n):
            v = data[i].compressed() if np.ma.isMaskedArray(data[i]) else np.asarray(data[i]).ravel()
            v = v[np.isfinite(v)] if v.dtype.kind == "f" else v
            if v.size:
                lo[i], hi[i] = np.percentile(v, STRETCH_PERCENTILES)
            if not hi[i] > lo[i]:
                hi[i] = lo[i] + 1
        return lo, hi

    def describe_scaling(self) -> str:
        if self.scaling is None:
            return "8-bit as is" if self.colormap is None else "palette"
        lo, hi = self.scaling
        how = "range" if self.value_range is not None else f"p{STRETCH_PERCENTILES[0]:g}-p{STRETCH_PERCENTILES[1]:g} stretch"
        return f"{self.dtype} {how} " + " ".join(f"[{a:g},{b:g}]" for a, b in zip(lo, hi))

    # ---- reading -----------------------------------------------------------------------------------
    def _window(self, y0, x0, y1, x1):
        from rasterio.windows import Window

        return Window(x0, y0, min(x1, self.width) - x0, min(y1, self.height) - y0)

    def read(self, y0: int, x0: int, y1: int, x1: int, out_shape: Optional[tuple] = None, resampling=None) -> np.ndarray:
        """uint8 h x w x 3 RGB of the window clipped to the raster (``out_shape=(h, w)``: decimated)."""
        try:
            kw = {"out_shape": (len(self.bands),) + tuple(out_shape)} if out_shape else {}
            if resampling is not None:  # rasterio.enums.Resampling for out_shape reads (default nearest)
                kw["resampling"] = resampling
            a = self.ds.read(self.bands, window=self._window(y0, x0, y1, x1), **kw)
        except Exception as e:
            raise _read_error(self.path, e) from None
        if self.colormap is not None:
            return self.colormap[a[0]]
        if self.spread > 1:
            a *= np.uint8(self.spread)
        if self.scaling is not None:
            lo, hi = self.scaling
            a = a.astype(np.float32)
            a -= lo[:, None, None].astype(np.float32)
            a *= (255.0 / (hi - lo))[:, None, None].astype(np.float32)
            a = np.nan_to_num(a, nan=0.0)
            np.clip(a + 0.5, 0, 255, out=a)
            a = a.astype(np.uint8)
        a = np.moveaxis(a, 0, -1)
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        return np.ascontiguousarray(a)

    def valid(self, y0: int, x0: int, y1: int, x1: int, out_shape: Optional[tuple] = None) -> Optional[np.ndarray]:
        """bool h x w, False = nodata (every selected band masked); None when nothing is ever masked."""
        if not self.has_nodata:
            return None
        w = self._window(y0, x0, y1, x1)
        try:
            kw = {"out_shape": (len(self.bands),) + tuple(out_shape)} if out_shape else {}  # nearest
            m = self.ds.read_masks(self.bands, window=w, **kw).any(axis=0)
            if self.float:  # a second read of the window: GDAL's block cache holds it
                m &= np.isfinite(self.ds.read(self.bands, window=w, **kw)).all(axis=0)
        except Exception as e:
            raise _read_error(self.path, e) from None
        return m

    # ---- geometry ----------------------------------------------------------------------------------
    def row_pixel_areas(self, y0: int, y1: int) -> Optional[np.ndarray]:
        """Area in m^2 of one pixel in each row y0..y1-1 (None when not georeferenced): ``gsd.row_pixel_areas``."""
        from segclip.data.gsd import row_pixel_areas

        return row_pixel_areas(self.crs, self.transform, y0, y1) if self.georeferenced else None

    def close(self) -> None:
        self.ds.close()


def read_image(path, note=None, value_range=None, with_valid: bool = False):
    """A whole image (``IMAGE_SUFFIXES``) as uint8 H x W x 3 RGB, decoded exactly as ``segclip
    predict`` decodes it (bands, palette, grey and the 16-bit/float stretch as above), so a model
    is trained and run on the same pixels.  ``note(message)`` is told when a stretch is applied;
    ``value_range``: (low, high) for the stretch instead of the image's own percentiles.
    ``with_valid``: -> (rgb, bool H x W validity or None when nothing is nodata), as predict masks."""
    from rasterio.errors import NotGeoreferencedWarning

    with gdal_env(), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with RasterSource(path, value_range=value_range) as src:
            if src.scaling is not None and note is not None:
                note(f"{path}: scaled to 8 bits ({src.describe_scaling()})")
            rgb = src.read(0, 0, src.height, src.width)
            if not with_valid:
                return rgb
            valid = src.valid(0, 0, src.height, src.width)
            return rgb, (None if valid is None or valid.all() else valid)


def raster_size(path) -> tuple:
    """(h, w) from the header (GDAL), for files PIL cannot open (multiband 16-bit TIFF)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.height, ds.width
    except rasterio.errors.RasterioIOError as e:
        raise _read_error(path, e) from None


def _write_error(dst, e) -> SegclipError:
    return SegclipError(f"{dst}: cannot write ({one_line(e)}); check the output folder is writable and has free space")


def _colormap(palette, ignore: int) -> dict:
    from segclip.signature import palette_table

    table = palette_table(palette)
    cmap = {i: tuple(int(v) for v in table[i]) + (255,) for i in range(256)}
    cmap[ignore] = (255, 255, 255, 0)
    return cmap


class ClassMapSink:
    """Class-map rows in, one file out (``<dst>.tif`` as a COG when ``source`` is georeferenced, else
    ``<dst>.png``).  Use ``write(y0, rows, x0)`` for blocks in any order (GDAL reads back a tile
    that an earlier block left half written), then ``close()``; an error or ``abort()`` leaves
    nothing behind."""

    def __init__(self, dst_stem: Path, source: RasterSource, palette, num_classes: int, ignore: int = 255):
        import rasterio
        from segclip.atomic import partial_file

        self.geo = source.georeferenced
        self.dst = Path(f"{dst_stem}.tif" if self.geo else f"{dst_stem}.png")
        self.height, self.width = source.height, source.width
        self.dtype = "uint8" if num_classes < 255 else "uint16"
        self.ignore = ignore if self.dtype == "uint8" else 65535
        try:  # a partial segclip sweeps after a kill -9 (it can be the largest file segclip writes)
            self.tmp = partial_file(self.dst, suffix=".tif")
        except OSError as e:
            raise _write_error(self.dst, e) from None
        profile = {"driver": "GTiff", "width": self.width, "height": self.height, "count": 1, "dtype": self.dtype,
                   "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "nodata": self.ignore,
                   "BIGTIFF": "IF_SAFER"}
        if self.geo:
            profile.update(crs=source.crs, transform=source.transform)
        try:
            self.ds = rasterio.open(self.tmp, "w", **profile)
            if self.dtype == "uint8":
                self.ds.write_colormap(1, _colormap(palette, self.ignore))
        except Exception as e:
            self.tmp.unlink(missing_ok=True)
            raise _write_error(self.dst, e) from None

    def write(self, y0: int, rows: np.ndarray, x0: int = 0) -> None:
        from rasterio.windows import Window

        try:
            self.ds.write(rows.astype(self.dtype, copy=False)[None], window=Window(x0, y0, rows.shape[1], rows.shape[0]))
        except Exception as e:
            raise _write_error(self.dst, e) from None

    def close(self) -> Path:
        """Finish the file (COG with overviews / PNG) and move it into place atomically."""
        import rasterio.shutil

        from segclip.atomic import atomic_file

        try:
            self.ds.close()
        except Exception as e:
            self.tmp.unlink(missing_ok=True)
            raise _write_error(self.dst, e) from None
        try:
            with atomic_file(self.dst) as out:
                if self.geo:
                    rasterio.shutil.copy(self.tmp, out, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
                                         OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")
                else:
                    rasterio.shutil.copy(self.tmp, out, driver="PNG", ZLEVEL=6)
                for side in out.parent.glob(out.name + ".aux.xml"):
                    side.unlink()  # GDAL's PNG side-car (nodata): the palette PNG says it all
        except SegclipError:
            raise
        except Exception as e:
            raise _write_error(self.dst, e) from None
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.dst

    def abort(self) -> None:
        try:
            self.ds.close()
        finally:
            self.tmp.unlink(missing_ok=True)
