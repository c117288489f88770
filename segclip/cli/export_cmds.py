"""``segclip export`` and ``segclip predict``."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from segclip.cli.options import batch_option, data_option, device_option, out_option, size_option
from segclip.errors import SegclipError


@click.command("export")
@click.argument("source", type=click.Path())
@click.option("--onnx", "onnx_", is_flag=True, help="ONNX FP32 (always written: the other formats derive from it).")
@click.option("--fp16", is_flag=True, help="Also model_fp16.onnx: FP16 weights/ops with FP32 islands (strongly typed).")
@click.option("--trt", is_flag=True, help="Also a TensorRT engine (needs an NVIDIA GPU + tensorrt; else writes trtexec.sh and exits 2).")
@batch_option("profile", default="1:1:8", legacy=None, help="Batch profile (dynamic batch in ONNX; TensorRT profile).")
@size_option(help="Input HxW, multiples of 32 (default: the checkpoint's training crop size, else 512).")
@click.option("--dynamic-size", is_flag=True, help="Dynamic H/W in the ONNX (checked at a second size).")
@click.option("--scores", is_flag=True, help="Also output the N x K x H x W FP32 class scores.")
@click.option("--opset", default=17, show_default=True, type=int)
@data_option(required=False, help="Parity images (default: the rendered sample set).")
@click.option("--parity-images", default=8, show_default=True, type=int)
@out_option(help="Export directory (default: RUN_DIR/export or next to the checkpoint).")
@device_option(help="Device for the PyTorch reference of the parity gate and the TensorRT build (default: cpu; TensorRT: cuda).")
@click.option("--force", is_flag=True, help="Replace an existing export.")
@click.option("--fp32-threshold", default=0.999, show_default=True, type=float, help="Min pixel agreement, FP32 artifacts.")
@click.option("--fp16-threshold", default=0.995, show_default=True, type=float, help="Min pixel agreement, FP16 artifacts.")
@click.option("--workspace", default=4096, show_default=True, type=int, help="TensorRT workspace limit (MiB).")
def export_cmd(source, onnx_, fp16, trt, batch, size, dynamic_size, scores, opset, data, parity_images, out, device, force,
               fp32_threshold, fp16_threshold, workspace):
    """Export RUN_DIR|CHECKPOINT to ONNX / FP16 ONNX / TensorRT behind a parity gate (exit 1 if it fails)."""
    from segclip.export import export

    export(source, out=out, device=device, onnx=True, fp16=fp16, trt=trt, batch=batch, size=size, dynamic_size=dynamic_size, scores=scores,
           opset=opset, data=data, parity_images=parity_images, force=force, fp32_threshold=fp32_threshold,
           fp16_threshold=fp16_threshold, workspace_mb=workspace, log=click.echo)


# ---- predict -------------------------------------------------------------------------------------
@click.command("predict")
@click.option("--model", "model", required=True, help="Checkpoint, run dir, .onnx, .plan, export dir or grpc://host:port/model.")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@out_option(default="predictions", file_okay=False, help="Output folder.")
@click.option("--overlay", is_flag=True, help="Also write <stem>_overlay.png (class colours over the image).")
@click.option("--format", "fmt", default=None, type=click.Choice(["onnx", "onnx_fp16", "tensorrt"]), help="Artifact of an export dir.")
@device_option(providers_alias=True, help="cpu, cuda or cuda:N for torch, ONNX Runtime and TensorRT (default: cuda when visible).")
@batch_option("int", default=4, help="Tiles per inference call.")
@click.option("--overlap", default=0.25, show_default=True, type=float, help="Sliding-window overlap for images larger than the model.")
def predict_cmd(model, images, out, overlay, fmt, device, providers, batch, overlap):
    """Segment IMAGES with MODEL; writes <stem>_mask.png (palette PNG: pixel = class id, 255 = no-data),
    legend.png (what the mask colours mean) [and <stem>_overlay.png with a legend]."""
    from segclip.data.imageio import read_rgb
    from segclip.data.sliding import predict_image
    from segclip.runtime import load_runner
    from segclip.viz import class_shares, describe_shares, legend_image, mask_image, overlay_with_legend, save_png

    if not 0 <= overlap < 1:
        raise SegclipError(f"--overlap {overlap}: must be in [0, 1)")
    opts = {}
    if fmt:
        opts["format"] = fmt
    if device:
        opts["device"] = device
    if providers:
        opts["providers"] = providers
    runner = load_runner(model, **opts)
    out = Path(out)
    sig = runner.signature
    with runner:
        for p in images:
            p = Path(p)
            image = read_rgb(p)
            mask, how = predict_image(runner, image, overlap=overlap, batch_size=batch)
            save_png(mask_image(mask, sig.palette), out / f"{p.stem}_mask.png")
            if overlay:
                save_png(overlay_with_legend(image, mask, sig.classes, sig.palette), out / f"{p.stem}_overlay.png")
            shares = describe_shares(class_shares(mask, sig.num_classes), sig.classes)
            click.echo(f"{p.name}: {image.shape[1]}x{image.shape[0]} {how} -> {out / (p.stem + '_mask.png')} ({shares})")
    save_png(legend_image(sig.classes, sig.palette), out / "legend.png")
    click.echo(f"mask colours: {out / 'legend.png'}")


COMMANDS = [export_cmd, predict_cmd]
