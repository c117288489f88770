"""One runner interface for every backend (Polygraphy style).

Parity checks and benchmarks loop over runners with no special cases::

    with load_runner("runs/x/export", format="onnx_fp16") as r:
        out = r.infer(images)          # images: uint8 N x H x W x 3 RGB
        out = r.infer(images, scene_ids="rural")   # models trained with metadata prompts
        out["mask"], r.last_inference_time, r.describe()

A subclass sets ``backend``, builds its ``signature`` in ``__init__`` (cheap, no session yet) and
implements ``_activate`` (load the session/engine), ``_deactivate`` and ``_infer`` (a checked,
C-contiguous uint8 batch in, ``{"mask": ..., ["scores": ...]}`` numpy arrays out).  When the
signature has scenes, ``_infer(images, scene_ids)`` gets the checked int32 ids (N,), default
scene 0 filled in; for a model without scenes ``scene_ids`` is None.  The base class
validates the input once for all backends against the signature, enforces ``max_batch`` for
fixed-profile artifacts (TensorRT engines), activates lazily, times the call and turns any
backend exception about the input into a one-line ``SegclipError``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from segclip.errors import SegclipError, one_line
from segclip.signature import MASK_NAME, SCORES_NAME, Signature


def file_size_mib(path) -> Optional[float]:
    try:
        return round(os.path.getsize(path) / 2**20, 3)
    except (OSError, TypeError):
        return None


class Runner:
    """Base class.  Attributes: ``name``, ``backend``, ``precision``, ``signature``, ``artifact``
    (path or URL), ``max_batch`` (None = no fixed limit), ``last_inference_time`` (seconds of the
    last ``infer``), ``is_active``."""

    backend: str = "base"
    choice = None  # contract.Choice: which artifact/runtime of an export directory, and why (set by load_runner)

    def __init__(self, signature: Signature, *, name: Optional[str] = None, precision: str = "fp32",
                 artifact=None, max_batch: Optional[int] = None):
        if not isinstance(signature, Signature):
            raise TypeError("signature must be a segclip.signature.Signature")
        self.signature = signature
        self.precision = precision
        self.artifact = str(artifact) if artifact is not None else None
        self.name = name or f"{self.backend}-{precision}"
        self.max_batch = max_batch
        self.last_inference_time: Optional[float] = None
        self.is_active = False

    # ---- lifecycle -----------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            try:
                self._activate()
            except SegclipError:
                raise
            except Exception as e:  # a runtime failing to load must not dump a traceback at the user
                raise SegclipError(f"{self.name}: {self.backend} could not load {self.artifact}: {one_line(e)}") from None
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self._deactivate()
            finally:
                self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def __del__(self):  # best effort: free sessions/engines of runners nobody deactivated
        try:
            self.deactivate()
        except Exception:
            pass

    # ---- inference -----------------------------------------------------------------------------
    def infer(self, images, scene_ids=None) -> dict:
        """uint8 N x H x W x 3 RGB -> ``{"mask": N x H x W, ["scores": N x K x H x W]}`` (numpy).

        ``scene_ids``: for a model trained with metadata prompts, the scene of each image (ids or
        names from ``signature.scenes``; one value for the whole batch, or one per image); None =
        scene 0, generic.  A model without scenes refuses them."""
        arr = self.signature.check_input(images, where=self.name)
        ids = self.signature.check_scene_ids(scene_ids, arr.shape[0], where=self.name)
        if self.max_batch is not None and arr.shape[0] > self.max_batch:
            raise SegclipError(
                f"{self.name}: batch {arr.shape[0]} is larger than this artifact's maximum batch {self.max_batch} "
                f"(its optimisation profile); split the batch or re-export with --batch MIN:OPT:{arr.shape[0]}"
            )
        self.activate()
        t0 = time.perf_counter()
        try:
            out = self._infer(arr, ids)
        except SegclipError:
            raise
        except Exception as e:  # a runtime complaining about the input must not dump a traceback
            raise SegclipError(
                f"{self.name}: {self.backend} failed on input '{self.signature.inputs[0].name}' of shape "
                f"{tuple(arr.shape)} uint8 (expected {self._expected()}): {one_line(e)}"
            ) from None
        self.last_inference_time = time.perf_counter() - t0
        if MASK_NAME not in out:
            raise SegclipError(f"{self.name}: the artifact returned no '{MASK_NAME}' output; re-export it with segclip export")
        return out

    def _expected(self) -> str:
        spec = self.signature.inputs[0]
        dims = "x".join("N" if i == 0 else ("?" if d in (-1, None) else str(d)) for i, d in enumerate(spec.shape))
        return f"{spec.dtype} {dims} ({spec.layout})"

    # ---- description ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """One row of a benchmark/parity table."""
        return {
            "name": self.name,
            "backend": self.backend,
            "precision": self.precision,
            "artifact": self.artifact,
            "size_mib": file_size_mib(self.artifact) if self.artifact and Path(self.artifact).is_file() else None,
            "device": self._device(),
            "providers": self._providers(),
            "input": self._expected(),
            "max_batch": self.max_batch,
            "outputs": [t.name for t in self.signature.outputs],
        }

    def _device(self) -> Optional[str]:
        return None

    def _providers(self) -> Optional[list]:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.backend}/{self.precision} {self.artifact}>"

    # ---- for subclasses ------------------------------------------------------------------------
    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, images: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


__all__ = ["Runner", "file_size_mib", "MASK_NAME", "SCORES_NAME"]
