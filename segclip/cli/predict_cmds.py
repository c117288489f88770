"""``segclip predict``: the command line of ``segclip.inference.predict.predict_paths``."""
from __future__ import annotations

import click

from segclip.cli.options import batch_option, device_option, out_option, size_option
from segclip.contract import FORMATS
from segclip.data.sliding import OVERLAP
from segclip.errors import SegclipError


@click.command("predict")
@click.option("--model", "models", required=True, multiple=True,
              help="Checkpoint, run dir, .onnx, .plan, export dir or grpc://host:port/model; repeat with several "
                   "Triton endpoints to spread the windows over them.")
@click.argument("inputs", nargs=-1, required=True)
@out_option(default="predictions", help="Output folder.")
@size_option(stride=False, square=True,
             help="Window size S or SxS for models that take any size (default 1024); fixed-size exports use their own.")
@click.option("--overlap", default=OVERLAP, show_default=True, type=float, help="Overlap of neighbouring windows.")
@batch_option("int", help="Windows per request (default on the CPU: two 1024 px windows' worth of pixels -- 2 at "
                          "1024 px, 8 at 512 px or less; larger requests only cost activation memory there, ~1.3 GiB "
                          "at 8 x 1024 px -- else 8; engines with a smaller profile use theirs).")
@click.option("--bands", default=None, help="1-based bands to read: R,G,B or one grey band (default: RGB by colour "
                                           "interpretation, else 1,2,3, else 1).")
@click.option("--range", "value_range", default=None, metavar="LOW,HIGH",
              help="Scale non-8-bit data linearly from LOW..HIGH to 0..255 (default: the model's train --range, else "
                   "each band's 2-98th percentile).")
@click.option("--in-flight", default=2, show_default=True, type=int, help="Requests in flight per Triton endpoint.")
@click.option("--overlay", is_flag=True, help="Also write <stem>_overlay.png (class colours over the image).")
@click.option("--force", is_flag=True, help="Replace outputs already in --out (default: refuse).")
@click.option("--allow-failed", is_flag=True, help="Use an export artifact that failed its parity gate anyway.")
@click.option("--format", "fmt", default=None, type=click.Choice(list(FORMATS)),
              help="Artifact of an export dir (onnx_int8_cpu: the INT8 graph ONNX Runtime runs fastest on x86).")
@click.option("--runtime", default=None, type=click.Choice(["onnxruntime", "openvino"]),
              help="Runtime for ONNX artifacts (default onnxruntime; openvino: OpenVINO CPU).")
@device_option(help="cpu, cuda or cuda:N for torch, ONNX Runtime and TensorRT (default: cuda when visible).")
@click.option("--timeout", default=None, type=float, help="Seconds before a Triton request counts as failed (default 60).")
@click.option("--label-ids", type=click.Choice(["model", "dataset"]), default="model", show_default=True,
              help="Mask values: the model's class ids 0..K-1 (255 = no-data), or the training dataset's own "
                   "mask-file ids (LoveDA: 1..7, 0 = no-data) for submissions.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--scene", help="Scene of the inputs for a model trained with metadata prompts: a name of its scene table "
              "(e.g. rural, urban) or an id; default generic (metadata unknown).")
@click.option("--gsd", default="auto", show_default=True, metavar="auto|off|METRES",
              help="Read georeferenced inputs at the model's ground sampling distance (train --gsd; averaged down, "
                   "bilinear up, from overviews where the file has them); off: at their own; METRES: the inputs' GSD "
                   "(also for plain images).")
@click.option("--out-grid", type=click.Choice(["input", "model"]), default="input", show_default=True,
              help="Write the class map at each input's own grid (nearest) or at the model's GSD.")
@click.option("--vector", type=click.Choice(["gpkg", "geojson"]), default=None,
              help="Also <stem>_polygons.gpkg (the raster's CRS) or .geojson (EPSG:4326): one polygon per region, with "
                   "its class name and id; nodata is never vectorised.")
@click.option("--min-area", type=float, default=0.0, show_default=True, metavar="M2",
              help="--vector: regions smaller than this (square metres; pixels for plain images) merge into their "
                   "neighbours first (rasterio sieve).")
@click.option("--simplify", type=float, default=0.0, show_default=True, metavar="M",
              help="--vector: simplify polygon edges within this tolerance (metres; 0: the pixel edges).")
def predict_cmd(models, inputs, out, size, overlap, batch, bands, value_range, in_flight, overlay, force, allow_failed, fmt,
                runtime, device, timeout, label_ids, quiet, scene, gsd,
                out_grid, vector, min_area, simplify):
    """Segment INPUTS (images, GeoTIFFs, folders, globs) window by window; per input writes <stem>_mask.tif
    (COG with the input's georeferencing) or <stem>_mask.png, <stem>_preview.png and <stem>_counts.json."""
    import sys

    from segclip.parsers import parse_bands, parse_range
    from segclip.inference.outputs import summary_lines
    from segclip.inference.predict import predict_paths, release_freed_memory

    if in_flight < 1:
        raise SegclipError(f"--in-flight {in_flight}: must be >= 1; give e.g. --in-flight 2")
    opts = {k: v for k, v in (("format", fmt), ("runtime", runtime), ("device", device),
                              ("allow_failed", allow_failed)) if v}
    if timeout is not None and timeout <= 0:
        raise SegclipError(f"--timeout {timeout}: must be > 0 seconds; give e.g. --timeout 60")
    release_freed_memory()
    results, errors = predict_paths(models, inputs, out, size=size, overlap=overlap, batch=batch, bands=parse_bands(bands),
                                    value_range=parse_range(value_range), overlay=overlay, in_flight=in_flight,
                                    runner_opts=opts, timeout=timeout, force=force, progress=not quiet, scene=scene,
                                    label_ids=label_ids, gsd=gsd, out_grid=out_grid, vector=vector,
                                    min_area=min_area, simplify=simplify,
                                    log=lambda m: click.echo(m, err=m.startswith("error:")))
    for line in summary_lines(results):
        click.echo(line)
    if errors:  # each was printed as it happened; the other inputs' outputs are written
        sys.exit(2)


@click.command("tune")
@click.argument("export_dir", type=click.Path(file_okay=False))
@size_option(stride=False, square=True,
             help="Window size S or SxS for exports that take any size (default: predict's, 1024); fixed-size exports use their own.")
@click.option("--calls", default=3, show_default=True, type=click.IntRange(min=1), help="Timed calls per artifact and runtime.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: the runtime's own, all usable CPUs).")
def tune_cmd(export_dir, size, calls, threads):
    """Time every gated artifact of EXPORT_DIR on every runtime of this machine (ONNX Runtime, OpenVINO,
    TensorRT on a GPU) and record it in its manifest.json: predict, eval and triton-repo then run the
    fastest by default here.  Run it after copying an export to the machine that will run it."""
    from segclip.inference.speed import tune

    tune(export_dir, size=size, calls=calls, threads=threads, log=click.echo)


COMMANDS = [predict_cmd, tune_cmd]
