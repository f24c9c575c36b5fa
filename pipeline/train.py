"""Stage train: a GAN (DCGAN by default) on the manifest's train faces, logged with DVCLive.

python -m pipeline.train [--input data/manifest.csv] [--output models] [-S train.epochs=5 ...]

Reads the train section of params.yaml and nothing else: scoring is the evaluate stage's, so
changing how a run is scored never retrains it. Writes EMA generator snapshots to
models/snapshots/ every train.snapshot_every epochs and at the end. A run continues from
models/checkpoint.pt when that checkpoint was made with the same params (only the number of epochs,
the device and the logging cadence may differ), so a killed run, or `dvc exp run -S
train.epochs=400` after a 300-epoch run, picks up where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.params import read_section
from pipeline.training.loop import train


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0], "pipeline.train")
    parser.add_argument("--input", type=Path, default=Path("data/manifest.csv"),
                        help="face manifest (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("models"),
                        help="folder for snapshots/, checkpoint.pt and dvclive/ (default: %(default)s)")
    args = parser.parse_args(argv)
    train(read_section("train", args.params), args.input, args.output)


if __name__ == "__main__":
    run_stage(main)
