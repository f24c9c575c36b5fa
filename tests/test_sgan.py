"""The semi-supervised GAN as Salimans et al. (2016) define it: the supervised term over the real
classes only, D's accuracy read with batch statistics of real faces, and a baseline that sees what
D saw."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pipeline.training.sgan as sgan
from pipeline.core.params import TrainParams
from pipeline.data.faces import load_faces
from pipeline.models.classifier import fit_classifier
from pipeline.models.losses import sgan_class_loss
from pipeline.models.networks import Discriminator, NetConfig
from pipeline.training.run import Run, new_run
from pipeline.training.sgan import (
    class_accuracy,
    recalibrated,
    sgan_accuracies,
    train_supervised_baseline,
)
from pipeline.training.step import to_model_input

CLASSES = ("blue_hair", "red_hair", "green_hair")


def sgan_params(**overrides) -> TrainParams:
    values = {"objective": "sgan", "sgan_classes": CLASSES, "conditions": {}, "labelled_fraction": 1.0,
              "batch_size": 8, "ngf": 8, "ndf": 8, "device": "cpu", "precision": "fp32", "threads": 1}
    return TrainParams(**{**values, **overrides})


def random_faces(count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 48, 48), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def batch_norm_buffers(network: nn.Module) -> list[torch.Tensor]:
    return [buffer.clone() for name, buffer in network.named_buffers() if "running" in name]


def test_class_loss_is_the_cross_entropy_of_the_real_classes_alone():
    """log p(y | x, y < K+1): the fake output takes no part in the supervised term."""
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 3.0], [0.0, 0.0, 5.0]], requires_grad=True)
    labels = torch.tensor([0, 1, -1])
    loss = sgan_class_loss(logits, labels)
    expected = nn.functional.cross_entropy(logits[:2, :-1], labels[:2])
    assert torch.allclose(loss, expected)
    shifted = logits.detach().clone()
    shifted[:, -1] += torch.tensor([7.0, -3.0, 1.0])
    assert torch.allclose(sgan_class_loss(shifted, labels), loss)
    loss.backward()
    assert torch.equal(logits.grad[:, -1], torch.zeros(3))


def test_accuracy_is_read_with_batch_statistics_of_real_faces():
    """A D whose running statistics are those of fake batches misreads real faces in eval mode; the
    recalibrated copy reads them as D does on a batch of real faces, and D itself is left as it was."""
    torch.manual_seed(0)
    discriminator = Discriminator(NetConfig(image_size=48, ndf=8, num_classes=6, mbstd_group=0))
    real = random_faces(32, seed=1)
    with torch.no_grad():
        labels = discriminator(to_model_input(real, flip=False, channels_last=False))[:, :-1].argmax(1)
        for _ in range(20):  # what a GAN's D tracks: mostly fakes, here smooth blobs unlike the faces
            fakes = torch.randn(32, 3, 6, 6).repeat_interleave(8, 2).repeat_interleave(8, 3).tanh()
            discriminator(fakes)
    before = batch_norm_buffers(discriminator)
    with_fake_statistics = class_accuracy(discriminator, real, labels, bf16=False)
    copy = recalibrated(discriminator, real, bf16=False)
    with_real_statistics = class_accuracy(copy, real, labels, bf16=False)
    assert with_real_statistics >= 0.95
    assert with_fake_statistics <= with_real_statistics - 0.3
    assert all(torch.equal(a, b) for a, b in zip(before, batch_norm_buffers(discriminator), strict=True))
    assert discriminator.training


def test_recalibrated_statistics_average_equal_batches_of_unaugmented_faces():
    """The copy's first batch norm holds the mean of its inputs over all the faces, whatever batch
    the last one was; a D of SyncBatchNorm layers (DDP) gives a copy of plain ones."""
    torch.manual_seed(0)
    discriminator = Discriminator(NetConfig(image_size=48, ndf=8, num_classes=2, mbstd_group=0))
    discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
    real = random_faces(300, seed=2)  # more than one batch, and not a multiple of it
    copy = recalibrated(discriminator, real, bf16=False)
    assert not any(isinstance(module, nn.SyncBatchNorm) for module in copy.modules())
    first_norm = next(m for m in copy.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        inputs = copy.net[:3](to_model_input(real, flip=False, channels_last=False))
    assert torch.allclose(first_norm.running_mean, inputs.mean((0, 2, 3)), atol=1e-5)


def test_sgan_accuracies_measure_recalibrated_copies_and_leave_training_alone(tiny_manifest):
    params = sgan_params()
    torch.manual_seed(0)
    run = new_run(params, torch.device("cpu"))
    with torch.no_grad():
        for _ in range(30):
            run.discriminator(torch.randn(8, 3, 48, 48) * 3)
    before = batch_norm_buffers(run.discriminator)
    summary = sgan_accuracies(params, tiny_manifest, run, torch.device("cpu"), bf16=False)
    assert all(torch.equal(a, b) for a, b in zip(before, batch_norm_buffers(run.discriminator), strict=True))
    assert run.discriminator.training
    val_faces = load_faces(tiny_manifest, "val", 48)
    val_labels = torch.tensor([16 % 3, 17 % 3, 18 % 3, 19 % 3])
    train_faces = load_faces(tiny_manifest, "train", 48)
    expected = class_accuracy(recalibrated(run.discriminator, train_faces, bf16=False), val_faces,
                              val_labels, bf16=False)
    assert summary["sgan_val_accuracy"] == expected
    assert summary["labelled_train_faces"] == 16


def inputs_seen_by_the_baseline(params: TrainParams, run: Run | None = None,
                                faces: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Every image batch a supervised baseline of three steps is shown while it trains."""
    torch.manual_seed(0)
    run = run or new_run(params, torch.device("cpu"))
    faces = random_faces(16, seed=3) if faces is None else faces
    seen: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple) -> None:
        if isinstance(module, Discriminator):
            seen.append(args[0].detach().clone())

    hook = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        train_supervised_baseline(params, run, faces, torch.arange(16) % 3, 3, bf16=False)
    finally:
        hook.remove()
    assert len(seen) == 3
    return seen


def every_image_has_zeros(batches: list[torch.Tensor]) -> bool:
    return all(bool((batch == 0).flatten(1).any(1).all()) for batch in batches)


def no_image_has_zeros(batches: list[torch.Tensor]) -> bool:
    return not any(bool((batch == 0).any()) for batch in batches)


@pytest.mark.parametrize("policy", [("cutout",), ("translation",)])
def test_the_supervised_baseline_sees_the_augmentation_d_saw(policy):
    """Mid-grey zeros come only from cutout or translation: uint8 faces never map to 0 exactly."""
    params = sgan_params(augment="fixed", augment_p=1.0, augment_policy=policy, flip=False)
    assert every_image_has_zeros(inputs_seen_by_the_baseline(params))


def test_the_supervised_baseline_is_not_augmented_when_d_was_not():
    assert no_image_has_zeros(inputs_seen_by_the_baseline(sgan_params(augment="off", flip=False)))


def test_the_supervised_baseline_takes_the_probability_ds_adaptive_augmentation_reached():
    params = sgan_params(augment="adaptive", augment_policy=("cutout",), flip=False)
    run = new_run(params, torch.device("cpu"))
    assert no_image_has_zeros(inputs_seen_by_the_baseline(params, run))  # p starts at 0
    run.augment_p.fill_(1.0)
    assert every_image_has_zeros(inputs_seen_by_the_baseline(params, run))


def test_the_supervised_baseline_flips_as_d_did():
    """Faces whose left half is black and right half white: a flipped one is white on the left."""
    faces = torch.zeros(16, 3, 48, 48, dtype=torch.uint8)
    faces[..., 24:] = 255
    for flip in (False, True):
        seen = torch.cat(inputs_seen_by_the_baseline(sgan_params(augment="off", flip=flip), faces=faces))
        assert bool((seen[:, :, :, 0] > 0).any()) is flip


def test_the_baseline_is_fitted_by_the_shared_classifier_loop(monkeypatch):
    """The baseline and the conditional judge are one loop (fit_classifier), told how to show the
    faces (here as D saw them) and how to score them (the real classes alone)."""
    fits = []

    def recorded(classifier, faces, labels, **how):
        fits.append(how)
        return fit_classifier(classifier, faces, labels, **how)

    monkeypatch.setattr(sgan, "fit_classifier", recorded)
    params = sgan_params(lr=0.001, beta1=0.3)
    inputs_seen_by_the_baseline(params)
    [how] = fits
    assert (how["steps"], how["batch_size"], how["lr"], how["beta1"]) == (3, 8, 0.001, 0.3)
    outputs, labels = torch.tensor([[9.0, 0.0, 0.0, -50.0]]), torch.tensor([0])
    assert how["loss"](outputs, labels) == nn.functional.cross_entropy(outputs[:, :-1], labels)
