"""SegCLIP as a Triton python-backend model: ONNX Runtime inside Triton's python backend.

This file is copied verbatim into ``<repo>/segclip_python/1/model.py`` by
``segclip.serving.repo.build_repository``; it runs in the *server-side* environment (the one made by
``segclip serve-env``: numpy<2, onnxruntime), never imports segclip, and takes everything it needs
(tensor names, dtypes, the ONNX file name, thread counts) from the generated ``config.pbtxt``.

Requests that arrive together (dynamic batching) are concatenated along the batch axis when their
spatial sizes agree and run as one ONNX Runtime call; the result is split back per request.  A bad
request gets its own error response and never fails the others in the batch.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

_NP = {
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
}


def _param(config, key, default=None):
    v = config.get("parameters", {}).get(key)
    return default if v is None else v.get("string_value", default)


def _bad_request(message: str):
    """A request the client got wrong (shape, dtype, scene id): INVALID_ARG, which Triton answers
    as HTTP 400 / gRPC INVALID_ARGUMENT; a bare TritonError is INTERNAL (HTTP 500), for failures
    of the server's own.  (python_backend README, "Error Handling": TritonError(message, code).)"""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # codes: Triton 23.05+
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        self.config = json.loads(args["model_config"])
        self.name = args.get("model_name", "segclip_python")
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        onnx_file = os.path.join(version_dir, _param(self.config, "onnx_file", "model.onnx"))
        if not os.path.isfile(onnx_file):
            raise pb_utils.TritonModelException(f"{self.name}: ONNX file {onnx_file} is missing")

        self.max_batch = int(self.config.get("max_batch_size", 0))
        # scene_id (metadata prompts): optional per request; absent -> the documented default scene
        scene = [i for i in self.config["input"] if i["name"] == "scene_id"]
        self.scene_name = scene[0]["name"] if scene else None
        self.scene_default = int(_param(self.config, "segclip_scene_default", "0"))
        sig = json.loads(_param(self.config, "segclip_signature", "{}") or "{}")
        self.scenes = list(sig.get("scenes") or [])
        self.input = [i for i in self.config["input"] if i["name"] != "scene_id"][0]
        self.in_name = self.input["name"]
        self.in_dtype = _NP[self.input["data_type"]]
        self.in_dims = [int(d) for d in self.input["dims"]]
        self.outputs = [(o["name"], _NP[o["data_type"]]) for o in self.config["output"]]

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(_param(self.config, "intra_op_threads", "0"))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Busy-waiting worker threads steal cores from Triton's own threads and the other instances.
        so.add_session_config_entry("session.intra_op.allow_spinning", _param(self.config, "allow_spinning", "0"))
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))})] + providers
        self.session = ort.InferenceSession(onnx_file, sess_options=so, providers=providers)
        got = self.session.get_providers()
        if providers[0] != "CPUExecutionProvider" and "CUDAExecutionProvider" not in got:  # no silent CPU fallback
            raise pb_utils.TritonModelException(
                f"{self.name}: a GPU instance got ONNX Runtime providers {got}, not CUDAExecutionProvider "
                f"(CUDA 12 / cuDNN 9 libraries not loadable in this container?)")
        onnx_outputs = [o.name for o in self.session.get_outputs()]
        missing = [n for n, _ in self.outputs if n not in onnx_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.name}: config outputs {missing} are not in {onnx_file} (it has {onnx_outputs})"
            )
        self.output_names = [n for n, _ in self.outputs]

    # ---- helpers ---------------------------------------------------------------------------------
    def _check(self, arr):
        if arr.dtype != self.in_dtype:
            return f"'{self.in_name}' must be {np.dtype(self.in_dtype).name}, got {arr.dtype}"
        want = ([-1] if self.max_batch > 0 else []) + self.in_dims
        if arr.ndim != len(want) or any(w != -1 and w != s for w, s in zip(want, arr.shape)):
            return f"'{self.in_name}' must have shape {want} (-1 = any), got {list(arr.shape)}"
        if self.max_batch > 0 and not 1 <= arr.shape[0] <= self.max_batch:
            return f"batch size {arr.shape[0]} is outside 1..{self.max_batch}"
        return None

    def _response(self, results):
        tensors = [pb_utils.Tensor(n, np.ascontiguousarray(r.astype(dt, copy=False)))
                   for (n, dt), r in zip(self.outputs, results)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _scene_ids(self, request, n):
        """-> (int32 ids (n,), None) or (None, error): the request's scene_id, or the default."""
        t = pb_utils.get_input_tensor_by_name(request, self.scene_name)
        if t is None:
            return np.full(n, self.scene_default, np.int32), None
        ids = t.as_numpy()
        if ids.dtype.kind not in "iu":
            return None, f"'{self.scene_name}' must be INT32, got {ids.dtype}"
        ids = ids.reshape(-1)
        if len(ids) != n:
            return None, f"'{self.scene_name}' must hold one id per image ({n}), got {len(ids)}"
        bad = ids[(ids < 0) | (ids >= len(self.scenes))]
        if len(bad):
            return None, (f"'{self.scene_name}' {int(bad[0])} is out of range 0..{len(self.scenes) - 1} "
                          f"(scenes: {', '.join(self.scenes)})")
        return ids.astype(np.int32), None

    def _run(self, batch, scene_ids=None):
        feed = {self.in_name: batch}
        if self.scene_name is not None:
            feed[self.scene_name] = scene_ids
        return self.session.run(self.output_names, feed)

    # ---- Triton entry points ---------------------------------------------------------------------
    def execute(self, requests):
        responses = [None] * len(requests)
        arrays, scene_ids = {}, {}
        for i, request in enumerate(requests):
            t = pb_utils.get_input_tensor_by_name(request, self.in_name)
            if t is None:
                responses[i] = pb_utils.InferenceResponse(error=_bad_request(f"{self.name}: input '{self.in_name}' is missing"))
                continue
            arr = t.as_numpy()
            err = self._check(arr)
            ids = None
            if not err and self.scene_name is not None:
                ids, err = self._scene_ids(request, arr.shape[0] if self.max_batch > 0 else 1)
            if err:
                responses[i] = pb_utils.InferenceResponse(error=_bad_request(f"{self.name}: {err}"))
                continue
            arrays[i] = arr
            scene_ids[i] = ids

        # group requests with the same spatial size, run each group as one batch
        groups = {}
        for i, arr in arrays.items():
            groups.setdefault(arr.shape[1:], []).append(i)
        for idx in groups.values():
            try:
                if len(idx) == 1:
                    outs = [self._run(np.ascontiguousarray(arrays[idx[0]]), scene_ids[idx[0]])]
                else:
                    sizes = [arrays[i].shape[0] for i in idx]
                    ids = None if self.scene_name is None else np.concatenate([scene_ids[i] for i in idx])
                    full = self._run(np.concatenate([arrays[i] for i in idx], axis=0), ids)
                    bounds = np.cumsum([0] + sizes)
                    outs = [[o[a:b] for o in full] for a, b in zip(bounds[:-1], bounds[1:])]
                for i, res in zip(idx, outs):
                    responses[i] = self._response(res)
            except Exception as e:  # an ORT failure answers these requests, the model stays up
                msg = " ".join(str(e).split())[:500]
                for i in idx:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"{self.name}: inference failed: {msg}"))
        return responses

    def finalize(self):
        self.session = None
