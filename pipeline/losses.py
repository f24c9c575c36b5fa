"""GAN losses as small pure functions of D's logits (logits, so they stay valid under autocast)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                         real_target: float = 1.0) -> torch.Tensor:
    """D's BCE loss; real_target < 1 is one-sided label smoothing (Salimans et al. 2016)."""
    real = F.binary_cross_entropy_with_logits(
        real_logits.float(), torch.full_like(real_logits, real_target, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(
        fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """G maximises log D(G(z)) rather than minimising log(1 - D(G(z))), which saturates early."""
    return F.binary_cross_entropy_with_logits(
        fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))
