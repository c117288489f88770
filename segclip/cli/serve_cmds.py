"""``segclip triton-repo``, ``segclip serve`` and ``segclip serve-env``: Triton Inference Server."""
from __future__ import annotations

import signal
import time

import click

from segclip.cli.options import out_option
from segclip.errors import SegclipError
from segclip.parsers import split_list


@click.command("triton-repo")
@click.argument("export_dir", type=click.Path(file_okay=False))
@out_option(required=True, file_okay=False, help="Model repository folder.")
@click.option("--max-batch", type=int, default=None, help="max_batch_size (default: the export's profile max).")
@click.option("--queue-delay-us", type=int, default=100, show_default=True,
              help="dynamic_batching max_queue_delay_microseconds: how long Triton waits to fill a batch.")
@click.option("--instances", type=int, default=1, show_default=True, help="Model instances (instance_group count).")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Instance kind for segclip_onnx/segclip_python (segclip_trt is always GPU).")
@click.option("--models", "models", multiple=True,
              help="Which of segclip_onnx, segclip_trt, segclip_python to write (comma list; default: all the export supports).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="ONNX artifact served by segclip_onnx/segclip_python (int8: model_int8.onnx for --kind gpu, model_int8_cpu.onnx "
                   "for cpu; default: the one measured fastest on ONNX Runtime here by export/segclip tune, else fp32).")
@click.option("--threads", type=int, default=0, show_default=True, help="ONNX Runtime intra-op threads per instance (0: its default).")
@click.option("--triton-release", default=None, metavar="YY.MM",
              help="The Triton container that will serve segclip_trt (e.g. 24.08): its TensorRT must be the engine's.")
@click.option("--force", is_flag=True, help="Replace models already in --out.")
def triton_repo_cmd(export_dir, out, max_batch, queue_delay_us, instances, kind, models, precision, threads, triton_release, force):
    """Generate a Triton model repository (--out) from the export in EXPORT_DIR."""
    from segclip.contract import read_manifest
    from segclip.serving.repo import build_repository, onnx_choice

    # the one decision (contract.choose_artifact through onnx_choice), said once the repository is written (a
    # refused repository prints its one error line only)
    _, precision, choice = onnx_choice(read_manifest(export_dir), export_dir, kind, precision)
    written = build_repository(export_dir, out, models=split_list(models) or None, max_batch=max_batch,
                               queue_delay_us=queue_delay_us, instances=instances, kind=kind, intra_op_threads=threads,
                               precision=precision, force=force, triton_release=triton_release)
    click.echo(choice.line().replace("--format/--runtime", "--precision"))
    for name, path in written.items():
        click.echo(f"{name:15s} {path}")
    click.echo(f"serve it: segclip serve --repo {out}   (pip server: segclip_python; NVIDIA's container: all)")


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


@click.command("serve")
@click.option("--repo", "repo", required=True, type=click.Path(file_okay=False), help="Model repository (segclip triton-repo).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option("--models", "models", multiple=True, help="Models to load (comma list; default: segclip_python on the pip "
              "server, segclip_trt/segclip_onnx with tritonserver on PATH).")
@click.option("--env", "env_path", type=click.Path(file_okay=False), default=None,
              help="Server env for the pip server (default: $SEGCLIP_TRITON_ENV, else ~/.cache/segclip/triton-env).")
@click.option("--tritonserver", "binary", type=click.Path(dir_okay=False), default=None,
              help="A tritonserver binary with native backends (default: the one on PATH, if any).")
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds to wait for the models to be ready.")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="Write the server log here (default: a temp file).")
def serve_cmd(repo, host, http_port, grpc_port, metrics_port, models, env_path, binary, timeout, log_file):
    """Run Triton Inference Server on a generated model repository until Ctrl-C / SIGTERM."""
    from segclip.serving.server import PIP, TritonServer

    server = TritonServer(repo, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          models=split_list(models) or None, env=env_path, binary=binary, startup_timeout=timeout,
                          log_file=log_file)
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        server.preflight()
        click.echo(f"starting {server.describe()}", err=True)
        if server.mode == PIP:
            click.echo("note: the pip-installed tritonserver has only the python backend: serving segclip_python "
                       "(ONNX Runtime inside Triton); segclip_onnx/segclip_trt need NVIDIA's container", err=True)
        server.start()
        click.echo(f"ready in {server.start_seconds:.1f}s: {', '.join(server.models)}")
        click.echo(f"  HTTP     {server.http_url}")
        click.echo(f"  gRPC     {server.grpc_url}")
        click.echo(f"  metrics  {server.metrics_url}")
        for m in server.models:
            click.echo(f"  model    {server.model_url(m, 'grpc')}   {server.model_url(m, 'http')}")
        click.echo(f"  log      {server.log_path}")
        click.echo("Ctrl-C to stop", err=True)
        while server.is_alive():
            time.sleep(0.5)
        code = server.proc.returncode
        tail = server.log_tail(10)
        raise SegclipError(f"tritonserver exited unexpectedly with code {code}; last log lines:\n{tail}")
    except _Stop as e:
        click.echo(f"{e}: stopping tritonserver", err=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.stop()
    click.echo("stopped", err=True)


@click.command("serve-env")
@click.option("--path", "path", type=click.Path(file_okay=False), default=None,
              help="Where to create it (default: $SEGCLIP_TRITON_ENV, else ~/.cache/segclip/triton-env).")
@click.option("--force", is_flag=True, help="Rebuild it even if a usable one is there.")
@click.option("--python", "python", default=None, help="Python for the env (3.8..3.13; default: this one).")
def serve_env_cmd(path, force, python):
    """Create the server-side venv (numpy<2, onnxruntime, nvidia-pytriton) that `segclip serve` uses."""
    from segclip.serving.env import ENV_VAR, create_server_env, default_env_path

    env = create_server_env(path, force=force, python=python, echo=lambda m: click.echo(m, err=True))
    click.echo(str(env.path))
    default = default_env_path()
    if env.path.resolve() != default.resolve():
        click.echo(f"note: `segclip serve` looks in {default}; pass --env {env.path} or export {ENV_VAR}={env.path}", err=True)


COMMANDS = [triton_repo_cmd, serve_cmd, serve_env_cmd]
