"""torchrun: one process per device, rank 0 alone logs and writes outputs."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from pipeline.core.devices import resolve_device


class NoLive:
    """What ranks other than 0 log to: nothing (rank 0 alone logs and writes outputs). It has the
    Live methods train calls and no others, so a misspelt call fails on every rank, not on rank 0
    alone."""

    step: int = 0

    def log_metric(self, name: str, value: Any, plot: bool = True) -> None:
        """Rank 0 logs the metrics."""

    def log_image(self, name: str, value: Any) -> None:
        """Rank 0 logs the sample grids."""

    def next_step(self) -> None:
        """Rank 0 ends the epoch's record."""

    def end(self) -> None:
        """Rank 0 closes the log."""


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each value's mean over the process group, in one all_reduce: the values stacked in the
    order of their sorted names (the same on every rank), reduced, then unstacked. Outside a group,
    the values as they are."""
    if not dist.is_initialized():
        return values
    names = sorted(values)
    stacked = torch.stack([values[name] for name in names])
    dist.all_reduce(stacked)
    return dict(zip(names, (stacked / dist.get_world_size()).unbind(), strict=True))


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

