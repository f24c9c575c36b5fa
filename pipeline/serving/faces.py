"""Faces on request: a query string checked against the generator's tag groups, drawn as a PNG grid.

Every query is checked before any drawing, and a bad one is one line naming what was wrong and what
is accepted, so the page can show the reason as it is. The pictures come from seeded CPU noise and
the render stage's own grid, so the same query gives the same bytes.
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import torch

from pipeline.core.params import SERVE_SETTINGS as SETTINGS  # the query's own; the rest are tag groups
from pipeline.core.params import PipelineError
from pipeline.data.labels import ANY
from pipeline.models.conditions import known_tags, labels_for_tags
from pipeline.models.networks import Generator, describe_generator
from pipeline.models.sampling import seeded_latents
from pipeline.rendering.figures import image_grid

MAX_FACES = 64  # one request draws at most this many: each costs CPU time under the one lock
FACE_PX = 96  # each face is upscaled (whole factor) to at least this, as in the report's grid
MAX_SEED = 2**32 - 1  # exact in JavaScript numbers, so the page's seed box never rounds one
MAX_TEMPERATURE = 2.0
DEFAULT_SEED = 0
DEFAULT_TEMPERATURE = 1.0
MAX_FIELDS = 32
SHOWN_CHARS = 40  # of a rejected value echoed in a message


@dataclass(frozen=True)
class FaceQuery:
    """One grid: how many faces, which noise, and each group's asked value (None: any)."""

    n: int
    seed: int = DEFAULT_SEED
    temperature: float = DEFAULT_TEMPERATURE
    tags: tuple[tuple[str, str | None], ...] = ()


def shown(value: str) -> str:
    """A value from the request, quoted and cut short: messages stay one short line."""
    if len(value) > SHOWN_CHARS:
        value = value[:SHOWN_CHARS] + "..."
    return repr(value)


# One rule for every number of a query: ASCII digits, and for the temperature at most one dot.
# int() and float() also take '1_000', ' 7', '1e-1', '+1' and other scripts' digits, so they only
# read what matched.
WHOLE_NUMBER = re.compile(r"[0-9]{1,20}")
DECIMAL_NUMBER = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")


def whole_number(name: str, text: str, low: int, high: int) -> int:
    if not WHOLE_NUMBER.fullmatch(text) or not low <= int(text) <= high:
        raise PipelineError(f"{name} must be a whole number from {low} to {high}, got {shown(text)}")
    return int(text)


def temperature_value(text: str) -> float:
    value = float(text) if DECIMAL_NUMBER.fullmatch(text) else math.nan
    if not 0 < value <= MAX_TEMPERATURE:  # nan fails both comparisons
        raise PipelineError(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}], got {shown(text)}")
    return value


def project_file(path: Path, project: Path) -> str:
    """How clients see the generator file: relative to the project, else its name alone, as an
    absolute path would tell any page about this machine's folders. abspath, not resolve: a link
    into a cache keeps the name it was given."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(os.path.abspath(project)).as_posix()
    except ValueError:
        return absolute.name


def always() -> bool:
    return True


class FaceServer:
    """A loaded generator behind one lock: requests come from many threads, and one CPU generator
    drawing one grid at a time gives each its full speed and keeps memory flat."""

    def __init__(self, generator: Generator, payload: Mapping[str, Any], path: Path) -> None:
        self.generator = generator
        self.config = generator.config
        self.path = path
        self.file = project_file(path, Path.cwd())
        self.description = describe_generator(payload)
        self.epoch = int(payload["epoch"])
        self.lock = threading.Lock()
        self.drawn = 0  # grids drawn, and grids skipped because their client had left
        self.skipped = 0
        clash = [group for group, _ in self.config.conditions if group in SETTINGS]
        if clash:
            raise PipelineError(f"{path}: tag group {clash[0]!r} has the name of a query parameter "
                                f"({', '.join(SETTINGS)}); it cannot be served")

    @property
    def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(group, tuple(tags)) for group, tags in self.config.conditions]

    def conditions(self) -> dict[str, Any]:
        """What the page and other clients may ask for: /conditions.json."""
        return {
            "generator": self.description,
            "file": self.file,
            "image_size": self.config.image_size,
            "epoch": self.epoch,
            "max_faces": MAX_FACES,
            "temperature": {"above": 0, "max": MAX_TEMPERATURE, "default": DEFAULT_TEMPERATURE},
            "seed": {"min": 0, "max": MAX_SEED, "default": DEFAULT_SEED},
            "groups": {group: [ANY, *tags] for group, tags in self.groups},
        }

    def parse(self, query: str) -> FaceQuery:
        """The query string of /faces.png; anything wrong is one PipelineError line."""
        try:
            fields = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError:
            raise PipelineError(f"too many query parameters (at most {MAX_FIELDS})") from None
        values: dict[str, str] = {}
        for name, value in fields:
            if name in values:
                raise PipelineError(f"{shown(name)} given twice; give each parameter once")
            values[name] = value
        groups = dict(self.groups)
        known = [*SETTINGS, *groups]
        for name in values:
            if name not in known:
                unconditional = "" if groups else " (this generator is unconditional)"
                raise PipelineError(f"unknown parameter {shown(name)}; known: {', '.join(known)}"
                                    f"{unconditional}")
        if "n" not in values:
            raise PipelineError(f"n is required: the number of faces, 1 to {MAX_FACES}")
        n = whole_number("n", values["n"], 1, MAX_FACES)
        seed = whole_number("seed", values.get("seed", str(DEFAULT_SEED)), 0, MAX_SEED)
        temperature = temperature_value(values.get("temperature", str(DEFAULT_TEMPERATURE)))
        tags = tuple((group, self._tag(group, values.get(group, ANY))) for group in groups)
        return FaceQuery(n, seed, temperature, tags)

    def _tag(self, group: str, value: str) -> str | None:
        if value == ANY:
            return None
        tags = dict(self.groups)[group]
        if value in tags:
            return value
        owner = [other for other, others in self.groups if value in others]
        if owner:
            raise PipelineError(f"{shown(value)} belongs to {owner[0]}, not {group}; {group} tags: "
                                f"{' '.join(tags)} or {ANY}")
        raise PipelineError(f"unknown tag {shown(value)}; known tags: {known_tags(self.config)}; "
                            f"or {ANY}")

    def labels(self, query: FaceQuery) -> torch.Tensor | None:
        """(n, groups) labels for a conditional generator; None for an unconditional one."""
        if not self.config.conditions:
            return None
        asked = labels_for_tags(self.config, [tag for _, tag in query.tags if tag is not None])
        return asked.expand(query.n, -1).clone()

    def png(self, query: FaceQuery, still_wanted: Callable[[], bool] = always) -> bytes | None:
        """The grid as PNG bytes: ceil(sqrt(n)) faces a row, the same bytes for the same query.
        None when still_wanted() says no once the generator is free: the time a grid waited for the
        lock is when a page drops it for a newer one, and drawing it would only delay that one."""
        z = seeded_latents(query.n, self.config.nz, query.seed, query.temperature)
        labels = self.labels(query)
        with self.lock:
            if not still_wanted():
                self.skipped += 1
                return None
            grid = image_grid(self.generator, z, columns=math.ceil(math.sqrt(query.n)), face_px=FACE_PX,
                              labels=labels)
            self.drawn += 1
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
        return buffer.getvalue()
