"""The networks (DCGAN after Radford et al. 2015), at 48 or 64 px, and the generator file format.

Both sizes use four stride-2 layers; only the first (G) and last (D) kernel differ: 4x4 maps to
64 px, 3x3 to 48 px.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.files import atomic_path
from pipeline.params import IMAGE_SIZES, PipelineError

GENERATOR_FORMAT = "anime-face-dcgan/generator/1"


@dataclass(frozen=True)
class NetConfig:
    """Everything that shapes the networks: a checkpoint is only compatible with equal configs."""

    image_size: int = 48
    nz: int = 100
    ngf: int = 32
    ndf: int = 32
    nc: int = 3

    @property
    def base(self) -> int:
        if self.image_size not in IMAGE_SIZES:
            raise PipelineError(f"image_size must be one of {IMAGE_SIZES}, got {self.image_size}")
        return self.image_size // 16


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


class Generator(nn.Module):
    """z (N, nz) -> image (N, nc, S, S) in [-1, 1]: transposed convolutions, batch norm, ReLU, tanh."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        g = config.ngf
        self.net = nn.Sequential(
            nn.ConvTranspose2d(config.nz, g * 8, config.base, 1, 0, bias=False),
            nn.BatchNorm2d(g * 8),
            nn.ReLU(True),
            *_up(g * 8, g * 4),
            *_up(g * 4, g * 2),
            *_up(g * 2, g),
            nn.ConvTranspose2d(g, config.nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    """image -> one logit per image: strided convolutions, batch norm, LeakyReLU, no pooling."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        d = config.ndf
        self.net = nn.Sequential(
            *_down(config.nc, d, norm=False),
            *_down(d, d * 2),
            *_down(d * 2, d * 4),
            *_down(d * 4, d * 8),
            nn.Conv2d(d * 8, 1, config.base, 1, 0, bias=False),
        )
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()


def save_generator(path: Path, generator: nn.Module, config: NetConfig, *, ema: bool,
                   epoch: int) -> None:
    """Write the generator alone (what render and sampling need), atomically."""
    payload = {
        "format": GENERATOR_FORMAT,
        "config": asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "ema": ema,
        "epoch": epoch,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_generator(path: Path, device: torch.device | str = "cpu") -> tuple[Generator, dict[str, Any]]:
    """Load models/generator.pt in eval mode; a missing or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: generator not found; run the train stage first (dvc repro train)")
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
        raise PipelineError(f"{path}: generator weights do not match its config: {exc}") from None
    generator.to(device).eval()
    return generator, payload

