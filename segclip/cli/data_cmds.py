"""``segclip sample-data`` and ``segclip prepare``."""
from __future__ import annotations

import click

from pathlib import Path

from segclip.cli.group import clean_partials
from segclip.cli.options import out_option, size_option


@click.command("sample-data")
@out_option(required=True, file_okay=False, help="Dataset folder.")
@click.option("--seed", default=0, show_default=True, help="Same seed -> byte-identical PNGs.")
@click.option("--num-train", default=48, show_default=True, type=click.IntRange(min=1))
@click.option("--num-val", default=16, show_default=True, type=click.IntRange(min=1))
@size_option(stride=False, square=True, default=256, help="Image size S or SxS (square).")
@click.option("--force", is_flag=True, help="Replace a non-empty OUT_DIR that is not this sample set.")
def sample_data(out, seed, num_train, num_val, size, force):
    """Render the embedded sample dataset (LoveDA format, 7 classes) into --out, with preview.png."""
    from segclip.data.sample import generate_sample_dataset, write_preview

    clean_partials(Path(out).parent)
    root = generate_sample_dataset(out, seed=seed, num_train=num_train, num_val=num_val, size=size, force=force)
    preview = write_preview(root)
    click.echo(f"sample dataset -> {root} ({num_train} train, {num_val} val, {size}x{size}); preview -> {preview}")


@click.command()
@click.argument("dataset", type=click.Choice(["isaid", "uavid"]), metavar="DATASET")
@click.argument("src", type=click.Path())
@out_option(required=True, file_okay=False, help="Patch dataset folder.")
@click.option("--tile", type=click.IntRange(min=1), help="Patch size (default: iSAID 896, UAVid 1024).")
@click.option("--stride", type=click.IntRange(min=1), help="Patch stride (default: iSAID 512, UAVid = tile).")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable; default: all present).")
@click.option("--label-order", type=click.Choice(["paper", "official"]), help="UAVid class order (default: paper).")
@click.option("--force", is_flag=True, help="Replace an existing DST.")
def prepare(dataset, src, out, tile, stride, splits, label_order, force):
    """Cut a large-image dataset (iSAID, UAVid) at SRC into standard patches in --out: last patch shifted
    back to the border, small images padded (label 255).  --out is written to a temp folder and renamed."""
    from segclip.data.prepare import prepare_patches

    opts = {"label_order": label_order} if label_order else {}
    clean_partials(Path(out).parent)
    m = prepare_patches(dataset, src, out, tile=tile, stride=stride, splits=list(splits) or None, force=force, **opts)
    counts = ", ".join(f"{s}: {v.get('patches', '?')} patches" for s, v in m.get("splits", {}).items())
    click.echo(f"{dataset} patches ({m['tile']} px, stride {m['stride']}) -> {out} ({counts})")


COMMANDS = [sample_data, prepare]
