"""Sample a trained generator without DVC: a grid of faces, or latent interpolations.

python -m pipeline.generate --n 64 --seed 7 --out faces.png [--generator models/best.pt]
                            [--tags TAG ...] [--size 96] [--temperature 1.0]
                            [--interpolate STEPS] [--fps 12]

(installed, the same command is `anime-face-generate`.)

--tags asks a tag-conditional generator for one value per tag group (`--tags blonde_hair
blue_eyes`); the groups not named stay at "any".

The pictures come from the render stage's own functions, so `--n 64 --seed 7` is
reports/samples.png for render.grid 8 and render.seed 7, and `--n ROWS --interpolate STEPS
--seed S` is reports/interpolation.png for render.seed S - 1 (as .gif: interpolation.gif).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from pipeline.core.cli import command_name, run_stage
from pipeline.core.files import save_png
from pipeline.core.params import MAX_SEED
from pipeline.models.conditions import labels_for_tags
from pipeline.models.networks import load_generator
from pipeline.models.sampling import interpolation_latents, seeded_latents
from pipeline.rendering.figures import image_grid, interpolation_pictures, save_gif

SUFFIXES = (".png", ".gif")
T = TypeVar("T", int, float)


def checked(kind: Callable[[str], T], ok: Callable[[T], bool], rule: str) -> Callable[[str], T]:
    """An argparse type: a value that breaks `rule` is a usage error (exit 2), before any work."""
    def parse(text: str) -> T:
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value
    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=command_name("pipeline.generate"),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, default=Path("models/best.pt"),
                        help="generator file written by the train stage (default: %(default)s)")
    parser.add_argument("--n", type=checked(int, lambda n: 1 <= n <= 4096, "must be in [1, 4096]"),
                        default=64,
                        help="faces in the grid, or rows with --interpolate (default: %(default)s)")
    parser.add_argument("--seed", default=0,
                        type=checked(int, lambda s: 0 <= s <= MAX_SEED, f"must be in [0, {MAX_SEED}]"),
                        help="noise seed (default: %(default)s)")
    parser.add_argument("--tags", nargs="+", default=[], metavar="TAG",
                        help="tag values to ask a conditional generator for, one per tag group")
    parser.add_argument("--out", type=Path, default=Path("faces.png"),
                        help="PNG to write; a .gif with --interpolate animates (default: %(default)s)")
    parser.add_argument("--size", type=checked(int, lambda px: 16 <= px <= 512, "must be in [16, 512]"),
                        default=96,
                        help="each face is upscaled to at least this many pixels (default: %(default)s)")
    parser.add_argument("--temperature", type=checked(float, lambda t: 0 < t <= 2, "must be in (0, 2]"),
                        default=1.0,
                        help="scale of the latent noise; below 1: safer, less varied faces "
                             "(default: %(default)s)")
    parser.add_argument("--interpolate", type=checked(int, lambda k: 2 <= k <= 1000, "must be in [2, 1000]"),
                        metavar="STEPS",
                        help="instead of a grid, --n rows of STEPS faces along the latent sphere")
    parser.add_argument("--fps", type=checked(int, lambda f: 1 <= f <= 60, "must be in [1, 60]"), default=12,
                        help="frames per second of a .gif (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in SUFFIXES:
        parser.error(f"--out must end in {' or '.join(SUFFIXES)}, got {args.out}")
    if args.out.suffix.lower() == ".gif" and args.interpolate is None:
        parser.error("a .gif animates interpolations: add --interpolate STEPS, or write a .png")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    generator, _ = load_generator(args.generator, torch.device("cpu"))
    nz = generator.config.nz
    asked = labels_for_tags(generator.config, args.tags)
    if args.interpolate is None:
        z = seeded_latents(args.n, nz, args.seed, args.temperature)
        save_png(image_grid(generator, z, columns=math.ceil(math.sqrt(args.n)), face_px=args.size,
                            labels=asked.expand(args.n, -1)), args.out)
        return
    z = interpolation_latents(nz, args.n, args.interpolate, args.seed, args.temperature)
    strip, frames = interpolation_pictures(generator, z, args.n, args.interpolate, args.size,
                                           asked.expand(z.shape[0], -1))
    if args.out.suffix.lower() == ".gif":
        save_gif(frames, args.out, args.fps)
    else:
        save_png(strip, args.out)


def command() -> None:
    """The console command (pyproject's [project.scripts]), as `python -m` runs it."""
    run_stage(main)


if __name__ == "__main__":
    command()
