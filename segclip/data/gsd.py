"""Ground sampling distance (GSD): the metres on the ground one pixel spans.

A remote-sensing model is trained at one GSD (LoveDA: 0.3 m) and sees objects at that scale only,
so the GSD is part of its signature, like its classes (``Signature.gsd``): ``train --gsd`` records
it (default: the dataset's, below), export writes it into the manifest, the ONNX metadata and the
Triton configs, and ``predict`` resamples georeferenced inputs to it.  The GIS tools read the same
figure from a model's ONNX metadata as ``resolution`` in cm/px (``segclip.export.geodeep``).

GSD of a raster here = sqrt(ground area of one pixel): exact for square pixels, and independent of
a rotated transform.  Projected CRSs: |det(transform)| in the CRS's linear unit, converted to metres;
geographic CRSs: the spherical area of a cell at the raster's middle row (mean Earth radius).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Optional

from segclip.errors import SegclipError

# LoveDA's images are 0.3 m GSD (Wang et al., "LoveDA: A Remote Sensing Land-Cover Dataset for Domain
# Adaptive Semantic Segmentation", NeurIPS 2021 Datasets and Benchmarks: "spatial resolution of 0.3 m");
# the embedded sample set imitates LoveDA tiles and inherits it.  iSAID (Google Earth, mixed sources)
# and UAVid (oblique video frames) have no one GSD: unknown unless train --gsd gives it.
DATASET_GSD = {"loveda": 0.3, "sample": 0.3}
EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG)
AGREE_REL_TOL = 0.01  # training tiles whose GSDs differ by more than 1% do not agree on one


def parse_gsd(value, flag: str = "--gsd") -> float:
    """A positive number of metres per pixel; one-line error otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SegclipError(f"{flag} {value}: not a number; give the ground sampling distance in metres per pixel, "
                           f"e.g. {flag} 0.3") from None
    if not (v > 0 and math.isfinite(v)):
        raise SegclipError(f"{flag} {value}: the ground sampling distance must be a positive number of metres per "
                           f"pixel; give e.g. {flag} 0.3")
    return v


def row_pixel_areas(crs, transform, y0: int, y1: int):
    """Ground area in m^2 of one pixel in each row y0..y1-1 (float64 array), or None when the grid has
    no known metric size.  Lon/lat grids: the exact spherical area of the row's cells."""
    import numpy as np

    if crs is None or transform is None:
        return None
    t = transform
    if crs.is_geographic:
        if t.b or t.d:
            return None  # rotated lon/lat grids: no simple cell area
        lat = np.radians(t.f + t.e * np.arange(y0, y1 + 1, dtype=np.float64))
        return EARTH_RADIUS_M ** 2 * abs(math.radians(t.a)) * np.abs(np.sin(lat[:-1]) - np.sin(lat[1:]))
    try:
        factor = crs.linear_units_factor[1]
    except Exception:  # a CRS without a known linear unit (engineering/local ones)
        return None
    return np.full(y1 - y0, abs(t.a * t.e - t.b * t.d) * factor * factor, np.float64)


def pixel_area_m2(crs, transform, row: int) -> Optional[float]:
    """Ground area in m^2 of one pixel of ``row`` (None when the grid has no known metric size)."""
    a = row_pixel_areas(crs, transform, row, row + 1)
    return None if a is None else float(a[0])


def raster_gsd(crs, transform, height: int = 1) -> Optional[float]:
    """GSD in metres of a grid (its middle row for lon/lat grids); None when not georeferenced."""
    area = pixel_area_m2(crs, transform, height // 2)
    return math.sqrt(area) if area else None


def file_gsd(path) -> Optional[float]:
    """GSD of an image file from its georeferencing (header only); None for plain images."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(Path(path)) as ds:
                return raster_gsd(ds.crs, ds.transform, ds.height)
        except rasterio.errors.RasterioIOError:
            return None


def agreed_gsd(paths: Iterable) -> Optional[float]:
    """The one GSD of a set of training images: their common GSD when every one is georeferenced
    and they agree within 1 %, else None (unknown: train --gsd gives it)."""
    values = []
    for p in paths:
        g = file_gsd(p)
        if g is None:
            return None
        values.append(g)
    if not values or max(values) > min(values) * (1 + AGREE_REL_TOL):
        return None
    return round(sum(values) / len(values), 6)


def dataset_gsd(ds) -> Optional[float]:
    """A dataset's GSD: its own ``ground_resolution()`` when it has one (the folder dataset reads its
    images' georeferencing; None when they have none or disagree), else a known one by dataset name
    (``DATASET_GSD``), else None."""
    inner = getattr(ds, "dataset", ds)  # a TiledDataset keeps its images' GSD
    fn = getattr(inner, "ground_resolution", None)
    return fn() if fn is not None else DATASET_GSD.get(getattr(inner, "name", None))


def describe(gsd: Optional[float]) -> str:
    return "unknown" if gsd is None else f"{gsd:g} m"


def parse_gsd_mode(value):
    """``predict --gsd``: "auto" | "off" | the inputs' GSD in metres (a positive float)."""
    s = "auto" if value is None else str(value).strip().lower()
    return s if s in ("auto", "off") else parse_gsd(value)
