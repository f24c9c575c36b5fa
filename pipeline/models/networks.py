"""The networks (DCGAN after Radford et al. 2015), at 48 or 64 px, and the generator file format.

Both sizes use four stride-2 layers; only the first (G) and last (D) kernel differ: 4x4 maps to
64 px, 3x3 to 48 px.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.files import atomic_path
from pipeline.core.params import IMAGE_SIZES, PipelineError

GENERATOR_FORMAT = "anime-face-dcgan/generator/1"
SNAPSHOT_NAME = "epoch-{epoch:05d}.pt"  # train's EMA generator of that epoch, in models/snapshots/


ARCHS = ("dcgan", "mlp")


@dataclass(frozen=True)
class NetConfig:
    """Everything that shapes the networks: a checkpoint is only compatible with equal configs."""

    image_size: int = 48
    nz: int = 100
    ngf: int = 32
    ndf: int = 32
    nc: int = 3
    arch: str = "dcgan"
    d_norm: bool = True  # batch norm in D; off for WGAN-GP (a per-sample penalty) and spectral norm
    spectral_norm: bool = False
    num_classes: int = 0  # > 0: D has num_classes + 1 outputs (the semi-supervised GAN)

    @property
    def base(self) -> int:
        if self.image_size not in IMAGE_SIZES:
            raise PipelineError(f"image_size must be one of {IMAGE_SIZES}, got {self.image_size}")
        return self.image_size // 16

    @property
    def d_outputs(self) -> int:
        return self.num_classes + 1 if self.num_classes else 1


def _init_weights(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


def _down(cin: int, cout: int, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, True))
    return layers


def _dcgan_generator(c: NetConfig) -> nn.Sequential:
    g = c.ngf
    return nn.Sequential(
        nn.Unflatten(1, (c.nz, 1, 1)),
        nn.ConvTranspose2d(c.nz, g * 8, c.base, 1, 0, bias=False),
        nn.BatchNorm2d(g * 8),
        nn.ReLU(True),
        *_up(g * 8, g * 4),
        *_up(g * 4, g * 2),
        *_up(g * 2, g),
        nn.ConvTranspose2d(g, c.nc, 4, 2, 1, bias=False),
        nn.Tanh(),
    )


def _dcgan_discriminator(c: NetConfig) -> nn.Sequential:
    d = c.ndf
    return nn.Sequential(
        *_down(c.nc, d, norm=False),
        *_down(d, d * 2, c.d_norm),
        *_down(d * 2, d * 4, c.d_norm),
        *_down(d * 4, d * 8, c.d_norm),
        nn.Conv2d(d * 8, c.d_outputs, c.base, 1, 0, bias=False),
        nn.Flatten(),
    )


def _mlp_generator(c: NetConfig) -> nn.Sequential:
    """The classic MLP GAN's fully connected G: 256-512-1024 with LeakyReLU, to a tanh image."""
    return nn.Sequential(
        nn.Linear(c.nz, 256), nn.LeakyReLU(0.2, True),
        nn.Linear(256, 512), nn.LeakyReLU(0.2, True),
        nn.Linear(512, 1024), nn.LeakyReLU(0.2, True),
        nn.Linear(1024, c.nc * c.image_size**2), nn.Tanh(),
        nn.Unflatten(1, (c.nc, c.image_size, c.image_size)),
    )


def _mlp_discriminator(c: NetConfig) -> nn.Sequential:
    """The classic MLP GAN's fully connected D: 1024-512-256 with LeakyReLU and dropout 0.3, to logits."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c.nc * c.image_size**2, 1024), nn.LeakyReLU(0.2, True), nn.Dropout(0.3),
        nn.Linear(1024, 512), nn.LeakyReLU(0.2, True), nn.Dropout(0.3),
        nn.Linear(512, 256), nn.LeakyReLU(0.2, True), nn.Dropout(0.3),
        nn.Linear(256, c.d_outputs),
    )


class Generator(nn.Module):
    """z (N, nz) -> image (N, nc, S, S) in [-1, 1]."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise PipelineError(f"unknown arch {config.arch!r}; choose one of {', '.join(ARCHS)}")
        self.config = config
        self.net = _dcgan_generator(config) if config.arch == "dcgan" else _mlp_generator(config)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], -1))


class Discriminator(nn.Module):
    """image -> one logit per image, or (N, num_classes + 1) logits for the semi-supervised GAN."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise PipelineError(f"unknown arch {config.arch!r}; choose one of {', '.join(ARCHS)}")
        self.config = config
        self.net = _dcgan_discriminator(config) if config.arch == "dcgan" else _mlp_discriminator(config)
        self.apply(_init_weights)
        if config.spectral_norm:
            for module in self.net:
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(module)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        return logits[:, 0] if self.config.d_outputs == 1 else logits


def save_generator(path: Path, generator: nn.Module, config: NetConfig, *, ema: bool,
                   epoch: int, extra: dict[str, Any] | None = None) -> None:
    """Write the generator alone (what render and sampling need), atomically."""
    payload = {
        **(extra or {}),
        "format": GENERATOR_FORMAT,
        "config": asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "ema": ema,
        "epoch": epoch,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_generator(path: Path, device: torch.device | str = "cpu") -> tuple[Generator, dict[str, Any]]:
    """Load a generator file (a snapshot, models/best.pt) in eval mode; a missing or foreign file is one
    clear error."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: generator not found; run the train and evaluate stages first "
                            "(dvc repro evaluate)")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign pickle
        raise PipelineError(f"{path}: not a readable generator file ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != GENERATOR_FORMAT:
        raise PipelineError(f"{path}: not a generator written by this project ({GENERATOR_FORMAT})")
    try:
        config = NetConfig(**payload["config"])
        generator = Generator(config)
        generator.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, KeyError) as exc:
        detail = " ".join(str(exc).split())  # torch lists each mismatch on its own line
        raise PipelineError(f"{path}: generator weights do not match its config: {detail}") from None
    generator.to(device).eval()
    return generator, payload


def snapshot_epoch(path: Path) -> int | None:
    """The epoch of a snapshot's file name; None for any other file."""
    match = re.fullmatch(r"epoch-(\d+)\.pt", path.name)
    return int(match[1]) if match else None
