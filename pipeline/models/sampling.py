"""Faces from a generator: seeded noise in, uint8 pictures out, the same on every device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid


def from_uint8(faces: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] faces -> float [-1, 1], the scale the generator draws in (to_uint8's inverse)."""
    return faces.to(torch.float32).div(127.5).sub_(1.0)  # div makes a copy: the caller's stays


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255] on the CPU, as the real faces are stored."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()


@torch.no_grad()
def generate(generator: nn.Module, count: int, seed: int, batch_size: int,
             labels: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """`count` uint8 faces from seeded CPU noise (the same faces every call, on every device);
    `labels` (count, groups) ask a conditional generator for tag values, None for "any"."""
    z = seeded_latents(count, generator.config.nz, seed, temperature)
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        if labels is None:
            batches = [generator(batch.to(device)) for batch in z.split(batch_size)]
        else:
            batches = [generator(batch.to(device), asked.to(device))
                       for batch, asked in zip(z.split(batch_size), labels.split(batch_size),
                                               strict=True)]
        return torch.cat([to_uint8(images) for images in batches])
    finally:
        generator.train(was_training)


@torch.no_grad()
def sample_grid(generator: nn.Module, z: torch.Tensor, nrow: int) -> torch.Tensor:
    """uint8 (H, W, 3) grid of G(z), for DVCLive and PNGs."""
    images = generator(z).float().clamp(-1, 1)
    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu()


def slerp(start: torch.Tensor, end: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Points on the great circle from `start` (weight 0) to `end` (weight 1), one row per weight.

    Gaussian latents live near a sphere; a straight line between two of them cuts through its
    low-norm interior, where the generator saw no training noise. Vectors without a unique great
    circle between them (parallel or opposite) fall back to linear interpolation.
    """
    dtype = start.dtype
    start, end = start.double(), end.double()  # float64 so the endpoints come back exact
    weights = weights.double().unsqueeze(1)
    cosine = F.cosine_similarity(start, end, dim=0).clamp(-1.0, 1.0)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    if sine < 1e-6:
        start_share, end_share = 1.0 - weights, weights
    else:
        start_share = torch.sin((1.0 - weights) * angle) / sine
        end_share = torch.sin(weights * angle) / sine
    return (start_share * start + end_share * end).to(dtype)


def seeded_latents(count: int, nz: int, seed: int, temperature: float = 1.0) -> torch.Tensor:
    """N(0, temperature²) noise: below 1 stays near the mode, giving safer but less varied faces."""
    return temperature * torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))


def interpolation_latents(nz: int, rows: int, steps: int, seed: int,
                          temperature: float = 1.0) -> torch.Tensor:
    """`rows` slerps of `steps` points each between 2 * rows seeded latents, row after row."""
    ends = seeded_latents(2 * rows, nz, seed, temperature)
    weights = torch.linspace(0.0, 1.0, steps)
    return torch.cat([slerp(start, end, weights) for start, end in ends.view(rows, 2, nz)])

