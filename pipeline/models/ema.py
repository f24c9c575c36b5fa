"""The exponential moving average of G's weights that every sample is drawn from, and the batch-norm
statistics those averaged weights need."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.conditions import random_labels


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    # one fused call over all tensors instead of a kernel launch per parameter
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


@torch.no_grad()
def recalibrate_batchnorm(generator: nn.Module, nz: int, device: torch.device, seed: int,
                          batches: int = 8, batch_size: int = 128) -> None:
    """Recompute BN running statistics for these weights: EMA weights never produced the ones G
    tracked during training, and eval-mode samples use them."""
    noise = torch.Generator(device=device).manual_seed(seed)
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    generator.train()
    for _ in range(batches):  # a conditional G: every value of every group, "any" included
        z = torch.randn(batch_size, nz, device=device, generator=noise)
        generator(z, random_labels(generator.config, batch_size, noise, device))
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()

