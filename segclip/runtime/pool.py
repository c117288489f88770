"""``RunnerPool``: one batch stream spread over several runners -- in practice several Triton
endpoints on many GPUs, so one client can stream a whole scene through all of them.

Each endpoint gets ``in_flight`` slots (one runner, hence one client connection, per slot: HTTP
clients are not thread-safe); a batch goes to a free slot of the endpoint with the fewest recent
failures and the fewest busy slots.  A failed request is retried on another endpoint that has not
failed it yet; only when every endpoint has failed the batch does ``submit``'s future raise.  An
endpoint that keeps failing is tried last, so a dead server costs one timeout, not one per batch.
Local runners (ONNX Runtime, PyTorch, TensorRT) are a pool of one slot.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np

from segclip.errors import SegclipError


class _Endpoint:
    def __init__(self, name: str, runners: list):
        self.name = name
        self.free = list(runners)
        self.runners = list(runners)
        self.busy = 0
        self.failures = 0  # consecutive
        self.requests = 0
        self.last_error: Optional[str] = None


class RunnerPool:
    """``RunnerPool([[runner, runner], [runner, runner]])``: endpoints, each a list of slots (runners
    on the same model).  ``submit(batch[, scene_ids]) -> Future`` of ``runner.infer(batch, scene_ids)``."""

    def __init__(self, endpoints: Sequence[Sequence], names: Optional[Sequence[str]] = None):
        if not endpoints or not all(endpoints):
            raise SegclipError("runner pool: give at least one runner")
        names = list(names) if names else [str(getattr(e[0], "artifact", None) or e[0].name) for e in endpoints]
        self.endpoints = [_Endpoint(n, e) for n, e in zip(names, endpoints)]
        first = self.endpoints[0].runners[0].signature
        for ep in self.endpoints[1:]:
            sig = ep.runners[0].signature
            if (sig.classes, sig.height, sig.width, sig.scores, sig.scenes) != (first.classes, first.height, first.width,
                                                                              first.scores, first.scenes):
                raise SegclipError(f"{ep.name}: serves a different model than {self.endpoints[0].name} (classes, input "
                                   f"size or outputs differ); every --model must be the same export")
        self.signature = first
        self.slots = sum(len(ep.runners) for ep in self.endpoints)
        self.infer_seconds = 0.0  # summed time inside runner.infer (all slots): what predict's pipeline feeds
        self._cond = threading.Condition()
        self._executor = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="segclip-infer")

    @property
    def has_scores(self) -> bool:
        return bool(self.signature.scores)

    def submit(self, batch: np.ndarray, scene_ids=None) -> Future:
        """Future of ``runner.infer(batch, scene_ids)`` on a free slot."""
        return self._executor.submit(self._run, batch, scene_ids)

    def _acquire(self, tried: set):
        with self._cond:
            while True:
                candidates = [ep for ep in self.endpoints if ep.name not in tried]
                if not candidates:
                    return None, None
                ready = [ep for ep in candidates if ep.free]
                if ready:
                    ep = min(ready, key=lambda e: (e.failures, e.busy))
                    ep.busy += 1
                    return ep, ep.free.pop()
                self._cond.wait()

    def _release(self, ep: _Endpoint, runner, error: Optional[str], seconds: float = 0.0) -> None:
        with self._cond:
            self.infer_seconds += seconds
            ep.busy -= 1
            ep.requests += 1
            ep.free.append(runner)
            if error is None:
                ep.failures = 0
            else:
                ep.failures += 1
                ep.last_error = error
            self._cond.notify_all()

    def _run(self, batch: np.ndarray, scene_ids=None) -> dict:
        tried, errors = set(), []
        while True:
            ep, runner = self._acquire(tried)
            if ep is None:
                many = len(self.endpoints) > 1
                raise SegclipError(("every endpoint failed this batch: " if many else "") + "; ".join(errors))
            t0 = time.perf_counter()
            try:
                out = runner.infer(batch, scene_ids)
            except Exception as e:  # network errors, a server that went away, a timeout
                msg = str(e) if isinstance(e, SegclipError) else f"{ep.name}: {type(e).__name__}: {e}"
                errors.append(" ".join(msg.split()))
                tried.add(ep.name)
                self._release(ep, runner, msg)
                continue
            self._release(ep, runner, None, time.perf_counter() - t0)
            return out

    def stats(self) -> list:
        return [{"endpoint": ep.name, "requests": ep.requests, "last_error": ep.last_error} for ep in self.endpoints]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for ep in self.endpoints:
            for r in ep.runners:
                r.deactivate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_pool(models: Sequence[str], load: Callable, in_flight: int = 2, log: Callable = print):
    """``--model`` values -> (RunnerPool, [one-line errors for endpoints that could not be opened]).
    Triton URLs get ``in_flight`` slots each; anything else one.  Endpoints that cannot be reached
    are left out (and reported) as long as one remains."""
    endpoints, names, errors = [], [], []
    for m in models:
        remote = str(m).startswith(("grpc://", "http://", "https://"))
        try:
            slots = [load(m) for _ in range(in_flight if remote else 1)]
        except SegclipError as e:
            if len(models) == 1:
                raise
            errors.append(str(e))
            log(f"error: {e}")
            continue
        endpoints.append(slots)
        names.append(str(m))
    if not endpoints:
        raise SegclipError(f"none of the {len(models)} models could be opened: " + "; ".join(errors))
    return RunnerPool(endpoints, names), errors
