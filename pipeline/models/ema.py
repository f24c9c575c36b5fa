"""The exponential moving average of G's weights that every sample is drawn from, and the batch-norm
statistics those averaged weights need."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.conditions import training_like_labels


def ema_beta(batch_images: int, images_seen: int, half_life_kimg: float, rampup: float | None) -> float:
    """The EMA's decay per step, defined by a half-life in images as StyleGAN2-ADA does: after
    `half_life_kimg` thousand images a weight's pull has halved, whatever the batch size. During the
    ramp-up the half-life is at most `rampup` times the images seen so far, so early, poor weights
    fade fast; 0 turns the average off (it follows G)."""
    if half_life_kimg <= 0:
        return 0.0
    half_life = half_life_kimg * 1000.0
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_images / max(half_life, 1e-8))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    # one fused call over all tensors instead of a kernel launch per parameter
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


@torch.no_grad()
def recalibrate_batchnorm(generator: nn.Module, nz: int, device: torch.device, seed: int,
                          batches: int = 8, batch_size: int = 128,
                          labels: torch.Tensor | None = None) -> None:
    """Recompute BN running statistics for these weights: EMA weights never produced the ones G
    tracked during training, and eval-mode samples use them. A conditional G is asked for what it
    was trained on: rows of the train faces' `labels`, hidden as in training (without them,
    uniform over every value, "any" included)."""
    noise = torch.Generator(device=device).manual_seed(seed)
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    generator.train()
    for _ in range(batches):  # a conditional G: every value of every group, "any" included
        z = torch.randn(batch_size, nz, device=device, generator=noise)
        generator(z, training_like_labels(generator.config, labels, batch_size, noise, device))
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()

