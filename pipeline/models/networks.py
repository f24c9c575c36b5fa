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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.files import atomic_path
from pipeline.core.params import ARCHS, CONDITIONINGS, IMAGE_SIZES, UPSAMPLINGS, PipelineError, shown

GENERATOR_FORMAT = "anime-face-dcgan/generator/1"
SNAPSHOT_NAME = "epoch-{epoch:05d}.pt"  # train's EMA generator of that epoch, in models/snapshots/
RAW_STATE = "raw_state_dict"  # a snapshot's raw (not averaged) generator weights, beside the EMA ones


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
    conditioning: str = "acgan"  # acgan | tac | projection
    upsample: str = "transpose"  # the DCGAN G's upsampling: transpose (4x4 stride 2) | resize (nearest, 3x3)
    mbstd_group: int = 0  # > 0: the DCGAN D's minibatch standard deviation over groups of this size

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """Tags per group; each group's label len(tags) is its "any" value."""
        return tuple(len(tags) for _, tags in self.conditions)

    @property
    def acgan(self) -> bool:
        """D classifies the labels beside its logit (AC-GAN, and TAC-GAN's first classifier)."""
        return bool(self.conditions) and self.conditioning in ("acgan", "tac")

    @property
    def twin(self) -> bool:
        """D has TAC-GAN's twin classifier too, which learns the labels of the fakes."""
        return bool(self.conditions) and self.conditioning == "tac"

    @property
    def classes(self) -> int:
        """Class logits of one classifier: every group's values, "any" aside."""
        return sum(self.group_sizes)

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
        if self.acgan:  # the logit, then each group's class logits (twice with the twin)
            return 1 + self.classes * (2 if self.twin else 1)
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


def _upsampling(cin: int, cout: int, c: NetConfig) -> list[nn.Module]:
    """Twice the side: a 4x4 transposed convolution, whose uneven overlap draws a checkerboard, or
    nearest-neighbour resizing then a 3x3 convolution, which cannot (Odena et al. 2016)."""
    if c.upsample == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)]


def _up(cin: int, cout: int, c: NetConfig) -> list[nn.Module]:
    return [*_upsampling(cin, cout, c), _norm(cout, c), nn.ReLU(True)]


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
        *_upsampling(g, c.nc, c),
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


# What a generator file may ask for, checked before any layer is allocated: a damaged or hostile
# file must not make the loader reserve gigabytes. Far above anything trained here (nz 100, ngf 32).
CONFIG_LIMITS = {"nz": (1, 1024), "ngf": (1, 256), "ndf": (1, 256), "nc": (1, 4),
                 "num_classes": (0, 1024), "mbstd_group": (0, 64)}
CONFIG_CHOICES: dict[str, tuple[Any, ...]] = {"image_size": IMAGE_SIZES, "arch": ARCHS,
                                              "conditioning": CONDITIONINGS, "upsample": UPSAMPLINGS}
CONFIG_FLAGS = ("d_norm", "spectral_norm")
MAX_GROUPS = 32  # tag groups a generator may be conditioned on
MAX_GROUP_TAGS = 256  # values of one group


class UnusableGenerator(ValueError):
    """One field of a generator file's payload that this project cannot use, in words."""


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sizes(config: dict[str, Any]) -> None:
    for name, (low, high) in CONFIG_LIMITS.items():
        if name in config and not (_is_whole(config[name]) and low <= config[name] <= high):
            raise UnusableGenerator(f"config.{name} must be a whole number in [{low}, {high}], "
                                    f"got {shown(repr(config[name]))}")


def _check_choices(config: dict[str, Any]) -> None:
    for name, choices in CONFIG_CHOICES.items():
        value = config.get(name, choices[0])  # an absent field keeps NetConfig's default
        if type(value) is not type(choices[0]) or value not in choices:  # 48.0 == 48, True == 1
            raise UnusableGenerator(f"config.{name} must be one of {', '.join(map(str, choices))}, "
                                    f"got {shown(repr(value))}")
    for name in CONFIG_FLAGS:
        if not isinstance(config.get(name, False), bool):
            raise UnusableGenerator(f"config.{name} must be true or false, got {shown(repr(config[name]))}")


def _checked_group(group: object) -> tuple[str, tuple[str, ...]]:
    """One (name, tags) pair of config.conditions, as tuples; the rules of train.conditions."""
    if not isinstance(group, (tuple, list)) or len(group) != 2:
        raise UnusableGenerator(f"config.conditions holds {shown(repr(group))}, not a (group, tags) pair")
    name, tags = group
    if not isinstance(name, str) or not name.isidentifier():
        raise UnusableGenerator(f"config.conditions group {shown(repr(name))} is not a name of letters, "
                                "digits and underscores")
    if not isinstance(tags, (tuple, list)) or not 2 <= len(tags) <= MAX_GROUP_TAGS:
        got = f"{len(tags)}" if isinstance(tags, (tuple, list)) else shown(repr(tags))
        raise UnusableGenerator(f"config.conditions group {shown(repr(name))} must list 2 to "
                                f"{MAX_GROUP_TAGS} tags, got {got}")
    if not all(isinstance(tag, str) for tag in tags) or len(set(tags)) != len(tags):
        raise UnusableGenerator(f"config.conditions group {shown(repr(name))} must list different tag names, "
                                f"got {shown(repr(tags))}")
    return name, tuple(tags)


def _checked_conditions(conditions: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(conditions, (tuple, list)):
        raise UnusableGenerator("config.conditions must be a list of tag groups, "
                                f"got {shown(repr(conditions))}")
    if len(conditions) > MAX_GROUPS:
        raise UnusableGenerator(f"config.conditions may hold at most {MAX_GROUPS} tag groups, "
                                f"got {len(conditions)}")
    groups = tuple(_checked_group(group) for group in conditions)
    names = [name for name, _ in groups]
    if len(set(names)) != len(names):
        raise UnusableGenerator(f"config.conditions names a tag group twice: {shown(repr(names))}")
    return groups


def _checked_config(config: object) -> NetConfig:
    """The stored config as a NetConfig: every field of its type, every size within its limit, so
    building the generator can neither fail on a type nor allocate without bound."""
    if not isinstance(config, dict):
        raise UnusableGenerator(f"config must be a mapping, got {shown(repr(config))}")
    unknown = [key for key in config if key not in {field.name for field in fields(NetConfig)}]
    if unknown:
        raise UnusableGenerator(f"config has unknown keys {shown(repr(unknown))}")
    _check_sizes(config)
    _check_choices(config)
    if "conditions" in config:
        config = {**config, "conditions": _checked_conditions(config["conditions"])}
    return NetConfig(**config)


def _check_tensors(payload: dict[str, Any], key: str) -> None:
    state = payload[key]
    if not isinstance(state, dict) or not all(
            isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in state.items()):
        raise UnusableGenerator(f"{key} must map parameter names to tensors")


def checked_payload(payload: dict[str, Any]) -> NetConfig:
    """The config of a generator file's payload, after every entry its readers use is checked;
    raises UnusableGenerator naming the first that is not as save_generator writes it."""
    for key in ("config", "state_dict", "ema", "epoch"):
        if key not in payload:
            raise UnusableGenerator(f"it has no {key}")
    epoch = payload["epoch"]
    if not (_is_whole(epoch) and epoch >= 0):
        raise UnusableGenerator(f"epoch must be a whole number, 0 or more, got {shown(repr(epoch))}")
    if not isinstance(payload["ema"], bool):
        raise UnusableGenerator(f"ema must be true or false, got {shown(repr(payload['ema']))}")
    _check_tensors(payload, "state_dict")
    if RAW_STATE in payload:
        _check_tensors(payload, RAW_STATE)
    return _checked_config(payload["config"])


def load_generator(path: Path, device: torch.device | str = "cpu") -> tuple[Generator, dict[str, Any]]:
    """Load a generator file (a snapshot, models/best.pt) in eval mode; a missing, foreign or odd
    file is one clear error. Tensors only are unpickled, and the payload is checked before the
    network is built from it."""
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
        config = checked_payload(payload)
    except UnusableGenerator as exc:
        raise PipelineError(f"{path}: unusable generator file: {exc}") from None
    try:
        generator = Generator(config)
        generator.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, KeyError) as exc:
        detail = " ".join(str(exc).split())  # torch lists each mismatch on its own line
        raise PipelineError(f"{path}: generator weights do not match its config: {detail}") from None
    generator.to(device).eval()
    return generator, payload


def describe_generator(payload: dict[str, Any]) -> str:
    """A loaded generator file in a few words, for the pages that show its faces."""
    weights = "EMA" if payload["ema"] else "raw"
    return f"{weights} generator after epoch {payload['epoch']}, {payload['config']['image_size']} px faces"


def snapshot_epoch(path: Path) -> int | None:
    """The epoch of a snapshot's file name; None for any other file."""
    match = re.fullmatch(r"epoch-(\d+)\.pt", path.name)
    return int(match[1]) if match else None
