"""``TritonRunner``: a model served by Triton, behind the same interface as the local runners.

    runner = load_runner("grpc://127.0.0.1:8001/segclip_python")   # or http://127.0.0.1:8000/...
    out = runner.infer(images_uint8_nhwc)                           # {"mask": N x H x W uint8}

The runner builds its ``Signature`` from the server: the model's config carries the export's
signature (parameter ``segclip_signature``, written by ``segclip triton-repo``) and its inputs and
outputs are checked against ``segclip.signature`` (names, dtypes, dims).  Batches larger than the
model's ``max_batch_size`` are split into several requests.  Errors from the server or the network
become one-line ``SegclipError``s naming the model and the server.

``shm=True`` passes tensors through system shared memory instead of the socket (client and server
on the same host, sharing /dev/shm); requests on one runner are then serialised.

A runner may be called from any thread (``RunnerPool`` hands its slots to whichever worker thread is
free).  ``tritonclient.http`` runs on gevent, whose sockets belong to the thread (gevent hub) that
opened them: a connection reused from another thread fails with "Cannot switch to a different
thread".  So each thread gets its own HTTP client (``_client``); gRPC clients are thread-safe and
shared.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from typing import Optional
from urllib.parse import urlparse

import numpy as np

from segclip.errors import SegclipError, one_line
from segclip.signature import MASK_NAME, SCENE_NAME, Signature, triton_dims, triton_wire_type
from segclip.runtime.base import Runner

# config.pbtxt parameters written by segclip.serving.repo and read back by the client
SIGNATURE_PARAM = "segclip_signature"  # the export's Signature as JSON
PRECISION_PARAM = "segclip_precision"
SCENE_DEFAULT_PARAM = "segclip_scene_default"  # scene_id a request without one gets (0 = generic)


def parse_url(url: str):
    """``grpc://host:port/model[/version]`` -> (protocol, "host:port", model, version).

    ``https://`` is the HTTP protocol over TLS (see ``TritonRunner.ssl``)."""
    u = urlparse(url)
    if u.scheme not in ("grpc", "http", "https"):
        raise SegclipError(f"{url}: a Triton model URL starts with grpc://, http:// or https://")
    parts = [p for p in u.path.split("/") if p]
    if not u.hostname or not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise SegclipError(f"{url}: expected {u.scheme}://HOST:PORT/MODEL[/VERSION], e.g. {u.scheme}://127.0.0.1:"
                           f"{8001 if u.scheme == 'grpc' else 8000}/segclip_python")
    port = u.port or {"grpc": 8001, "http": 8000, "https": 443}[u.scheme]
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return u.scheme, f"{host}:{port}", parts[0], parts[1] if len(parts) == 2 else ""


class TritonRunner(Runner):
    """Runs a segclip model on a Triton server over gRPC or HTTP."""

    backend = "triton"

    def __init__(self, url: str, *, timeout: float = 60.0, shm: bool = False, verbose: bool = False,
                 name: Optional[str] = None, **opts):
        if opts:
            raise SegclipError(f"{url}: option(s) {', '.join(sorted(opts))} do not apply to a model served by Triton "
                               f"(the server picks devices and providers); TritonRunner takes timeout, shm, name")
        self.url = url
        self.protocol, self.address, self.model, self.version = parse_url(url)
        self.ssl = self.protocol == "https"
        if self.ssl:
            self.protocol = "http"
        self.timeout = float(timeout)
        self.verbose = verbose
        self.where = f"triton {url}"
        if self.protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        self._tc = tc
        self.client = None  # the client of the thread that connected (discovery); see _client
        self._local = threading.local()  # HTTP: this thread's client
        self._thread_clients = []  # HTTP: every other thread's client, closed by close()
        self._use_shm = bool(shm)
        self._shm = None
        self._lock = threading.Lock()
        self._connect()
        self.config = self._config()
        signature = self._signature()
        params = self.config.get("parameters", {})
        precision = (params.get(PRECISION_PARAM) or {}).get("string_value") or "fp32"
        # The server's max_batch_size is not a limit for callers: larger batches are split into
        # several requests (base-class max_batch stays None).
        self.model_max_batch = int(self.config.get("max_batch_size", 0))
        super().__init__(signature, name=name or f"triton-{self.model}", precision=precision, artifact=url)

    def _new_client(self):
        tc = self._tc
        try:
            if self.protocol == "grpc":
                return tc.InferenceServerClient(self.address, verbose=self.verbose)
            return tc.InferenceServerClient(self.address, verbose=self.verbose, connection_timeout=self.timeout,
                                            network_timeout=self.timeout, ssl=self.ssl)
        except Exception as e:
            raise SegclipError(f"{self.where}: cannot create a client: {one_line(e, 1000)}") from None

    def _connect(self) -> None:
        self.client = self._new_client()
        self._local = threading.local()
        self._local.client = self.client
        self._check_ready()

    def _client(self):
        """The client for the calling thread: the shared one over gRPC, the thread's own over HTTP."""
        if self.client is None:
            self._connect()
        if self.protocol == "grpc":
            return self.client
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self._new_client()
            with self._lock:
                self._thread_clients.append(c)
        return c

    def _activate(self) -> None:
        if self.client is None:
            self._connect()
        if self._use_shm and self._shm is None:
            self._shm = _ShmRegions(self)

    def _deactivate(self) -> None:
        self.close()

    # ---- discovery -------------------------------------------------------------------------------
    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except self._tc.InferenceServerException as e:
            raise SegclipError(f"{self.where}: {what} failed: {one_line(e, 1000)}") from None
        except Exception as e:  # connection errors from grpc / geventhttpclient
            raise SegclipError(f"{self.where}: {what} failed: {type(e).__name__}: {one_line(e, 1000)}") from None

    def _deadline(self) -> dict:
        """gRPC calls wait forever unless given a deadline (HTTP clients have theirs built in)."""
        return {"client_timeout": self.timeout} if self.protocol == "grpc" else {}

    def _check_ready(self) -> None:
        try:
            live = self.client.is_server_live(**self._deadline())
        except Exception as e:
            raise SegclipError(
                f"{self.where}: cannot reach Triton at {self.address} ({type(e).__name__}: {one_line(e)}); "
                f"is `segclip serve` running?") from None
        if not live:
            raise SegclipError(f"{self.where}: the server at {self.address} is not live")
        if not self._call("model-ready check", self.client.is_model_ready, self.model, self.version, **self._deadline()):
            models = []
            try:
                idx = self.client.get_model_repository_index(**({"as_json": True} if self.protocol == "grpc" else {}))
                models = [m.get("name") for m in (idx.get("models", []) if isinstance(idx, dict) else idx)
                          if m.get("state") == "READY"]
            except Exception:
                pass
            raise SegclipError(f"{self.where}: model '{self.model}' is not ready on {self.address} "
                               f"(ready: {', '.join(models) or 'none'})")

    def _config(self) -> dict:
        if self.protocol == "grpc":
            cfg = self._call("get model config", self.client.get_model_config, self.model, self.version, as_json=True,
                             **self._deadline())
            return cfg.get("config", cfg)
        return self._call("get model config", self.client.get_model_config, self.model, self.version)

    def _signature(self) -> Signature:
        params = self.config.get("parameters", {})
        raw = (params.get(SIGNATURE_PARAM) or {}).get("string_value")
        if not raw:
            raise SegclipError(
                f"{self.where}: model '{self.model}' carries no segclip signature (config parameter '{SIGNATURE_PARAM}'); "
                f"serve a repository made by `segclip triton-repo`")
        try:
            sig = Signature.from_json(raw)
        except Exception as e:
            raise SegclipError(f"{self.where}: bad '{SIGNATURE_PARAM}' in the model config: {one_line(e, 1000)}") from None
        max_batch = int(self.config.get("max_batch_size", 0))
        sig = replace(sig, max_batch=max_batch)
        # what the server says it takes/returns must be exactly the signature
        meta = self._call("get model metadata", self.client.get_model_metadata, self.model, self.version,
                          **({"as_json": True} if self.protocol == "grpc" else {}), **self._deadline())
        served = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta.get("inputs", []) + meta.get("outputs", [])}
        for spec in sig.inputs + sig.outputs:
            got = served.get(spec.name)
            dims = triton_dims(spec)[0]
            want = (triton_wire_type(spec.dtype), [-1] + dims if max_batch > 0 else [int(d) for d in spec.shape[1:]])
            if got is None:
                raise SegclipError(f"{self.where}: model '{self.model}' has no tensor '{spec.name}' (it has {sorted(served)})")
            if got != want:
                raise SegclipError(f"{self.where}: tensor '{spec.name}' is {got[0]} {got[1]} on the server but the segclip "
                                   f"signature says {want[0]} {want[1]}")
        return sig

    # ---- inference -------------------------------------------------------------------------------
    def _infer(self, images: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:
        step = self.model_max_batch if self.model_max_batch > 0 else 1
        parts = [self._infer_batch(images[i:i + step], None if scene_ids is None else scene_ids[i:i + step])
                 for i in range(0, len(images), step)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    def _scene_input(self, ids: np.ndarray):
        """scene_id as Triton takes it: N x 1 INT32 (reshaped to N by the server; ``triton_dims``)."""
        tc = self._tc
        spec = self.signature.inputs[1]
        arr = np.ascontiguousarray(ids.reshape(-1, 1) if self.model_max_batch > 0 else ids.reshape(1), dtype=spec.dtype)
        inp = tc.InferInput(SCENE_NAME, list(arr.shape), triton_wire_type(spec.dtype))
        inp.set_data_from_numpy(arr, **({} if self.protocol == "grpc" else {"binary_data": True}))
        return inp

    def _infer_batch(self, x: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:
        tc = self._tc
        x = np.ascontiguousarray(x)
        if self.model_max_batch == 0 and len(x) != 1:
            raise SegclipError(f"{self.where}: model '{self.model}' takes no batch axis; send one image at a time")
        shape = list(x.shape) if self.model_max_batch > 0 else list(x.shape[1:])
        in_spec = self.signature.inputs[0]
        inp = tc.InferInput(in_spec.name, shape, triton_wire_type(in_spec.dtype))
        extra = [] if scene_ids is None else [self._scene_input(scene_ids)]
        out_names = [o.name for o in self.signature.outputs]
        if self._shm is not None:
            with self._lock:
                outs = self._shm.infer(inp, x, out_names, extra)
        else:
            if self.protocol == "grpc":
                inp.set_data_from_numpy(x)
                req = [tc.InferRequestedOutput(n) for n in out_names]
            else:
                inp.set_data_from_numpy(x, binary_data=True)
                req = [tc.InferRequestedOutput(n, binary_data=True) for n in out_names]
            res = self._call("inference", self._client().infer, self.model, [inp] + extra, model_version=self.version,
                             outputs=req, **self._deadline())
            outs = {n: res.as_numpy(n) for n in out_names}
        return self._check_outputs(outs, x)

    def _check_outputs(self, outs: dict, x: np.ndarray) -> dict:
        n, h, w = x.shape[0], x.shape[1], x.shape[2]
        for spec in self.signature.outputs:
            a = outs.get(spec.name)
            if a is None or a.size == 0:
                raise SegclipError(f"{self.where}: the server returned no '{spec.name}' (an empty response: is the server "
                                   f"env's numpy < 2? recreate it with `segclip serve-env --force`)")
            if self.model_max_batch == 0:
                a = outs[spec.name] = a[None]
            want = (n, h, w) if spec.name == MASK_NAME else (n, self.signature.num_classes, h, w)
            if a.shape != want or a.dtype != np.dtype(spec.dtype):
                raise SegclipError(f"{self.where}: '{spec.name}' came back {a.dtype} {a.shape}, expected {spec.dtype} {want}")
        return outs

    # ---- misc ------------------------------------------------------------------------------------
    def describe(self) -> dict:
        d = super().describe()
        d.update({"url": self.url, "protocol": self.protocol, "model": self.model, "server_max_batch": self.model_max_batch,
                  "shared_memory": self._use_shm, "platform": self.config.get("platform") or self.config.get("backend")})
        return d

    def _device(self) -> str:
        kinds = {g.get("kind", "") for g in self.config.get("instance_group", [])}
        return "server:" + ",".join(sorted(k.replace("KIND_", "").lower() for k in kinds if k)) if kinds else "server"

    def close(self) -> None:
        """Release shared-memory regions and the connection (``activate`` or ``infer`` reconnects)."""
        if self._shm is not None:
            try:
                self._shm.close()
            finally:
                self._shm = None
        with self._lock:
            clients, self._thread_clients = [self.client, *self._thread_clients], []
        self._local = threading.local()
        for c in clients:
            if c is not None:
                try:
                    c.close()
                except Exception:  # a gevent client closed from a thread other than its own: its sockets go with it
                    pass
        self.client = None
        self.is_active = False


class _ShmRegions:
    """One input and one output system-shared-memory region per runner, grown on demand."""

    def __init__(self, runner: TritonRunner):
        import tritonclient.utils.shared_memory as shm

        self.r = runner
        self.shm = shm
        self.prefix = f"segclip_{uuid.uuid4().hex[:12]}"
        self.regions = {}  # role -> (name, handle, size)
        try:
            runner._client().get_system_shared_memory_status()
        except Exception as e:
            raise SegclipError(f"{runner.where}: the server does not offer system shared memory ({one_line(e)})") from None

    def _region(self, role: str, size: int):
        cur = self.regions.get(role)
        if cur is not None and cur[2] >= size:
            return cur
        if cur is not None:
            self._drop(role)
        name = f"{self.prefix}_{role}"
        key = f"/{name}"
        handle = self.shm.create_shared_memory_region(name, key, size)
        self.r._call("register shared memory", self.r._client().register_system_shared_memory, name, key, size)
        self.regions[role] = (name, handle, size)
        return self.regions[role]

    def _drop(self, role: str):
        name, handle, _ = self.regions.pop(role)
        try:
            self.r._client().unregister_system_shared_memory(name)
        except Exception:
            pass
        self.shm.destroy_shared_memory_region(handle)

    def infer(self, inp, x: np.ndarray, out_names: list, extra: list = ()) -> dict:
        """The image and outputs through shared memory; small ``extra`` inputs (scene_id) inline."""
        r, tc = self.r, self.r._tc
        n, h, w = x.shape[:3]
        name, handle, _ = self._region("in", x.nbytes)
        self.shm.set_shared_memory_region(handle, [x])
        inp.set_shared_memory(name, x.nbytes)
        specs = {o.name: o for o in r.signature.outputs}
        shapes = {o: (n, h, w) if o == MASK_NAME else (n, r.signature.num_classes, h, w) for o in out_names}
        sizes = {o: int(np.prod(shapes[o])) * np.dtype(specs[o].dtype).itemsize for o in out_names}
        oname, ohandle, _ = self._region("out", sum(sizes.values()))
        req, offset, offsets = [], 0, {}
        for o in out_names:
            ro = tc.InferRequestedOutput(o) if r.protocol == "grpc" else tc.InferRequestedOutput(o, binary_data=True)
            ro.set_shared_memory(oname, sizes[o], offset=offset)
            offsets[o] = offset
            offset += sizes[o]
            req.append(ro)
        r._call("inference", r._client().infer, r.model, [inp, *extra], model_version=r.version, outputs=req)
        return {o: np.array(self.shm.get_contents_as_numpy(ohandle, np.dtype(specs[o].dtype), shapes[o], offset=offsets[o]))
                for o in out_names}

    def close(self):
        for role in list(self.regions):
            self._drop(role)
