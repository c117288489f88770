"""Launch, watch and stop a Triton Inference Server on a generated model repository.

Two ways to get a server, picked automatically:

* ``tritonserver`` on PATH (NVIDIA's container ``nvcr.io/nvidia/tritonserver:<ver>-py3``): native
  ONNX Runtime / TensorRT backends, so ``segclip_trt`` and ``segclip_onnx`` are served by default.
* otherwise the ``tritonserver`` bundled in the ``nvidia-pytriton`` wheel, from the server env made
  by ``segclip serve-env``.  It has only the python backend, so only ``segclip_python`` (ONNX
  Runtime inside the python backend) is loaded, with explicit model control.

``TritonServer`` is a context manager used by ``segclip serve`` and by the tests: it checks the
repository and the ports before starting, binds 127.0.0.1 unless told otherwise, starts the server
in its own process group (and asks the kernel to kill it if this process dies), waits until every
model is ready (models are warmed up before they report ready), and on exit stops the server and
everything in its process group.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Optional

from segclip.errors import SegclipError

from segclip.serving.env import ServerEnv, check_stub_libraries, find_server_env
from segclip.serving.repo import MODEL_ONNX, MODEL_PYTHON, MODEL_TRT, check_repository, list_models

NATIVE = "native"  # tritonserver from PATH (NVIDIA's container)
PIP = "pip"  # tritonserver bundled in nvidia-pytriton, python backend only
PIP_MODELS = (MODEL_PYTHON,)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int, host: str = "127.0.0.1") -> list:
    """``n`` distinct free ports (all held open while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(host: str, port: int) -> bool:
    """True if ``port`` cannot be bound on ``host`` (someone listens there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, as Triton does
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise SegclipError(f"cannot bind {host}:{port}: {e.strerror}") from None
    return False


def _set_pdeathsig():  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the server dies with the process that started it
    except Exception:
        pass


def process_group_pids(pgid: int) -> list:
    """Live pids in a process group (from /proc; zombies excluded)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


class TritonServer:
    """A tritonserver process serving ``repo``; use as a context manager or call start()/stop().

    ``models``: which models to load (default: segclip_python on the pip server; segclip_trt and
    segclip_onnx, whichever the repository has, on a native server).  ``binary``: a tritonserver to
    use instead of the one on PATH.  ``env``: the server env path (pip server), else found as
    ``segclip serve`` finds it.  ``native=False`` ignores any tritonserver on PATH.
    ``die_with_parent``: the kernel SIGTERMs the server when the thread that started it exits
    (PR_SET_PDEATHSIG), so a killed client never leaves an orphan; start it from a long-lived thread
    (or pass False and call stop() yourself).
    """

    def __init__(self, repo, *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, models: Optional[Iterable[str]] = None, env=None,
                 binary=None, native: Optional[bool] = None, startup_timeout: float = 300.0,
                 exit_timeout: int = 10, log_file=None, log_verbose: int = 0, extra_args: Iterable[str] = (),
                 die_with_parent: bool = True):
        self.repo = Path(repo).resolve()
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = int(http_port), int(grpc_port), int(metrics_port)
        self.startup_timeout = float(startup_timeout)
        self.exit_timeout = int(exit_timeout)
        self.log_verbose = int(log_verbose)
        self.extra_args = list(extra_args)
        self.die_with_parent = bool(die_with_parent)
        self._repo_checked = False
        self._env_arg = env
        self._log_file_arg = Path(log_file) if log_file else None
        self.proc: Optional[subprocess.Popen] = None
        self.workspace: Optional[Path] = None
        self.log_path: Optional[Path] = None
        self.server_env: Optional[ServerEnv] = None
        self.start_seconds: Optional[float] = None

        if binary is not None:
            self.binary, self.mode = Path(binary), NATIVE
        elif native is not False and shutil.which("tritonserver"):
            self.binary, self.mode = Path(shutil.which("tritonserver")), NATIVE
        elif native is True:
            raise SegclipError("no tritonserver on PATH (native server requested); run inside nvcr.io/nvidia/tritonserver:<ver>-py3")
        else:
            self.binary, self.mode = None, PIP  # resolved from the server env in start()
        self.models = list(models) if models else None

    # ---- info ------------------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else ("::1" if self.host == "::" else self.host)

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    def model_url(self, model: Optional[str] = None, protocol: str = "grpc") -> str:
        model = model or self.models[0]
        return f"{self.grpc_url if protocol == 'grpc' else self.http_url}/{model}"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    # ---- checks ----------------------------------------------------------------------------------
    def _resolve_models(self) -> list:
        present = list_models(self.repo)
        if self.models:
            models = self.models
            if self.mode == PIP:
                bad = [m for m in models if m in (MODEL_ONNX, MODEL_TRT)]
                if bad:
                    raise SegclipError(
                        f"{', '.join(bad)} need{'s' if len(bad) == 1 else ''} Triton's native onnxruntime/tensorrt backends, which "
                        f"the pip-installed server lacks; serve {MODEL_PYTHON} here, or run NVIDIA's container "
                        f"(see serving/triton_repo/README.md)"
                    )
            return models
        if self.mode == PIP:
            return list(PIP_MODELS)
        models = [m for m in (MODEL_TRT, MODEL_ONNX) if m in present]
        return models or [m for m in present if m != MODEL_PYTHON] or present

    def preflight(self) -> None:
        """Everything that can be checked before starting: repository, models, ports, server env."""
        if not self._repo_checked:
            self.models = self._resolve_models()
            check_repository(self.repo, self.models)
            self._repo_checked = True
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}
        if len(set(ports.values())) != 3:
            raise SegclipError(f"HTTP, gRPC and metrics ports must differ, got {self.http_port}, {self.grpc_port}, {self.metrics_port}")
        for flag, port in ports.items():
            if not 0 < port < 65536:
                raise SegclipError(f"{flag} {port} is not a valid port")
            if port_in_use(self.host, port):
                raise SegclipError(f"port {port} on {self.host} is already in use ({flag}); stop what uses it or pick another {flag}")
        if self.mode == PIP and self.server_env is None:  # start() pre-flights again after the CLI did
            self.server_env = find_server_env(self._env_arg)
            self.binary = self.server_env.tritonserver
            check_stub_libraries(self.server_env)
        elif not Path(self.binary).exists():
            raise SegclipError(f"tritonserver binary {self.binary} does not exist")

    # ---- lifecycle -------------------------------------------------------------------------------
    def _backend_dir(self) -> Path:
        """A backend directory for the pip server: the python backend plus the stub built for the
        server env's Python (nvidia-pytriton keeps one stub per Python version aside)."""
        env = self.server_env
        bdir = self.workspace / "backends" / "python"
        bdir.mkdir(parents=True)
        for src in (env.python_backend_dir / "libtriton_python.so", env.python_backend_dir / "triton_python_backend_utils.py", env.stub):
            os.symlink(src, bdir / src.name)
        return bdir.parent

    def command(self) -> list:
        args = [
            str(self.binary),
            f"--model-repository={self.repo}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in self.models],
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.mode == PIP:
            args += [
                f"--backend-directory={self._backend_dir()}",
                f"--cache-directory={self.workspace / 'caches'}",
                "--allow-gpu-metrics=false",
                # python-backend shared memory per model instance: start small, grow as needed
                "--backend-config=python,shm-default-byte-size=4194304",
                "--backend-config=python,shm-growth-byte-size=1048576",
            ]
        return args + self.extra_args

    def start(self) -> "TritonServer":
        if self.is_alive():
            raise SegclipError(f"tritonserver already running (pid {self.pid})")
        self.preflight()
        self.workspace = Path(tempfile.mkdtemp(prefix="segclip-triton-"))
        self.log_path = self._log_file_arg or (self.workspace / "tritonserver.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.server_env.process_env() if self.mode == PIP else dict(os.environ)
        cmd = self.command()
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             cwd=self.workspace, start_new_session=True,
                                             preexec_fn=_set_pdeathsig if self.die_with_parent else None)
            except OSError as e:
                self._cleanup_workspace()
                raise SegclipError(f"cannot start {cmd[0]}: {e.strerror}") from None
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        return self

    def _get(self, path: str, timeout: float = 2.0) -> int:
        try:
            with urllib.request.urlopen(f"{self.http_url}{path}", timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError):
            return 0

    def wait_ready(self) -> None:
        """Poll /v2/health/ready and every model's ready endpoint until ready, death or timeout."""
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = self.log_tail(15)
                where = f" (log: {self.log_path})" if self._log_file_arg else ""
                raise SegclipError(
                    f"tritonserver exited with code {code} before the models were ready{where}; last log lines:\n{tail}"
                )
            if self._get("/v2/health/ready") == 200 and all(self._get(f"/v2/models/{m}/ready") == 200 for m in self.models):
                return
            if time.monotonic() > deadline:
                tail = self.log_tail(15)
                raise SegclipError(
                    f"tritonserver did not get {', '.join(self.models)} ready within {self.startup_timeout:.0f}s; last log lines:\n{tail}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, timeout: Optional[float] = None) -> None:
        """SIGTERM the server (Triton unloads its models and exits), then make sure nothing of its
        process group is left: SIGTERM, then SIGKILL, to whatever remains."""
        proc = self.proc
        if proc is not None:
            pgid = proc.pid  # start_new_session: the server leads its own group
            wait = self.exit_timeout + 5 if timeout is None else timeout
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
            for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                if not process_group_pids(pgid):
                    break
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                end = time.monotonic() + grace
                while process_group_pids(pgid) and time.monotonic() < end:
                    time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._cleanup_workspace()

    def _cleanup_workspace(self) -> None:
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
            self.workspace = None
            if self._log_file_arg is None:
                self.log_path = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> str:
        how = ("tritonserver from PATH (native backends)" if self.mode == NATIVE else
               f"pip tritonserver from server env {self.server_env.path if self.server_env else '?'} "
               f"(python backend only: {MODEL_PYTHON})")
        return how


def serve_export(export_dir, repo, *, threads: int = 0, max_batch: Optional[int] = None, queue_delay_us: int = 100,
                 env=None, startup_timeout: float = 300.0, log=print) -> TritonServer:
    """A Triton server on free 127.0.0.1 ports serving a repository generated from ``export_dir``
    into ``repo`` (ONNX Runtime intra-op ``threads``): started and ready, or an exception.  The
    caller stops it (``segclip benchmark`` and ``benchmarks/run_targets.py`` start theirs here)."""
    from segclip.serving.repo import build_repository

    build_repository(export_dir, repo, intra_op_threads=threads, max_batch=max_batch, queue_delay_us=queue_delay_us, force=True)
    hp, gp, mp = free_ports(3)
    server = TritonServer(repo, http_port=hp, grpc_port=gp, metrics_port=mp, env=env, startup_timeout=startup_timeout)
    log(f"starting Triton on 127.0.0.1 (http {hp}, grpc {gp}) for {repo}")
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
