"""The server-side environment: a separate venv that holds Triton for the pip install path.

NVIDIA ships ``tritonserver`` (with the python backend) inside the ``nvidia-pytriton`` wheel.  Its
python-backend stub embeds the venv's Python and needs ``numpy<2`` there (with numpy 2 the responses
come back empty), while segclip itself runs on numpy 2, so the server gets its own venv:

    segclip serve-env                 # ~/.cache/segclip/triton-env, or $SEGCLIP_TRITON_ENV
    segclip serve-env --path /opt/segclip-triton --force

``find_server_env`` locates it the same way for ``segclip serve``, the tests and users: an explicit
path, else ``$SEGCLIP_TRITON_ENV``, else the default location.  Inside NVIDIA's container none of
this is needed: ``tritonserver`` is on PATH with its native backends.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from segclip.atomic import atomic_write_json
from segclip.errors import SegclipError

ENV_VAR = "SEGCLIP_TRITON_ENV"
DEFAULT_PATH = Path("~/.cache/segclip/triton-env")
RECORD = "segclip-triton-env.json"
REQUIREMENTS = ("numpy<2", "onnxruntime", "nvidia-pytriton")
STUB_VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")  # stubs nvidia-pytriton ships
CREATE_HINT = "create it with `segclip serve-env` (or point $SEGCLIP_TRITON_ENV at one)"


def default_env_path() -> Path:
    """Where ``serve-env`` writes and ``serve`` looks when no path is given."""
    v = os.environ.get(ENV_VAR)
    return Path(v).expanduser() if v else DEFAULT_PATH.expanduser()


@dataclass(frozen=True)
class ServerEnv:
    """A checked server environment: where its Python, tritonserver and backend pieces are."""

    path: Path
    python: Path
    python_version: str  # "3.11"
    site_packages: Path
    numpy_version: Optional[str]
    onnxruntime_version: Optional[str]
    pytriton_version: Optional[str]

    @property
    def triton_dir(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def tritonserver(self) -> Path:
        return self.triton_dir / "bin" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def python_backend_dir(self) -> Path:
        return self.triton_dir / "backends" / "python"

    @property
    def stub(self) -> Path:
        return self.triton_dir / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    def describe(self) -> str:
        return (f"{self.path} (python {self.python_version}, numpy {self.numpy_version}, "
                f"onnxruntime {self.onnxruntime_version}, nvidia-pytriton {self.pytriton_version})")

    def process_env(self, base: Optional[dict] = None) -> dict:
        """Environment for the tritonserver process, as pytriton sets it: the bundled libraries on
        LD_LIBRARY_PATH and the venv's bin first on PATH, so the stub's embedded Python is the venv's."""
        env = dict(os.environ if base is None else base)
        libs = str(self.libs_dir)
        env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}:{libs}" if env.get("LD_LIBRARY_PATH") else libs
        env["PATH"] = f"{self.path / 'bin'}:{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)  # the main env's packages (numpy 2) must not leak into the stub
        env.pop("PYTHONHOME", None)
        env.pop("VIRTUAL_ENV", None)
        return env


def _dist_version(site: Path, name: str) -> Optional[str]:
    """Version of an installed distribution from its .dist-info folder name (no subprocess)."""
    pat = re.compile(rf"^{re.escape(name)}-([^-]+)\.dist-info$", re.IGNORECASE)
    for p in site.glob("*.dist-info"):
        m = pat.match(p.name)
        if m:
            return m.group(1)
    return None


def _major(v: Optional[str]) -> int:
    try:
        return int(str(v).split(".")[0])
    except ValueError:
        return -1


def inspect_env(path, source: str = "") -> ServerEnv:
    """Check that ``path`` is a usable server env; raise a one-line SegclipError naming what is wrong."""
    path = Path(path).expanduser()
    where = f"server env {path}{f' (from {source})' if source else ''}"
    if not path.is_dir():
        raise SegclipError(f"no Triton server environment at {path}{f' (from {source})' if source else ''}; {CREATE_HINT}")
    python = path / "bin" / "python"
    if not python.exists():
        raise SegclipError(f"{where} is not a virtualenv (no bin/python); recreate it with `segclip serve-env --path {path} --force`")
    sites = sorted(path.glob("lib/python3.*/site-packages"))
    if not sites:
        raise SegclipError(f"{where} has no lib/python3.*/site-packages; recreate it with `segclip serve-env --path {path} --force`")
    site = sites[-1]
    pyver = site.parent.name.replace("python", "")
    env = ServerEnv(
        path=path, python=python, python_version=pyver, site_packages=site,
        numpy_version=_dist_version(site, "numpy"),
        onnxruntime_version=_dist_version(site, "onnxruntime") or _dist_version(site, "onnxruntime_gpu"),
        pytriton_version=_dist_version(site, "nvidia_pytriton"),
    )
    fix = f"run `segclip serve-env --path {path} --force`"
    if not env.tritonserver.exists():
        raise SegclipError(f"{where} has no bundled tritonserver ({env.tritonserver}); install nvidia-pytriton there or {fix}")
    if not env.stub.exists():
        raise SegclipError(
            f"{where}: nvidia-pytriton ships no python-backend stub for Python {pyver}; {fix} with --python pointing at Python "
            f"{STUB_VERSIONS[0]}..{STUB_VERSIONS[-1]}"
        )
    if env.numpy_version is None:
        raise SegclipError(f"{where} has no numpy; the python backend needs numpy<2 there; {fix}")
    if _major(env.numpy_version) >= 2:
        raise SegclipError(
            f"{where} has numpy {env.numpy_version}; Triton's python-backend stub needs numpy<2 (with numpy 2 responses come "
            f"back empty); {fix}"
        )
    if env.onnxruntime_version is None:
        raise SegclipError(f"{where} has no onnxruntime (segclip_python runs the model with it); {fix}")
    return env


def env_candidate(path=None) -> tuple:
    """(path, where it came from) of the server env ``segclip serve`` would use; not checked."""
    if path is not None:
        return Path(path).expanduser(), "--env"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    return DEFAULT_PATH.expanduser(), f"default location; ${ENV_VAR} is not set"


def find_server_env(path=None) -> ServerEnv:
    """The server env for ``segclip serve``: ``path``, else $SEGCLIP_TRITON_ENV, else the default.

    Raises a one-line SegclipError saying where it looked and how to create one.
    """
    p, source = env_candidate(path)
    if not p.exists():
        raise SegclipError(f"no tritonserver on PATH and no Triton server environment at {p} ({source}); {CREATE_HINT}")
    return inspect_env(p, source)


def check_stub_libraries(env: ServerEnv) -> None:
    """The stub embeds libpython<ver>.so; a Python built without shared libraries cannot run it."""
    ldd = shutil.which("ldd")
    if not ldd:
        return
    env_vars = env.process_env()
    try:
        out = subprocess.run([ldd, str(env.stub)], capture_output=True, text=True, env=env_vars, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if missing:
        raise SegclipError(
            f"server env {env.path}: the python-backend stub cannot load {', '.join(missing)}; install the shared Python "
            f"library (e.g. apt-get install libpython{env.python_version}) or recreate the env with a Python built with "
            f"--enable-shared (segclip serve-env --python ... --force)"
        )


def _python_version(python: str) -> str:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise SegclipError(f"serve-env: cannot run Python {python!r}: {e}") from None
    if out.returncode != 0:
        raise SegclipError(f"serve-env: cannot run Python {python!r}: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip()


def create_server_env(path=None, *, force: bool = False, python: Optional[str] = None,
                      pip_args: tuple = (), echo=print) -> ServerEnv:
    """Create (or reuse) the server env: a venv with numpy<2, onnxruntime and nvidia-pytriton.

    An existing env that passes the checks is kept (so install scripts can run this repeatedly);
    ``force`` rebuilds it.  A folder that is there but is not a usable env is replaced only with
    ``force``.  The env is recorded in ``<path>/segclip-triton-env.json`` when complete.
    """
    path = Path(path).expanduser() if path is not None else default_env_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two installs at once (a developer's and CI's, both aiming at the default path) take turns: the
    # second finds the first's finished env instead of a half-built one.
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _create_locked(path, force, python, pip_args, echo)


def _create_locked(path: Path, force: bool, python: Optional[str], pip_args: tuple, echo) -> ServerEnv:
    # Marks a build in progress; still there after a killed build, so that folder is known to be
    # segclip's own unfinished env and is rebuilt without --force.
    building = path.with_name(path.name + ".building")
    if path.exists() and not force:
        try:
            env = inspect_env(path)
        except SegclipError as e:
            if not building.exists():
                raise SegclipError(f"{path} exists but is not a usable server env ({e}); pass --force to rebuild it") from None
            echo(f"server env {path} was left unfinished by an interrupted build: rebuilding it")
        else:
            echo(f"server env already there: {env.describe()} (pass --force to rebuild)")
            return env

    python = python or sys.executable
    ver = _python_version(python)
    if ver not in STUB_VERSIONS:
        raise SegclipError(
            f"serve-env: Python {ver} ({python}) has no Triton python-backend stub; pass --python with a Python "
            f"{STUB_VERSIONS[0]}..{STUB_VERSIONS[-1]}"
        )
    if path.exists():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    building.touch()
    t0 = time.time()
    echo(f"creating server env {path} with Python {ver} ({python})")
    steps = [
        [python, "-m", "venv", "--clear", str(path)],
        [str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--retries", "10",
         *pip_args, *REQUIREMENTS],
    ]
    for cmd in steps:
        # A dropped registry connection is the usual failure of a fresh install: try the step again.
        for attempt in range(3):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(5 * (attempt + 1))
        if r.returncode != 0:
            tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            raise SegclipError(f"serve-env: `{' '.join(cmd[:4])} ...` failed in {path}: {tail}")
    env = inspect_env(path)
    check_stub_libraries(env)
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": python,
        "python_version": env.python_version,
        "requirements": list(REQUIREMENTS),
        "numpy": env.numpy_version,
        "onnxruntime": env.onnxruntime_version,
        "nvidia-pytriton": env.pytriton_version,
        "tritonserver": str(env.tritonserver),
    }
    atomic_write_json(path / RECORD, record)
    building.unlink(missing_ok=True)
    echo(f"server env ready in {time.time() - t0:.0f}s: {env.describe()}")
    return env
