"""Serving: generated Triton repositories, a real tritonserver (the pip one, python backend), the
TritonRunner client over HTTP and gRPC, concurrency, malformed requests, and ``segclip serve``.

The server env is found exactly as ``segclip serve`` finds it ($SEGCLIP_TRITON_ENV, else
~/.cache/segclip/triton-env, made by ``segclip serve-env``); tests needing a server skip only when
there is none at all.  Small preset, 64 px, max batch 4.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PARITY_MAX, PARITY_SIZE, parity_images, parity_problems
from segclip.errors import SegclipError

pytest_plugins = ["test_export_helpers"]  # the trained scene checkpoint/export (metadata prompts)

SIZE = PARITY_SIZE
MAX_BATCH = 4
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_dir(trained_checkpoint, tmp_path_factory):
    """The parity model (several classes per image): a server that mixes up requests or mis-splits
    a batch gives other masks, which a one-class random model would hide."""
    from segclip.export import export

    d = tmp_path_factory.mktemp("serving") / "export"
    export(trained_checkpoint, d, size=SIZE, batch=(1, 1, MAX_BATCH), parity_images=2, log=lambda *a, **k: None)
    return d


@pytest.fixture(scope="module")
def repo(export_dir, tmp_path_factory):
    from segclip.serving.repo import build_repository

    d = tmp_path_factory.mktemp("serving_repo") / "repo"
    build_repository(export_dir, d, queue_delay_us=2000, intra_op_threads=2)
    return d


@pytest.fixture(scope="module")
def local(export_dir):
    from segclip.runtime import load_runner

    with load_runner(export_dir / "model.onnx", providers="cpu", threads=2) as r:
        yield r


@pytest.fixture(scope="module")
def images():
    return parity_images(PARITY_MAX)


def assert_varied(masks):
    """Reference masks a backend comparison can fail on: >= 3 classes with region boundaries in every
    image, and every image's mask differs from the next one's (so a response sent to the wrong
    request, or a batch split at the wrong place, changes the result)."""
    assert parity_problems(masks) == []
    for i in range(len(masks) - 1):
        assert (masks[i] != masks[i + 1]).mean() > 0.05, i


@pytest.fixture(scope="module")
def expected(local, images):
    masks = np.concatenate([local.infer(images[i:i + 4])["mask"] for i in range(0, len(images), 4)])
    assert_varied(masks)
    return masks


@pytest.fixture(scope="module")
def server_env():
    """The server env users get (segclip serve-env); skip only when none exists at all."""
    from segclip.serving.env import env_candidate, find_server_env

    path, source = env_candidate()
    if not path.exists():
        pytest.skip(f"no Triton server env at {path} ({source}); create one with `segclip serve-env`")
    return find_server_env()  # exists but unusable -> the test fails with the reason


def _assert_gone(pgid: int, host: str, ports) -> None:
    from segclip.serving.server import port_in_use, process_group_pids

    assert process_group_pids(pgid) == [], f"processes left in group {pgid}"
    for p in ports:
        assert not port_in_use(host, p), f"port {p} still bound after stop"


@pytest.fixture(scope="module")
def server(repo, server_env):
    from segclip.serving.server import TritonServer, free_ports

    http, grpc, metrics = free_ports(3)
    srv = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, env=server_env.path, native=False,
                       startup_timeout=180)
    srv.start()
    yield srv
    pgid = srv.pid
    srv.stop()
    _assert_gone(pgid, "127.0.0.1", (http, grpc, metrics))


# ---- repository generation --------------------------------------------------------------------------
def _onnx_tensors(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        return onnx.helper.tensor_dtype_to_np_dtype(t.elem_type), [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]

    return ({v.name: spec(v) for v in m.graph.input if v.name not in inits}, {v.name: spec(v) for v in m.graph.output})


def _parse(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def test_generated_configs_parse_and_match_onnx(repo, export_dir):
    from tritonclient.grpc import model_config_pb2 as mc

    from segclip.export import read_manifest
    from segclip.signature import Signature, triton_config_type

    sig = Signature.from_dict(read_manifest(export_dir)["signature"])
    assert sorted(p.name for p in repo.iterdir()) == ["segclip_onnx", "segclip_python"]  # no engine: no segclip_trt
    for name, platform in (("segclip_onnx", "onnxruntime_onnx"), ("segclip_python", "")):
        cfg = _parse(repo / name / "config.pbtxt")
        assert cfg.name == name and cfg.platform == platform
        assert cfg.backend == ("python" if name == "segclip_python" else "")
        assert cfg.max_batch_size == MAX_BATCH
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
        onnx_file = repo / name / "1" / "model.onnx"
        ins, outs = _onnx_tensors(onnx_file)
        for tensors, onnx_t, specs in ((cfg.input, ins, sig.inputs), (cfg.output, outs, sig.outputs)):
            assert [t.name for t in tensors] == [s.name for s in specs] and sorted(onnx_t) == sorted(s.name for s in specs)
            for t, s in zip(tensors, specs):
                assert mc.DataType.Name(t.data_type) == triton_config_type(s.dtype)
                np_dtype, dims = onnx_t[t.name]
                assert np.dtype(np_dtype).name == s.dtype
                assert dims[0] is None  # dynamic batch
                assert len(t.dims) == len(dims) - 1
                assert all(o is None or o == c for c, o in zip(t.dims, dims[1:])), (t.name, list(t.dims), dims)
                assert list(t.dims) == list(s.shape[1:])
        (w,) = cfg.model_warmup
        assert w.batch_size == 1 and list(w.inputs["image"].dims) == [SIZE, SIZE, 3]
        assert w.inputs["image"].data_type == mc.TYPE_UINT8
        assert cfg.output[0].label_filename == "labels.txt"
        assert (repo / name / "labels.txt").read_text().split("\n")[:-1] == list(sig.classes)
        assert Signature.from_json(cfg.parameters["segclip_signature"].string_value).classes == sig.classes
    assert (repo / "segclip_python" / "1" / "model.py").is_file()


def test_repository_overwrite_needs_force_and_checks(export_dir, repo, tmp_path):
    from segclip.serving.repo import build_repository, check_repository

    d = tmp_path / "r"
    build_repository(export_dir, d, models=["segclip_python"], max_batch=2, instances=2)
    with pytest.raises(SegclipError, match="already has segclip_python; pass --force"):
        build_repository(export_dir, d, models=["segclip_python"])
    build_repository(export_dir, d, models=["segclip_python"], force=True, queue_delay_us=0)
    cfg = _parse(d / "segclip_python" / "config.pbtxt")
    assert cfg.max_batch_size == MAX_BATCH and cfg.dynamic_batching.max_queue_delay_microseconds == 0
    assert not [p for p in tmp_path.rglob(".*partial*")], "temporary folders left behind"
    assert set(check_repository(repo)) == {"segclip_onnx", "segclip_python"}
    with pytest.raises(SegclipError, match="has no passing TensorRT engine"):
        build_repository(export_dir, tmp_path / "t", models=["segclip_trt"])


def test_tensorrt_model_from_engine_entry(export_dir, tmp_path):
    """segclip_trt from an export whose engine passed: platform, plan file, GPU instances."""
    from tritonclient.grpc import model_config_pb2 as mc

    from segclip.contract import read_manifest, write_manifest
    from segclip.serving.repo import build_repository, check_repository

    exp = tmp_path / "exp"
    shutil.copytree(export_dir, exp)
    m = read_manifest(exp)
    (exp / "model.plan").write_bytes(b"not a real engine")
    m["artifacts"]["tensorrt"] = {"file": "model.plan", "format": "tensorrt", "precision": "fp16", "status": "ok",
                                  "compute_capability": "8.9",
                                  "profile": {"min": [1, SIZE, SIZE, 3], "opt": [1, SIZE, SIZE, 3], "max": [MAX_BATCH, SIZE, SIZE, 3]}}
    write_manifest(exp, m)
    written = build_repository(exp, tmp_path / "repo", kind="cpu")
    assert set(written) == {"segclip_onnx", "segclip_trt", "segclip_python"}
    cfg = _parse(tmp_path / "repo" / "segclip_trt" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert cfg.parameters["segclip_precision"].string_value == "fp16"
    assert (tmp_path / "repo" / "segclip_trt" / "1" / "model.plan").read_bytes() == b"not a real engine"
    with pytest.raises(SegclipError, match="exceeds the TensorRT profile"):
        build_repository(exp, tmp_path / "repo", models=["segclip_trt"], max_batch=MAX_BATCH * 2, force=True)

    check_repository(tmp_path / "repo", ["segclip_trt"])


def test_triton_repo_and_serve_env_cli(export_dir, tmp_path, server_env):
    from click.testing import CliRunner

    from segclip.cli import main

    out = tmp_path / "repo"
    args = ["triton-repo", str(export_dir), "--out", str(out), "--models", "segclip_python", "--max-batch", "2", "--instances", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    cfg = _parse(out / "segclip_python" / "config.pbtxt")
    assert cfg.max_batch_size == 2 and cfg.instance_group[0].count == 2
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "pass --force" in res.stderr
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0
    res = CliRunner().invoke(main, ["triton-repo", str(tmp_path / "noexport"), "--out", str(out)])
    assert res.exit_code == 2 and "manifest.json" in res.stderr
    # an existing, usable env is reused (install scripts may run serve-env again)
    res = CliRunner().invoke(main, ["serve-env", "--path", str(server_env.path)])
    assert res.exit_code == 0 and "already there" in res.stderr and res.stdout.strip() == str(server_env.path)


# ---- a real server ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_outputs_equal_local_runner(server, protocol, images, expected, local):
    from segclip.runtime import load_runner
    from segclip.runtime.triton import TritonRunner

    with load_runner(server.model_url("segclip_python", protocol)) as r:
        assert isinstance(r, TritonRunner)
        assert r.signature == local.signature  # built from the server's config, same as the export's
        assert r.model_max_batch == MAX_BATCH and r.describe()["protocol"] == protocol
        i = 0
        for n in (1, 3, MAX_BATCH, MAX_BATCH + 2):  # the last one is split into two requests
            out = r.infer(images[i:i + n])
            assert out["mask"].dtype == np.uint8 and out["mask"].shape == (n, SIZE, SIZE)
            np.testing.assert_array_equal(out["mask"], expected[i:i + n])
            i = (i + n) % (len(images) - MAX_BATCH - 2)


def test_shared_memory_outputs_equal_local_runner(server, images, expected):
    from segclip.runtime.triton import TritonRunner

    with TritonRunner(server.model_url("segclip_python", "grpc"), shm=True) as r:
        for n in (1, 3):
            np.testing.assert_array_equal(r.infer(images[:n])["mask"], expected[:n])
    status = TritonRunner(server.model_url("segclip_python", "http"))
    assert status.client.get_system_shared_memory_status() == []  # regions unregistered on close
    status.close()


def test_200_concurrent_grpc_requests_in_mixed_batches(server, images, expected):
    """200 requests of 1, 2 or 3 images from 8 clients: the dynamic batcher merges requests of
    different sizes into one execution, the python backend splits the result back, and every
    response must be the masks of exactly that request's images."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aio
    from tritonclient.grpc import InferInput

    n_req, concurrency = 200, 8
    address = server.grpc_url[len("grpc://"):]
    plan = [((k * 5) % (len(images) - 2), 1 + k % 3) for k in range(n_req)]  # (first image, batch size)

    def counts():
        with grpcclient.InferenceServerClient(address) as c:
            (st,) = c.get_inference_statistics("segclip_python", as_json=True)["model_stats"]
        return int(st.get("execution_count", 0)), int(st.get("inference_count", 0))

    async def run():
        client = aio.InferenceServerClient(address)
        failures, mismatches, done = [], [], []
        queue = asyncio.Queue()
        for k in range(n_req):
            queue.put_nowait(k)

        async def worker():
            while not queue.empty():
                k = queue.get_nowait()
                j, n = plan[k]
                inp = InferInput("image", [n, SIZE, SIZE, 3], "UINT8")
                inp.set_data_from_numpy(images[j:j + n])
                try:
                    res = await client.infer("segclip_python", [inp])
                except Exception as e:  # noqa: BLE001 - counted and reported
                    failures.append(f"{k}: {e}")
                    continue
                if not np.array_equal(res.as_numpy("mask"), expected[j:j + n]):
                    mismatches.append(k)
                done.append(k)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - t0
        await client.close()
        return failures, mismatches, done, elapsed

    execs0, infs0 = counts()
    failures, mismatches, done, elapsed = asyncio.run(run())
    execs, infs = counts()
    assert failures == [] and mismatches == [] and len(done) == n_req
    assert infs - infs0 == sum(n for _, n in plan)
    assert execs - execs0 < n_req, "no requests were batched together: the split was not exercised"
    print(f"200 requests at concurrency 8: {elapsed:.2f}s, {n_req / elapsed:.1f} req/s, "
          f"{execs - execs0} executions")


def test_malformed_requests_get_errors_and_server_keeps_serving(server, images, expected):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    g = grpcclient.InferenceServerClient(server.grpc_url[len("grpc://"):])
    h = httpclient.InferenceServerClient(server.http_url[len("http://"):])

    def good(client, mod):
        inp = mod.InferInput("image", [1, SIZE, SIZE, 3], "UINT8")
        inp.set_data_from_numpy(images[:1])
        np.testing.assert_array_equal(client.infer("segclip_python", [inp]).as_numpy("mask"), expected[:1])

    def inp(mod, name, arr, wire):
        t = mod.InferInput(name, list(arr.shape), wire)
        t.set_data_from_numpy(arr)
        return t

    bad_cases = {
        "dtype": lambda mod: [inp(mod, "image", np.zeros((1, SIZE, SIZE, 3), np.float32), "FP32")],
        "shape": lambda mod: [inp(mod, "image", np.zeros((1, SIZE // 2, SIZE, 3), np.uint8), "UINT8")],
        "channels": lambda mod: [inp(mod, "image", np.zeros((1, SIZE, SIZE, 4), np.uint8), "UINT8")],
        "batch": lambda mod: [inp(mod, "image", np.zeros((MAX_BATCH + 1, SIZE, SIZE, 3), np.uint8), "UINT8")],
        "name": lambda mod: [inp(mod, "img", np.zeros((1, SIZE, SIZE, 3), np.uint8), "UINT8")],
        "missing": lambda mod: [],
    }
    for client, mod in ((g, grpcclient), (h, httpclient)):
        for what, make in bad_cases.items():
            with pytest.raises(InferenceServerException) as ei:
                client.infer("segclip_python", make(mod))
            assert ei.value.message(), what
            good(client, mod)
    assert g.is_model_ready("segclip_python")
    g.close()
    h.close()


def test_runner_errors_are_one_line(server):
    from segclip.runtime import load_runner
    from segclip.serving.server import free_port

    cases = [
        (f"grpc://127.0.0.1:{server.grpc_port}/nope", "model 'nope' is not ready"),
        (f"http://127.0.0.1:{server.http_port}/nope", "model 'nope' is not ready"),
        (f"grpc://127.0.0.1:{free_port()}/segclip_python", "cannot reach Triton"),
        (f"grpc://127.0.0.1:{server.grpc_port}", "expected grpc://HOST:PORT/MODEL"),
    ]
    for url, msg in cases:
        with pytest.raises(SegclipError, match=msg) as ei:
            load_runner(url)
        assert "\n" not in str(ei.value)
    r = load_runner(server.model_url("segclip_python"))
    with pytest.raises(SegclipError, match="exported for 64x64"):
        r.infer(np.zeros((1, 32, 32, 3), np.uint8))
    r.close()


def test_predict_cli_with_grpc_model(server, images, expected, local, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from segclip.cli import main

    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(images[i]).save(p)
        paths.append(str(p))
    big = tmp_path / "big.png"  # larger than the model: predict tiles it, every tile through Triton
    Image.fromarray(np.tile(images[2], (2, 2, 1))[: SIZE + 32, : SIZE + 32]).save(big)
    res = CliRunner().invoke(main, ["predict", "--model", server.model_url("segclip_python"), *paths, str(big),
                                    "--out", str(tmp_path / "pred"), "--overlap", "0.25"])
    assert res.exit_code == 0, res.output
    for i in range(2):
        mask = np.asarray(Image.open(tmp_path / "pred" / f"img{i}_mask.png"))
        np.testing.assert_array_equal(mask, expected[i])
    # the tiled one by content: 96 px in 64 px windows at overlap 0.25 start at 0 and 32, so the top-left
    # and bottom-right 32 px corners are each covered by one window alone and carry its prediction
    big_img = np.asarray(Image.open(big))
    big_mask = np.asarray(Image.open(tmp_path / "pred" / "big_mask.png"))
    assert big_mask.shape == (SIZE + 32, SIZE + 32)
    np.testing.assert_array_equal(big_mask[:32, :32], expected[2][:32, :32])  # window (0, 0) is images[2]
    corner = local.infer(np.ascontiguousarray(big_img[None, 32:, 32:]))["mask"][0]
    np.testing.assert_array_equal(big_mask[SIZE:, SIZE:], corner[32:, 32:])



@pytest.fixture(scope="module")
def trained_repo(export_dir, tmp_path_factory):
    """The parity model's export (several classes per window, real boundaries) and its own repository."""
    from segclip.serving.repo import build_repository

    d = tmp_path_factory.mktemp("serving_trained")
    build_repository(export_dir, d / "repo", queue_delay_us=2000, intra_op_threads=1)
    return export_dir, d / "repo"


def test_predict_scene_over_two_endpoints_equals_onnx_runtime(trained_repo, server_env, tmp_path):
    """One georeferenced scene, windows spread over two Triton servers (retrying when one dies)
    == the same scene predicted in-process with ONNX Runtime; the parity model, so every window
    has several classes and boundaries."""
    import rasterio
    from rasterio.transform import Affine

    from conftest import parity_images
    from segclip.cli.export_cmds import predict_paths
    from segclip.engine.predict import Predictor
    from segclip.runtime import load_runner
    from segclip.runtime.pool import open_pool
    from segclip.serving.server import TritonServer, free_ports

    export_dir, repo = trained_repo
    tiles = parity_images(4)  # a 2 x 2 mosaic of the parity images, cropped so windows straddle them
    img = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)[: 2 * SIZE - 9, : 2 * SIZE - 3]
    h, w = img.shape[:2]
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", height=h, width=w, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.3, 0, 600000, 0, -0.3, 5000000)) as d:
        d.write(np.moveaxis(img, -1, 0))

    def mask(path):
        with rasterio.open(path) as d:
            return d.read(1), d.crs, d.transform

    quiet = dict(progress=False, log=lambda *a: None)
    res, errors = predict_paths([export_dir / "model.onnx"], [scene], tmp_path / "local", **quiet)
    assert not errors
    want, crs, transform = mask(tmp_path / "local" / "scene_mask.tif")
    assert len(np.unique(want)) >= 3  # a scene worth comparing

    servers = []
    try:
        for _ in range(2):
            http, grpc, metrics = free_ports(3)
            servers.append(TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, env=server_env.path,
                                        native=False, startup_timeout=180).start())
        urls = [s.model_url("segclip_python") for s in servers]
        res, errors = predict_paths(urls, [scene], tmp_path / "two", batch=2, in_flight=2, **quiet)
        assert not errors and res[0]["windows"] >= 4
        got, got_crs, got_transform = mask(tmp_path / "two" / "scene_mask.tif")
        np.testing.assert_array_equal(got, want)
        assert (got_crs, got_transform) == (crs, transform)

        pool, errors = open_pool(urls, load_runner, in_flight=2)
        with pool:
            servers[1].stop()  # every request it gets from now on fails and is retried on the first
            res, errors = Predictor(pool, (SIZE, SIZE), batch=1, progress=False, log=lambda *a: None).run(
                [scene], tmp_path / "retry")
            stats = {s["endpoint"]: s for s in pool.stats()}
        assert not errors
        np.testing.assert_array_equal(mask(tmp_path / "retry" / "scene_mask.tif")[0], want)
        assert stats[urls[1]]["last_error"] and stats[urls[1]]["requests"] >= 1
        assert stats[urls[0]]["last_error"] is None
    finally:
        for s in servers:
            s.stop()


# ---- segclip serve ----------------------------------------------------------------------------------
def _serve(args):
    from click.testing import CliRunner

    from segclip.cli import main

    return CliRunner().invoke(main, ["serve", *args])


def test_serve_rejects_bad_input_before_starting(repo, tmp_path):
    from segclip.serving.server import free_ports

    http, grpc, metrics = free_ports(3)
    ports = ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--models", "segclip_python"]

    bad = tmp_path / "missing_file"
    shutil.copytree(repo, bad)
    (bad / "segclip_python" / "1" / "model.onnx").unlink()
    res = _serve(["--repo", str(bad), *ports])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "segclip_python/1/model.onnx is missing" in res.stderr

    bad = tmp_path / "mismatch"
    shutil.copytree(repo, bad)
    cfg = bad / "segclip_python" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace(f"dims: {SIZE}\n  dims: {SIZE}\n  dims: 3", f"dims: {SIZE * 2}\n  dims: {SIZE * 2}\n  dims: 3", 1))
    res = _serve(["--repo", str(bad), *ports])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0
    assert "input 'image' has dims [128, 128, 3] in the config but [64, 64, 3]" in res.stderr and "config.pbtxt" in res.stderr

    res = _serve(["--repo", str(tmp_path / "nowhere"), *ports])
    assert res.exit_code == 2 and "does not exist" in res.stderr

    res = _serve(["--repo", str(repo), *ports, "--models", "segclip_nope"])
    assert res.exit_code == 2 and "has no model 'segclip_nope'" in res.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", grpc))
        s.listen()
        res = _serve(["--repo", str(repo), *ports])
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
        res = _serve(["--repo", str(repo), "--env", str(fake), "--http-port", ports[0], "--grpc-port", ports[1],
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
    _assert_gone(srv.proc.pid, "127.0.0.1", (http, grpc, metrics))


def _children(pid: int) -> list:
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


def test_serve_cli_runs_until_sigterm_and_leaves_nothing(repo, server_env, images, expected):
    from segclip.runtime.triton import TritonRunner
    from segclip.serving.server import free_ports

    http, grpc, metrics = free_ports(3)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               SEGCLIP_TRITON_ENV=str(server_env.path), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "segclip.cli", "serve", "--repo", str(repo), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
        (server_pid,) = [p for p in _children(proc.pid)]
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
    _assert_gone(server_pid, "127.0.0.1", (http, grpc, metrics))


# ---- metadata prompts: scene_id through Triton -------------------------------------------------------
@pytest.fixture(scope="module")
def scene_repo(scene_export_dir, tmp_path_factory):
    from segclip.serving.repo import build_repository

    d = tmp_path_factory.mktemp("scene_repo") / "repo"
    build_repository(scene_export_dir[0], d, models=["segclip_onnx", "segclip_python"], intra_op_threads=2)
    return d


def test_scene_configs_include_the_optional_input(scene_repo, repo):
    from segclip.serving.repo import check_repository

    cfgs = check_repository(scene_repo)
    for name, cfg in cfgs.items():
        sc = {t.name: t for t in cfg.input}["scene_id"]
        assert (list(sc.dims), list(sc.reshape.shape), sc.HasField("reshape")) == ([1], [], True)
        assert sc.optional == (name == "segclip_python")  # the python model fills the default itself
        assert cfg.parameters["segclip_scene_default"].string_value == "0"
        assert "scene_id" in cfg.model_warmup[0].inputs
    assert "scene_id" not in {t.name for t in _parse(repo / "segclip_python" / "config.pbtxt").input}


def test_triton_requests_with_scene_id(scene_repo, scene_export_dir, server_env):
    """A real tritonserver: TritonRunner per scene equals the local ONNX runner; a raw request without
    scene_id gets the generic scene; an out-of-range id is rejected and the server keeps serving."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from segclip.runtime import load_runner
    from segclip.serving.server import TritonServer, free_ports
    from test_export_helpers import images as scene_images

    x = scene_images(3)
    with load_runner(scene_export_dir[0], format="onnx", providers="cpu") as local:
        want = {s: local.infer(x, s)["mask"] for s in ("generic", "rural", "urban")}
    http, grpc, metrics = free_ports(3)
    srv = TritonServer(scene_repo, http_port=http, grpc_port=grpc, metrics_port=metrics, env=server_env.path, native=False,
                       startup_timeout=180)
    srv.start()
    try:
        for url in (f"{srv.grpc_url}/segclip_python", f"{srv.http_url}/segclip_python"):
            with load_runner(url) as r:
                assert r.signature.scenes == ("generic", "rural", "urban")
                for s in ("rural", "urban"):
                    np.testing.assert_array_equal(r.infer(x, s)["mask"], want[s])
                np.testing.assert_array_equal(r.infer(x)["mask"], want["generic"])
                with pytest.raises(SegclipError, match="scene id 5 is out of range"):
                    r.infer(x, 5)  # the client refuses before sending
        g = grpcclient.InferenceServerClient(srv.grpc_url[len("grpc://"):])

        def request(ids=None):
            inp = grpcclient.InferInput("image", [1, SIZE, SIZE, 3], "UINT8")
            inp.set_data_from_numpy(x[:1])
            extra = []
            if ids is not None:
                sc = grpcclient.InferInput("scene_id", [1, 1], "INT32")
                sc.set_data_from_numpy(np.array([[ids]], np.int32))
                extra.append(sc)
            return g.infer("segclip_python", [inp] + extra).as_numpy("mask")

        np.testing.assert_array_equal(request(), want["generic"][:1])  # the documented default
        np.testing.assert_array_equal(request(2), want["urban"][:1])
        for bad in (3, -1):
            with pytest.raises(InferenceServerException, match="out of range 0..2"):
                request(bad)
            np.testing.assert_array_equal(request(1), want["rural"][:1])  # still serving
        g.close()
    finally:
        srv.stop()


def test_committed_example_configs_are_current_and_parse():
    """serving/triton_repo/examples holds what build_repository writes for the sample model (text only)."""
    from segclip.data import dataset_info
    from segclip.serving.repo import example_configs

    examples = REPO_ROOT / "serving" / "triton_repo" / "examples"
    want = example_configs()
    have = {str(p.relative_to(examples)): p.read_text() for p in examples.rglob("*") if p.is_file()}
    assert have == want, "regenerate: python -c \"from segclip.serving.repo import write_examples; write_examples('serving/triton_repo/examples')\""
    classes = list(dataset_info("sample")["classes"])
    for model in ("segclip_onnx", "segclip_trt", "segclip_python"):
        cfg = _parse(examples / model / "config.pbtxt")
        assert cfg.name == model and cfg.max_batch_size == 8
        assert [(t.name, list(t.dims)) for t in cfg.input] == [("image", [512, 512, 3])]
        assert [(t.name, list(t.dims)) for t in cfg.output] == [("mask", [512, 512])]
        assert (examples / model / "labels.txt").read_text().split("\n")[:-1] == classes
