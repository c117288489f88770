"""A small, procedurally rendered LoveDA look-alike, so that the whole pipeline (train, eval,
export, serve) runs offline in minutes without downloading anything.

Each scene is built in layers, all vectorised numpy: a warped Voronoi land-cover map (background
clutter, barren, forest, agriculture), a water body (river or lake), a connected road network,
rectangular buildings with cast shadows (shadow pixels are labelled background), then sensor
effects (illumination gradient, colour gain, blur, noise) and sometimes a small no-data strip.
Every class has its own colour *and* texture (sand grain, blobby canopy, striped fields, mosaic
clutter, flat roads with centre dashes), identical in train and val, so a small model can learn
them quickly while noise and brightness changes keep it from being trivial.

Output is LoveDA's exact on-disk format (``{Train,Val}/{Urban,Rural}/{images_png,masks_png}``,
mask 0 = no data, 1..7 = classes) plus ``sample_manifest.json``.  The same seed gives
byte-identical PNGs: every image draws from its own ``default_rng([seed, split, index])``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from segclip.errors import SegclipError
from segclip.atomic import atomic_dir, holds_own

MANIFEST = "sample_manifest.json"
VERSION = 1
DEFAULTS = {"seed": 0, "num_train": 48, "num_val": 16, "size": 256}
NODATA, BG, BUILDING, ROAD, WATER, BARREN, FOREST, AGRI = range(8)  # LoveDA raw mask values

BG_COLORS = np.array([(150, 146, 138), (126, 124, 120), (172, 168, 160), (118, 122, 104), (142, 128, 118),
                      (104, 104, 106)], np.float32)
ROOF_COLORS = np.array([(182, 78, 62), (206, 206, 200), (84, 86, 96), (96, 116, 152), (228, 224, 214),
                        (192, 122, 72)], np.float32)
AGRI_COLORS = np.array([(118, 162, 68), (150, 178, 78), (196, 192, 92), (98, 142, 58), (172, 186, 70),
                        (136, 156, 60)], np.float32)


# ---- noise helpers ---------------------------------------------------------------------------
def _norm(a: np.ndarray) -> np.ndarray:
    return ((a - a.mean()) / (a.std() + 1e-6)).astype(np.float32)


def lowfreq(rng, size: int, cells: int) -> np.ndarray:
    """Smooth unit-variance noise with about ``cells`` bumps across the image."""
    g = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return _norm(np.asarray(Image.fromarray(g, "F").resize((size, size), Image.BICUBIC)))


def fine(rng, size: int, sigma: float) -> np.ndarray:
    """Grain: white noise blurred by ``sigma`` pixels, unit variance."""
    return _norm(gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma))


# ---- layers ----------------------------------------------------------------------------------
def _land_cover(rng, S: int, urban: bool) -> np.ndarray:
    forced = [BG, BG, BARREN, FOREST, AGRI] if urban else [AGRI, AGRI, FOREST, FOREST, BARREN, BG]
    kinds, weights = [BG, BARREN, FOREST, AGRI], ([.55, .15, .15, .15] if urban else [.15, .1, .3, .45])
    n = int(rng.integers(len(forced) + 1, len(forced) + 4))
    cells = np.array(forced + list(rng.choice(kinds, n - len(forced), p=weights)))
    rng.shuffle(cells)
    pts = rng.uniform(0, S, (n, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    wy, wx = lowfreq(rng, S, 3) * 0.08 * S, lowfreq(rng, S, 3) * 0.08 * S
    d = ((yy + wy)[..., None] - pts[:, 0]) ** 2 + ((xx + wx)[..., None] - pts[:, 1]) ** 2
    return cells[np.argmin(d, axis=-1)].astype(np.uint8)


def _water(rng, S: int, urban: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    if rng.random() < (0.45 if urban else 0.65):  # a meandering river crossing the scene
        u, v = (xx, yy) if rng.random() < 0.5 else (yy, xx)
        centre = rng.uniform(0.2, 0.8) * S + rng.uniform(0.05, 0.15) * S * np.sin(
            2 * np.pi * v / (rng.uniform(0.6, 1.5) * S) + rng.uniform(0, 2 * np.pi))
        width = rng.uniform(0.05, 0.09) * S * (1 + 0.3 * lowfreq(rng, S, 3))
        return np.abs(u - centre + 1.5 * fine(rng, S, 2.0)) < width / 2
    cy, cx = rng.uniform(0.2, 0.8, 2) * S  # an irregular lake
    blob = lowfreq(rng, S, 4) - 3.0 * ((yy - cy) ** 2 + (xx - cx) ** 2) / S ** 2 * 4
    return blob > np.quantile(blob, 1 - rng.uniform(0.06, 0.12))


def _roads(rng, S: int, urban: bool):
    """(road mask, centre-marking mask); roads always span the scene and cross, so they connect."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    s = S / 256
    width = max(5.0, rng.uniform(9, 13) * s)
    mark_w, period = max(1.0, 1.2 * s), 14 * s
    lines = []  # (signed distance to the centre line, coordinate along the road, allowed half-plane)
    if urban:
        for axis in (0, 1):
            k = int(rng.integers(1, 3))
            for j in range(k):
                c = (j + rng.uniform(0.3, 0.7)) * S / k
                lines.append((yy - c, xx, None) if axis == 0 else (xx - c, yy, None))
    else:
        a = rng.uniform(-0.35, 0.35)
        c = rng.uniform(0.3, 0.7) * S
        horiz = rng.random() < 0.5
        u, v = (yy, xx) if horiz else (xx, yy)
        main = (u - c - a * (v - S / 2)) / np.sqrt(1 + a * a)
        lines.append((main, v, None))
        if rng.random() < 0.7:  # a side road from the main road to one edge
            c2 = rng.uniform(0.25, 0.75) * S
            side = 1 if rng.random() < 0.5 else -1
            lines.append((v - c2, u, side * main > 0))
    road, mark = np.zeros((S, S), bool), np.zeros((S, S), bool)
    for dist, along, half in lines:
        r = np.abs(dist) < width / 2
        m = (np.abs(dist) < mark_w / 2) & ((along % period) < period * 0.55)
        if half is not None:  # the side road starts at the main road
            r &= half
            m &= half & (np.abs(lines[0][0]) >= width / 2)
        road |= r
        mark |= m
    return road, mark


def _buildings(rng, S: int, label: np.ndarray, blocked: np.ndarray, urban: bool):
    """Rectangles on free ground; returns (building mask, roof colour image, shadow offsets)."""
    s = S / 256
    shadow_len = max(2, int(round(3 * s)))
    sy, sx = rng.choice([-1, 1], 2)
    allowed = np.isin(label, (BG,) if urban else (BG, AGRI, BARREN)) & ~blocked
    gap = max(1, int(round(2 * s)))
    target, tries = (int(rng.integers(30, 50)), 400) if urban else (int(rng.integers(4, 10)), 200)
    bmask = np.zeros((S, S), bool)
    roof = np.zeros((S, S, 3), np.float32)
    placed = 0
    for _ in range(tries):
        if placed >= target:
            break
        h, w = (rng.uniform(0.035, 0.1, 2) * S).astype(int) + 3
        y0, x0 = int(rng.integers(0, S - h)), int(rng.integers(0, S - w))
        m = gap + shadow_len
        ya, yb, xa, xb = max(y0 - m, 0), min(y0 + h + m, S), max(x0 - m, 0), min(x0 + w + m, S)
        if not allowed[ya:yb, xa:xb].all():
            continue
        allowed[ya:yb, xa:xb] = False
        bmask[y0:y0 + h, x0:x0 + w] = True
        col = ROOF_COLORS[rng.integers(len(ROOF_COLORS))] * rng.uniform(0.9, 1.1)
        roof[y0:y0 + h, x0:x0 + w] = col
        if rng.random() < 0.6:  # gabled roof: the two halves catch the light differently
            if h > w:
                roof[y0:y0 + h, x0:x0 + w // 2] *= 1.12
            else:
                roof[y0:y0 + h // 2, x0:x0 + w] *= 1.12
        placed += 1
    shadow = np.zeros((S, S), bool)
    for k in range(1, shadow_len + 1):  # shift without wrapping around the border
        dy, dx = k * sy, k * sx
        shadow[max(dy, 0):S + min(dy, 0), max(dx, 0):S + min(dx, 0)] |= \
            bmask[max(-dy, 0):S + min(-dy, 0), max(-dx, 0):S + min(-dx, 0)]
    return bmask, roof, shadow & ~bmask


def _textures(rng, S: int, label: np.ndarray, mark: np.ndarray, roof: np.ndarray) -> np.ndarray:
    s = S / 256
    img = np.zeros((S, S, 3), np.float32)
    grain = fine(rng, S, 0.7)[..., None]

    def put(k, tex):
        sel = label == k
        img[sel] = tex[sel]

    # background: a mosaic of dull built/bare patches (clutter)
    cell = max(3, int(round(rng.uniform(5, 9) * s)))
    n = S // cell + 2
    grid = BG_COLORS[rng.integers(0, len(BG_COLORS), (n, n))]
    oy, ox = rng.integers(0, cell, 2)
    mosaic = np.repeat(np.repeat(grid, cell, 0), cell, 1)[oy:oy + S, ox:ox + S]
    put(BG, mosaic + 6 * grain)
    # barren: tan to brown sand, strong fine grain
    mix = (0.5 + 0.25 * lowfreq(rng, S, 3))[..., None]
    sand = (1 - mix) * np.array((204, 172, 128), np.float32) + mix * np.array((172, 134, 96), np.float32)
    put(BARREN, sand + 16 * fine(rng, S, 0.6)[..., None])
    # forest: dark green blobby canopy (crowns a few pixels wide, dark gaps between them)
    crowns = fine(rng, S, 1.6 * s)[..., None]
    put(FOREST, np.array((46, 88, 40), np.float32) * (1 + 0.28 * np.clip(crowns, -2, 2)))
    # agriculture: rectangular fields, each with its own colour and stripe direction/period
    th = rng.uniform(-0.5, 0.5)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    u, v = xx * np.cos(th) + yy * np.sin(th), -xx * np.sin(th) + yy * np.cos(th)
    fid, edge = np.zeros((S, S), np.int64), np.full((S, S), np.inf, np.float32)
    for coord in (u, v):
        lo, hi = float(coord.min()), float(coord.max())
        cuts = lo + np.cumsum(rng.uniform(0.12, 0.3, int((hi - lo) / (0.12 * S)) + 2) * S)
        idx = np.searchsorted(cuts, coord)
        fid = fid * (len(cuts) + 1) + idx
        edge = np.minimum(edge, np.abs(coord - cuts[np.clip(idx, 0, len(cuts) - 1)]))
    nf = int(fid.max()) + 1
    colors = AGRI_COLORS[rng.integers(0, len(AGRI_COLORS), nf)] * rng.uniform(0.92, 1.08, (nf, 1))
    along_u = rng.random(nf) < 0.5
    period, phase = rng.uniform(3.5, 6.5, nf) * s, rng.uniform(0, 2 * np.pi, nf)
    stripes = np.sin(2 * np.pi * np.where(along_u[fid], u, v) / period[fid] + phase[fid])[..., None]
    fields = colors[fid] * (1 + 0.13 * stripes) * np.where(edge < 1.2 * s, 0.8, 1.0)[..., None]
    put(AGRI, fields + 4 * grain)
    # water: dark blue, rippled
    ripple = 10 * lowfreq(rng, S, 5)[..., None] + 7 * fine(rng, S, 1.0)[..., None]
    put(WATER, np.array((36, 70, 122), np.float32) + ripple * np.array((0.5, 0.8, 1.0), np.float32))
    # road: flat grey asphalt with light dashed centre markings
    asphalt = np.array((112, 112, 116), np.float32) + 4 * grain
    asphalt[mark] = (214, 214, 200)
    put(ROAD, asphalt)
    put(BUILDING, roof + 4 * grain)
    return img


def render_scene(rng, size: int, urban: bool):
    """-> (RGB uint8 image, uint8 mask with LoveDA raw values 0..7)."""
    S = int(size)
    label = _land_cover(rng, S, urban)
    water = _water(rng, S, urban)
    label[water] = WATER
    road, mark = _roads(rng, S, urban)
    label[road] = ROAD
    blocked = water | road
    bmask, roof, shadow = _buildings(rng, S, label, blocked, urban)
    label[bmask] = BUILDING
    shadow &= ~blocked
    img = _textures(rng, S, label, mark & road, roof)
    img[shadow] *= 0.5
    label[shadow] = BG
    # sensor: global brightness, smooth illumination, colour gain, optics blur, noise
    gain = rng.uniform(0.82, 1.18) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    img *= (1 + 0.07 * lowfreq(rng, S, 2))[..., None] * gain
    img = gaussian_filter(img, (0.6, 0.6, 0))
    img += rng.normal(0, 4.0, img.shape).astype(np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if rng.random() < 0.4:  # a small no-data strip along one border, black in the image
        t, L = int(rng.uniform(0.03, 0.08) * S) + 1, int(rng.uniform(0.2, 0.5) * S)
        a = int(rng.integers(0, S - L))
        side = int(rng.integers(4))
        sl = [(slice(0, t), slice(a, a + L)), (slice(S - t, S), slice(a, a + L)),
              (slice(a, a + L), slice(0, t)), (slice(a, a + L), slice(S - t, S))][side]
        label[sl] = NODATA
        image[sl] = 0
    return image, label


# ---- dataset on disk -------------------------------------------------------------------------
def _plan(num_train: int, num_val: int) -> list:
    """[(split, domain, stem, split_id, index)]: half Rural, half Urban, unique numeric stems."""
    out, stem = [], 0
    for split_id, (split, n) in enumerate((("Train", num_train), ("Val", num_val))):
        n_rural = n - n // 2
        for i in range(n):
            out.append((split, "Rural" if i < n_rural else "Urban", str(stem), split_id, i))
            stem += 1
    return out


def _counts(num_train: int, num_val: int) -> dict:
    c = {}
    for split, dom, *_ in _plan(num_train, num_val):
        c.setdefault(split, {}).setdefault(dom, 0)
        c[split][dom] += 1
    return c


def _read_manifest(root: Path):
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, m: dict) -> bool:
    for split, doms in m.get("counts", {}).items():
        for dom, n in doms.items():
            for sub in ("images_png", "masks_png"):
                d = root / split / dom / sub
                if not d.is_dir() or len(list(d.glob("*.png"))) != n:
                    return False
    return bool(m.get("counts"))


def _check_args(params: dict) -> dict:
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise SegclipError(f"sample-data: {k} must be an integer, got {v!r}")
    if params["size"] < 64:
        raise SegclipError(f"sample-data: size {params['size']} is too small; use 64 or more")
    if params["num_train"] < 1 or params["num_val"] < 1:
        raise SegclipError("sample-data: num_train and num_val must be at least 1")
    return {k: int(v) for k, v in params.items()}


def generate_sample_dataset(root, seed: int = 0, num_train: int = 48, num_val: int = 16, size: int = 256,
                            force: bool = False, force_hint: str = "pass --force", flag: str = "--out") -> Path:
    """Render the sample set into ``root`` (LoveDA layout) and return ``root``.

    An existing complete set with the same parameters is reused as is; a non-empty folder that is
    not one (partial, other parameters, or unrelated files) is refused unless ``force``.
    ``force_hint``: how the caller's user asks for that (``sample-data --force``; train and eval,
    which read ``--data sample:DIR``, have no --force of their own); ``flag``: the option naming ``root``.
    A folder without the sample set's manifest is someone else's: refused, ``force`` or not.
    """
    root = Path(root)
    params = _check_args({"seed": seed, "num_train": num_train, "num_val": num_val, "size": size})
    if holds_own(root, lambda d: _read_manifest(d) is not None, "a segclip sample dataset", f"no {MANIFEST}", flag) \
            and not force:
        m = _read_manifest(root)
        if m.get("version") != VERSION or not _is_complete(root, m):
            raise SegclipError(f"{root} is not empty and holds no complete sample dataset (checked {MANIFEST}); "
                               f"choose an empty folder or {force_hint} to replace it")
        diff = {k: m.get(k) for k in params if m.get(k) != params[k]}
        if diff:
            raise SegclipError(f"{root} holds a sample dataset made with "
                               f"{', '.join(f'{k}={v}' for k, v in diff.items())}; {force_hint} to regenerate it "
                               f"with {', '.join(f'{k}={params[k]}' for k in diff)}")
        return root
    manifest = {"generator": "segclip.data.sample", "version": VERSION, **params,
                "counts": _counts(params["num_train"], params["num_val"])}
    try:
        with atomic_dir(root, replace=True) as tmp:
            for split, dom, stem, split_id, i in _plan(params["num_train"], params["num_val"]):
                rng = np.random.default_rng([params["seed"], split_id, i])
                image, mask = render_scene(rng, params["size"], urban=dom == "Urban")
                for sub, arr, mode in (("images_png", image, "RGB"), ("masks_png", mask, "L")):
                    d = tmp / split / dom / sub
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr, mode).save(d / f"{stem}.png")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except OSError:
        m = _read_manifest(root)  # another process may have finished the same set first
        if m is not None and all(m.get(k) == v for k, v in params.items()) and _is_complete(root, m):
            return root
        raise
    return root


def ensure_sample_dataset(root, **given) -> Path:
    """For ``build_dataset('sample', ...)``: reuse what is at ``root`` (checking only the
    parameters given explicitly), or render it with the defaults plus ``given``."""
    root = Path(root)
    m = _read_manifest(root) if root.is_dir() else None
    base = {k: m.get(k, v) for k, v in DEFAULTS.items()} if m else dict(DEFAULTS)
    return generate_sample_dataset(root, **{**base, **given},
                                   force_hint=f"run `segclip sample-data --out {root} --force`", flag="--data sample:FOLDER")


def write_preview(root, out=None, n: int = 4) -> Path:
    """A grid of ``n`` training images beside their colourised masks (no-data shown black), with a
    legend of the classes shown and their pixel shares."""
    from segclip.signature import colorize
    from segclip.data.loveda import CLASSES, PALETTE, LoveDADataset
    from segclip.viz import add_legend, labelled_grid, legend_entries, nodata_color, save_png

    ds = LoveDADataset(root, "train")
    pick = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)  # both domains
    rows, masks = [], []
    for i in pick:
        item = ds[int(i)]
        col = colorize(item["mask"], PALETTE)
        col[item["mask"] == 255] = nodata_color(PALETTE)
        rows.append([item["image"], col])
        masks.append(item["mask"].ravel())
    grid = labelled_grid(rows, ["image", "labels"])
    entries = legend_entries(CLASSES, PALETTE, np.concatenate(masks), ignore_color=nodata_color(PALETTE))
    out = Path(out) if out else Path(root) / "preview.png"
    save_png(add_legend(grid, entries), out)
    return out
