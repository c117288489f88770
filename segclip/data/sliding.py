"""Sliding-window prediction for images larger (or smaller) than the model's input: the one
implementation, used in memory (``sliding_window_predict``: eval, parity, benchmarks) and streamed
window by window over rasters that never fit in memory (``segclip.predict``).

* ``SlidingPlan`` says where the windows go: the tiling rule of ``tiling.tile_coords`` (last window
  shifted back to the border), row-major.  An image smaller than a window is mirror-padded (no
  artificial black border) and the padding is cropped off the result.
* ``Blender`` takes the windows' outputs in plan order (batches of any size; windows may be skipped,
  e.g. all-nodata ones) and hands back finished row bands of the class map as soon as no later
  window touches them.  Memory is one ring buffer of ``window_h x strip width`` pixels: every window
  row starts where the previous one's finished pixel rows end, so finished rows are reduced and
  their buffer rows reused.
* ``SlidingPlan.strips`` cuts the image into column strips so that this buffer is bounded in width
  too (``BLEND_BYTES``): the streaming predictor blends one strip at a time, top to bottom.  The
  windows stay where the plan puts them; a strip owns the output columns between two window starts
  and takes *every* window that touches them, so a window straddling a strip boundary is run once
  for each side (overlap > 0: one window column per boundary) and every pixel is blended from the
  same windows in the same order as without strips -- the same bits, seams included.

How overlapping windows are blended:

* ``mode="scores"`` (N x K x h x w per-class scores): a weighted sum with a separable tent weight that
  is highest at a window's centre and never zero, so seams vanish.  Weights are positive, so the
  argmax needs no normalisation; ``keep_scores`` returns the weighted mean (holds K x H x W).
* ``mode="mask"`` (N x h x w class maps, from artifacts exported without scores): the centre region
  wins -- each pixel takes the class of the window whose tent weight is highest there, i.e. the
  window whose centre is nearest (ties: the earlier window).  One weight and one class per pixel.

Driving a ``Runner`` over a whole image (``predict_image``) lives a layer up, in
``segclip.inference.evaluate``: this module only plans windows and blends what a scoring function returns.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np

from segclip.errors import SegclipError
from segclip.data.tiling import _pair, tile_coords

MODES = ("scores", "mask")
# default window overlap of every caller (predict, eval, the parity gate, the benchmark's accuracy):
# a quarter, predict's documented default; mmseg's slide mode overlaps about a third (1.27x the windows)
OVERLAP = 0.25
# Blend state of one strip, in bytes (see SlidingPlan.strips): wide scenes are blended in column strips
# of at most BLEND_BYTES / (window_h x bytes per pixel) columns -- and never narrower than two windows,
# so a window straddles at most a small share of the strips' windows.
BLEND_BYTES = 256 << 20
_ARGMAX_ROWS = 64  # score rows reduced per argmax call: bounds its int64 temporary


def blend_bytes_per_pixel(mode: str, num_classes: Optional[int]) -> int:
    """Bytes of blend state per pixel: K float32 scores, or the class-map rule's weight and class."""
    if mode == "scores":
        return 4 * int(num_classes or 1)
    return 4 + (1 if num_classes is not None and num_classes <= 255 else 4)


def _tent(n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return np.minimum(i + 1, n - i) / ((n + 1) // 2)


def _ring(y: int, n: int, size: int) -> list:
    """Rows y..y+n-1 of a ring buffer of ``size`` rows: [(buffer slice, slice into the n rows)], at most two."""
    o = y % size
    first = min(n, size - o)
    out = [(slice(o, o + first), slice(0, first))]
    if n > first:
        out.append((slice(0, n - first), slice(first, n)))
    return out


class SlidingPlan:
    """Windows over an ``height x width`` image: ``coords`` = [(y0, x0, y1, x1)] in padded
    coordinates (``padded_height x padded_width``, at least one window), row-major."""

    def __init__(self, height: int, width: int, window, overlap: float = OVERLAP, stride=None):
        self.height, self.width = int(height), int(width)
        if self.height < 1 or self.width < 1:
            raise SegclipError(f"sliding window: empty image ({height} x {width})")
        self.window = _pair(window, "window")
        wh, ww = self.window
        if stride is None:
            if not 0 <= overlap < 1:
                raise SegclipError(f"sliding window: overlap must be in [0, 1), got {overlap}")
            stride = (max(1, int(round(wh * (1 - overlap)))), max(1, int(round(ww * (1 - overlap)))))
        self.stride = _pair(stride, "stride")
        self.padded_height, self.padded_width = max(self.height, wh), max(self.width, ww)
        self.coords = tile_coords(self.padded_height, self.padded_width, self.window, self.stride)
        self.row_starts = sorted({c[0] for c in self.coords})
        self.weight = _tent(wh)[:, None] * _tent(ww)[None, :]

    def __len__(self) -> int:
        return len(self.coords)

    def strips(self, bytes_per_pixel: int, budget: Optional[int] = None) -> list:
        """Column strips ``[(x0, x1, window ids)]``: strip s owns output columns x0..x1-1 (padded
        coordinates; x0 and the next strip's x0 are window starts) and lists, ascending, every window
        that touches them.  Strips are at most ``max(budget / (window_h x bytes_per_pixel), 2 x
        window_w)`` columns wide (budget: ``BLEND_BYTES``), or one stride where that is smaller."""
        wh, ww = self.window
        budget = BLEND_BYTES if budget is None else budget
        widest = max(int(budget) // (wh * max(1, int(bytes_per_pixel))), 2 * ww)
        starts = sorted({c[1] for c in self.coords})
        bounds = [0]
        while self.padded_width - bounds[-1] > widest:
            nxt = [x for x in starts if bounds[-1] < x <= bounds[-1] + widest]
            bounds.append(max(nxt) if nxt else min(x for x in starts if x > bounds[-1]))
        bounds.append(self.padded_width)
        return [(x0, x1, [i for i, c in enumerate(self.coords) if c[1] < x1 and c[3] > x0])
                for x0, x1 in zip(bounds, bounds[1:])]

    def crop(self, image: np.ndarray, c) -> np.ndarray:
        """Window ``c`` of an in-memory H x W x C image (mirror-padded where the image is smaller)."""
        y, x, y1, x1 = c
        return self.pad(image[y:min(y1, self.height), x:min(x1, self.width)])

    def pad(self, a: np.ndarray) -> np.ndarray:
        """A window read clipped to the image -> the full window (mirror padding bottom/right).
        Padding only happens where the image is smaller than a window, so the window starts at 0
        on that axis and this equals slicing the mirror-padded image."""
        ph, pw = self.window[0] - a.shape[0], self.window[1] - a.shape[1]
        if ph <= 0 and pw <= 0:
            return a
        return np.pad(a, [(0, max(ph, 0)), (0, max(pw, 0))] + [(0, 0)] * (a.ndim - 2), mode="symmetric")


class Blender:
    """Accumulates window outputs in plan order; ``add`` returns the row bands it finished as
    ``[(y0, y1, class map rows (y1 - y0) x strip width)]`` (cropped to the image; the band's first
    column is ``self.x0``).  ``strip``: one of ``plan.strips(...)`` (default: the whole width); only
    its windows may be added."""

    def __init__(self, plan: SlidingPlan, num_classes: Optional[int] = None, mode: str = "scores",
                 keep_scores: bool = False, strip: Optional[tuple] = None):
        if mode not in MODES:
            raise SegclipError(f"sliding window: mode must be one of {MODES}, got {mode!r}")
        if keep_scores and mode != "scores":
            raise SegclipError("sliding window: keep_scores needs mode='scores'")
        self.plan, self.mode, self.k, self.keep_scores = plan, mode, num_classes, keep_scores
        self.x0, self.x1, ids = strip if strip is not None else (0, plan.padded_width, range(len(plan)))
        self.ids = frozenset(ids)
        self.width = min(self.x1, plan.width) - self.x0  # output columns of this strip
        wh = plan.window[0]
        # keep_scores: a ring as tall as the image never wraps, so it ends up holding every score
        self.ring = plan.padded_height if keep_scores else wh
        self.next = 0  # index of the next window expected
        self.row = 0  # index into plan.row_starts of the first unfinished window row
        row_of = {y: r for r, y in enumerate(plan.row_starts)}
        self._row_end = {r: -1 for r in range(len(plan.row_starts))}  # window row -> its last window here
        for i in sorted(self.ids):  # coords are row-major
            self._row_end[row_of[plan.coords[i][0]]] = i
        self.acc = self.best = self.cls = self.wsum = None
        if mode == "mask" or num_classes:
            self._alloc(num_classes)

    def _alloc(self, k: Optional[int]) -> None:
        wp = self.x1 - self.x0
        self.k = k
        if self.mode == "scores":
            self.acc = np.zeros((k, self.ring, wp), np.float32)
            if self.keep_scores:
                self.wsum = np.zeros((self.ring, wp), np.float32)
        else:
            self.best = np.full((self.ring, wp), -1.0, np.float32)
            self.cls = np.zeros((self.ring, wp), np.uint8 if k is not None and k <= 255 else np.int32)

    @property
    def mask_dtype(self):
        if self.mode == "mask":
            return self.cls.dtype
        return np.uint8 if (self.k or 0) <= 255 else np.int32

    @property
    def done(self) -> bool:
        return self.row >= len(self.plan.row_starts)

    def add(self, ids: Iterable[int], outputs) -> list:
        """Outputs of windows ``ids`` (ascending plan indices; windows jumped over are skipped:
        they add nothing).  ``outputs``: N x K x h x w scores or N x h x w class maps."""
        ids = list(ids)
        wh, ww = self.plan.window
        if self.mode == "scores":
            outputs = np.asarray(outputs, dtype=np.float32)
            if self.acc is None:
                self._alloc(outputs.shape[1] if outputs.ndim == 4 else None)
            want = (len(ids), self.k, wh, ww)
        else:
            outputs = np.asarray(outputs)
            want = (len(ids), wh, ww)
        if outputs.shape != want:
            what = "N x K x window scores" if self.mode == "scores" else "N x window class maps"
            raise SegclipError(f"sliding window: got outputs of shape {outputs.shape}, expected {want} ({what})")
        done = []
        for i, out in zip(ids, outputs):
            if i < self.next or i >= len(self.plan):
                raise SegclipError(f"sliding window: window {i} out of order (next is {self.next} of {len(self.plan)})")
            if i not in self.ids:
                raise SegclipError(f"sliding window: window {i} is not in the strip of columns {self.x0}..{self.x1 - 1}")
            done += self._advance(i)
            y, x, _, x1 = self.plan.coords[i]
            # the part of the window inside the strip: buffer columns b0..b1, window columns c0..c1
            b0, b1 = max(x, self.x0) - self.x0, min(x1, self.x1) - self.x0
            c = slice(b0 + self.x0 - x, b1 + self.x0 - x)
            w = self.plan.weight[:, c]
            for phys, j in _ring(y, wh, self.ring):
                if self.mode == "scores":
                    self.acc[:, phys, b0:b1] += out[:, j, c] * w[j]
                    if self.wsum is not None:
                        self.wsum[phys, b0:b1] += w[j]
                else:
                    best, cls = self.best[phys, b0:b1], self.cls[phys, b0:b1]
                    win = w[j] > best
                    best[win] = w[j][win]
                    cls[win] = out[j][:, c][win]
            self.next = i + 1
        return done + self._advance(self.next)

    def finish(self) -> list:
        """Every remaining row (windows not given are skipped)."""
        return self._advance(len(self.plan))

    def _advance(self, upto: int) -> list:
        """Finish every window row whose last window is before ``upto``."""
        out = []
        starts = self.plan.row_starts
        while self.row < len(starts) and self._row_end[self.row] < upto:
            y0 = starts[self.row]
            y_end = starts[self.row + 1] if self.row + 1 < len(starts) else self.plan.padded_height
            self.row += 1
            y_stop = min(y_end, self.plan.height)
            if y0 >= y_stop:
                continue  # mirror padding only
            rows = np.zeros((y_stop - y0, self.width), self.mask_dtype)
            for phys, j in _ring(y0, y_stop - y0, self.ring):
                if self.mode == "mask":
                    rows[j] = self.cls[phys, :self.width]
                elif self.acc is not None:  # None: every window so far was skipped
                    for r in range(phys.start, phys.stop, _ARGMAX_ROWS):
                        r1 = min(r + _ARGMAX_ROWS, phys.stop)
                        rows[j.start + r - phys.start:j.start + r1 - phys.start] = self.acc[:, r:r1, :self.width].argmax(0)
            if not self.keep_scores:
                for phys, _ in _ring(y0, y_end - y0, self.ring):
                    if self.mode == "scores":
                        if self.acc is not None:
                            self.acc[:, phys] = 0
                    else:
                        self.best[phys] = -1.0
                        self.cls[phys] = 0
            out.append((y0, y_stop, rows))
        self.next = max(self.next, upto)
        return out

    def scores(self) -> np.ndarray:
        """K x H x W weighted-mean scores (``keep_scores=True``, after every window was added)."""
        if not self.keep_scores:
            raise SegclipError("sliding window: scores() needs keep_scores=True")
        s = self.acc / np.maximum(self.wsum, 1e-12)
        return s[:, :self.plan.height, :self.width]


def sliding_window_predict(predict_fn: Callable, image: np.ndarray, window, overlap: float = OVERLAP, stride=None,
                           batch_size: int = 4, num_classes: int | None = None, return_scores: bool = False,
                           mode: str = "scores"):
    """``predict_fn(uint8 N x h x w x 3)`` -> float N x K x h x w scores (``mode="scores"``) or
    N x h x w class maps (``mode="mask"``); returns the H x W class map (uint8 when K <= 255, else
    int32), and the K x H x W float32 scores if ``return_scores``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SegclipError(f"sliding window: expected one uint8 H x W x 3 RGB image, got {image.dtype} {image.shape}")
    plan = SlidingPlan(image.shape[0], image.shape[1], window, overlap=overlap, stride=stride)
    blender = Blender(plan, num_classes, mode=mode, keep_scores=return_scores)
    out = None
    for b in range(0, len(plan), batch_size):
        ids = range(b, min(b + batch_size, len(plan)))
        batch = np.stack([plan.crop(image, plan.coords[i]) for i in ids])
        for y0, y1, rows in blender.add(ids, predict_fn(batch)):
            if out is None:
                out = np.empty((plan.height, plan.width), rows.dtype)
            out[y0:y1] = rows
    if return_scores:
        return out, blender.scores()
    return out
