"""The networks (DCGAN after Radford et al. 2015), at 48 or 64 px, and the generator file format.

Both sizes use four stride-2 layers; only the first (G) and last (D) kernel differ: 4x4 maps to
64 px, 3x3 to 48 px.

Conditioned on tag groups (hair colour, eye colour, ...), G embeds each group's label (its last
value, "any", stands for an unlabelled face) and every batch norm of the DCGAN G takes its scale and
shift from the embeddings too (conditional batch norm, de Vries et al. 2017, as in BigGAN); the MLP
G, without batch norm, takes them beside z. Labels concatenated to z in the DCGAN would add a
learnable per-position constant to its first layer, whose spread batch norm weighs against z's:
trained, G let it drown z out and drew one face per label. D judges (image, labels) by projection
(Miyato & Koyama 2018: the inner product of a per-value embedding with D's last features, added to
its logit) or classifies the labels with extra outputs beside its logit (AC-GAN, Odena et al. 2017).
"""

from __future__ import annotations

import math
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
RAW_STATE = "raw_state_dict"  # a snapshot's raw (not averaged) generator weights, beside the EMA ones


ARCHS = ("dcgan", "mlp")
CONDITION_EMBEDDING = 32  # size of G's embedding of each tag group's value


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
    # tag groups G and D are conditioned on: ((group, (tag, ...)), ...); () is unconditional
    conditions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    conditioning: str = "acgan"  # acgan | projection
    mbstd_group: int = 0  # > 0: the DCGAN D's minibatch standard deviation over groups of this size

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """Tags per group; each group's label len(tags) is its "any" value."""
        return tuple(len(tags) for _, tags in self.conditions)

    @property
    def acgan(self) -> bool:
        return bool(self.conditions) and self.conditioning == "acgan"

    @property
    def g_input(self) -> int:
        """G's input: z, and for the MLP one embedding per group."""
        return self.nz + (CONDITION_EMBEDDING * len(self.conditions) if self.arch == "mlp" else 0)

    @property
    def base(self) -> int:
        if self.image_size not in IMAGE_SIZES:
            raise PipelineError(f"image_size must be one of {IMAGE_SIZES}, got {self.image_size}")
        return self.image_size // 16

    @property
    def d_outputs(self) -> int:
        if self.acgan:
            return 1 + sum(self.group_sizes)  # the logit, then each group's class logits
        return self.num_classes + 1 if self.num_classes else 1


class MinibatchStddev(nn.Module):
    """One extra feature map: how much the faces of a small group differ (Karras et al. 2018). A
    collapsed G's fakes hardly differ from each other while real faces do, so D can tell them apart,
    and G is pushed to vary its faces."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = math.gcd(n, self.group)  # a batch that does not divide evenly: smaller groups
        per_group = x.float().reshape(group, -1, c, h, w)
        deviation = (per_group.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (n // group,)
        feature = deviation.to(x.dtype).view(1, -1, 1, 1, 1).expand(group, -1, 1, h, w)
        return torch.cat([x, feature.reshape(n, 1, h, w)], 1)


def _init_weights(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift also depend on the labels, through a (zero-initialised)
    linear map of G's label embedding: the labels steer every layer of G without entering the
    batch statistics, and a fresh conditional G starts as the unconditional one. A linear map of a
    shared embedding (as in BigGAN) learns far faster than a table of scales per value, whose each
    entry Adam moves by about lr a step."""

    def __init__(self, channels: int, embedding: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.affine = nn.Linear(embedding, 2 * channels, bias=False)
        nn.init.zeros_(self.affine.weight)

    def forward(self, x: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        scale, shift = self.affine(embedded).view(x.shape[0], 2, x.shape[1], 1, 1).unbind(1)
        return x * (1 + scale) + shift


def _norm(channels: int, c: NetConfig) -> nn.Module:
    if not c.conditions:
        return nn.BatchNorm2d(channels)
    return ConditionalBatchNorm2d(channels, CONDITION_EMBEDDING * len(c.conditions))


def _up(cin: int, cout: int, c: NetConfig) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), _norm(cout, c), nn.ReLU(True)]


def _down(cin: int, cout: int, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, True))
    return layers


def _dcgan_generator(c: NetConfig) -> nn.Sequential:
    g = c.ngf
    return nn.Sequential(
        nn.Unflatten(1, (c.g_input, 1, 1)),
        nn.ConvTranspose2d(c.g_input, g * 8, c.base, 1, 0, bias=False),
        _norm(g * 8, c),
        nn.ReLU(True),
        *_up(g * 8, g * 4, c),
        *_up(g * 4, g * 2, c),
        *_up(g * 2, g, c),
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
        *([MinibatchStddev(c.mbstd_group)] if c.mbstd_group else []),
        nn.Conv2d(d * 8 + (1 if c.mbstd_group else 0), c.d_outputs, c.base, 1, 0, bias=False),
        nn.Flatten(),
    )


def _mlp_generator(c: NetConfig) -> nn.Sequential:
    """The classic MLP GAN's fully connected G: 256-512-1024 with LeakyReLU, to a tanh image."""
    return nn.Sequential(
        nn.Linear(c.g_input, 256), nn.LeakyReLU(0.2, True),
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


def any_labels(config: NetConfig, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(count, groups) labels that ask for nothing: every group at its "any" value."""
    sizes = torch.tensor(config.group_sizes, dtype=torch.long, device=device)
    return sizes.expand(count, -1).clone()


class Generator(nn.Module):
    """z (N, nz) and labels (N, groups) -> image (N, nc, S, S) in [-1, 1]; without labels, a
    conditional G draws "any" in every group."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise PipelineError(f"unknown arch {config.arch!r}; choose one of {', '.join(ARCHS)}")
        self.config = config
        self.net = _dcgan_generator(config) if config.arch == "dcgan" else _mlp_generator(config)
        # one embedding per group, concatenated: the MLP's input beside z, the DCGAN's norms' input
        self.embeddings = nn.ModuleList(nn.Embedding(size + 1, CONDITION_EMBEDDING)
                                        for size in config.group_sizes)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = z.reshape(z.shape[0], -1)
        if not self.config.conditions:
            return self.net(x)
        if labels is None:
            labels = any_labels(self.config, x.shape[0], x.device)
        embedded = torch.cat([embed(labels[:, g]) for g, embed in enumerate(self.embeddings)], 1)
        if self.config.arch == "mlp":
            return self.net(torch.cat([x, embedded], 1))
        for layer in self.net:
            x = layer(x, embedded) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


class Discriminator(nn.Module):
    """(image, labels) -> one logit per image; (N, 1 + classes) outputs for AC-GAN, (N, num_classes
    + 1) for the semi-supervised GAN."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise PipelineError(f"unknown arch {config.arch!r}; choose one of {', '.join(ARCHS)}")
        self.config = config
        self.net = _dcgan_discriminator(config) if config.arch == "dcgan" else _mlp_discriminator(config)
        self.head = -2 if config.arch == "dcgan" else -1  # the last layer (and Flatten) of self.net
        channels = config.ndf * 8 + (1 if config.mbstd_group else 0)
        features = channels * config.base**2 if config.arch == "dcgan" else 256
        projected = config.group_sizes if config.conditions and not config.acgan else ()
        self.projections = nn.ModuleList(nn.Embedding(size + 1, features) for size in projected)
        self.apply(_init_weights)
        for projection in self.projections:
            nn.init.normal_(projection.weight, 0.0, 0.02)
        if config.spectral_norm:
            for module in [*self.net, *self.projections]:
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(module)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.projections:
            logits = self.net(images)
            return logits[:, 0] if self.config.d_outputs == 1 else logits
        features = self.net[:self.head](images)
        logit = self.net[self.head:](features)[:, 0]
        if labels is None:
            labels = any_labels(self.config, images.shape[0], images.device)
        flat = features.flatten(1)
        for g, projection in enumerate(self.projections):
            logit = logit + (projection(labels[:, g]) * flat).sum(1)
        return logit


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
