"""The semi-supervised GAN's measure: D's class accuracy on labelled val faces, beside a classifier of
D's shape trained on the labelled faces alone."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.core.params import PipelineError, TrainParams
from pipeline.data.faces import class_labels, load_faces
from pipeline.data.formats import split_rows
from pipeline.models.networks import Discriminator, NetConfig
from pipeline.training.run import Run, net_config
from pipeline.training.step import autocast, to_model_input


def labelled_subset(rows: list[dict[str, str]], classes: tuple[str, ...], fraction: float) -> torch.Tensor:
    """Class labels for the semi-supervised GAN, kept for a fixed share of faces (chosen by hash)."""
    labels = class_labels(rows, classes)
    keep = torch.tensor([int(row["sha256"][:8], 16) / 0x1_0000_0000 < fraction for row in rows])
    return torch.where(keep, labels, torch.full_like(labels, -1))


@torch.no_grad()
def class_accuracy(discriminator: nn.Module, faces: torch.Tensor, labels: torch.Tensor,
                   bf16: bool) -> float:
    """Share of faces whose most likely real class (the fake output aside) is their label."""
    discriminator.eval()
    correct = 0
    for start in range(0, faces.shape[0], 256):
        images = to_model_input(faces[start:start + 256], flip=False, channels_last=False)
        with autocast(faces.device, bf16):
            logits = discriminator(images)
        correct += int((logits[:, :-1].argmax(1) == labels[start:start + 256]).sum())
    discriminator.train()
    return correct / faces.shape[0]


def train_supervised_baseline(params: TrainParams, config: NetConfig, faces: torch.Tensor,
                              labels: torch.Tensor, steps: int, bf16: bool) -> Discriminator:
    """A classifier of D's shape trained on the labelled faces alone, for as many steps as D had:
    what the semi-supervised GAN's accuracy must beat for the unlabelled faces to have helped."""
    device = faces.device
    classifier = Discriminator(config).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=params.lr, betas=(params.beta1, 0.999))
    for _ in range(steps):
        index = torch.randint(0, faces.shape[0], (min(params.batch_size, faces.shape[0]),), device=device)
        with autocast(device, bf16):
            logits = classifier(to_model_input(faces[index], params.flip, channels_last=False))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return classifier


def sgan_accuracies(params: TrainParams, manifest: Path, run: Run, device: torch.device,
                    bf16: bool) -> dict[str, float]:
    val_labels = class_labels(split_rows(manifest, "val"), params.sgan_classes)
    train_labels = labelled_subset(split_rows(manifest, "train"), params.sgan_classes,
                                   params.labelled_fraction)
    if not bool((val_labels >= 0).any()) or not bool((train_labels >= 0).any()):
        raise PipelineError("train.sgan_classes: no labelled face in the train or val split has "
                            "exactly one of these tags")
    val_faces = load_faces(manifest, "val", params.image_size)[val_labels >= 0].to(device)
    val_labels = val_labels[val_labels >= 0].to(device)
    train_faces = load_faces(manifest, "train", params.image_size)[train_labels >= 0].to(device)
    train_labels = train_labels[train_labels >= 0].to(device)
    baseline = train_supervised_baseline(params, net_config(params), train_faces, train_labels,
                                         run.step, bf16)
    return {"sgan_val_accuracy": class_accuracy(run.discriminator, val_faces, val_labels, bf16),
            "supervised_val_accuracy": class_accuracy(baseline, val_faces, val_labels, bf16),
            "labelled_train_faces": float(train_labels.shape[0])}

