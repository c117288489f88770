"""``predict --vector gpkg|geojson``: the class map as one polygon layer a GIS can edit.

The written class raster is read back band by band (``BAND_ROWS`` full-width rows, so memory does
not grow with the scene's height).  Each band is sieved (``rasterio.features.sieve``, ``--min-area``
in m^2 -> pixels) with enough rows of context above and below that every connected piece smaller
than the threshold is seen whole, so the band-wise sieve equals a whole-scene sieve: a piece reaching
past the context has at least one pixel per context row, hence at least the threshold.  Then
``rasterio.features.shapes`` (4-connected, as the sieve) turns the band into polygons in pixel
coordinates; those touching the band's bottom edge stay open, and the next band's polygons
touching its top edge are dissolved with them by class (shapely ``unary_union``): edges on the
pixel grid are exact, so the pieces of one region merge into one polygon and no seam is left.
Closed polygons are written as they finish (pyogrio, appending), optionally simplified
(``--simplify`` metres, topology kept per polygon).

The nodata / ignore value (255) is never vectorised.  GeoPackage keeps the raster's CRS; GeoJSON is
written in EPSG:4326 as RFC 7946 asks (GDAL's RFC7946=YES reprojects), so it needs a CRS.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from segclip.errors import SegclipError

BAND_ROWS = 1024  # rows per band: ~20 MB of uint8 for a 20k-wide scene
WRITE_BATCH = 2000  # polygons per append
FORMATS = {"gpkg": ("GPKG", ".gpkg"), "geojson": ("GeoJSON", ".geojson")}
LAYER = "classes"


def check_vector_args(fmt: Optional[str], min_area: float, simplify: float) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise SegclipError(f"--vector {fmt}: choose {' or '.join(FORMATS)}")
    if min_area is not None and not (min_area >= 0 and math.isfinite(min_area)):
        raise SegclipError(f"--min-area {min_area}: must be >= 0 square metres; give e.g. --min-area 10 (0: keep every pixel)")
    if simplify is not None and not (simplify >= 0 and math.isfinite(simplify)):
        raise SegclipError(f"--simplify {simplify}: must be >= 0 metres; give e.g. --simplify 0.5 (0: the pixel edges)")


def check_vector_input(fmt: str, georeferenced: bool, path) -> None:
    if fmt == "geojson" and not georeferenced:
        raise SegclipError(f"{path}: --vector geojson needs a georeferenced input (GeoJSON is EPSG:4326 longitude/"
                           f"latitude); use --vector gpkg (pixel coordinates) or georeference the image")


class _Writer:
    def __init__(self, tmp: Path, fmt: str, crs):
        self.tmp, self.driver = tmp, FORMATS[fmt][0]
        self.crs = crs.to_wkt() if crs is not None else None
        self.opts = {"layer_options": {"RFC7946": "YES"}} if fmt == "geojson" else {}
        self.geoms, self.ids, self.n, self.started = [], [], 0, False

    def add(self, geom, cls: int) -> None:
        self.geoms.append(geom)
        self.ids.append(cls)
        if len(self.geoms) >= WRITE_BATCH:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Append the batch; ``final`` writes the (empty) layer even when nothing was vectorised."""
        import pyogrio.raw
        import shapely

        if not self.geoms and (self.started or not final):
            return
        ids = np.asarray(self.ids, np.int32)
        names = self.names
        pyogrio.raw.write(str(self.tmp), np.asarray(shapely.to_wkb(self.geoms), dtype=object),
                          [np.asarray([names[i] for i in ids], dtype=object), ids], fields=["class", "class_id"],
                          crs=self.crs, driver=self.driver, geometry_type="Polygon", layer=LAYER,
                          append=self.started, **self.opts)
        self.started = True
        self.n += len(self.geoms)
        self.geoms, self.ids = [], []


def vectorize(mask_path, dst, classes, *, fmt: str = "gpkg", ignore: int = 255, min_area: float = 0.0,
              simplify: float = 0.0, pixel_area: Optional[float] = None) -> dict:
    """Polygons of the class raster ``mask_path`` into ``dst`` (atomically); -> {"file", "polygons",
    "area_m2": {class: m^2} (projected CRSs), "sieve_pixels"}.  ``pixel_area``: m^2 of one pixel
    (default: from the raster's projected CRS; None for plain images, where --min-area is in pixels)."""
    import rasterio
    import rasterio.features
    import shapely
    from affine import Affine
    from rasterio.windows import Window
    from shapely.geometry import shape

    from segclip.atomic import atomic_file
    from segclip.data.gsd import pixel_area_m2

    dst = Path(dst)
    with rasterio.open(mask_path) as ds:
        crs, t, h, w = ds.crs, ds.transform, ds.height, ds.width
        if pixel_area is None and crs is not None and not crs.is_geographic:
            pixel_area = pixel_area_m2(crs, t, 0)  # None for a CRS without a known linear unit
        unit = math.sqrt(pixel_area) if pixel_area else 1.0  # metres per pixel side (pixels when unknown)
        thr = math.ceil(min_area / (pixel_area or 1.0)) if min_area else 0
        ctx = min(thr, h) if thr > 1 else 0
        tol = simplify / unit if simplify else 0.0  # in pixels: geometries stay in pixel space until written
        to_crs = [t.a, t.b, t.d, t.e, t.c, t.f] if crs is not None else [1, 0, 0, 1, 0, 0]
        area = defaultdict(float)
        with atomic_file(dst) as tmp:
            out = _Writer(Path(tmp), fmt, crs)
            out.names = [str(c) for c in classes]

            def emit(g, cls):
                if tol:
                    g = g.simplify(tol, preserve_topology=True)
                    if g.is_empty:
                        return
                if pixel_area:
                    area[cls] += g.area * pixel_area
                out.add(shapely.affinity.affine_transform(g, to_crs), cls)

            pending = defaultdict(list)  # class -> open polygons ending at the band's top edge
            for y0 in range(0, h, BAND_ROWS):
                y1 = min(h, y0 + BAND_ROWS)
                a0, a1 = max(0, y0 - ctx), min(h, y1 + ctx)
                arr = ds.read(1, window=Window(0, a0, w, a1 - a0))
                if thr > 1:
                    arr = rasterio.features.sieve(arr, thr, mask=arr != ignore, connectivity=4)
                band = np.ascontiguousarray(arr[y0 - a0:y1 - a0])
                top, still = defaultdict(list), defaultdict(list)  # reaching the seam above / the seam below
                for geom, v in rasterio.features.shapes(band, mask=band != ignore, connectivity=4,
                                                        transform=Affine.translation(0, y0)):
                    g, cls = shape(geom), int(v)
                    if y0 > 0 and g.bounds[1] <= y0:
                        top[cls].append(g)
                    elif y1 < h and g.bounds[3] >= y1:
                        still[cls].append(g)
                    else:
                        emit(g, cls)
                for cls in set(top) | set(pending):  # dissolve across the seam above, by class
                    parts = pending.get(cls, []) + top.get(cls, [])
                    merged = shapely.unary_union(parts) if len(parts) > 1 else parts[0]
                    for g in getattr(merged, "geoms", [merged]):
                        if y1 < h and g.bounds[3] >= y1:
                            still[cls].append(g)
                        else:
                            emit(g, cls)
                pending = still
            for cls, geoms in pending.items():
                for g in geoms:
                    emit(g, cls)
            out.flush(final=True)
    return {"file": str(dst), "polygons": out.n, "crs": "EPSG:4326" if fmt == "geojson" else (crs.to_string() if crs else None),
            "area_m2": {out.names[c]: round(a, 3) for c, a in sorted(area.items())} if pixel_area else None,
            "sieve_pixels": thr}
