"""Where tensors live: one rule for every stage that runs a network."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from pipeline.core.params import PipelineError


def resolve_device(name: str, param: str) -> torch.device:
    """auto: CUDA, then MPS, then CPU; a named device that is absent is an error naming `param`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"{param}: cuda requested but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise PipelineError(f"{param}: mps requested but MPS is not available")
    return torch.device(name)


def cpu_description() -> str:
    """The CPU's model name, and the instruction sets that decide whether bf16 is native."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    extensions = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    name = fields.get("model name") or platform.processor() or platform.machine()
    detail = f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    return f"{name} ({', '.join(filter(None, [detail, ' '.join(extensions)]))})"


def available_cores() -> int:
    """Cores this process may run on (a container's limit, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has spent busy since boot (Linux /proc/stat): what
    else ran beside a measurement."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer reads what it ran (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
