"""Pictures of what a generator learned: sample grids, latent interpolations, the training timelapse
and the loss curves. Everything comes from seeded CPU noise, so the same generator and params give
the same bytes."""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.utils import make_grid

from pipeline.core.files import atomic_path, save_png
from pipeline.core.params import PipelineError, RenderParams
from pipeline.models.conditions import group_value_labels
from pipeline.models.networks import NetConfig, any_labels
from pipeline.models.sampling import interpolation_latents, seeded_latents

log = logging.getLogger("pipeline.render")

LOSS_METRICS = ("loss_d", "loss_g")
DISCRIMINATOR_METRICS = ("d_real", "d_fake")
METRIC_LABELS = {
    "loss_d": "discriminator loss",
    "loss_g": "generator loss",
    "d_real": "D(x), real faces",
    "d_fake": "D(G(z)), generated faces",
}
MARKER_MAX_EPOCHS = 30  # short runs get point markers, or a one-epoch curve would be invisible
CAPTION_PX = 24  # the strip above each timelapse frame that carries its epoch

Curves = dict[str, tuple[list[int], list[float]]]  # metric name -> (epochs, values)


def upscale_factor(image_size: int, face_px: int) -> int:
    """Whole-number factor, so nearest-neighbour upscaling keeps every generated pixel square."""
    return math.ceil(face_px / image_size)


@torch.no_grad()
def generate_faces(generator: nn.Module, z: torch.Tensor, face_px: int,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """G(z) in [-1, 1], each face upscaled to at least `face_px` (nearest neighbour keeps pixels
    honest); `labels` (N, groups) ask a conditional generator for tag values, None for "any"."""
    images = (generator(z) if labels is None else generator(z, labels)).float().clamp(-1, 1)
    return F.interpolate(images, scale_factor=upscale_factor(images.shape[-1], face_px), mode="nearest")


def tile(faces: torch.Tensor, columns: int) -> Image.Image:
    """Faces in [-1, 1] as one RGB picture, `columns` wide, 2 px apart."""
    grid = make_grid(faces, nrow=columns, padding=2, normalize=True, value_range=(-1, 1))
    return Image.fromarray(grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def image_grid(generator: nn.Module, z: torch.Tensor, columns: int, face_px: int,
               labels: torch.Tensor | None = None) -> Image.Image:
    """G(z) tiled `columns` wide: the sample grid of this stage, pipeline.generate and
    pipeline.serve."""
    return tile(generate_faces(generator, z, face_px, labels), columns)


def ping_pong(count: int) -> list[int]:
    """0, 1, ..., count - 1, ..., 1: a loop that turns back instead of jumping to its start."""
    return list(range(count)) + list(range(count - 2, 0, -1))


def interpolation_pictures(generator: nn.Module, z: torch.Tensor, rows: int, steps: int,
                           face_px: int, labels: torch.Tensor | None = None,
                           ) -> tuple[Image.Image, list[Image.Image]]:
    """The strip (one row per interpolation) and the animation frames (all rows side by side)."""
    faces = generate_faces(generator, z, face_px, labels)
    frames = [tile(faces[step::steps], columns=rows) for step in ping_pong(steps)]
    return tile(faces, columns=steps), frames


def frame_ms(fps: int) -> int:
    """GIFs count in centiseconds, and browsers slow frames under 2 cs down to 10: stay within both."""
    return 10 * max(2, round(100 / fps))


def save_gif(frames: Sequence[Image.Image], path: Path, fps: int, final_ms: int | None = None) -> None:
    """An endlessly looping GIF; `final_ms` holds the last frame longer. Pillow's GIF has no dates."""
    durations = [frame_ms(fps)] * len(frames)
    if final_ms is not None:
        durations[-1] = max(durations[-1], final_ms)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=list(frames[1:]),
                       duration=durations, loop=0)
    log.info("wrote %s (%d frames, %dx%d px)", path, len(frames), frames[0].width, frames[0].height)


def render_samples(generator: nn.Module, params: RenderParams, path: Path) -> None:
    z = seeded_latents(params.grid**2, generator.config.nz, params.seed, params.temperature)
    save_png(image_grid(generator, z, columns=params.grid, face_px=params.face_px), path)


def condition_rows(config: NetConfig) -> list[tuple[str, torch.Tensor]]:
    """(caption, (groups,) labels) per row of the conditions grid: one row per value of each
    group, the other groups at "any"; an unconditional generator has one row, its own samples."""
    if not config.conditions:
        return [("unconditional", any_labels(config, 1)[0])]
    return [(f"{group}: {tag}", group_value_labels(config, g, v, 1)[0])
            for g, (group, tags) in enumerate(config.conditions) for v, tag in enumerate(tags)]


def render_conditions(generator: nn.Module, params: RenderParams, path: Path) -> None:
    """What each tag value asks of the generator: a row per value, the same noise down each column,
    so a column shows one face across hair and eye colours."""
    rows = condition_rows(generator.config)
    z = seeded_latents(params.grid, generator.config.nz, params.seed + 2, params.temperature)
    labels = torch.cat([row_labels.expand(params.grid, -1) for _, row_labels in rows])
    grid = image_grid(generator, z.repeat(len(rows), 1), params.grid, params.face_px, labels)
    font = ImageFont.load_default(14)
    margin = 8 + max(int(ImageDraw.Draw(grid).textlength(caption, font=font)) for caption, _ in rows)
    picture = Image.new("RGB", (grid.width + margin, grid.height), "white")
    picture.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(picture)
    row_px = (grid.height - 2) / len(rows)
    for i, (caption, _) in enumerate(rows):
        draw.text((4, 2 + (i + 0.5) * row_px), caption, fill="black", font=font, anchor="lm")
    save_png(picture, path)


def render_interpolation(generator: nn.Module, params: RenderParams, png: Path, gif: Path) -> None:
    """Latents from seed + 1, so the interpolations do not start at the sample grid's faces."""
    rows, steps = params.interpolation_rows, params.interpolation_steps
    z = interpolation_latents(generator.config.nz, rows, steps, params.seed + 1, params.temperature)
    strip, frames = interpolation_pictures(generator, z, rows, steps, params.face_px)
    save_png(strip, png)
    save_gif(frames, gif, params.gif_fps)


def timelapse_frame(grid: Path, epoch: int) -> Image.Image:
    """One logged grid under a strip naming its epoch, at the size training logged it: upscaled,
    the 30 frames of a default run would make a GIF (and the report embedding it) over 10 MB."""
    try:
        with Image.open(grid) as source:
            image = source.convert("RGB")
    except OSError:
        raise PipelineError(f"{grid}: not a readable sample grid; rerun the train stage") from None
    frame = Image.new("RGB", (image.width, image.height + CAPTION_PX), "black")
    frame.paste(image, (0, CAPTION_PX))
    ImageDraw.Draw(frame).text((6, 3), f"epoch {epoch}", fill="white", font=ImageFont.load_default(16))
    return frame


def read_timelapse(folder: Path) -> list[Image.Image]:
    """The per-epoch fixed-noise grids DVCLive kept (<epoch>.png) as frames, oldest first."""
    grids = sorted((int(path.stem), path) for path in folder.glob("*.png") if re.fullmatch(r"\d+", path.stem))
    if not grids:
        raise PipelineError(f"{folder}: no per-epoch sample grids; run the train stage first")
    return [timelapse_frame(grid, epoch) for epoch, grid in grids]


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

