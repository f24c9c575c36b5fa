"""Stage render: what the generator learned, as pictures, GIFs and one HTML report for people to read.

python -m pipeline.render [--params params.yaml] [--input models] [--output reports]
                          [--data data] [--metrics metrics]

Writes samples.png, conditions.png (a row per tag value), interpolation.png, interpolation.gif,
timelapse.gif, losses.png and index.html (pipeline/rendering/report.py). Everything runs on the CPU
from seeded noise, so the same generator and params give the same bytes and DVC sees no change when
nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.params import read_section
from pipeline.models.networks import load_generator
from pipeline.rendering.figures import (
    read_curves,
    read_timelapse,
    render_conditions,
    render_interpolation,
    render_losses,
    render_samples,
    save_gif,
)
from pipeline.rendering.report import ReportSources, read_inputs, write_report

log = logging.getLogger("pipeline.render")

METRICS_DIR = Path("dvclive/plots/metrics/train")
SAMPLES_DIR = Path("dvclive/plots/images/samples")
TRAINING_SUMMARY = Path("dvclive/metrics.json")
FINAL_FRAME_MS = 1500  # the timelapse holds its last frame, the generator as it was saved


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0], "pipeline.render")
    parser.add_argument("--input", type=Path, default=Path("models"),
                        help="folder holding best.pt and dvclive/ (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("reports"),
                        help="folder for the pictures and index.html (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="folder holding the data stages' stats, for the report (default: %(default)s)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"),
                        help="folder of the evaluate stage's eval.json and nearest_neighbours.png, "
                             "shown when present (default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("render", args.params)
    out = args.output
    # Every input is read before anything is written: a failure leaves no half-updated report.
    generator, payload = load_generator(args.input / "best.pt", torch.device("cpu"))
    curves = read_curves(args.input / METRICS_DIR)
    timelapse = read_timelapse(args.input / SAMPLES_DIR)
    report = read_inputs(ReportSources(params=Path(args.params), pictures=out, data=args.data,
                                       training=args.input / TRAINING_SUMMARY, evaluation=args.metrics))
    log.info("generator from epoch %s (%s weights)", payload["epoch"],
             "EMA" if payload["ema"] else "raw")
    steps = {
        "samples": lambda: render_samples(generator, params, out / "samples.png"),
        "conditions": lambda: render_conditions(generator, params, out / "conditions.png"),
        "interpolation": lambda: render_interpolation(generator, params, out / "interpolation.png",
                                                      out / "interpolation.gif"),
        "timelapse": lambda: save_gif(timelapse, out / "timelapse.gif", params.gif_fps, FINAL_FRAME_MS),
        "losses": lambda: render_losses(curves, out / "losses.png"),
        "report": lambda: write_report(report, payload, out / "index.html"),
    }
    with tqdm(steps.items(), desc="render", unit="output") as progress:
        for name, step in progress:
            progress.set_postfix_str(name)
            step()


if __name__ == "__main__":
    run_stage(main)
