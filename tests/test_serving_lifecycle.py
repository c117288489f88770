"""Server lifecycle: segclip serve checks its input before starting, finds its env, reports a dying
server's log, and stops on SIGTERM leaving no process or port behind.  Fixtures: serving_fixtures.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import default_signals
from segclip.errors import SegclipError
from serving_fixtures import REPO_ROOT, SIZE, assert_gone, children, serve


def test_serve_rejects_bad_input_before_starting(repo, tmp_path):
    from segclip.serving.server import free_ports

    http, grpc, metrics = free_ports(3)
    ports = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--models", "segclip_python"]

    bad = tmp_path / "missing_file"
    shutil.copytree(repo, bad)
    (bad / "segclip_python" / "1" / "model.onnx").unlink()
    res = serve(["--repo", str(bad), *ports])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "segclip_python/1/model.onnx is missing" in res.stderr

    bad = tmp_path / "mismatch"
    shutil.copytree(repo, bad)
    cfg = bad / "segclip_python" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace(f"dims: {SIZE}\n  dims: {SIZE}\n  dims: 3", f"dims: {SIZE * 2}\n  dims: {SIZE * 2}\n  dims: 3", 1))
    res = serve(["--repo", str(bad), *ports])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0
    assert "input 'image' has dims [128, 128, 3] in the config but [64, 64, 3]" in res.stderr and "config.pbtxt" in res.stderr

    res = serve(["--repo", str(tmp_path / "nowhere"), *ports])
    assert res.exit_code == 2 and "does not exist" in res.stderr

    res = serve(["--repo", str(repo), *ports, "--models", "segclip_nope"])
    assert res.exit_code == 2 and "has no model 'segclip_nope'" in res.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", grpc))
        s.listen()
        res = serve(["--repo", str(repo), *ports])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0
    assert f"port {grpc} on 127.0.0.1 is already in use (--grpc-port)" in res.stderr


def test_serve_env_lookup_errors(repo, tmp_path, monkeypatch):
    from segclip.serving.env import find_server_env

    monkeypatch.setenv("SEGCLIP_TRITON_ENV", str(tmp_path / "noenv"))
    with pytest.raises(SegclipError, match=r"no Triton server environment at .*noenv \(\$SEGCLIP_TRITON_ENV\).*segclip serve-env"):
        find_server_env()
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "python").touch()
    site = fake / "lib" / "python3.11" / "site-packages"
    (site / "pytriton" / "tritonserver" / "bin").mkdir(parents=True)
    (site / "pytriton" / "tritonserver" / "bin" / "tritonserver").touch()
    (site / "pytriton" / "tritonserver" / "python_backend_stubs" / "3.11").mkdir(parents=True)
    (site / "pytriton" / "tritonserver" / "python_backend_stubs" / "3.11" / "triton_python_backend_stub").touch()
    (site / "numpy-2.1.0.dist-info").mkdir()
    (site / "onnxruntime-1.20.0.dist-info").mkdir()
    with pytest.raises(SegclipError, match="has numpy 2.1.0; .*needs numpy<2.*serve-env --path .* --force"):
        find_server_env(fake)
    if shutil.which("tritonserver") is None:  # the pip server: serve checks the env before starting
        from segclip.serving.server import free_ports

        ports = [str(p) for p in free_ports(3)]
        res = serve(["--repo", str(repo), "--env", str(fake), "--http-port", ports[0], "--grpc-port", ports[1],
                      "--metrics-port", ports[2]])
        assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "has numpy 2.1.0" in res.stderr


def test_server_that_dies_reports_its_log(repo, tmp_path, server_env):
    from segclip.serving.server import TritonServer, free_ports

    bad = tmp_path / "repo"
    shutil.copytree(repo, bad)
    model_py = bad / "segclip_python" / "1" / "model.py"
    model_py.write_text(model_py.read_text().replace("    def initialize(self, args):\n",
                                                     "    def initialize(self, args):\n        raise RuntimeError('boom-on-load')\n"))
    http, grpc, metrics = free_ports(3)
    srv = TritonServer(bad, http_port=http, grpc_port=grpc, metrics_port=metrics, env=server_env.path, native=False)
    with pytest.raises(SegclipError, match="(?s)tritonserver exited with code .*boom-on-load"):
        srv.start()
    assert not srv.is_alive()
    assert_gone(srv.proc.pid, "127.0.0.1", (http, grpc, metrics))


def test_serve_cli_runs_until_sigterm_and_leaves_nothing(repo, server_env, images, expected):
    from segclip.runtime.triton import TritonRunner
    from segclip.serving.server import free_ports

    http, grpc, metrics = free_ports(3)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               SEGCLIP_TRITON_ENV=str(server_env.path), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "segclip.cli", "serve", "--repo", str(repo), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=default_signals)
    lines = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("  log"):
                break
        text = "".join(lines)
        assert "ready in" in text, text
        assert f"grpc://127.0.0.1:{grpc}/segclip_python" in text and f"http://127.0.0.1:{http}" in text
        assert "only the python backend" in text
        (server_pid,) = [p for p in children(proc.pid)]
        with TritonRunner(f"http://127.0.0.1:{http}/segclip_python") as r:
            np.testing.assert_array_equal(r.infer(images[:2])["mask"], expected[:2])
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert_gone(server_pid, "127.0.0.1", (http, grpc, metrics))


def test_serve_env_unfinished_build_is_rebuilt_foreign_folder_refused(tmp_path):
    """A folder at the env path that is not a usable env is refused and left alone, unless segclip's
    own ``.building`` marker says an earlier build was interrupted: then it is rebuilt without --force
    (a killed install must not fail every later install)."""
    from segclip.serving.env import create_server_env

    env = tmp_path / "triton-env"
    env.mkdir()
    (env / "notes.txt").write_text("mine")
    with pytest.raises(SegclipError, match="exists but is not a usable server env.*--force"):
        create_server_env(env, echo=lambda m: None)
    assert (env / "notes.txt").read_text() == "mine"

    (tmp_path / "triton-env.building").touch()
    said = []
    # a Python that cannot run stops the rebuild before anything is deleted; the branch taken is what counts
    with pytest.raises(SegclipError, match="cannot run Python"):
        create_server_env(env, python=str(tmp_path / "no-python"), echo=said.append)
    assert any("left unfinished by an interrupted build" in m for m in said), said
