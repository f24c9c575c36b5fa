"""The semi-supervised GAN's measure: D's class accuracy on labelled val faces, beside a classifier of
D's shape trained on the labelled faces alone, seeing them as D saw its faces."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from pipeline.core.params import PipelineError, TrainParams
from pipeline.data.faces import class_labels, load_faces
from pipeline.data.formats import split_rows
from pipeline.models.classifier import fit_classifier
from pipeline.models.networks import Discriminator
from pipeline.training.run import Run
from pipeline.training.step import Step, autocast, to_model_input

EVAL_BATCH = 256  # faces per forward pass when measuring and recalibrating


def labelled_subset(rows: list[dict[str, str]], classes: tuple[str, ...], fraction: float) -> torch.Tensor:
    """Class labels for the semi-supervised GAN, kept for a fixed share of faces (chosen by hash)."""
    labels = class_labels(rows, classes)
    keep = torch.tensor([int(row["sha256"][:8], 16) / 0x1_0000_0000 < fraction for row in rows])
    return torch.where(keep, labels, torch.full_like(labels, -1))


def unaugmented_batches(faces: torch.Tensor, device: torch.device) -> Iterator[torch.Tensor]:
    """uint8 faces as the networks' input, neither flipped nor augmented, one batch at a time on
    `device`, the batches of equal size (to within one face): each weighs alike in a cumulative
    batch-norm average."""
    for batch in faces.tensor_split(max(1, math.ceil(faces.shape[0] / EVAL_BATCH))):
        yield to_model_input(batch.to(device), flip=False, channels_last=False)


def recalibrated(network: Discriminator, real_faces: torch.Tensor, bf16: bool) -> Discriminator:
    """A copy of `network` whose batch-norm statistics are those of `real_faces`, unaugmented, to be
    measured in eval mode. D's running statistics follow the batches it trained on, mostly fakes (a
    D step shows it a real and a fake batch, a G step another fake one) and all augmented: in eval
    mode it would normalise a real face as something it is not. A fresh network given the weights
    leaves training's D as it was, and its SyncBatchNorm layers (DDP on CUDA) become plain ones,
    which need no other rank."""
    device = next(network.parameters()).device
    copy = Discriminator(network.config).to(device)
    copy.load_state_dict(network.state_dict())
    with autocast(device, bf16):
        update_bn(unaugmented_batches(real_faces, device), copy)  # a cumulative average, under no_grad
    return copy.eval()


@torch.no_grad()
def class_accuracy(discriminator: nn.Module, faces: torch.Tensor, labels: torch.Tensor,
                   bf16: bool) -> float:
    """Share of faces whose most likely real class (the fake output aside) is their label, in eval
    mode with the statistics the network holds."""
    was_training = discriminator.training
    discriminator.eval()
    correct = 0
    for start in range(0, faces.shape[0], EVAL_BATCH):
        images = to_model_input(faces[start:start + EVAL_BATCH], flip=False, channels_last=False)
        with autocast(faces.device, bf16):
            logits = discriminator(images)
        correct += int((logits[:, :-1].argmax(1) == labels[start:start + EVAL_BATCH]).sum())
    discriminator.train(was_training)
    return correct / faces.shape[0]


def as_d_saw(params: TrainParams, run: Run, device: torch.device, bf16: bool) -> Step:
    """The training step's view of what D is shown, for the baseline: D's augmentation policy at the
    probability D's training holds (train.augment_p, or where adaptive augmentation brought it)."""
    return Step(run=run, params=params, generator=run.generator, discriminator=run.discriminator,
                device=device, bf16=bf16, channels_last=False)


def train_supervised_baseline(params: TrainParams, run: Run, faces: torch.Tensor, labels: torch.Tensor,
                              steps: int, bf16: bool) -> Discriminator:
    """A classifier of D's shape trained on the labelled faces alone, for as many steps as D had and
    shown them as D was (the same flips and augmentation): what the semi-supervised GAN's accuracy
    must beat for the unlabelled faces to have helped."""
    device = faces.device
    augmented = as_d_saw(params, run, device, bf16).augmented
    classifier = Discriminator(run.discriminator.config).to(device)
    fit_classifier(classifier, faces, labels, steps=steps, batch_size=params.batch_size, lr=params.lr,
                   beta1=params.beta1,
                   prepare=lambda batch: augmented(to_model_input(batch, params.flip, channels_last=False)),
                   loss=real_class_loss, precision=lambda: autocast(device, bf16))
    return classifier


def real_class_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the real classes of a semi-supervised D's outputs (the fake output aside)."""
    return torch.nn.functional.cross_entropy(outputs[:, :-1].float(), labels)


def sgan_accuracies(params: TrainParams, manifest: Path, run: Run, device: torch.device,
                    bf16: bool) -> dict[str, float]:
    """Both networks' accuracy on the labelled val faces, each read with the batch-norm statistics
    of the real faces it trained on: D all the train faces, the baseline the labelled ones."""
    val_labels = class_labels(split_rows(manifest, "val"), params.sgan_classes)
    train_labels = labelled_subset(split_rows(manifest, "train"), params.sgan_classes,
                                   params.labelled_fraction)
    if not bool((val_labels >= 0).any()) or not bool((train_labels >= 0).any()):
        raise PipelineError("train.sgan_classes: no labelled face in the train or val split has "
                            "exactly one of these tags")
    val_faces = load_faces(manifest, "val", params.image_size)[val_labels >= 0].to(device)
    val_labels = val_labels[val_labels >= 0].to(device)
    all_train_faces = load_faces(manifest, "train", params.image_size)
    train_faces = all_train_faces[train_labels >= 0].to(device)
    train_labels = train_labels[train_labels >= 0].to(device)
    baseline = train_supervised_baseline(params, run, train_faces, train_labels, run.step, bf16)
    sgan_d = recalibrated(run.discriminator, all_train_faces, bf16)
    return {"sgan_val_accuracy": class_accuracy(sgan_d, val_faces, val_labels, bf16),
            "supervised_val_accuracy": class_accuracy(recalibrated(baseline, train_faces, bf16),
                                                      val_faces, val_labels, bf16),
            "labelled_train_faces": float(train_labels.shape[0])}
