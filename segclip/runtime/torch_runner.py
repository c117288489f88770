"""PyTorch runner: a checkpoint (or run directory) through ``SegCLIPInference``, the same module
that is exported, so it is the reference every exported artifact is compared with."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from segclip.errors import SegclipError
from segclip.contract import signature_from_checkpoint
from segclip.signature import MASK_NAME, SCORES_NAME
from segclip.runtime.base import Runner


class TorchRunner(Runner):
    """Options: ``device`` ("cpu", "cuda", "cuda:1"), ``precision`` ("fp32"; "fp16" = CUDA autocast),
    ``scores`` (default True: a checkpoint can always give scores), ``size`` ((h, w) to pin the
    signature to a fixed input size, default any size), ``compile`` (``torch.compile`` with inductor:
    what a PyTorch user would try instead of exporting; compiled on the first call of each shape)."""

    backend = "torch"

    def __init__(self, checkpoint, *, device: str = "cpu", precision: str = "fp32", scores: bool = True,
                 size: Optional[tuple] = None, name: Optional[str] = None, max_batch: int = 8, threads: Optional[int] = None,
                 compile: bool = False):
        from segclip.checkpoint import load_checkpoint

        # a path/run dir, or a checkpoint dict already loaded by the caller (the exporter)
        self._ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        self.checkpoint_path = Path(self._ckpt["path"])
        if precision not in ("fp32", "fp16"):
            raise SegclipError(f"torch runner: precision must be fp32 or fp16, got {precision!r}")
        if precision == "fp16" and not str(device).startswith("cuda"):
            raise SegclipError("torch runner: precision fp16 needs device='cuda' (CPU runs fp32)")
        self.device = str(device)
        self.threads = threads
        self.compile = bool(compile)
        h, w = (size if size is not None else (None, None))
        sig = signature_from_checkpoint(self._ckpt, height=h, width=w, scores=scores, max_batch=max_batch)
        super().__init__(sig, name=name or f"torch-{precision}", precision=precision, artifact=self.checkpoint_path)
        self._module = None

    def _activate(self) -> None:
        import torch

        from segclip.checkpoint import model_from_checkpoint
        from segclip.modeling import SegCLIPInference

        from segclip.parsers import check_device

        check_device(self.device, flag=f"{self.name}: device")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self.precision == "fp32" and self.device.startswith("cuda"):
            # FP32 means FP32: cuDNN convolutions default to TF32 on Ampere+, which would make the parity
            # reference (and "eager FP32" in the benchmarks) a 10-bit-mantissa run (process-wide setting)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        model = model_from_checkpoint(self._ckpt)
        self._module = SegCLIPInference(model, scores=self.signature.scores).to(self.device).eval()
        if self.compile:
            self._module = torch.compile(self._module, backend="inductor", dynamic=False)

    def _deactivate(self) -> None:
        self._module = None

    def _infer(self, images: np.ndarray, scene_ids: Optional[np.ndarray] = None) -> dict:
        import torch

        x = torch.from_numpy(images).to(self.device)
        ids = None if scene_ids is None else torch.from_numpy(scene_ids).to(self.device)
        with torch.inference_mode():
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
                out = self._module(x, ids)
        if self.signature.scores:
            mask, scores = out
            return {MASK_NAME: mask.cpu().numpy(), SCORES_NAME: scores.float().cpu().numpy()}
        return {MASK_NAME: out.cpu().numpy()}

    def _device(self) -> str:
        if self.device.startswith("cuda"):
            try:
                import torch

                return f"{self.device} ({torch.cuda.get_device_name(torch.device(self.device))})"
            except Exception:
                return self.device
        return self.device

    @property
    def checkpoint(self) -> dict:
        """The loaded checkpoint (its train config gives eval's default window)."""
        return self._ckpt
