"""Training numerics that every DDP rank must decide together: non-finite losses and the AMP dtype.

A rank that raises on its own leaves the others blocked in their next collective until the NCCL
timeout (tens of minutes), so whether a loss is finite is all-reduced: every rank gets the same
answer, skips the same steps and stops at the same step with the same message.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from segclip.errors import SegclipError

MAX_NONFINITE_IN_A_ROW = 5  # an isolated bad batch is skipped; this many in a row is divergence: stop


def nonfinite_ranks(loss: torch.Tensor) -> list:
    """The ranks whose ``loss`` is not finite this step, the same list on every rank (one all-reduce
    of a per-rank flag vector, on the loss's device: NCCL needs CUDA tensors, gloo takes CPU ones)."""
    bad = not bool(torch.isfinite(loss.detach()).all())
    if not dist.is_initialized():
        return [0] if bad else []
    flags = torch.zeros(dist.get_world_size(), device=loss.device)
    flags[dist.get_rank()] = float(bad)
    dist.all_reduce(flags)
    return [int(r) for r in torch.nonzero(flags).flatten().tolist()]


class NonFiniteGuard:
    """``check(loss, step)`` -> True: take the step; False: every rank skips it (counted in
    ``skipped``); ``limit`` non-finite steps in a row raise the same ``SegclipError`` on every rank."""

    def __init__(self, limit: int = MAX_NONFINITE_IN_A_ROW, log=None):
        self.limit, self.log = int(limit), log
        self.in_a_row = 0
        self.skipped = 0

    def check(self, loss: torch.Tensor, step: int) -> bool:
        ranks = nonfinite_ranks(loss)
        if not ranks:
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.skipped += 1
        where = f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
        if self.in_a_row >= self.limit:
            raise SegclipError(f"train: loss not finite for {self.limit} steps in a row (steps {step - self.limit + 1}-{step}, "
                               f"last on {where}; {self.skipped} step(s) skipped in this run); every rank stops: lower --lr "
                               f"or check the data (mask values)")
        if self.log is not None:
            self.log(f"warning: train: step {step} skipped on every rank, loss not finite on {where} "
                     f"({self.in_a_row} in a row; {self.limit} in a row stop the run)")
        return False


AMP_MODES = ("fp16", "bf16", "off")


def amp_dtype(amp, device: str) -> Optional[torch.dtype]:
    """``TrainConfig.amp`` (True/"fp16", "bf16", False/"off") -> the autocast dtype on ``device``;
    None: no autocast (AMP is used on CUDA only).  bfloat16 where the GPU has it (compute capability
    >= 8.0, torch.cuda.is_bf16_supported): FP32's exponent range, so no loss scaling."""
    mode = {True: "fp16", False: "off", None: "off"}.get(amp, amp)
    if mode not in AMP_MODES:
        raise SegclipError(f"--amp {amp!r}: not a mode; give --amp fp16, bf16 or off")
    if mode == "off" or not str(device).startswith("cuda"):
        return None
    if mode == "bf16":
        if not torch.cuda.is_bf16_supported():
            cc = torch.cuda.get_device_capability(torch.device(device))
            raise SegclipError(f"--amp bf16: {torch.cuda.get_device_name(torch.device(device))} (compute capability "
                               f"{cc[0]}.{cc[1]}) has no bfloat16; use --amp fp16")
        return torch.bfloat16
    return torch.float16
