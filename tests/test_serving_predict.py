"""Predictions through a real tritonserver: the TritonRunner over HTTP/gRPC (and shared memory) equals
the local runner, one-line errors, segclip predict with a grpc:// model, one scene over two endpoints,
scene_id requests.  Fixtures: serving_fixtures.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from segclip.errors import SegclipError
from serving_fixtures import MAX_BATCH, SIZE


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


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_predict_cli_with_triton_model(server, protocol, images, expected, local, tmp_path):
    """segclip predict over gRPC and HTTP, several images and requests in flight: the HTTP client
    (gevent) used from the pool's worker threads once failed with "Cannot switch to a different thread"."""
    from click.testing import CliRunner
    from PIL import Image

    from segclip.cli import main

    paths = []
    n = 5
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(images[i]).save(p)
        paths.append(str(p))
    big = tmp_path / "big.png"  # larger than the model: predict tiles it, every tile through Triton
    Image.fromarray(np.tile(images[n], (2, 2, 1))[: SIZE + 32, : SIZE + 32]).save(big)
    res = CliRunner().invoke(main, ["predict", "--model", server.model_url("segclip_python", protocol), *paths, str(big),
                                    "--out", str(tmp_path / "pred"), "--overlap", "0.25", "--in-flight", "3",
                                    "--batch", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    for i in range(n):
        mask = np.asarray(Image.open(tmp_path / "pred" / f"img{i}_mask.png"))
        np.testing.assert_array_equal(mask, expected[i])
    # the tiled one by content: 96 px in 64 px windows at overlap 0.25 start at 0 and 32, so the top-left
    # and bottom-right 32 px corners are each covered by one window alone and carry its prediction
    big_img = np.asarray(Image.open(big))
    big_mask = np.asarray(Image.open(tmp_path / "pred" / "big_mask.png"))
    assert big_mask.shape == (SIZE + 32, SIZE + 32)
    np.testing.assert_array_equal(big_mask[:32, :32], expected[n][:32, :32])  # window (0, 0) is images[n]
    corner = local.infer(np.ascontiguousarray(big_img[None, 32:, 32:]))["mask"][0]
    np.testing.assert_array_equal(big_mask[SIZE:, SIZE:], corner[32:, 32:])


def test_predict_scene_over_two_endpoints_equals_onnx_runtime(trained_repo, server_env, tmp_path):
    """One georeferenced scene, windows spread over two Triton servers (retrying when one dies)
    == the same scene predicted in-process with ONNX Runtime; the parity model, so every window
    has several classes and boundaries."""
    import rasterio
    from rasterio.transform import Affine

    from conftest import parity_images
    from segclip.inference.predict import predict_paths
    from segclip.inference.predict import Predictor
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


def test_triton_requests_with_scene_id(scene_repo, scene_export_dir, server_env):
    """A real tritonserver: TritonRunner per scene equals the local ONNX runner; a raw request without
    scene_id gets the generic scene; an out-of-range id is rejected and the server keeps serving."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from segclip.runtime import load_runner
    from segclip.serving.server import TritonServer, free_ports
    from export_fixtures import images as scene_images

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
            with pytest.raises(InferenceServerException, match="out of range 0..2") as e:
                request(bad)
            assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value.status()  # the client's error, not INTERNAL
            np.testing.assert_array_equal(request(1), want["rural"][:1])  # still serving
        g.close()
        import tritonclient.http as httpclient

        h = httpclient.InferenceServerClient(srv.http_url[len("http://"):])
        inp = httpclient.InferInput("image", [1, SIZE, SIZE, 3], "UINT8")
        inp.set_data_from_numpy(x[:1])
        sc = httpclient.InferInput("scene_id", [1, 1], "INT32")
        sc.set_data_from_numpy(np.array([[7]], np.int32))
        with pytest.raises(InferenceServerException, match="out of range 0..2") as e:
            h.infer("segclip_python", [inp, sc])
        assert e.value.status() == "400", e.value.status()  # was HTTP 500 (a bare TritonError is INTERNAL)
        h.close()
    finally:
        srv.stop()
