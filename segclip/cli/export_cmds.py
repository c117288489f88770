"""``segclip export`` and ``segclip predict``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import click

from segclip.cli.group import clean_partials
from segclip.cli.options import batch_option, data_option, device_option, out_option, size_option
from segclip.contract import FORMATS
from segclip.errors import SegclipError
from segclip.export.int8 import DEFAULT_CALIB_IMAGES, FALLBACK_BUDGET


@click.command("export")
@click.argument("source", type=click.Path())
@click.option("--onnx", "onnx_", is_flag=True, hidden=True)  # old spelling: ONNX FP32 is always written
@click.option("--fp16", is_flag=True, help="Also model_fp16.onnx: FP16 weights/ops with FP32 islands (strongly typed).")
@click.option("--int8", is_flag=True, help="Also model_int8.onnx (symmetric Q/DQ, TensorRT) and model_int8_cpu.onnx (u8/s8, x86 CPUs), calibrated on --data.")
@click.option("--calib-images", default=DEFAULT_CALIB_IMAGES, show_default=True, type=int, help="INT8 calibration images from --data (the gate uses others).")
@click.option("--calib-method", default="minmax", show_default=True, type=click.Choice(["minmax", "entropy", "percentile"]))
@click.option("--int8-threshold", default="0.98:1.0", show_default=True, metavar="AGREEMENT[:MIOU_POINTS]",
              help="INT8 gate: min pixel agreement and max |dmIoU| in points.")
@click.option("--int8-fallback", default=FALLBACK_BUDGET, show_default=True, type=int,
              help="When the INT8 gate fails: at most this many most sensitive Conv/MatMul nodes go back to float.")
@click.option("--trt", is_flag=True, help="Also a TensorRT engine (needs an NVIDIA GPU + tensorrt; else writes trtexec.sh and exits 2).")
@batch_option("profile", default="1:1:8", legacy=None, help="Batch profile (dynamic batch in ONNX; TensorRT profile).")
@size_option(help="Input HxW, multiples of 32 (default: the checkpoint's training crop size, else 512).")
@click.option("--dynamic-size", is_flag=True, help="Dynamic H/W in the ONNX (checked at a second size).")
@click.option("--scores", is_flag=True, help="Also output the N x K x H x W FP32 class scores.")
@click.option("--opset", default=17, show_default=True, type=int)
@data_option(required=False, help="Parity (and INT8 calibration) images (default: the rendered sample set).")
@click.option("--parity-images", default=8, show_default=True, type=click.IntRange(min=1), help="Images through PyTorch and every artifact.")
@out_option(help="Export directory (default: RUN_DIR/export or next to the checkpoint).")
@device_option(help="Device for the PyTorch reference of the parity gate and the TensorRT build (default: cpu; TensorRT: cuda).")
@click.option("--force", is_flag=True, help="Replace an existing export.")
@click.option("--fp32-threshold", default=0.999, show_default=True, type=float, help="Min pixel agreement, FP32 artifacts.")
@click.option("--fp16-threshold", default=0.995, show_default=True, type=float, help="Min pixel agreement, FP16 artifacts.")
@click.option("--workspace", default=4096, show_default=True, type=int, help="TensorRT workspace limit (MiB).")
def export_cmd(source, onnx_, fp16, int8, calib_images, calib_method, int8_threshold, int8_fallback, trt, batch, size,
               dynamic_size, scores, opset, data, parity_images, out, device, force,
               fp32_threshold, fp16_threshold, workspace):
    """Export RUN_DIR|CHECKPOINT to ONNX / FP16 ONNX / INT8 Q/DQ ONNX / TensorRT behind a parity gate (exit 1 if it fails)."""
    from segclip.export import export

    if onnx_:
        from segclip.cli.options import deprecated

        deprecated("--onnx", "nothing (model.onnx is always written; the other formats derive from it)")
    export(source, out=out, device=device, fp16=fp16, trt=trt, batch=batch, size=size, dynamic_size=dynamic_size, scores=scores,
           opset=opset, data=data, parity_images=parity_images, force=force, fp32_threshold=fp32_threshold,
           fp16_threshold=fp16_threshold, workspace_mb=workspace, int8=int8, calib_images=calib_images,
           calib_method=calib_method, int8_threshold=int8_threshold, int8_fallback=int8_fallback, log=click.echo)


@click.command("trt-check")
@click.argument("model", type=click.Path())
@click.option("--trt-version", default="10", show_default=True, type=click.Choice(["10", "11"]),
              help="TensorRT major version whose documented ONNX support to check against.")
def trt_check_cmd(model, trt_version):
    """Will TensorRT build MODEL.onnx?  Every node against TensorRT's documented ONNX support (ops, opsets,
    restricted attributes, constant axes, UINT8 only at the I/O through Casts, no If/Loop/NonZero).
    Exit 0: ok; 1: problems, one line each; 2: unreadable file."""
    from segclip.export.trt_check import check_onnx, support_table

    problems = check_onnx(model, trt_version)
    label = f"TensorRT {support_table()['tables'][trt_version]['tensorrt']}"
    for line in problems:
        click.echo(f"{model}: {line}")
    if problems:
        click.echo(f"{model}: {len(problems)} problem(s) for {label}")
        raise SystemExit(1)
    click.echo(f"{model}: ok for {label}")


# ---- predict -------------------------------------------------------------------------------------
@click.command("predict")
@click.option("--model", "models", required=True, multiple=True,
              help="Checkpoint, run dir, .onnx, .plan, export dir or grpc://host:port/model; repeat with several "
                   "Triton endpoints to spread the windows over them.")
@click.argument("inputs", nargs=-1, required=True)
@out_option(default="predictions", help="Output folder.")
@size_option(legacy="--tile", stride=False, square=True,
             help="Window size S or SxS for models that take any size (default 1024); fixed-size exports use their own.")
@click.option("--overlap", default=0.25, show_default=True, type=float, help="Overlap of neighbouring windows.")
@batch_option("int", help="Windows per request (default: 2 when the model runs on the CPU -- larger batches only cost "
                          "activation memory there, ~1.3 GiB at 8 x 1024 px -- else 8; engines with a smaller profile "
                          "use theirs).")
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
@device_option(providers_alias=True, help="cpu, cuda or cuda:N for torch, ONNX Runtime and TensorRT (default: cuda when visible).")
@click.option("--timeout", default=None, type=float, help="Seconds before a Triton request counts as failed (default 60).")
@click.option("--label-ids", type=click.Choice(["model", "dataset"]), default="model", show_default=True,
              help="Mask values: the model's class ids 0..K-1 (255 = no-data), or the training dataset's own "
                   "mask-file ids (LoveDA: 1..7, 0 = no-data) for submissions.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--scene", help="Scene of the inputs for a model trained with metadata prompts: a name of its scene table "
              "(e.g. rural, urban) or an id; default generic (metadata unknown).")
def predict_cmd(models, inputs, out, size, overlap, batch, bands, value_range, in_flight, overlay, force, allow_failed, fmt,
                runtime, device, providers, timeout, label_ids, quiet, scene):
    """Segment INPUTS (images, GeoTIFFs, folders, globs) window by window; per input writes <stem>_mask.tif
    (COG with the input's georeferencing) or <stem>_mask.png, <stem>_preview.png and <stem>_counts.json."""
    import sys

    from segclip.data.raster import parse_bands, parse_range
    from segclip.engine.predict import release_freed_memory, summary_lines

    tile = size
    if in_flight < 1:
        raise SegclipError(f"--in-flight {in_flight}: must be >= 1; give e.g. --in-flight 2")
    opts = {k: v for k, v in (("format", fmt), ("runtime", runtime), ("device", device), ("providers", providers),
                              ("allow_failed", allow_failed)) if v}
    if timeout is not None and timeout <= 0:
        raise SegclipError(f"--timeout {timeout}: must be > 0 seconds; give e.g. --timeout 60")
    release_freed_memory()
    results, errors = predict_paths(models, inputs, out, tile=tile, overlap=overlap, batch=batch, bands=parse_bands(bands),
                                    value_range=parse_range(value_range), overlay=overlay, in_flight=in_flight,
                                    runner_opts=opts, timeout=timeout, force=force, progress=not quiet, scene=scene,
                                    label_ids=label_ids,
                                    log=lambda m: click.echo(m, err=m.startswith("error:")))
    for line in summary_lines(results):
        click.echo(line)
    if errors:  # each was printed as it happened; the other inputs' outputs are written
        sys.exit(2)


def predict_paths(models: Sequence[str], inputs: Sequence[str], out, *, tile: Optional[int] = None,
                  overlap: float = 0.25, batch: Optional[int] = None, bands=None, value_range=None, overlay: bool = False,
                  in_flight: int = 2, runner_opts: Optional[dict] = None, timeout: Optional[float] = None,
                  force: bool = False, progress: bool = True, scene=None, log: Callable = print,
                  label_ids: str = "model") -> tuple:
    """``segclip predict`` in Python: -> (per-file summaries, [one-line errors]).  Raises
    ``SegclipError`` only when no input can be predicted at all (bad ``--out``, no usable model).
    (Here, not in ``segclip.engine.predict``: it loads runners, a layer above the engine.)
    ``scene``: a scene name or id of a model trained with metadata prompts, for every input.
    ``batch``: windows per request; None: ``predict.default_batch`` of the (first) model."""
    from segclip.engine.predict import OUTPUT_SUFFIXES, Predictor, default_batch, expand_inputs, output_stems
    from segclip.runtime import load_runner
    from segclip.runtime.pool import open_pool

    if not 0 <= overlap < 1:
        raise SegclipError(f"--overlap {overlap}: must be in [0, 1); give e.g. --overlap 0.25")
    if batch is not None and batch < 1:
        raise SegclipError(f"--batch {batch}: must be >= 1; give e.g. --batch 8")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegclipError(f"--out {out}: is a file, not a folder; give a folder for the predictions")
    paths, errors = expand_inputs(inputs)
    if not paths:  # nothing to do: one line, not one per input
        more = f" (and {len(errors) - 1} more input(s) with no raster)" if len(errors) > 1 else ""
        raise SegclipError((errors[0] if errors else f"no input raster in {' '.join(map(str, inputs))}") + more)
    for e in errors:
        log(f"error: {e}")
    stems = output_stems(paths, out)
    if not force:  # checked before any work: an earlier run's results are never replaced silently
        existing = [p for s in stems for p in (Path(f"{s}{x}") for x in OUTPUT_SUFFIXES) if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise SegclipError(f"{existing[0]}{more} already exists from an earlier predict; pass --force to replace "
                               f"it or choose another --out")
    def load(m):  # local options (format, device, providers) for files, the request timeout for endpoints
        remote = str(m).startswith(("grpc://", "http://", "https://"))
        if remote:
            return load_runner(m, **({"timeout": timeout} if timeout else {}))
        opts = dict(runner_opts or {})
        if not Path(m).is_dir():
            opts.pop("allow_failed", None)  # only export folders hold parity-gate verdicts
        runner = load_runner(m, **opts)
        if hasattr(runner, "memory_arena"):  # ONNX Runtime: peak memory flat over a whole scene (not yet active)
            runner.memory_arena = False
        return runner

    pool, pool_errors = open_pool(models, load, in_flight=in_flight, log=log)
    errors += pool_errors
    created = not out.exists()
    try:  # created only now: bad inputs or models leave no empty folder behind
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SegclipError(f"--out {out}: cannot create the folder ({e.strerror}); give a writable folder") from None
    clean_partials(out)
    with pool:
        sig = pool.signature
        # one-line error for a scene the model lacks (or any scene for a model without them)
        scene_id = None if scene is None else int(sig.check_scene_ids(scene, 1, where="--scene")[0])
        if sig.dynamic_size:
            window = (int(tile or 1024),) * 2
        else:
            window = (sig.height, sig.width)
            if tile and (tile, tile) != window:
                raise SegclipError(f"--size {tile}: the model takes {sig.height}x{sig.width} windows; leave --size out, "
                                   f"or re-export with --size {tile}x{tile}")
        first = pool.endpoints[0].runners[0]
        batch = default_batch(first) if batch is None else batch
        limit = first.max_batch  # fixed engine profiles; Triton splits big batches itself
        batch = min(batch, limit) if limit else batch
        ids = None
        if label_ids == "dataset":
            from segclip.data import dataset_label_ids

            ids = dataset_label_ids(sig.classes)
            if ids is None:
                raise SegclipError(f"--label-ids dataset: no dataset with its own mask-file ids has this model's classes "
                                   f"({', '.join(sig.classes)}); its masks already hold the class ids 0..K-1: drop --label-ids")
        predictor = Predictor(pool, window, overlap=overlap, batch=batch, bands=bands, value_range=value_range,
                              overlay=overlay, progress=progress, log=log, scene=scene_id, label_ids=ids)
        results, file_errors = predictor.run(paths, out, stems)
    if created and not any(out.iterdir()):  # every input failed: no empty folder either
        out.rmdir()
    return results, errors + file_errors



COMMANDS = [export_cmd, trt_check_cmd, predict_cmd]
