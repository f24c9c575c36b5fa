"""What several test modules share: the project root, a script loader, process probes, a rendered
run of models, page parsing, and a conditional generator with trained-like norms.

Test modules import from here, never from one another: each test file runs alone, in any order,
and a test module keeps only its own tests and the helpers that no other module needs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from html.parser import HTMLParser
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType

import torch
from PIL import Image
from torch import nn

from pipeline.models.ema import recalibrate_batchnorm
from pipeline.models.networks import ConditionalBatchNorm2d, Generator, NetConfig, save_generator
from pipeline.models.sampling import sample_grid
from pipeline.render import METRICS_DIR, SAMPLES_DIR
from pipeline.render import main as render_main

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "benchmarks" / "train_throughput.py"


# Benchmarks are scripts

def load_benchmark(path: Path = BENCHMARK) -> ModuleType:
    """A benchmark is a script, not a package module: load it from its path, its folder importable
    as when it runs (for the harness)."""
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# A stage's worker processes

def running(pid: int | str) -> bool:
    """Whether a process is there and not a zombie (an orphan's exit that nobody has reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    """The stage's worker processes (its spawned children other than multiprocessing's resource
    tracker)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in found.split() if b"resource_tracker" not in command_line(child)]


def command_line(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # ended meanwhile
        return b"resource_tracker"


# The render stage's inputs and run

RENDER_OUTPUTS = ("samples.png", "conditions.png", "interpolation.png", "interpolation.gif",
                  "timelapse.gif", "losses.png", "index.html")
GRID_EPOCHS = (1, 3)
METRICS = {
    "loss_d": [1.30, 1.10, 0.95],
    "loss_g": [0.80, 1.40, 1.90],
    "d_real": [0.55, 0.66, 0.71],
    "d_fake": [0.45, 0.38, 0.33],
}


def write_models(folder: Path, image_size: int, config: NetConfig | None = None) -> Path:
    """A tiny untrained generator and the DVCLive TSVs and sample grids training would leave beside it.

    Fresh DCGAN weights draw flat grey, which would make any two renders equal; calibrated
    batch norm (as training leaves it) and a louder output layer give every face its own texture.
    """
    config = config or NetConfig(image_size=image_size, ngf=8)
    generator = Generator(config)
    recalibrate_batchnorm(generator, config.nz, torch.device("cpu"), seed=0, batches=1)
    with torch.no_grad():
        generator.net[-2].weight.mul_(10)
    save_generator(folder / "best.pt", generator, config, ema=True, epoch=1)
    metrics_dir = folder / METRICS_DIR
    metrics_dir.mkdir(parents=True)
    for name, values in METRICS.items():
        rows = [f"timestamp\tstep\t{name}"]
        rows += [f"{1_700_000_000 + step}\t{step}\t{value}" for step, value in enumerate(values)]
        (metrics_dir / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    grids = folder / SAMPLES_DIR
    grids.mkdir(parents=True)
    for epoch in GRID_EPOCHS:
        z = torch.randn(16, config.nz, generator=torch.Generator().manual_seed(epoch))
        Image.fromarray(sample_grid(generator, z, nrow=4).numpy()).save(grids / f"{epoch:04d}.png")
    return folder


def write_params(path: Path, grid: int = 3, rows: int = 2, steps: int = 4, extra: str = "") -> Path:
    """params.yaml with a small render section; `extra` adds lines to it ("  face_px: 64\n")."""
    path.write_text(
        f"train:\n  epochs: 1\nrender:\n  seed: 3\n  grid: {grid}\n"
        f"  interpolation_rows: {rows}\n  interpolation_steps: {steps}\n{extra}"
    )
    return path


def render(params: Path, models: Path, reports: Path) -> dict[str, bytes]:
    """Run the stage with the report's optional inputs looked up beside `models` (absent unless written)."""
    render_main(["--params", str(params), "--input", str(models), "--output", str(reports),
                 "--data", str(models.parent / "data"), "--metrics", str(models.parent / "metrics")])
    return {name: (reports / name).read_bytes() for name in RENDER_OUTPUTS}


def grid_px(cells: int, face_px: int) -> int:
    """make_grid's width for `cells` faces with padding 2 around and between them."""
    return cells * (face_px + 2) + 2


# Pages and their templates

class Elements(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def images(self) -> dict[str, str]:
        return {attrs["id"] or "": attrs["src"] or "" for tag, attrs in self.tags if tag == "img"}

    def find(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags
                if name == tag and all(attrs.get(key) == value for key, value in wanted.items())]


def shipped(package: str, name: str) -> str:
    """A template file as the package ships it (its templates folder, read as package data)."""
    return files(package).joinpath("templates", name).read_text(encoding="utf-8")


def template_lines_in(html: str, template: str) -> list[str]:
    """The template's lines without a $name that the page lacks: none when the page is the template filled."""
    return [line for line in template.splitlines() if "$" not in line and line not in html]


PAGE_TEXT_IN_CODE = ("<!DOCTYPE", "<style>", "<script>", "border-radius:", "addEventListener(")


def page_text_in(module: str) -> list[str]:
    """Markup, style or script a module holds as Python strings rather than reading it from templates/."""
    source = Path(find_spec(module).origin).read_text()
    return [text for text in PAGE_TEXT_IN_CODE if text in source]


# Conditional generators

def as_trained(generator: Generator) -> Generator:
    """A fresh conditional G draws the same faces for every label (its conditional norms start at
    zero); give them the kind of weights training gives them."""
    torch.manual_seed(1)
    for module in generator.modules():
        if isinstance(module, ConditionalBatchNorm2d):
            nn.init.normal_(module.affine.weight, 0.0, 0.1)
    return generator
