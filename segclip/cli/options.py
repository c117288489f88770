"""The one command-line grammar: the options every command shares, parsed in one place.

=============================  ==================================================================
``--data DATASET:ROOT[:SPLIT]``  labelled images (SPLIT defaults per command: val, train for train)
``--size HxW``                 image / crop / window size (``S`` = ``SxS``); ``HxW,HxW`` for lists
``--batch``                    ``MIN:OPT:MAX`` profile (export), ``N,N`` list (benchmark), ``N``
``--device cpu|cuda|cuda:N``   where models run; ONNX Runtime providers follow from it
``--out PATH``                 where results go
``--max-steps N``              training steps
=============================  ==================================================================

Old spellings (``--dataset/--data-root/--split``, ``--crop-size``, ``--window``, ``--batch-size``,
``--steps``, ``--providers``, positional output folders) keep working for one release: they are
hidden from ``--help`` and print one ``note:`` line on stderr.

Each decorator adds the new option and its hidden old spellings, and wraps the command so it
receives one parsed value under the new name.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import click

from segclip.errors import SegclipError
from segclip.parsers import parse_batch, parse_data, parse_device, parse_ints, parse_size, parse_sizes

REMOVED_IN = "segclip 0.2"
DATA_METAVAR = "DATASET:ROOT[:SPLIT]"
DATASETS_HELP = ("DATASET: loveda or sample (mask files 1..7, 0 = no-data), isaid, uavid (RGB colour masks), folder "
                 "(classes.yaml)")


def deprecated(old: str, new: str) -> None:
    """The one-line note for an old spelling (stderr, so pipelines reading stdout are unaffected)."""
    click.echo(f"note: {old} is deprecated and will be removed in {REMOVED_IN}; use {new}", err=True)


def _wrap(f, merge):
    """``f`` with ``merge(kwargs)`` run first: it folds old spellings into the new parameter."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        merge(kwargs)
        return f(*args, **kwargs)

    return wrapper


def _hidden(*decls, **kw):
    return click.option(*decls, hidden=True, default=None, **kw)


def _key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _option(name: str, parse, *, legacy: Optional[str] = None, default=None, help: str = "", spell=str, **click_kw):
    """Option ``name`` and its hidden old integer spelling ``legacy``, merged into one value that
    ``parse`` turns into what the command receives (``default`` when neither is given)."""
    def deco(f):
        def merge(kw):
            value = kw.pop(_key(name))
            old = kw.pop(_key(legacy)) if legacy else None
            if old is not None:
                if value is not None:
                    raise SegclipError(f"{name} and {legacy} given together; use {name} alone")
                deprecated(legacy, f"{name} {spell(old)}")
                value = old
            kw[_key(name)] = parse(value if value is not None else default)

        w = _wrap(f, merge)
        if legacy:
            w = _hidden(legacy, type=int)(w)
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
    """``--data DATASET:ROOT[:SPLIT]``; old ``--dataset NAME --data-root ROOT [--split SPLIT]``."""
    def deco(f):
        def merge(kw):
            data, name, root, split = kw.pop("data"), kw.pop("dataset"), kw.pop("data_root"), kw.pop("split")
            if name or root or split:
                if data:
                    raise SegclipError("--data and --dataset/--data-root/--split given together; "
                                       f"use --data {DATA_METAVAR} alone")
                if not (name and root):
                    raise SegclipError(f"--dataset/--data-root: only one of the two was given; give both, or better --data {DATA_METAVAR}")
                data = f"{name}:{root}:{split or default_split}"
                deprecated("--dataset/--data-root/--split", f"--data {data}")
            if data is None and required:
                raise SegclipError(f"missing --data {DATA_METAVAR}; give e.g. --data loveda:/data/LoveDA:{default_split}")
            kw["data"] = parse_data_spec(data, default_split)

        w = _wrap(f, merge)
        for decl in ("--split", "--data-root", "--dataset"):
            w = _hidden(decl)(w)
        return click.option("--data", default=None, metavar=DATA_METAVAR,
                            help=f"{help} {DATASETS_HELP}; SPLIT default {default_split}. Models number classes 0..K-1 (255 = no-data): README "
                                 "'Label ids'.")(w)
    return deco


# ---- --size ----------------------------------------------------------------------------------------
def size_option(*, several: bool = False, legacy: Optional[str] = None, stride: bool = True, square: bool = False,
                default=None, help: str = "Size HxW (S = SxS)."):
    """``--size HxW`` -> (h, w) (``several``: ``HxW,HxW`` -> [(h, w), ...]); ``legacy`` names the old
    integer option (``--crop-size``, ``--window``).  ``stride``: multiples of 32 required;
    ``square``: only square sizes (returned as one int)."""
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

    return _option("--size", parse, legacy=legacy, default=default, help=help, spell=lambda v: f"{v}x{v}",
                   metavar="HxW[,HxW...]" if several else "HxW")


# ---- --batch ---------------------------------------------------------------------------------------
def batch_option(kind: str, *, default=None, legacy: Optional[str] = "--batch-size", help: str = ""):
    """``--batch``: ``kind`` "profile" -> (min, opt, max) from ``MIN:OPT:MAX``; "list" -> (n, ...) from
    ``N,N``; "int" -> n.  ``legacy``: the old ``--batch-size N`` spelling."""
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

    return _option("--batch", parse, legacy=legacy, default=default, help=help, metavar=metavar)


# ---- --device --------------------------------------------------------------------------------------
def device_option(*, providers_alias: bool = False, help: str = "Where the model runs (default: cuda when visible)."):
    """``--device cpu|cuda|cuda:N`` (None when not given).  ``providers_alias``: the old
    ``--providers cpu|cuda|tensorrt`` of predict, kept for one release and passed on as
    ``providers`` (tensorrt has no device spelling)."""
    def deco(f):
        def merge(kw):
            kw["device"] = parse_device(kw.pop("device"))
            if providers_alias:
                prov = kw.pop("providers")
                if prov is not None:
                    deprecated("--providers", "--device cpu|cuda|cuda:N (ONNX Runtime providers follow from it)")
                kw["providers"] = prov

        w = _wrap(f, merge)
        if providers_alias:
            w = _hidden("--providers")(w)
        return click.option("--device", default=None, metavar="cpu|cuda|cuda:N", help=help)(w)
    return deco


# ---- --out -----------------------------------------------------------------------------------------
def out_option(*, positional: Optional[str] = None, required: bool = False, default=None, help: str = "Where results go.",
               file_okay: bool = True):
    """``--out PATH``; ``positional``: the metavar of an old optional positional output argument
    (``triton-repo EXPORT REPO_DIR``, ``sample-data OUT_DIR``) still accepted for one release."""
    def deco(f):
        def merge(kw):
            out = kw.pop("out")
            if positional:
                old = kw.pop("legacy_out")
                if old is not None:
                    if out is not None:
                        raise SegclipError(f"{positional} and --out given together; use --out alone")
                    deprecated(f"the positional {positional}", f"--out {old}")
                    out = old
            if out is None:
                out = default
            if out is None and required:
                raise SegclipError(f"missing --out ({help.rstrip('.')}); give --out PATH")
            kw["out"] = out

        w = _wrap(f, merge)
        if positional:
            w = click.argument("legacy_out", required=False, metavar=f"[{positional}]", type=click.Path())(w)
        return click.option("--out", default=None, type=click.Path(file_okay=file_okay),
                            help=help + (f" [default: {default}]" if default is not None else ""))(w)
    return deco


# ---- --max-steps -----------------------------------------------------------------------------------
def max_steps_option(*, legacy: Optional[str] = None, help: str = "Total optimisation steps (default: the preset's)."):
    def parse(v):
        if v is not None and v < 1:  # checked before any work (quickstart would render its data first)
            raise SegclipError(f"--max-steps {v}: must be at least 1; give e.g. --max-steps 100, or leave it out for the preset's")
        return v

    return _option("--max-steps", parse, legacy=legacy, help=help, type=int)


