"""``segclip export`` and ``segclip trt-check``."""
from __future__ import annotations


import click

from segclip.cli.options import batch_option, data_option, device_option, out_option, size_option
from segclip.export.int8 import DEFAULT_CALIB_IMAGES, FALLBACK_BUDGET


@click.command("export")
@click.argument("source", type=click.Path())
@click.option("--fp16", is_flag=True, help="Also model_fp16.onnx: FP16 weights/ops with FP32 islands (strongly typed).")
@click.option("--int8", is_flag=True, help="Also model_int8.onnx (symmetric Q/DQ, TensorRT) and model_int8_cpu.onnx (u8/s8, x86 CPUs), calibrated on --data.")
@click.option("--calib-images", default=None, type=int,
              help=f"INT8 calibration images from --data (the gate uses --parity-images others; default "
                   f"{DEFAULT_CALIB_IMAGES}, or what --data leaves after the gate's, at least 4: the sample set's 16 "
                   f"val images give 8 + 8).")
@click.option("--calib-method", default="minmax", show_default=True, type=click.Choice(["minmax", "entropy", "percentile"]))
@click.option("--int8-threshold", default="0.98:1.0", show_default=True, metavar="AGREEMENT[:MIOU_POINTS]",
              help="INT8 gate: min pixel agreement and max |dmIoU| in points.")
@click.option("--int8-fallback", default=FALLBACK_BUDGET, show_default=True, type=int,
              help="When the INT8 gate fails: at most this many most sensitive Conv/MatMul nodes go back to float.")
@click.option("--trt", is_flag=True, help="Also a TensorRT engine (needs an NVIDIA GPU + tensorrt; else writes trtexec.sh, which builds it on the target, and notes it).")
@click.option("--require-engine", is_flag=True, help="With --trt: exit 2 when no engine can be built here (instead of a note).")
@click.option("--geodeep", is_flag=True, help="Also model_geodeep.onnx, loadable as is by OpenDroneMap's GeoDeep and QGIS Deepness: "
              "one float32 NCHW 0..1 input, class probabilities out, their metadata (resolution from train --gsd).")
@click.option("--scene", default=None, help="The scene baked into the --geodeep artifact (a model with metadata prompts: a "
              "name or id of its scene table; default generic).")
@click.option("--msda", default="auto", show_default=True, type=click.Choice(["auto", "plugin", "gridsample"]),
              help="With --trt: the TensorRT graph's deformable attention: TensorRT's own MultiscaleDeformableAttnPlugin_TRT "
              "(model_plugin.onnx) or GridSample ops; auto builds the plugin engine first and falls back to GridSample if it fails.")
@batch_option("profile", default="1:1:8", help="Batch profile (dynamic batch in ONNX; TensorRT profile).")
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
@click.option("--tune/--no-tune", default=True, show_default=True,
              help="Time every gated artifact on every runtime here (a few calls each) and record it, so predict, eval "
                   "and triton-repo run the fastest by default (segclip tune EXPORT measures again on another machine).")
def export_cmd(source, fp16, int8, calib_images, calib_method, int8_threshold, int8_fallback, trt, require_engine, batch, size,
               dynamic_size, scores, opset, data, parity_images, out, device, force,
               fp32_threshold, fp16_threshold, workspace, tune, msda, geodeep, scene):
    """Export RUN_DIR|CHECKPOINT to ONNX / FP16 ONNX / INT8 Q/DQ ONNX / TensorRT behind a parity gate (exit 1 if it fails)."""
    from segclip.export import export

    export(source, out=out, device=device, fp16=fp16, trt=trt, batch=batch, size=size, dynamic_size=dynamic_size, scores=scores,
           opset=opset, data=data, parity_images=parity_images, force=force, fp32_threshold=fp32_threshold,
           fp16_threshold=fp16_threshold, workspace_mb=workspace, int8=int8, calib_images=calib_images,
           calib_method=calib_method, int8_threshold=int8_threshold, int8_fallback=int8_fallback, log=click.echo, tune=tune, require_engine=require_engine, msda=msda,
           geodeep=geodeep, scene=scene)


@click.command("trt-check")
@click.argument("model", type=click.Path())
@click.option("--trt-version", default="10", show_default=True, metavar="VERSION",
              help="The target's TensorRT: 10 or 11 (the tables segclip has: TensorRT 10.15 and 11.2), a release "
                   "(10.15), or a JetPack release (jetpack6.2 = TensorRT 10.3); one without a table is refused.")
def trt_check_cmd(model, trt_version):
    """Will TensorRT build MODEL.onnx?  Every node against TensorRT's documented ONNX support (ops, opsets,
    restricted attributes, constant axes, UINT8 only at the I/O through Casts, no If/Loop/NonZero).
    Exit 0: ok; 1: problems, one line each; 2: unreadable file."""
    from segclip.export.trt_check import check_onnx, resolve_trt_version, support_table

    trt_version = resolve_trt_version(trt_version)  # before the model is read: a version without a table says so
    problems = check_onnx(model, trt_version)
    label = f"TensorRT {support_table()['tables'][trt_version]['tensorrt']}"
    for line in problems:
        click.echo(f"{model}: {line}")
    if problems:
        click.echo(f"{model}: {len(problems)} problem(s) for {label}")
        raise SystemExit(1)
    click.echo(f"{model}: ok for {label}")


# ---- predict -------------------------------------------------------------------------------------


COMMANDS = [export_cmd, trt_check_cmd]
