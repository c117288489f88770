"""Load on the shared real server: 200 concurrent gRPC requests in mixed batches, malformed requests
answered with errors while the server keeps serving.  Fixtures: serving_fixtures.py.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serving_fixtures import MAX_BATCH, SIZE


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
        # Triton records a python-backend execution after its response is sent: poll until it settles
        last, deadline = None, time.monotonic() + 10
        while True:
            with grpcclient.InferenceServerClient(address) as c:
                (st,) = c.get_inference_statistics("segclip_python", as_json=True)["model_stats"]
            now = int(st.get("execution_count", 0)), int(st.get("inference_count", 0))
            if now == last or time.monotonic() > deadline:
                return now
            last = now
            time.sleep(0.5)

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
