"""The one command-line grammar: the options every command shares, parsed in one place.

=============================  ==================================================================
``--data DATASET:ROOT[:SPLIT]``  labelled images (SPLIT defaults per command: val, train for train)
``--size HxW``                 image / crop / window size (``S`` = ``SxS``); ``HxW,HxW`` for lists
``--batch``                    ``MIN:OPT:MAX`` profile (export), ``N,N`` list (benchmark), ``N``
``--device cpu|cuda|cuda:N``   where models run; ONNX Runtime providers follow from it
``--out PATH``                 where results go
``--max-steps N``              training steps
=============================  ==================================================================

Each decorator adds the option and wraps the command so it receives one parsed value.  There are
no old spellings: segclip 0.1.0 was never released, so renamed options were dropped, not kept.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import click

from segclip.errors import SegclipError
from segclip.parsers import parse_batch, parse_data, parse_device, parse_ints, parse_size, parse_sizes

DATA_METAVAR = "DATASET:ROOT[:SPLIT]"
DATASETS_HELP = ("DATASET: loveda or sample (mask files 1..7, 0 = no-data), isaid, uavid (RGB colour masks), folder "
                 "(classes.yaml)")


def _wrap(f, merge):
    """``f`` with ``merge(kwargs)`` run first: it parses the option's raw value."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        merge(kwargs)
        return f(*args, **kwargs)

    return wrapper


def _key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _option(name: str, parse, *, default=None, help: str = "", **click_kw):
    """Option ``name`` whose value ``parse`` turns into what the command receives (``default`` when
    not given)."""
    def deco(f):
        def merge(kw):
            value = kw.pop(_key(name))
            kw[_key(name)] = parse(value if value is not None else default)

        w = _wrap(f, merge)
        return click.option(name, default=None, help=help + (f" [default: {default}]" if default is not None else ""),
                            **click_kw)(w)
    return deco


# ---- --data ----------------------------------------------------------------------------------------
class DataSpec(NamedTuple):
    dataset: str
    root: str
    split: str

    def __str__(self) -> str:
        return f"{self.dataset}:{self.root}:{self.split}"


def parse_data_spec(value, default_split: str) -> Optional[DataSpec]:
    """``DATASET:ROOT[:SPLIT]`` -> DataSpec; with one colon the split is ``default_split``."""
    if value is None:
        return None
    if isinstance(value, str) and value.count(":") == 1:
        value = f"{value}:{default_split}"
    return DataSpec(*parse_data(value))


def data_option(*, default_split: str = "val", required: bool = True, help: str = "Labelled images."):
    """``--data DATASET:ROOT[:SPLIT]``."""
    def deco(f):
        def merge(kw):
            data = kw.pop("data")
            if data is None and required:
                raise SegclipError(f"missing --data {DATA_METAVAR}; give e.g. --data loveda:/data/LoveDA:{default_split}")
            kw["data"] = parse_data_spec(data, default_split)

        w = _wrap(f, merge)
        return click.option("--data", default=None, metavar=DATA_METAVAR,
                            help=f"{help} {DATASETS_HELP}; SPLIT default {default_split}. Models number classes 0..K-1 (255 = no-data): README "
                                 "'Label ids'.")(w)
    return deco


# ---- --size ----------------------------------------------------------------------------------------
def size_option(*, several: bool = False, stride: bool = True, square: bool = False, default=None,
                help: str = "Size HxW (S = SxS)."):
    """``--size HxW`` -> (h, w) (``several``: ``HxW,HxW`` -> [(h, w), ...]).  ``stride``: multiples of
    32 required; ``square``: only square sizes (returned as one int)."""
    def parse(value):
        if value is None:
            return None
        if several:
            return parse_sizes(value)
        hw = parse_size(value, multiple_of=32 if stride else 1)
        if square:
            if hw[0] != hw[1]:
                raise SegclipError(f"--size {value}: must be square here; give S or SxS, e.g. --size {hw[0]}")
            return hw[0]
        return hw

    return _option("--size", parse, default=default, help=help,
                   metavar="HxW[,HxW...]" if several else "HxW")


# ---- --batch ---------------------------------------------------------------------------------------
def batch_option(kind: str, *, default=None, help: str = ""):
    """``--batch``: ``kind`` "profile" -> (min, opt, max) from ``MIN:OPT:MAX``; "list" -> (n, ...) from
    ``N,N``; "int" -> n."""
    metavar = {"profile": "MIN:OPT:MAX", "list": "N[,N...]", "int": "N"}[kind]

    def parse(value):
        if value is None:
            return None
        if kind == "profile":
            return parse_batch(value)
        n = parse_ints(value, "batch", "1,4,8" if kind == "list" else "4")
        if kind == "int" and len(n) != 1:
            raise SegclipError(f"--batch {value!r}: one number is expected here; give e.g. --batch 4")
        return n if kind == "list" else n[0]

    return _option("--batch", parse, default=default, help=help, metavar=metavar)


# ---- --device --------------------------------------------------------------------------------------
def device_option(*, help: str = "Where the model runs (default: cuda when visible)."):
    """``--device cpu|cuda|cuda:N`` (None when not given)."""
    def deco(f):
        def merge(kw):
            kw["device"] = parse_device(kw.pop("device"))

        w = _wrap(f, merge)
        return click.option("--device", default=None, metavar="cpu|cuda|cuda:N", help=help)(w)
    return deco


# ---- --out -----------------------------------------------------------------------------------------
def out_option(*, required: bool = False, default=None, help: str = "Where results go.", file_okay: bool = True):
    """``--out PATH``."""
    def deco(f):
        def merge(kw):
            out = kw.pop("out")
            if out is None:
                out = default
            if out is None and required:
                raise SegclipError(f"missing --out ({help.rstrip('.')}); give --out PATH")
            kw["out"] = out

        w = _wrap(f, merge)
        return click.option("--out", default=None, type=click.Path(file_okay=file_okay),
                            help=help + (f" [default: {default}]" if default is not None else ""))(w)
    return deco


# ---- --max-steps -----------------------------------------------------------------------------------
def max_steps_option(*, help: str = "Total optimisation steps (default: the preset's)."):
    def parse(v):
        if v is not None and v < 1:  # checked before any work (quickstart would render its data first)
            raise SegclipError(f"--max-steps {v}: must be at least 1; give e.g. --max-steps 100, or leave it out for the preset's")
        return v

    return _option("--max-steps", parse, help=help, type=int)


