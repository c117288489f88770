"""``segclip doctor``: what this machine can run; ``--gpu``: the GPU acceptance run (``segclip.benchmarks.gpu_acceptance``)."""
from __future__ import annotations

import click

from segclip.cli.options import device_option, out_option


@click.command("doctor")
@click.option("--gpu", "gpu", is_flag=True, help="Run the GPU acceptance: AMP training, PyTorch CUDA, ONNX Runtime CUDA, "
              "FP32/FP16/INT8 TensorRT engines gated and timed; writes gpu_acceptance.json and .md (about 10 minutes).")
@out_option(default="gpu-acceptance", help="Folder for the verdict (and the model and exports it makes).")
@click.option("--model", default=None, type=click.Path(exists=True), help="RUN_DIR or checkpoint to use instead of training the quickstart model.")
@click.option("--train-steps", default=None, type=click.IntRange(min=1), help="Training steps of the quickstart model (default 300).")
@device_option(help="The GPU to check (default: cuda:0).")
def doctor(gpu, out, model, train_steps, device):
    """Check this machine; with --gpu, run every GPU path once and write a verdict (exit 1 unless it passed)."""
    from segclip.benchmarks import gpu_acceptance as ga

    if not gpu:
        import onnxruntime as ort

        why = ga.no_gpu_reason()
        click.echo(f"GPU: {why or 'yes'}")
        click.echo(f"onnxruntime {ort.__version__}: {', '.join(ort.get_available_providers())}")
        for mod in ("tensorrt", "openvino"):
            click.echo(f"{mod}: {ga._version(mod) or 'not installed'}")
        from segclip.cpu import int8_isa
        from segclip.runtime import ov_extension

        problem = ov_extension.build_problem()
        click.echo(f"CPU INT8 instruction set: {int8_isa()}")
        click.echo(f"OpenVINO deformable-attention kernel (model_int8_msda.onnx): "
                   f"{'builds here with ' + ov_extension.compiler() if problem is None else problem}")
        click.echo("run `segclip doctor --gpu` on a GPU machine before using its engines")
        return
    from segclip.cli.train_cmds import run_training

    acc = ga.Acceptance(out, model=model, device=device or "cuda:0", train_steps=train_steps or ga.TRAIN_STEPS,
                        log=click.echo, train_fn=run_training)
    v = acc.run()
    if v["verdict"] == "no GPU":
        click.echo(f"verdict: no GPU ({v['reason']}); nothing was run. On a GPU machine this runs:")
        for s in v["would_run"]:
            click.echo(f"  {s['step']:12s} {s['what']}")
    else:
        click.echo(f"verdict: {v['verdict']}" + (f" (failed: {', '.join(v['failed'])})" if v["failed"] else ""))
    click.echo(f"wrote {acc.out / ga.JSON_NAME} and {acc.out / ga.MD_NAME}")
    if not v["verdict"].startswith("passed"):
        raise SystemExit(1)


COMMANDS = [doctor]
