"""The benchmark's rows as they come: a progress bar over the planned rows with an ETA, and the
report rewritten after each row (atomically, ``segclip.atomic``), so an interrupted or killed
benchmark keeps every row it finished and says which ones it did not run.

A planned row is (size, backend, batch), as ``core.bench_size`` runs them, plus one unit per Triton
sweep level.  A backend that gives one row for all batches (unavailable, skipped) closes its units
at once.  Rows not reached are written with status ``not run: <why>``.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

NOT_RUN = "not run: "
PENDING = NOT_RUN + "the benchmark had not reached this row (still running, or killed)"


class Progress:
    """``units``: [(height, width, backend, batch)] in run order; ``sweep``: Triton concurrency levels
    planned (for the bar only); ``write(rows, load, complete)``: saves a report of what is done."""

    def __init__(self, units: list, sweep: int = 0, write: Optional[Callable] = None, bar: bool = False,
                 make_row: Optional[Callable] = None):
        self.units = list(units)
        self.write_fn = write
        self.make_row = make_row  # (backend, (h, w), batch, status) -> a row
        self.rows, self.load = [], []
        self._ticked, self._closed = set(), set()
        self.t0 = time.perf_counter()
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.units) + sweep, desc="benchmark", unit="row", dynamic_ncols=True,
                            file=sys.stderr, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} rows [{elapsed}<{remaining}]{postfix}")

    def log(self, log: Callable) -> Callable:
        """``log`` that prints above the bar instead of through it."""
        if self.bar is None:
            return log

        def write(m):
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stderr):
                log(m)
        return write

    def _advance(self, n: int = 1, what: Optional[str] = None) -> None:
        if self.bar is not None:
            if what:
                self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(n)

    def row(self, r: dict) -> None:
        """One timed row (accuracy comes later, in ``done``): counted, saved."""
        if not any(r is x for x in self.rows):
            self.rows.append(r)
        key = (r["height"], r["width"], r["backend"], r["batch"])
        if key not in self._ticked and key in self.units:
            self._ticked.add(key)
            self._advance(1, f"{r['backend']} {r['height']}x{r['width']} batch {r['batch']}")
        self.save()

    def done(self, backend: str, size, rows: list) -> None:
        """Every row of ``backend`` at ``size`` (with its accuracy): the rest of its units close."""
        for r in rows:
            if not any(r is x for x in self.rows):
                self.rows.append(r)
        h, w = size
        self._closed.add((h, w, backend))
        left = [u for u in self.units if u[:3] == (h, w, backend) and u not in self._ticked]
        self._ticked.update(left)
        if left:
            self._advance(len(left), f"{backend} {h}x{w}")
        self.save()

    def sweep_rows(self, rows: list) -> None:
        self.load += rows
        self._advance(len(rows), f"Triton sweep {rows[-1]['protocol'] if rows else ''}".strip())
        self.save()

    def not_run(self, why: str = PENDING) -> list:
        """Rows for the planned units not reached, status ``why``."""
        if self.make_row is None:
            return []
        return [self.make_row(b, (h, w), batch, why) for (h, w, b, batch) in self.units
                if (h, w, b) not in self._closed and (h, w, b, batch) not in self._ticked]

    def save(self, why: str = PENDING, complete: bool = False) -> None:
        if self.write_fn is not None:
            self.write_fn(self.rows + ([] if complete else self.not_run(why)), list(self.load), complete)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
