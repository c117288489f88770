"""A raster seen at the model's ground sampling distance: ``predict --gsd`` (segclip.data.gsd).

``ResampledSource`` wraps a ``RasterSource`` and offers the same reading surface (``read``, ``valid``,
``row_pixel_areas``, ``reopen``, ``crs``, ``transform``, ``height``, ``width``) on a grid of
``round(H * f) x round(W * f)`` pixels, f = input GSD / model GSD, covering exactly the input's
extent (so its pixels are the model's GSD up to the rounding, and areas summed over it are the
input's).  Each window is read from the file with ``out_shape`` -- GDAL resamples while it reads,
from the file's overviews when it has them -- by averaging when the model's pixels are larger
(an input finer than the model) and bilinear when smaller; palette bands and the nodata mask by
nearest.  Nothing of the whole scene is held: the streaming predictor reads windows of this grid
as it reads windows of any raster.

The class map comes back to the input's own grid by nearest (``to_input_block``): input pixel
r takes the model pixel its centre falls in, floor((r + 0.5) * H' / H), in exact integers, so
the blocks of the model grid map to blocks that tile the input grid.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from segclip.data.gsd import row_pixel_areas
from segclip.data.raster import Closing

RESAMPLE_TOL = 0.01  # |f - 1| below this: the input is read as is (1% is below the scale a model notices)


class ResampledSource(Closing):
    def __init__(self, inner, factor: float):
        """``inner``: a ``RasterSource``; ``factor`` f = input GSD / model GSD (< 1: the input is finer)."""
        from rasterio.enums import Resampling

        self.inner, self.factor = inner, float(factor)
        self.path, self.bands, self.scaling = inner.path, inner.bands, inner.scaling
        self.H, self.W = inner.height, inner.width
        self.height, self.width = max(1, round(self.H * self.factor)), max(1, round(self.W * self.factor))
        self.sy, self.sx = self.H / self.height, self.W / self.width  # input pixels per model pixel, exact extent
        self.has_nodata, self.nodata = inner.has_nodata, inner.nodata
        self.crs, self.georeferenced = inner.crs, inner.georeferenced
        self.transform = inner.transform @ inner.transform.scale(self.sx, self.sy) if inner.transform is not None else None
        palette = getattr(inner, "colormap", None) is not None  # class-like indices: never averaged
        self.resampling = (Resampling.nearest if palette else Resampling.average if self.factor < 1
                           else Resampling.bilinear)

    def reopen(self) -> "ResampledSource":
        return ResampledSource(self.inner.reopen(), self.factor)

    def describe_scaling(self) -> str:
        return self.inner.describe_scaling()

    def _src(self, y0, x0, y1, x1) -> tuple:
        """Model-grid window (clipped) -> (source window coords as floats, out shape)."""
        y1, x1 = min(y1, self.height), min(x1, self.width)
        return (y0 * self.sy, x0 * self.sx, y1 * self.sy, x1 * self.sx), (y1 - y0, x1 - x0)

    def read(self, y0: int, x0: int, y1: int, x1: int, out_shape: Optional[tuple] = None) -> np.ndarray:
        box, shape = self._src(y0, x0, y1, x1)
        return self.inner.read(*box, out_shape=out_shape or shape, resampling=self.resampling)

    def valid(self, y0: int, x0: int, y1: int, x1: int) -> Optional[np.ndarray]:
        box, shape = self._src(y0, x0, y1, x1)
        return self.inner.valid(*box, out_shape=shape)

    def row_pixel_areas(self, y0: int, y1: int) -> Optional[np.ndarray]:
        if not self.georeferenced:
            return None
        return row_pixel_areas(self.crs, self.transform, y0, y1)

    # ---- back to the input's grid ------------------------------------------------------------------
    def _first_input(self, m: int, n_in: int, n_model: int) -> int:
        """The first input index whose nearest model index is >= m: ceil((2 n_in m - n_model) / (2 n_model))."""
        return min(n_in, max(0, -((n_model - 2 * n_in * m) // (2 * n_model))))

    def to_input_block(self, y0: int, x0: int, rows: np.ndarray) -> tuple:
        """A block of the model grid at (y0, x0) -> (r0, c0, block of the input grid), nearest."""
        h, w = rows.shape[:2]
        r0, r1 = self._first_input(y0, self.H, self.height), self._first_input(y0 + h, self.H, self.height)
        c0, c1 = self._first_input(x0, self.W, self.width), self._first_input(x0 + w, self.W, self.width)
        ri = (2 * np.arange(r0, r1, dtype=np.int64) + 1) * self.height // (2 * self.H) - y0
        ci = (2 * np.arange(c0, c1, dtype=np.int64) + 1) * self.width // (2 * self.W) - x0
        return r0, c0, rows[np.ix_(ri, ci)]

    def close(self) -> None:
        self.inner.close()


def plan_resampling(source, model_gsd: Optional[float], mode) -> dict:
    """How one input is read: ``{"input": its GSD or None, "model": ..., "factor": input / model or
    None, "resampled": bool, "why": a note or None}``.  ``mode``: "auto" (georeferenced inputs with a
    known model GSD), "off", or the input's GSD in metres (a float: also for plain images)."""
    from segclip.data.gsd import raster_gsd

    geo = raster_gsd(source.crs, source.transform, source.height) if source.georeferenced else None
    given = mode if isinstance(mode, float) else None
    gsd_in = given if given is not None else geo
    out = {"input": None if gsd_in is None else round(gsd_in, 6), "model": model_gsd, "factor": None, "resampled": False,
           "why": None}
    if gsd_in is not None and model_gsd:
        out["factor"] = round(gsd_in / model_gsd, 6)
    if mode == "off":
        out["why"] = "--gsd off"
    elif model_gsd is None:
        out["why"] = "the model's GSD is unknown"
    elif gsd_in is None:
        out["why"] = "not georeferenced (give --gsd METRES)"
    elif abs(gsd_in / model_gsd - 1) >= RESAMPLE_TOL and math.isfinite(gsd_in):
        out["resampled"] = True
    return out
