"""torchrun: one process per device, rank 0 alone logs and writes outputs."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from pipeline.core.devices import resolve_device


class NoLive:
    """What ranks other than 0 log to: nothing (rank 0 alone logs and writes outputs)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun, one process per device joins the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name, "train.device")
    if world == 1:
        return 0, 1, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device

