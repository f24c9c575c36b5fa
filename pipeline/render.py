"""Stage render: sample grid, latent interpolation and loss curves as PNGs for people to read.

python -m pipeline.render [--params params.yaml] [--input models] [--output reports]

Everything runs on the CPU from seeded noise, so the same generator and params give the same PNG
bytes and DVC sees no change when nothing changed.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from pipeline.cli import run_stage, stage_parser
from pipeline.files import atomic_path
from pipeline.models import load_generator
from pipeline.params import PipelineError, RenderParams, read_section

log = logging.getLogger("pipeline.render")

MIN_FACE_PX = 96  # 48 px faces are too small to judge on screen; upscale to at least this
METRICS_DIR = Path("dvclive/plots/metrics/train")
LOSS_METRICS = ("loss_d", "loss_g")
DISCRIMINATOR_METRICS = ("d_real", "d_fake")
METRIC_LABELS = {
    "loss_d": "discriminator loss",
    "loss_g": "generator loss",
    "d_real": "D(x), real faces",
    "d_fake": "D(G(z)), generated faces",
}
MARKER_MAX_EPOCHS = 30  # short runs get point markers, or a one-epoch curve would be invisible

Curves = dict[str, tuple[list[int], list[float]]]  # metric name -> (epochs, values)


def slerp(start: torch.Tensor, end: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Points on the great circle from `start` (weight 0) to `end` (weight 1), one row per weight.

    Gaussian latents live near a sphere; a straight line between two of them cuts through its
    low-norm interior, where the generator saw no training noise. Vectors without a unique great
    circle between them (parallel or opposite) fall back to linear interpolation.
    """
    dtype = start.dtype
    start, end = start.double(), end.double()  # float64 so the endpoints come back exact
    weights = weights.double().unsqueeze(1)
    cosine = F.cosine_similarity(start, end, dim=0).clamp(-1.0, 1.0)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    if sine < 1e-6:
        start_share, end_share = 1.0 - weights, weights
    else:
        start_share = torch.sin((1.0 - weights) * angle) / sine
        end_share = torch.sin(weights * angle) / sine
    return (start_share * start + end_share * end).to(dtype)


def seeded_latents(count: int, nz: int, seed: int) -> torch.Tensor:
    return torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))


def upscale_factor(image_size: int) -> int:
    return math.ceil(MIN_FACE_PX / image_size)


@torch.no_grad()
def image_grid(generator: nn.Module, z: torch.Tensor, columns: int) -> Image.Image:
    """G(z) tiled `columns` wide, each face upscaled (nearest neighbour keeps pixels honest)."""
    images = generator(z).float().clamp(-1, 1)
    images = F.interpolate(images, scale_factor=upscale_factor(images.shape[-1]), mode="nearest")
    grid = make_grid(images, nrow=columns, padding=2, normalize=True, value_range=(-1, 1))
    pixels = grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    log.info("wrote %s (%dx%d px)", path, image.width, image.height)


def render_samples(generator: nn.Module, params: RenderParams, path: Path) -> None:
    z = seeded_latents(params.grid**2, generator.config.nz, params.seed)
    save_png(image_grid(generator, z, columns=params.grid), path)


def render_interpolation(generator: nn.Module, params: RenderParams, path: Path) -> None:
    """One row per pair of latents (seed + 1, so the pairs are not the sample grid's faces)."""
    ends = seeded_latents(2 * params.interpolation_rows, generator.config.nz, params.seed + 1)
    weights = torch.linspace(0.0, 1.0, params.interpolation_steps)
    z = torch.cat([slerp(start, end, weights) for start, end in ends.view(-1, 2, ends.shape[1])])
    save_png(image_grid(generator, z, columns=params.interpolation_steps), path)


def read_metric(metrics_dir: Path, name: str) -> tuple[list[int], list[float]]:
    """(epochs, values) from one DVCLive TSV; DVCLive counts steps from 0, epochs count from 1."""
    path = metrics_dir / f"{name}.tsv"
    if not path.is_file():
        raise PipelineError(f"{path}: training metrics not found; run the train stage first")
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        epochs = [int(row["step"]) + 1 for row in rows]
        values = [float(row[name]) for row in rows]
    except (KeyError, TypeError, ValueError):
        raise PipelineError(
            f"{path}: not a DVCLive metric file (expected columns step and {name})"
        ) from None
    if not rows:
        raise PipelineError(f"{path}: no epochs logged; rerun the train stage")
    return epochs, values


def read_curves(metrics_dir: Path) -> Curves:
    return {name: read_metric(metrics_dir, name) for name in LOSS_METRICS + DISCRIMINATOR_METRICS}


def render_losses(curves: Curves, path: Path) -> None:
    """Losses beside D's mean outputs: those show which network is winning, losses alone hide it."""
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, output_axes = figure.subplots(1, 2)
    for axes, names in ((loss_axes, LOSS_METRICS), (output_axes, DISCRIMINATOR_METRICS)):
        for name in names:
            epochs, values = curves[name]
            marker = "." if len(epochs) <= MARKER_MAX_EPOCHS else None
            axes.plot(epochs, values, marker=marker, label=METRIC_LABELS[name])
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    loss_axes.set_title("Losses")
    loss_axes.set_ylabel("loss (mean over the epoch)")
    output_axes.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="0.5 (D cannot tell)")
    output_axes.set_ylim(0.0, 1.0)
    output_axes.set_title("Discriminator outputs")
    output_axes.set_ylabel("mean probability of 'real'")
    loss_axes.legend()
    output_axes.legend()
    with atomic_path(path) as tmp:
        # Without the Software (version) stamp, only a change in the drawing changes the bytes.
        figure.savefig(tmp, format="png", metadata={"Software": None})
    log.info("wrote %s", path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("models"),
                        help="folder holding generator.pt and dvclive/ (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("reports"),
                        help="folder for the PNGs (default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("render", args.params)
    # Both inputs are read before any PNG is written, so a failure leaves no half-updated report.
    generator, payload = load_generator(args.input / "generator.pt", torch.device("cpu"))
    curves = read_curves(args.input / METRICS_DIR)
    log.info("generator from epoch %s (%s weights)", payload["epoch"],
             "EMA" if payload["ema"] else "raw")
    render_samples(generator, params, args.output / "samples.png")
    render_interpolation(generator, params, args.output / "interpolation.png")
    render_losses(curves, args.output / "losses.png")


if __name__ == "__main__":
    run_stage(main)
