"""Argument parsers shared by the Python API and the CLI: one comma-list rule, one size rule, one
batch-profile rule, one ``DATASET:ROOT:SPLIT`` rule, one keyword-option check.

Every parser accepts what the CLI gives (strings) and what Python callers give (ints, tuples,
lists) and raises a one-line ``SegclipError`` naming the option and an example.
"""
from __future__ import annotations

import inspect
import numbers
import re
from typing import Iterable, Optional

from segclip.errors import SegclipError

STRIDE = 32  # the backbone's output stride: exported sizes are multiples of it


def split_list(value) -> list:
    """None | "a,b" | ["a,b", "c"] | 3 | (3, 4) -> stripped, non-empty items, in order (strings
    are split on commas; other items are kept as they are)."""
    if value is None:
        return []
    if isinstance(value, (str, numbers.Number)):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, str):
            out += [p.strip() for p in item.split(",") if p.strip()]
        else:
            out.append(item)
    return out


def path_list(value, what: str, example: str) -> list:
    """One path or several -> a list of them: a lone str/PathLike is one path (never iterated
    character by character); anything else but a path is a one-line error naming ``what``."""
    import os

    items = [value] if isinstance(value, (str, os.PathLike)) else value
    try:
        items = list(items)
    except TypeError:
        items = [items]
    bad = [x for x in items if not isinstance(x, (str, os.PathLike))]
    if bad or not items:
        got = f"{bad[0]!r} ({type(bad[0]).__name__})" if bad else "nothing"
        raise SegclipError(f"{what}: {got} is not a path; give a file or folder path (str or pathlib.Path), e.g. {example}")
    return items


def unique(items: Iterable) -> list:
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def parse_ints(value, what: str, example: str = "1,4,8") -> tuple:
    """"1,4,8" | 4 | [1, 4] -> (1, 4, 8): positive, duplicates dropped, order kept.  ``example``:
    the value the error suggests (one number where the option takes one)."""
    out = []
    for v in split_list(value):
        try:
            n = int(str(v).strip())
        except ValueError:
            kind = "a list of numbers; give comma-separated positive integers" if "," in example else "a number; give a positive integer"
            raise SegclipError(f"--{what} {value!r}: not {kind}, e.g. --{what} {example}") from None
        if n < 1:
            raise SegclipError(f"--{what} {n}: must be >= 1; give e.g. --{what} {example}")
        out.append(n)
    return tuple(unique(out))


def parse_size(size, what: str = "size", multiple_of: int = STRIDE) -> Optional[tuple]:
    """"HxW" | "S" | int | (h, w) | None -> (h, w), multiples of ``multiple_of`` (default the
    backbone's stride 32; 1 for sizes of images or windows that need not be), or None."""
    if size is None:
        return None
    try:
        if isinstance(size, str):
            parts = [int(x) for x in size.strip().lower().replace("*", "x").split("x")]
        elif isinstance(size, numbers.Integral):
            parts = [int(size)]
        else:
            parts = [int(x) for x in size]
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or min(parts) <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise SegclipError(f"--{what} {size!r}: not a size; give HxW, e.g. --{what} 512x512") from None
    h, w = parts
    if h % multiple_of or w % multiple_of:
        raise SegclipError(f"--{what} {h}x{w}: height and width must be multiples of {multiple_of} (the backbone's stride); "
                           f"give e.g. --{what} {max(multiple_of, round(h / multiple_of) * multiple_of)}x{max(multiple_of, round(w / multiple_of) * multiple_of)}")
    return h, w


def parse_sizes(value, what: str = "size") -> Optional[list]:
    """"512,1024" | "512x768" | [512, (512, 768)] -> [(h, w), ...] (multiples of 32), None if none."""
    items = [value] if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, numbers.Integral) for v in value) else split_list(value)
    return unique(parse_size(v, what) for v in items) or None


def parse_batch(batch) -> tuple:
    """"MIN:OPT:MAX" | "N" | (min, opt, max) -> validated triple."""
    try:
        if isinstance(batch, str):
            parts = [int(x) for x in batch.split(":")]
        elif isinstance(batch, numbers.Integral):
            parts = [int(batch)]
        else:
            parts = [int(x) for x in batch]
        if len(parts) == 1:
            parts = [1, parts[0], parts[0]]
        if len(parts) != 3:
            raise ValueError
    except (TypeError, ValueError):
        raise SegclipError(f"--batch {batch!r}: not a batch profile; give MIN:OPT:MAX, e.g. --batch 1:4:8") from None
    mn, opt, mx = parts
    if not 1 <= mn <= opt <= mx:
        raise SegclipError(f"--batch {batch!r}: need 1 <= MIN <= OPT <= MAX; give e.g. --batch 1:4:8")
    return mn, opt, mx


def parse_data(data) -> Optional[tuple]:
    """"DATASET:ROOT:SPLIT" | (name, root, split) | None (ROOT may itself hold colons)."""
    if data is None:
        return None
    if isinstance(data, str):
        parts = data.split(":")
        if len(parts) < 3 or not parts[0] or not parts[-1]:
            raise SegclipError(f"--data {data!r}: not DATASET:ROOT:SPLIT; give e.g. --data loveda:data/LoveDA:val")
        return parts[0], ":".join(parts[1:-1]), parts[-1]
    name, root, split = data
    return str(name), str(root), str(split)


DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def parse_device(value) -> Optional[str]:
    """"cpu" | "cuda" | "cuda:N" (case-insensitive) | None."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if not DEVICE_RE.match(v):
        raise SegclipError(f"--device {value!r}: not a device; give cpu, cuda or cuda:N")
    return v


def split_device(value) -> tuple:
    """The one place a device string is taken apart: "cpu" -> ("cpu", None), "cuda" -> ("cuda", None)
    (the current GPU), "cuda:N" -> ("cuda", N); checked by ``parse_device``."""
    kind, _, index = parse_device(value).partition(":")
    return kind, int(index) if index else None


def check_options(fn, opts, what: str, kind: str) -> None:
    """One-line error for keyword options that ``fn`` does not take (unless it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    bad = sorted(k for k in opts if k not in params)
    if bad:
        valid = sorted(k for k, p in params.items() if k != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                       and p.default is not p.empty)
        raise SegclipError(f"{what}: unknown option {', '.join(repr(b) for b in bad)} (options that do not apply to a {kind}); "
                           f"valid: {', '.join(valid) or 'none'}")


def check_device(device: str | None, flag: str = "--device") -> str:
    """``None`` -> cuda when a GPU is visible, else cpu; ``cpu``/``cuda``/``cuda:N`` checked against
    this machine before any work (a clear error instead of a traceback from deep inside torch)."""
    import torch

    if device is None or device == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = parse_device(device)
    kind, index = split_device(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SegclipError(f"{flag} {device}: no CUDA GPU is visible on this machine; use {flag} cpu or run on a GPU machine")
        if index is not None and index >= torch.cuda.device_count():
            raise SegclipError(f"{flag} {device}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0.."
                               f"cuda:{torch.cuda.device_count() - 1}); pick one of those")
    return device


def parse_bands(text) -> Optional[tuple]:
    """``"1,2,3"`` -> (1, 2, 3); None/"" -> None."""
    if text is None or text == "":
        return None
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p for p in str(text).replace(" ", "").split(",")]
    try:
        bands = tuple(int(p) for p in parts)
    except ValueError:
        raise SegclipError(f"--bands {text}: not band numbers; give 1-based band numbers, e.g. --bands 1,2,3 or --bands 4") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise SegclipError(f"--bands {text}: wrong number of bands; give one band (grey) or three (R,G,B), numbered from 1")
    return bands


def parse_range(text) -> Optional[tuple]:
    """``"0,4095"`` -> (0.0, 4095.0)."""
    if text is None or text == "":
        return None
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise SegclipError(f"--range {text}: not LOW,HIGH; give e.g. --range 0,4095") from None
    if not hi > lo:
        raise SegclipError(f"--range {text}: HIGH must be larger than LOW; give e.g. --range 0,4095")
    return lo, hi


__all__ = ["split_list", "unique", "parse_ints", "parse_size", "parse_sizes", "parse_batch", "parse_data", "parse_device", "split_device", "check_options",
           "check_device", "parse_bands", "parse_range"]
