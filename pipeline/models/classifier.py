"""A classifier of D's shape fitted to labelled faces: the semi-supervised GAN's baseline and the
conditional generator's judge are both this one loop, told how to show a face and how to score it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

ClassifierLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fit_classifier(classifier: nn.Module, faces: torch.Tensor, labels: torch.Tensor, *, steps: int,
                   batch_size: int, lr: float, beta1: float, prepare: Callable[[torch.Tensor], torch.Tensor],
                   loss: ClassifierLoss,
                   precision: Callable[[], AbstractContextManager] = nullcontext) -> nn.Module:
    """`steps` Adam updates of `classifier` on random batches of the uint8 `faces` (on its device),
    each shown through `prepare` (scaling, flips, augmentation) and scored by `loss(outputs,
    labels)`; the forward pass runs under `precision` (an autocast), the loss outside it."""
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, betas=(beta1, 0.999))
    device = faces.device
    classifier.train()
    for _ in range(steps):
        index = torch.randint(0, faces.shape[0], (min(batch_size, faces.shape[0]),), device=device)
        with precision():
            outputs = classifier(prepare(faces[index]))
        batch_loss = loss(outputs, labels[index])
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
    return classifier
