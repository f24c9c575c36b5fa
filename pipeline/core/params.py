"""params.yaml, read and checked once, so every stage fails fast with one line naming the param."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml


class PipelineError(Exception):
    """An error the user can act on; stages print it as one line instead of a traceback."""


class ParamError(PipelineError):
    pass


SOURCES = ("demo", "konachan", "yandere", "danbooru", "gelbooru", "local")
APIS = ("html", "json")
FILE_KINDS = ("preview", "sample", "original")
RATINGS = ("safe", "questionable", "explicit")
CROP_MODES = ("detect", "passthrough")
IMAGE_SIZES = (48, 64)
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
ARCHS = ("dcgan", "mlp")
LOSSES = ("nonsaturating", "hinge", "lsgan", "wgan-gp")
OBJECTIVES = ("gan", "sgan")
AUGMENT_MODES = ("off", "fixed", "adaptive")
AUGMENT_POLICIES = ("color", "translation", "cutout")
CONDITIONINGS = ("projection", "acgan", "tac")
UPSAMPLINGS = ("transpose", "resize")
# The serve page's own query parameters (faces.png?n=..&seed=..&temperature=..): every other query
# parameter names a tag group, so no group may take one of these names.
SERVE_SETTINGS = ("n", "seed", "temperature")
ANY = "any"  # every tag group's value for a face unlabelled in it; its label is len(group's tags)
# torch takes seeds below 2**64 and reads a negative one as an alias of a large one; stages draw
# from a seed plus a small offset (render.seed + 2, train.seed + a rank and epoch), so seeds stop
# at half that range and every such sum stays a valid seed.
MAX_SEED = 2**63 - 1
MAX_WORKERS = 256  # processes or threads: more than any machine's cores
SHOWN_CHARS = 40  # of a refused value echoed in a message
# Tag groups the generator is conditioned on by default: common booru tags, and the colours the demo
# booru draws, so the default run learns them.
DEFAULT_CONDITIONS: dict[str, tuple[str, ...]] = {
    "hair": ("black_hair", "brown_hair", "blonde_hair", "red_hair", "pink_hair", "blue_hair"),
    "eyes": ("blue_eyes", "green_eyes", "red_eyes", "yellow_eyes"),
}


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ParamError(f"{name}: {message}")


def shown(value: Any) -> str:
    """A refused value for a message, cut short: a 400-digit number, or a hostile page's or file's
    megabyte field, still makes a one-line message."""
    text = str(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _require_between(name: str, value: float, low: float, high: float, note: str = "") -> None:
    """`value` in [low, high]; `note` says what the bounds mean, after them in the message."""
    _require(low <= value <= high, name, f"must be in [{low}, {high}]{note}, got {shown(value)}")


def _require_seed(name: str, value: int) -> None:
    _require(0 <= value <= MAX_SEED, name,
             f"must be a whole number from 0 to {MAX_SEED}, got {shown(value)}")


def unknown_name(name: str, kind: str, known: Iterable[str]) -> ParamError:
    """An unknown name, with the closest known one when there is one, else all of them."""
    known = list(known)
    close = difflib.get_close_matches(name.rsplit(".", 1)[-1], known, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
    return ParamError(f"{shown(name)}: unknown {kind}; {hint}")


@dataclass(frozen=True)
class ScrapeParams:
    source: str = "demo"
    base_url: str | None = None
    tags: str = ""
    api: str = "html"
    first_page: int = 1
    pages: int = 12
    max_posts: int = 240
    file: str = "sample"
    ratings: tuple[str, ...] = ("safe",)
    rate: float | None = None
    workers: int = 2
    timeout: float = 30.0
    deadline: float = 300.0
    retries: int = 4
    max_bytes: int = 50_000_000
    max_pixels: int = 40_000_000
    user_agent: str = "anime-face-dcgan/0.1 (research scraper; +https://github.com/anime-face-dcgan)"
    local_path: str | None = None
    demo_seed: int = 0

    def validate(self) -> None:
        _require(self.source in SOURCES, "scrape.source",
                 f"unknown source {self.source!r}; choose one of {', '.join(SOURCES)}")
        _require(self.api in APIS, "scrape.api", f"must be one of {', '.join(APIS)}, got {self.api!r}")
        _require_between("scrape.first_page", self.first_page, 1, 1_000_000)
        _require_between("scrape.pages", self.pages, 1, 100_000)
        _require(self.file in FILE_KINDS, "scrape.file",
                 f"must be one of {', '.join(FILE_KINDS)}, got {self.file!r}")
        unknown = sorted(set(self.ratings) - set(RATINGS))
        _require(bool(self.ratings) and not unknown, "scrape.ratings",
                 f"must list some of {', '.join(RATINGS)}, got {list(self.ratings)}")
        _require_between("scrape.workers", self.workers, 1, 64, " (all share the one rate limit)")
        _require_between("scrape.max_bytes", self.max_bytes, 1024, 2_000_000_000,
                         " (a download is held in memory)")
        if self.source == "local":
            _require(bool(self.local_path), "scrape.local_path",
                     "must name a folder, zip or tar of images when scrape.source is local")
        _require_between("scrape.max_posts", self.max_posts, 0, 10_000_000, " (0: no limit)")
        _require(self.rate is None or 0.001 <= self.rate <= 1000, "scrape.rate",
                 f"must be null (the source's own) or in [0.001, 1000] requests per second, got {self.rate}")
        _require(0 < self.timeout <= 3600, "scrape.timeout",
                 f"must be in (0, 3600] seconds, got {self.timeout}")
        _require(self.timeout <= self.deadline <= 86400, "scrape.deadline",
                 f"must be in [scrape.timeout ({self.timeout}), 86400] seconds, got {self.deadline}")
        _require_between("scrape.max_pixels", self.max_pixels, 1_000_000, 1_000_000_000,
                         " (one megapixel to a gigapixel)")
        _require_between("scrape.retries", self.retries, 0, 20)
        _require_seed("scrape.demo_seed", self.demo_seed)
        _require(bool(self.user_agent.strip()), "scrape.user_agent", "must not be empty")
        # a header value: a control character would end the header or be refused by requests
        _require(all(" " <= char <= "~" for char in self.user_agent), "scrape.user_agent",
                 f"must be one line of printable ASCII, got {shown(repr(self.user_agent))}")
        if self.base_url is not None:
            _require(self.base_url.startswith(("http://", "https://")), "scrape.base_url",
                     f"must start with http:// or https://, got {self.base_url!r}")


@dataclass(frozen=True)
class CropParams:
    cascade: str | None = None
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 48
    size: int = 96
    margin: float = 0.25
    mode: str = "detect"
    workers: int = 0

    def validate(self) -> None:
        _require_between("crop.scale_factor", self.scale_factor, 1.01, 2,
                         " (each smaller step scans many more scales)")
        _require_between("crop.min_neighbors", self.min_neighbors, 0, 100)
        _require_between("crop.min_size", self.min_size, 8, 4096, " (the smallest face side, in pixels)")
        _require_between("crop.size", self.size, 16, 1024, " (the side of each saved face, in pixels)")
        _require(0.0 <= self.margin <= 2.0, "crop.margin",
                 f"is the share of the box added on each side, in [0, 2], got {self.margin}")
        _require(self.mode in CROP_MODES, "crop.mode",
                 f"must be one of {', '.join(CROP_MODES)}, got {self.mode!r}")
        _require_between("crop.workers", self.workers, 0, MAX_WORKERS, " (0: all cores)")


@dataclass(frozen=True)
class ManifestParams:
    val_fraction: float = 0.1
    dedup_distance: int = 4
    min_face_size: int = 0
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()

    def validate(self) -> None:
        _require(0.0 <= self.val_fraction < 1.0, "manifest.val_fraction",
                 f"must be in [0, 1), got {self.val_fraction}")
        _require(-1 <= self.dedup_distance <= 64, "manifest.dedup_distance",
                 f"is a perceptual-hash Hamming distance in [0, 64] (-1: off), "
                 f"got {self.dedup_distance}")
        _require_between("manifest.min_face_size", self.min_face_size, 0, 100_000, " source pixels")


@dataclass(frozen=True)
class TrainParams:
    arch: str = "dcgan"
    loss: str = "nonsaturating"
    objective: str = "gan"
    image_size: int = 48
    nz: int = 100
    ngf: int = 32
    ndf: int = 32
    epochs: int = 200
    batch_size: int = 32
    lr: float = 2e-4
    beta1: float = 0.5
    label_smoothing: float = 0.9
    n_critic: int = 1
    gp_weight: float = 10.0
    spectral_norm: bool = False
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    mbstd_group: int = 4
    acgan_weight: float = 1.0
    mode_seeking: float = 1.0
    sgan_classes: tuple[str, ...] = ()
    labelled_fraction: float = 0.1
    conditions: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_CONDITIONS))
    conditioning: str = "acgan"
    upsample: str = "transpose"
    flip: bool = True
    augment: str = "fixed"
    augment_policy: tuple[str, ...] = ("translation", "cutout")
    augment_p: float = 1.0
    ada_target: float = 0.6
    ada_kimg: int = 100
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: str = "auto"
    threads: int = 0
    sample_every: int = 10
    checkpoint_every: int = 10
    snapshot_every: int = 50

    def validate(self) -> None:
        _require(self.arch in ARCHS, "train.arch", f"must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        _require(self.loss in LOSSES, "train.loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        _require(self.objective in OBJECTIVES, "train.objective",
                 f"must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.objective == "sgan":
            _require(len(self.sgan_classes) >= 2, "train.sgan_classes",
                     "needs at least two tags (one class each) for objective sgan")
            _require(self.loss == "nonsaturating", "train.loss",
                     "objective sgan is defined with the nonsaturating loss")
        self._validate_conditions()
        _require(0.0 < self.labelled_fraction <= 1.0, "train.labelled_fraction",
                 f"must be in (0, 1], got {self.labelled_fraction}")
        _require(self.gp_weight >= 0, "train.gp_weight", f"must be 0 or more, got {self.gp_weight}")
        _require(self.augment in AUGMENT_MODES, "train.augment",
                 f"must be one of {', '.join(AUGMENT_MODES)}, got {self.augment!r}")
        unknown = sorted(set(self.augment_policy) - set(AUGMENT_POLICIES))
        _require(not unknown and (self.augment == "off" or bool(self.augment_policy)),
                 "train.augment_policy", f"must list some of {', '.join(AUGMENT_POLICIES)}, "
                 f"got {list(self.augment_policy)}")
        _require(0.0 <= self.augment_p <= 1.0, "train.augment_p", f"must be in [0, 1], got {self.augment_p}")
        _require(0.0 < self.ada_target < 1.0, "train.ada_target", f"must be in (0, 1), got {self.ada_target}")
        _require_between("train.ada_kimg", self.ada_kimg, 1, 1_000_000)
        _require(self.image_size in IMAGE_SIZES, "train.image_size",
                 f"must be one of {IMAGE_SIZES}, got {self.image_size}")
        for name, most in (("nz", 1024), ("ngf", 512), ("ndf", 512), ("epochs", 100_000),
                           ("batch_size", 4096), ("n_critic", 100), ("sample_every", 100_000),
                           ("checkpoint_every", 100_000), ("snapshot_every", 100_000)):
            _require_between(f"train.{name}", getattr(self, name), 1, most)
        _require(0 < self.lr <= 1, "train.lr", f"must be in (0, 1], got {self.lr}")
        _require(0.0 <= self.beta1 < 1.0, "train.beta1", f"must be in [0, 1), got {self.beta1}")
        _require(0.5 < self.label_smoothing <= 1.0, "train.label_smoothing",
                 f"is the target for real images, in (0.5, 1], got {self.label_smoothing}")
        _require(0.0 <= self.ema_kimg <= 1e6, "train.ema_kimg",
                 f"is the EMA's half-life in thousands of images, 0 (off) or more, got {self.ema_kimg}")
        _require(self.ema_rampup is None or 0.0 < self.ema_rampup <= 1.0, "train.ema_rampup",
                 f"must be null (off) or in (0, 1], got {self.ema_rampup}")
        _require(0 <= self.mbstd_group <= 64, "train.mbstd_group",
                 f"must be 0 (off) or a group size up to 64, got {self.mbstd_group}")
        _require(0.0 <= self.acgan_weight <= 100.0, "train.acgan_weight",
                 f"must be in [0, 100], got {self.acgan_weight}")
        _require(0.0 <= self.mode_seeking <= 100.0, "train.mode_seeking",
                 f"must be in [0, 100] (0: off), got {self.mode_seeking}")
        _require(self.device in DEVICES, "train.device",
                 f"must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _require(self.precision in PRECISIONS, "train.precision",
                 f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _require(self.compile in ("auto", "on", "off"), "train.compile",
                 f"must be auto (on for CUDA), on or off, got {self.compile!r}")
        _require_between("train.threads", self.threads, 0, MAX_WORKERS, " (0: all cores)")
        _require_seed("train.seed", self.seed)

    def _validate_conditions(self) -> None:
        _require(self.conditioning in CONDITIONINGS, "train.conditioning",
                 f"must be one of {', '.join(CONDITIONINGS)}, got {self.conditioning!r}")
        _require(self.upsample in UPSAMPLINGS, "train.upsample",
                 f"must be one of {', '.join(UPSAMPLINGS)}, got {self.upsample!r}")
        if not self.conditions:
            return
        _require(self.objective == "gan", "train.conditions",
                 "must be {} (unconditional) with objective sgan, which has its own sgan_classes")
        seen: dict[str, str] = {}
        for group, tags in self.conditions.items():
            name = f"train.conditions.{group}"
            _require(group.isidentifier(), name, "a group name is letters, digits and underscores")
            _require(group not in SERVE_SETTINGS, name, "a group cannot take the name of a serve page "
                     f"setting ({', '.join(SERVE_SETTINGS)})")
            _require(len(tags) >= 2 and len(set(tags)) == len(tags), name,
                     f"must list at least two different tags, got {list(tags)}")
            for tag in tags:
                _require(tag != ANY, name, f"{tag!r} is every group's value for an unlabelled face, "
                         "not a tag")
                _require(bool(tag) and tag.split() == [tag], name,
                         f"{shown(repr(tag))} is not a tag: a post's tags are split on whitespace")
                _require(tag not in seen, name, f"{tag!r} is already a tag of group {seen.get(tag)}")
                seen[tag] = group


@dataclass(frozen=True)
class RenderParams:
    seed: int = 7
    grid: int = 8
    face_px: int = 96
    temperature: float = 1.0
    interpolation_rows: int = 6
    interpolation_steps: int = 10
    gif_fps: int = 12

    def validate(self) -> None:
        _require_between("render.grid", self.grid, 1, 64, " (grid x grid faces in one picture)")
        _require_between("render.interpolation_rows", self.interpolation_rows, 1, 64)
        _require_between("render.interpolation_steps", self.interpolation_steps, 2, 1000)
        _require_seed("render.seed", self.seed)
        _require(16 <= self.face_px <= 512, "render.face_px",
                 f"must be in [16, 512], got {self.face_px}")
        _require(0.0 < self.temperature <= 2.0, "render.temperature",
                 f"scales the latent noise, in (0, 2], got {self.temperature}")
        _require(1 <= self.gif_fps <= 60, "render.gif_fps", f"must be in [1, 60], got {self.gif_fps}")


@dataclass(frozen=True)
class EvaluateParams:
    samples: int = 5000
    snapshot_samples: int = 2048
    snapshots: int = 1
    seed: int = 123
    batch_size: int = 100
    inception_weights: str | None = None
    face_rate_size: int = 96
    nearest: int = 16
    condition_samples: int = 200
    classifier_steps: int = 150
    device: str = "auto"

    def validate(self) -> None:
        _require_between("evaluate.snapshots", self.snapshots, 0, 100_000, " (0: the last snapshot only)")
        for name, most in (("samples", 100_000), ("snapshot_samples", 100_000), ("batch_size", 4096),
                           ("nearest", 256), ("condition_samples", 10_000), ("classifier_steps", 100_000)):
            _require_between(f"evaluate.{name}", getattr(self, name), 1, most)
        _require_between("evaluate.face_rate_size", self.face_rate_size, 48, 512,
                         " pixels, from the cascade's 48")
        _require_seed("evaluate.seed", self.seed)
        _require(self.device in DEVICES, "evaluate.device",
                 f"must be one of {', '.join(DEVICES)}, got {self.device!r}")


SECTIONS: dict[str, type] = {
    "scrape": ScrapeParams,
    "crop": CropParams,
    "manifest": ManifestParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "render": RenderParams,
}

def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Check `value` against the field's annotated type. YAML gives ints where floats are meant
    (rate: 2); anything else of the wrong type is an error."""
    options = get_args(kind) if get_origin(kind) in (Union, types.UnionType) else (kind,)
    if value is None:
        _require(type(None) in options, name, "must not be null")
        return None
    kind = next(option for option in options if option is not type(None))
    if get_origin(kind) is dict:
        ok = isinstance(value, dict) and all(isinstance(key, str) for key in value)
        _require(ok, name, f"must be a mapping of names to lists of strings, got {value!r}")
        return {key: _coerce(f"{name}.{key}", items, tuple[str, ...]) for key, items in value.items()}
    if get_origin(kind) is tuple:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        _require(ok, name, f"must be a list of strings, got {value!r}")
        return tuple(value)
    if kind is bool:
        _require(isinstance(value, bool), name, f"must be true or false, got {value!r}")
        return value
    if kind is float:
        return _finite_float(name, value)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _require(ok, name, f"must be an int, got {shown(repr(value))}")
        return value
    _require(isinstance(value, str), name, f"must be a string, got {value!r}")
    return value


def _finite_float(name: str, value: Any) -> float:
    """YAML gives ints where floats are meant (rate: 2); .inf, .nan and numbers beyond a float's
    range would pass some checks (nan fails every comparison) and break the stage later."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    _require(ok, name, f"must be a float, got {shown(repr(value))}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf if value > 0 else -math.inf
    _require(math.isfinite(number), name, f"must be a finite number, got {number}")
    return number


def read_params(params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """Every section of params.yaml, validated (defaults for absent sections and keys). Each stage
    checks the whole file, so a mistake in any section stops the first stage, not a later one
    after hours of work."""
    raw = read_file(Path(params_path))
    for key in raw:
        if key not in SECTIONS:
            raise unknown_name(str(key), "section", SECTIONS)
    return {name: parse_section(name, {} if raw.get(name) is None else raw[name]) for name in SECTIONS}


def read_file(path: Path) -> dict[str, Any]:
    """The params file's mapping of sections, its contents not yet checked."""
    if not path.is_file():
        raise ParamError(f"{path}: params file not found (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int beyond Python's digit limit
        raise ParamError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamError(f"{path}: must be a mapping of sections ({', '.join(SECTIONS)})")
    return raw or {}


def read_section(name: str, params_path: str | Path = "params.yaml") -> Any:
    """Return the validated dataclass for one section of params.yaml, the others checked too."""
    return read_params(params_path)[name]


def parse_section(name: str, values: dict[str, Any]) -> Any:
    cls = SECTIONS[name]
    if not isinstance(values, dict):
        raise ParamError(f"{name}: must be a mapping of settings")
    known = [f.name for f in fields(cls)]
    for key in values:
        if key not in known:
            raise unknown_name(f"{name}.{key}", "param", known)
    kinds = get_type_hints(cls)
    kwargs = {key: _coerce(f"{name}.{key}", value, kinds[key]) for key, value in values.items()}
    params = cls(**kwargs)
    params.validate()
    return params


def as_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params)
