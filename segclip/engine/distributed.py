"""Process-group set-up for torchrun (DDP): NCCL on GPUs, gloo on CPU."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist



def init_distributed(device: str) -> tuple:
    """Returns (rank, world_size, device). Uses torchrun's env vars; single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if device.startswith("cuda"):
        if world > 1 or "LOCAL_RANK" in os.environ:  # torchrun: one GPU per local rank
            local = int(os.environ.get("LOCAL_RANK", "0"))
            device = f"cuda:{local}"
        elif device == "cuda":
            device = f"cuda:{torch.cuda.current_device()}"
        torch.cuda.set_device(torch.device(device))  # a single process keeps the GPU it was given (--device cuda:1)
    return rank, world, device


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def all_gather_object(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
