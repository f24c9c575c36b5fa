"""DiffAugment's transforms, the per-image probability, ADA's update of it, and how the training
step and loop use them."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pipeline.core.params import TrainParams
from pipeline.models.augment import ada_adjust, augment, colour, cutout, translation
from pipeline.training.loop import train
from pipeline.training.run import new_run
from pipeline.training.step import build_step, real_signs

ALL = ("color", "translation", "cutout")


def images_without_zeros(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Images in [-1, 1] none of whose values is 0, so a 0 can only come from the augmentation."""
    generator = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(n, 3, size, size, generator=generator) * 0.9 + 0.1
    sign = torch.randint(0, 2, (n, 3, size, size), generator=generator) * 2 - 1
    return magnitude * sign


def test_colour_draws_brightness_saturation_contrast_per_image_in_diffaugments_ranges():
    torch.manual_seed(0)
    x = torch.rand(256, 3, 8, 8, dtype=torch.float64) * 1.6 - 0.8
    y = colour(x)
    # y = c * (s * (x - grey) + grey - mean) + mean + b, with grey the per-pixel mean over the channels
    grey, mean = x.mean(1, keepdim=True), x.mean((1, 2, 3), keepdim=True)
    b = y.mean((1, 2, 3), keepdim=True) - mean
    y_grey = y.mean(1, keepdim=True)
    c = ((y_grey - mean - b) * (grey - mean)).sum((1, 2, 3), keepdim=True) / ((grey - mean) ** 2).sum(
        (1, 2, 3), keepdim=True)
    cs = ((y - y_grey) * (x - grey)).sum((1, 2, 3), keepdim=True) / ((x - grey) ** 2).sum(
        (1, 2, 3), keepdim=True)
    # one factor of each per image explains every pixel
    assert torch.allclose(y_grey, c * (grey - mean) + mean + b, atol=1e-5)
    assert torch.allclose(y - y_grey, cs * (x - grey), atol=1e-5)
    s = cs / c
    for draws, low, high in ((b, -0.5, 0.5), (s, 0.0, 2.0), (c, 0.5, 1.5)):
        assert low - 1e-5 <= draws.min() < low + 0.05 and high - 0.05 < draws.max() <= high + 1e-5


def test_translation_moves_content_by_at_most_an_eighth_and_pads_with_zero():
    n, size = 256, 48
    rows = torch.arange(size, dtype=torch.float32).view(1, size, 1).expand(n, size, size)
    cols = torch.arange(size, dtype=torch.float32).view(1, 1, size).expand(n, size, size)
    # each pixel carries where it came from: channel 0 its row, channel 1 its column (never 0)
    x = torch.stack([(rows + 1) / 64, (cols + 1) / 64, images_without_zeros(n, size)[:, 2]], dim=1)
    torch.manual_seed(0)
    y = translation(x)
    shifts = set()
    for before, after in zip(x, y, strict=True):
        # the centre is inside whatever the shift, and says where it came from
        dy = size // 2 - round(after[0, size // 2, size // 2].item() * 64 - 1)
        dx = size // 2 - round(after[1, size // 2, size // 2].item() * 64 - 1)
        assert abs(dy) <= size // 8 and abs(dx) <= size // 8
        expected = torch.zeros_like(before)
        expected[:, max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = \
            before[:, max(-dy, 0):size + min(-dy, 0), max(-dx, 0):size + min(-dx, 0)]
        assert torch.equal(after, expected)
        shifts.add((dy, dx))
    reach = range(-size // 8, size // 8 + 1)
    assert {dy for dy, _ in shifts} == set(reach) == {dx for _, dx in shifts}


def test_cutout_zeroes_one_half_size_square_clipped_by_the_border():
    n, size = 256, 48
    x = images_without_zeros(n, size)
    torch.manual_seed(0)
    y = cutout(x)
    full_squares = clipped = 0
    for before, after in zip(x, y, strict=True):
        cut = after == 0
        assert torch.equal(cut[0], cut[1]) and torch.equal(cut[0], cut[2])  # all channels alike
        cut = cut[0]
        assert torch.equal(after[:, ~cut], before[:, ~cut])  # nothing else changes
        assert not (after == -1).any()  # "zero" is 0 in [-1, 1], mid-grey, as in DiffAugment
        cut_rows, cut_cols = cut.any(1).nonzero().flatten(), cut.any(0).nonzero().flatten()
        assert torch.equal(cut, cut.any(1)[:, None] & cut.any(0)[None, :])  # one rectangle
        for span in (cut_rows, cut_cols):
            assert torch.equal(span, torch.arange(span[0], span[-1] + 1))  # without holes
            length = len(span)
            touches_border = span[0] == 0 or span[-1] == size - 1
            # its centre is in the image: at least half of it is, all of it away from the border
            assert size // 4 <= length <= size // 2 and (touches_border or length == size // 2)
        if len(cut_rows) == len(cut_cols) == size // 2:
            full_squares += 1
        else:
            clipped += 1
    assert full_squares > 50 and clipped > 50


@pytest.mark.parametrize("policy", [("color",), ("translation",), ("cutout",), ALL])
def test_probability_zero_is_the_identity_and_one_augments_every_image(policy):
    x = images_without_zeros(64)
    assert torch.equal(augment(x, policy, torch.tensor(0.0)), x)
    y = augment(x, policy, torch.tensor(1.0))
    changed = (y != x).flatten(1).any(1)
    if policy == ("translation",):  # a shift by (0, 0) is one draw in 169
        assert changed.sum() >= 60
    else:
        assert changed.all()


def test_each_image_is_augmented_with_probability_p():
    torch.manual_seed(0)
    x = images_without_zeros(2000, size=16)
    for p in (0.25, 0.5):
        cut = (augment(x, ("cutout",), torch.tensor(p)) == 0).flatten(1).any(1)
        assert abs(cut.float().mean().item() - p) < 0.04
    # one draw per policy: at p = 0.5, half the images are coloured, half cut, a quarter both
    y = augment(x, ("color", "cutout"), torch.tensor(0.5))
    coloured = (y != x).flatten(1).sum(1) > 3 * 8 * 8  # more than a cut square can change
    cut = (y == 0).flatten(1).any(1)
    for share, expected in ((coloured, 0.5), (cut, 0.5), (coloured & cut, 0.25)):
        assert abs(share.float().mean().item() - expected) < 0.04


@pytest.mark.parametrize("transform", [colour, translation, cutout])
def test_gradients_reach_the_input(transform):
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_(True)

    def seeded(images: torch.Tensor) -> torch.Tensor:  # the same draws on every call gradcheck makes
        torch.manual_seed(3)
        return transform(images)

    assert torch.autograd.gradcheck(seeded, (x,))
    augment(x, ALL, torch.tensor(1.0)).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and x.grad.isfinite().all()


def test_channels_last_bf16_autocast_and_compile():
    x = images_without_zeros(16)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    p = torch.tensor(0.5)
    torch.manual_seed(1)
    expected = augment(x, ALL, p)
    torch.manual_seed(1)
    y = augment(channels_last, ALL, p)
    assert y.is_contiguous(memory_format=torch.channels_last)  # D keeps its fast layout
    assert torch.allclose(y, expected, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = augment(channels_last.bfloat16(), ALL, torch.tensor(1.0))
    assert low.dtype == torch.bfloat16 and low.isfinite().all()
    # one graph, no breaks: no host syncs (.item()), no Python branching on values
    compiled = torch.compile(augment, backend="eager", fullgraph=True)
    assert compiled(channels_last, ALL, p).shape == x.shape
    adjust = torch.compile(ada_adjust, backend="eager", fullgraph=True)
    assert adjust(p, torch.tensor(0.9), 0.6, torch.tensor(64.0), 1).item() == pytest.approx(0.564)


def test_ada_adjust_raises_above_the_target_lowers_below_and_clamps():
    p = torch.tensor(0.5)
    assert ada_adjust(p, torch.tensor(0.9), 0.6, 256, 100).item() == pytest.approx(0.50256)
    assert ada_adjust(p, torch.tensor(0.2), 0.6, 256, 100).item() == pytest.approx(0.49744)
    assert ada_adjust(p, torch.tensor(0.6), 0.6, 256, 100).item() == 0.5
    assert ada_adjust(torch.tensor(0.999), torch.tensor(1.0), 0.6, 1000, 1).item() == 1.0
    assert ada_adjust(torch.tensor(0.001), torch.tensor(-1.0), 0.6, 1000, 1).item() == 0.0
    assert ada_adjust(p, torch.tensor(0.9), 0.6, torch.tensor(256.0), 100).dtype == p.dtype


def test_overfitting_signal_is_taken_about_each_losss_boundary():
    real, fake = torch.tensor([0.3, 0.6, -0.1]), torch.tensor([0.4, 0.6])
    assert real_signs(real, fake, "nonsaturating", 0.9).tolist() == [1, 1, -1]
    assert real_signs(real, fake, "lsgan", 0.9).tolist() == [-1, 1, -1]  # halfway to 0.9
    assert real_signs(real, fake, "wgan-gp", 0.9).tolist() == [-1, 1, -1]  # about the fakes' mean, 0.5


def tiny(**overrides) -> TrainParams:
    values = {"epochs": 4, "batch_size": 8, "ngf": 8, "ndf": 8, "device": "cpu", "precision": "fp32",
              "threads": 1, "compile": "off", "checkpoint_every": 1000, "sample_every": 1000,
              "snapshot_every": 1000}
    return TrainParams(**{**values, **overrides})


class Recording(torch.nn.Module):
    """D as the step calls it, recording its inputs; `logit` replaces its outputs when given."""

    def __init__(self, net: torch.nn.Module, logit: float | None = None) -> None:
        super().__init__()
        self.net, self.logit, self.inputs = net, logit, []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.inputs.append(images.detach().clone())
        out = self.net(images)
        return out if self.logit is None else out * 0 + self.logit


def test_d_sees_only_augmented_images_in_both_updates():
    params = tiny(augment="fixed", augment_p=1.0, augment_policy=("cutout",), flip=False)
    torch.manual_seed(0)
    run = new_run(params, torch.device("cpu"))
    step = build_step(run, params, torch.device("cpu"))
    step.discriminator = Recording(step.discriminator)
    step(torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8), None)
    assert len(step.discriminator.inputs) == 3  # reals and fakes in D's update, fakes in G's
    for images in step.discriminator.inputs:
        grey = (images == 0).all(1).flatten(1).sum(1)
        assert (grey >= 12 * 12).all()  # every image has its cut square, at least its inner quarter
    assert run.augment_p.item() == 1.0  # fixed: p stays


@pytest.mark.parametrize("logit, start, end", [(10.0, 0.0, 0.032), (-10.0, 0.5, 0.468)])
def test_adaptive_p_moves_every_four_d_steps_by_the_real_images_seen(logit, start, end):
    params = tiny(augment="adaptive", ada_kimg=1, ada_target=0.6)
    torch.manual_seed(0)
    run = new_run(params, torch.device("cpu"))
    run.augment_p.fill_(start)
    step = build_step(run, params, torch.device("cpu"))
    step.discriminator = Recording(step.discriminator, logit=logit)  # D sure of everything
    batch = torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8)
    for _ in range(3):
        step(batch, None)
        assert run.augment_p.item() == start
    step(batch, None)
    # 4 steps of 8 reals, all signs +1 (above the target 0.6: up) or -1 (below: down), ada_kimg 1
    assert run.augment_p.item() == pytest.approx(end)
    assert run.augment_stats.tolist() == [0.0, 0.0]


def test_adaptive_run_raises_p_when_d_overfits_and_a_resumed_run_continues_it(tiny_manifest, tmp_path):
    """16 faces and ada_kimg 1: D learns them by heart and p rises. Stopped after 7 epochs (14
    steps, between two of p's updates) and continued, the run ends as one that was not stopped.
    Unconditional: its D overfits these 16 random faces fastest (AC-GAN's class heads slow it)."""
    params = tiny(epochs=15, augment="adaptive", ada_kimg=1, conditions={})
    summary = train(params, tiny_manifest, tmp_path / "straight")
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    assert straight["augment_p"] > 0.1 and summary["augment_p"] > 0.1
    logged = (tmp_path / "straight/dvclive/plots/metrics/train/augment_p.tsv").read_text().split("\n")
    assert float(logged[1].split("\t")[1]) < float(logged[-2].split("\t")[1])

    train(replace(params, epochs=7, checkpoint_every=7), tiny_manifest, tmp_path / "resumed")
    stopped = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert stopped["augment_p"] > 0 and stopped["augment_stats"][1] == 2 * 8  # mid-interval
    train(params, tiny_manifest, tmp_path / "resumed")
    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert resumed["augment_p"] == straight["augment_p"]
    for name in ("generator", "discriminator"):
        assert all(torch.equal(resumed[name][k], v) for k, v in straight[name].items())


def test_augment_off_leaves_p_at_zero_and_images_untouched(tiny_manifest, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("augment called with train.augment off")

    monkeypatch.setattr("pipeline.training.step.augment", refuse)
    summary = train(tiny(augment="off", epochs=6), tiny_manifest, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["augment_p"] == 0.0 and summary["augment_p"] == 0.0
    assert checkpoint["augment_stats"].tolist() == [0.0, 0.0]
