"""One training step (a D update and, every n_critic, a G update) and everything that decides how it
runs: precision, memory format, compilation, DDP. train() and the throughput benchmark both build
their step with build_step, so what the benchmark measures is what training runs."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.core.params import PipelineError, TrainParams
from pipeline.models.augment import ada_adjust, augment
from pipeline.models.conditions import LABEL_DROPOUT, hide_labels
from pipeline.models.ema import ema_beta, ema_update
from pipeline.models.losses import (
    LOSSES,
    acgan_class_loss,
    gradient_penalty,
    mode_seeking_loss,
    paired_labels,
    sgan_class_loss,
    sgan_real_fake_logit,
)
from pipeline.models.sampling import from_uint8
from pipeline.training.run import Run, uses_channels_last


def cpu_has_fast_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware runs it natively (about 2x on AVX512-BF16 CPUs)."""
    if precision == "fp32":
        return False
    supported = {
        "cuda": lambda: torch.cuda.is_bf16_supported(),
        "cpu": cpu_has_fast_bf16,
    }.get(device.type, lambda: False)()
    if precision == "bf16" and not supported:
        raise PipelineError(f"train.precision: bf16 is not supported on this {device.type} device")
    return supported


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    if not bf16:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_model_input(batch: torch.Tensor, flip: bool, channels_last: bool) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], with random horizontal flips (faces are near symmetric)."""
    images = from_uint8(batch)
    if flip:
        mirrored = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
        images = torch.where(mirrored, images.flip(3), images)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


StepStats = dict[str, torch.Tensor]
# what a step reports, each a 0-d device tensor to be summed over an epoch: D's and G's losses, D's
# mean sigmoid score of the reals and the fakes, whether G was updated (0 or 1), augmentation's p
STAT_NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "g_updates", "augment_p")


def zero_stats(device: torch.device) -> StepStats:
    """Epoch totals, nothing summed yet."""
    return {name: torch.zeros((), device=device) for name in STAT_NAMES}


def add_stats(totals: StepStats, stats: StepStats) -> None:
    """Sum one step's statistics into `totals`, on the device (no host sync)."""
    for name in STAT_NAMES:
        totals[name] += stats[name]


ADA_INTERVAL = 4  # D steps between two moves of the adaptive augmentation's p, as in ADA


def real_signs(real: torch.Tensor, fake: torch.Tensor, loss: str, real_target: float) -> torch.Tensor:
    """sign(D(real)) about D's decision boundary, ADA's overfitting signal: 0 for the logits of
    the nonsaturating and hinge losses, halfway between lsgan's targets, and the mean score of the
    fakes for the Wasserstein critic, whose offset is arbitrary."""
    boundary: torch.Tensor | float = 0.0
    if loss == "lsgan":
        boundary = real_target / 2
    elif loss == "wgan-gp":
        boundary = fake.float().mean()
    return torch.sign(real.float() - boundary)


def use_compile(setting: str, device: torch.device) -> bool:
    """auto: on CUDA, where CUDA graphs remove the launch overhead of these small networks."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


@dataclass
class Step:
    """One D update and (every n_critic) one G update: the hot loop, free of host syncs."""

    run: Run
    params: TrainParams
    generator: nn.Module  # what the step calls: compiled and/or DDP-wrapped views of run's networks
    discriminator: nn.Module
    device: torch.device
    bf16: bool
    channels_last: bool
    world: int = 1
    # D uncompiled (DDP-wrapped where distributed), for wgan-gp's penalty: a gradient of a gradient,
    # which a compiled network's backward cannot give; None: run.discriminator
    eager_discriminator: nn.Module | None = None

    # train.augment_policy, less colour for a conditional D: its class terms (AC-GAN heads,
    # projection) judge tags that are colours, which a colour shift would falsify
    policy: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        chosen = () if self.params.augment == "off" else self.params.augment_policy
        self.policy = tuple(name for name in chosen if not (self.run.config.conditions and name == "color"))

    def augmented(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees of `images`: augmented with probability p by the policy."""
        return augment(images, self.policy, self.run.augment_p) if self.policy else images

    def adapt(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> None:
        """Tally sign(D(real)) and, every ADA_INTERVAL D steps, move p by it (on the device)."""
        run, params = self.run, self.params
        signs = real_signs(real_scores.detach(), fake_scores.detach(), params.loss, params.label_smoothing)
        run.augment_stats[0] += signs.sum()
        run.augment_stats[1] += signs.numel()  # a kernel argument, not a copy from the host
        if run.step % ADA_INTERVAL:
            return
        if self.world > 1:  # every rank moves its p by the group's tally, so all keep the same p
            dist.all_reduce(run.augment_stats)
        total, images = run.augment_stats
        run.augment_p.copy_(ada_adjust(run.augment_p, total / images.clamp(min=1), params.ada_target,
                                       images, params.ada_kimg))
        run.augment_stats.zero_()

    def score(self, outputs: torch.Tensor) -> torch.Tensor:
        """D's real-vs-fake logit from its outputs."""
        if self.params.objective == "sgan":
            return sgan_real_fake_logit(outputs)
        if self.run.config.acgan:
            return outputs[:, 0]
        return outputs

    def __call__(self, batch: torch.Tensor, labels: torch.Tensor | None) -> StepStats:
        """Returns the step's statistics (STAT_NAMES), device tensors to be summed. `labels`: the
        semi-supervised GAN's classes (N,), or the tag groups' (N, groups)."""
        params, run, config = self.params, self.run, self.run.config
        d_loss_fn, g_loss_fn = LOSSES[params.loss]
        score = self.score
        conditional = bool(config.conditions)
        if conditional and labels is None:  # faces without labels: "any" in every group
            labels = run.group_sizes.expand(batch.shape[0], -1)
        # the fakes are asked for the labels of the reals beside them, some hidden: both sides of D
        # see the same label distribution, "any" included
        shown = hide_labels(labels, run.group_sizes, LABEL_DROPOUT) if conditional else None
        # mode seeking compares pairs of fakes asked for the same labels, still the reals' distribution
        asked = paired_labels(shown) if conditional and params.mode_seeking else shown
        real = to_model_input(batch, params.flip, self.channels_last)
        z = torch.randn(real.shape[0], params.nz, device=self.device)
        with autocast(self.device, self.bf16):
            fake = self.generator(z, asked) if conditional else self.generator(z)
            # D sees reals and fakes through the same augmentation, in both updates (DiffAugment)
            real_seen, fake_seen = self.augmented(real), self.augmented(fake.detach())
            real_out = self.judge(real_seen, shown)
            fake_out = self.judge(fake_seen, asked)
            loss_d = d_loss_fn(score(real_out), score(fake_out), params.label_smoothing)
            if params.objective == "sgan" and labels is not None:
                loss_d = loss_d + sgan_class_loss(real_out, labels)
            if config.acgan:  # D learns the classes from real faces only, with every known label
                loss_d = loss_d + acgan_class_loss(real_out[:, 1:1 + config.classes], labels,
                                                   config.group_sizes)
            if config.twin:  # and its twin learns which labels G's faces were asked for (TAC-GAN)
                loss_d = loss_d + acgan_class_loss(fake_out[:, 1 + config.classes:], asked,
                                                   config.group_sizes)
        if params.loss == "wgan-gp":
            # between the augmented reals and fakes, as DiffAugment's authors penalise (their
            # compare_gan code): the critic is kept 1-Lipschitz where it actually looks
            eager = run.discriminator if self.eager_discriminator is None else self.eager_discriminator
            loss_d = loss_d + params.gp_weight * gradient_penalty(
                lambda images: score(self.judge(images, shown, eager)), real_seen, fake_seen)
        run.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        run.opt_d.step()
        run.step += 1
        if params.augment == "adaptive":
            self.adapt(score(real_out), score(fake_out))
        stats = {"loss_d": loss_d.detach(), "loss_g": torch.zeros((), device=self.device),
                 "d_real": torch.sigmoid(score(real_out).detach().float()).mean(),
                 "d_fake": torch.sigmoid(score(fake_out).detach().float()).mean(),
                 "g_updates": torch.zeros((), device=self.device),
                 "augment_p": run.augment_p.float().clone()}  # p as of this step, not a view of it
        if run.step % params.n_critic:
            return stats
        with autocast(self.device, self.bf16):
            fake_out = self.judge(self.augmented(fake), asked)
            loss_g = g_loss_fn(score(fake_out))
            if config.acgan:  # G is rewarded for faces D classifies as asked
                class_term = acgan_class_loss(fake_out[:, 1:1 + config.classes], asked, config.group_sizes)
                if config.twin:  # less what tells its own faces' labels apart: asked for a value, G
                    # draws all of that value's faces, not the one most typical (Gong et al. 2019)
                    class_term = class_term - acgan_class_loss(fake_out[:, 1 + config.classes:], asked,
                                                               config.group_sizes)
                loss_g = loss_g + params.acgan_weight * class_term
            if params.mode_seeking:
                loss_g = loss_g + params.mode_seeking * mode_seeking_loss(fake, z)
        run.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        run.opt_g.step()
        images = real.shape[0] * self.world  # this G step's global batch
        ema_update(run.generator_ema, run.generator,
                   ema_beta(images, run.step // params.n_critic * images, params.ema_kimg, params.ema_rampup))
        return stats | {"loss_g": loss_g.detach(), "g_updates": torch.ones((), device=self.device)}

    def judge(self, images: torch.Tensor, labels: torch.Tensor | None,
              discriminator: nn.Module | None = None) -> torch.Tensor:
        """D's outputs (through `discriminator`, a view of it, default the step's); a projection D is
        told the labels, the others are not."""
        discriminator = self.discriminator if discriminator is None else discriminator
        if labels is not None and not self.run.config.acgan:
            return discriminator(images, labels)
        return discriminator(images)


def build_step(run: Run, params: TrainParams, device: torch.device, world: int = 1) -> Step:
    """The step train() runs on `run`'s networks: bf16 where native, channels_last for the DCGAN,
    DDP across `world` ranks, compiled as train.compile says."""
    bf16 = resolve_bf16(params.precision, device)
    generator, discriminator = run.generator, run.discriminator
    if world > 1:
        if device.type == "cuda":  # batch statistics over the global batch, not each rank's slice
            generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
            discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
        ids = [device.index] if device.type == "cuda" else None
        generator = DistributedDataParallel(generator, device_ids=ids)
        discriminator = DistributedDataParallel(discriminator, device_ids=ids)
    eager_discriminator = discriminator
    if use_compile(params.compile, device):
        mode = "reduce-overhead" if device.type == "cuda" else "default"  # CUDA graphs on CUDA
        generator, discriminator = (torch.compile(generator, mode=mode),
                                    torch.compile(discriminator, mode=mode))
    return Step(run, params, generator, discriminator, device, bf16,
                uses_channels_last(params, device), world, eager_discriminator)

