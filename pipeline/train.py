"""Stage train: a DCGAN on the manifest's train faces, logged with DVCLive.

python -m pipeline.train [--input data/manifest.csv] [--output models]
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from dvclive import Live
from torch import nn
from torchvision.utils import make_grid
from tqdm import tqdm

from pipeline.cli import run_stage, stage_parser
from pipeline.dataset import load_faces
from pipeline.files import atomic_path
from pipeline.losses import d_loss_nonsaturating, g_loss_nonsaturating
from pipeline.models import Discriminator, Generator, NetConfig, save_generator
from pipeline.params import PipelineError, TrainParams, read_section

log = logging.getLogger("pipeline.train")

CHECKPOINT_FORMAT = "anime-face-dcgan/checkpoint/1"
SAMPLE_GRID = 64


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device: cuda requested but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise PipelineError("train.device: mps requested but MPS is not available")
    return torch.device(name)


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


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param, 1.0 - decay)


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
    for _ in range(batches):
        generator(torch.randn(batch_size, nz, device=device, generator=noise))
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()


@torch.no_grad()
def sample_grid(generator: nn.Module, z: torch.Tensor, nrow: int) -> torch.Tensor:
    """uint8 (H, W, 3) grid of G(z), for DVCLive and PNGs."""
    images = generator(z).float().clamp(-1, 1)
    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu()


def to_model_input(batch: torch.Tensor, flip: bool, channels_last: bool) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], with random horizontal flips (faces are near symmetric)."""
    images = batch.float().div_(127.5).sub_(1.0)
    if flip:
        mirrored = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
        images = torch.where(mirrored, images.flip(3), images)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def train(params: TrainParams, manifest: Path, output: Path) -> dict[str, float]:
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads or os.cpu_count() or 1)
    device = resolve_device(params.device)
    bf16 = resolve_bf16(params.precision, device)
    channels_last = device.type != "mps"
    config = NetConfig(image_size=params.image_size, nz=params.nz, ngf=params.ngf, ndf=params.ndf)

    faces = load_faces(manifest, "train", params.image_size).to(device)
    n_faces = faces.shape[0]
    batch_size = min(params.batch_size, n_faces)
    steps_per_epoch = max(1, n_faces // batch_size)
    log.info("%d train faces at %d px on %s (%s), %d steps per epoch", n_faces, params.image_size,
             device, "bf16 autocast" if bf16 else "fp32", steps_per_epoch)

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    generator = Generator(config).to(device, memory_format=memory_format)
    discriminator = Discriminator(config).to(device, memory_format=memory_format)
    generator_ema = copy.deepcopy(generator).requires_grad_(False)
    adam = {"lr": params.lr, "betas": (params.beta1, 0.999)}
    opt_g = torch.optim.Adam(generator.parameters(), **adam)
    opt_d = torch.optim.Adam(discriminator.parameters(), **adam)
    fixed_z = torch.randn(SAMPLE_GRID, params.nz, device=device,
                          generator=torch.Generator(device=device).manual_seed(params.seed))

    live = Live(str(output / "dvclive"), dvcyaml=False, save_dvc_exp=False)
    live.log_metric("train_faces", n_faces, plot=False)
    step = 0
    started = time.perf_counter()
    summary: dict[str, float] = {}
    for epoch in tqdm(range(1, params.epochs + 1), desc="train", unit="epoch"):
        totals = torch.zeros(4, device=device)  # loss_d, loss_g, D(x), D(G(z)); synced once per epoch
        order = torch.randperm(n_faces, device=device)
        for i in range(steps_per_epoch):
            real = to_model_input(faces[order[i * batch_size:(i + 1) * batch_size]],
                                  params.flip, channels_last)
            z = torch.randn(real.shape[0], params.nz, device=device)
            with autocast(device, bf16):
                fake = generator(z)
                real_logits = discriminator(real)
                fake_logits = discriminator(fake.detach())
                loss_d = d_loss_nonsaturating(real_logits, fake_logits, params.label_smoothing)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            with autocast(device, bf16):
                loss_g = g_loss_nonsaturating(discriminator(fake))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            step += 1
            # EMA warm-up: early on, the average would be dominated by the random initialisation.
            decay = min(params.ema_decay, (1 + step) / (10 + step))
            ema_update(generator_ema, generator, decay)
            totals += torch.stack([
                loss_d.detach(), loss_g.detach(),
                torch.sigmoid(real_logits.detach().float()).mean(),
                torch.sigmoid(fake_logits.detach().float()).mean(),
            ])

        means = (totals / steps_per_epoch).tolist()
        summary = dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), means, strict=True))
        for name, value in summary.items():
            live.log_metric(f"train/{name}", value)
        live.log_metric("images_seen", step * batch_size, plot=False)
        if epoch % params.sample_every == 0 or epoch == params.epochs:
            recalibrate_batchnorm(generator_ema, params.nz, device, seed=params.seed, batches=2)
            grid = sample_grid(generator_ema, fixed_z, nrow=8)
            live.log_image(f"samples/{epoch:04d}.png", grid.numpy())
        live.next_step()

    elapsed = time.perf_counter() - started
    summary["images_per_second"] = step * batch_size / elapsed
    live.log_metric("images_per_second", summary["images_per_second"], plot=False)
    recalibrate_batchnorm(generator_ema, params.nz, device, seed=params.seed)
    save_generator(output / "generator.pt", generator_ema, config, ema=params.ema_decay > 0,
                   epoch=params.epochs)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "params": asdict(params),
        "epoch": params.epochs,
        "step": step,
        "generator": generator.state_dict(),
        "generator_ema": generator_ema.state_dict(),
        "discriminator": discriminator.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
    }
    with atomic_path(output / "checkpoint.pt") as tmp:
        torch.save(checkpoint, tmp)
    live.end()
    log.info("trained %d epochs (%d steps) in %.0f s, %.0f images/s", params.epochs, step,
             elapsed, summary["images_per_second"])
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("data/manifest.csv"),
                        help="face manifest (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("models"),
                        help="folder for generator.pt, checkpoint.pt and dvclive/ "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("train", args.params)
    train(params, args.input, args.output)


if __name__ == "__main__":
    run_stage(main)
