"""Fixtures, constants and helpers of the serving tests (a pytest plugin, loaded by conftest's
``pytest_plugins``), session-wide so that one export, one repository and one real tritonserver (the pip
one, python backend) serve every test_serving_*.py module.

The server env is found exactly as ``segclip serve`` finds it ($SEGCLIP_TRITON_ENV, else
~/.cache/segclip/triton-env, made by ``segclip serve-env``); tests needing a server skip only when
there is none at all.  Small preset, 64 px, max batch 4.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import PARITY_MAX, PARITY_SIZE, parity_images, parity_problems

SIZE = PARITY_SIZE
MAX_BATCH = 4
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- helpers ----------------------------------------------------------------------------------------
def assert_varied(masks):
    """Reference masks a backend comparison can fail on: >= 3 classes with region boundaries in every
    image, and every image's mask differs from the next one's (so a response sent to the wrong
    request, or a batch split at the wrong place, changes the result)."""
    assert parity_problems(masks) == []
    for i in range(len(masks) - 1):
        assert (masks[i] != masks[i + 1]).mean() > 0.05, i


def assert_gone(pgid: int, host: str, ports) -> None:
    from segclip.serving.server import port_in_use, process_group_pids

    assert process_group_pids(pgid) == [], f"processes left in group {pgid}"
    for p in ports:
        assert not port_in_use(host, p), f"port {p} still bound after stop"


def onnx_tensors(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        return onnx.helper.tensor_dtype_to_np_dtype(t.elem_type), [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]

    return ({v.name: spec(v) for v in m.graph.input if v.name not in inits}, {v.name: spec(v) for v in m.graph.output})


def parse_config(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def serve(args):
    from click.testing import CliRunner

    from segclip.cli import main

    return CliRunner().invoke(main, ["serve", *args])


def children(pid: int) -> list:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                out.append(int(d.name))
    return out


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def serving_export(trained_checkpoint, tmp_path_factory):
    """The parity model (several classes per image): a server that mixes up requests or mis-splits
    a batch gives other masks, which a one-class random model would hide."""
    from segclip.export import export

    d = tmp_path_factory.mktemp("serving") / "export"
    export(trained_checkpoint, d, size=SIZE, batch=(1, 1, MAX_BATCH), parity_images=2, log=lambda *a, **k: None,
           tune=False)  # no speed record: Triton serves the FP32 graph the tests compare with
    return d


@pytest.fixture(scope="session")
def repo(serving_export, tmp_path_factory):
    from segclip.serving.repo import build_repository

    d = tmp_path_factory.mktemp("serving_repo") / "repo"
    build_repository(serving_export, d, queue_delay_us=2000, intra_op_threads=2)
    return d


@pytest.fixture(scope="session")
def local(serving_export):
    from segclip.runtime import load_runner

    with load_runner(serving_export / "model.onnx", providers="cpu", threads=2) as r:
        yield r


@pytest.fixture(scope="session")
def images():
    return parity_images(PARITY_MAX)


@pytest.fixture(scope="session")
def expected(local, images):
    masks = np.concatenate([local.infer(images[i:i + 4])["mask"] for i in range(0, len(images), 4)])
    assert_varied(masks)
    return masks


@pytest.fixture(scope="session")
def server_env():
    """The server env users get (segclip serve-env); skip only when none exists at all."""
    from segclip.serving.env import env_candidate, find_server_env

    path, source = env_candidate()
    if not path.exists():
        pytest.skip(f"no Triton server env at {path} ({source}); create one with `segclip serve-env`")
    return find_server_env()  # exists but unusable -> the test fails with the reason


@pytest.fixture(scope="session")
def server(repo, server_env):
    """The one tritonserver every test_serving_*.py module shares (started on first use)."""
    from segclip.serving.server import TritonServer, free_ports

    http, grpc, metrics = free_ports(3)
    srv = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, env=server_env.path, native=False,
                       startup_timeout=180)
    srv.start()
    yield srv
    pgid = srv.pid
    srv.stop()
    assert_gone(pgid, "127.0.0.1", (http, grpc, metrics))


@pytest.fixture(scope="session")
def trained_repo(serving_export, tmp_path_factory):
    """The parity model's export (several classes per window, real boundaries) and its own repository."""
    from segclip.serving.repo import build_repository

    d = tmp_path_factory.mktemp("serving_trained")
    build_repository(serving_export, d / "repo", queue_delay_us=2000, intra_op_threads=1)
    return serving_export, d / "repo"


@pytest.fixture(scope="session")
def scene_repo(scene_export_dir, tmp_path_factory):
    """A repository of the metadata-prompt export (export_fixtures): the scene_id input."""
    from segclip.serving.repo import build_repository

    d = tmp_path_factory.mktemp("scene_repo") / "repo"
    build_repository(scene_export_dir[0], d, models=["segclip_onnx", "segclip_python"], intra_op_threads=2)
    return d
