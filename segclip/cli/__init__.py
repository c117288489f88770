"""The ``segclip`` console script.

Each area keeps its commands in its own module here and lists them in ``COMMANDS``; this file only
wires them into one click group (``group.SegclipGroup``: one-line errors and exit codes, never a
traceback for user errors).
"""
from __future__ import annotations

import importlib

import click

from segclip.cli.group import SegclipGroup

# module (relative to this package) -> names of the click commands it defines
COMMAND_MODULES = [
    "data_cmds",
    "train_cmds",
    "export_cmds",
    "predict_cmds",
    "serve_cmds",
    "bench_cmds",
    "doctor_cmds",
]


@click.group(cls=SegclipGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="segclip")
def main():
    """SegCLIP: text-guided segmentation of remote-sensing images, from training to Triton."""


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f".{_name}", __name__)
    except ModuleNotFoundError as _e:  # an area not built yet must not break the others
        if _e.name != f"{__name__}.{_name}":
            raise
        continue
    for _cmd in getattr(_mod, "COMMANDS", []):
        main.add_command(_cmd)
