"""Where tensors live: one rule for every stage that runs a network.

Only what the stages run belongs here: dvc.yaml makes them depend on this file, so a helper that
only the benchmarks use (benchmarks/harness.py) would rerun training whenever it changed."""

from __future__ import annotations

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
