"""Stage train: a GAN (DCGAN by default) on the manifest's train faces, logged with DVCLive.

python -m pipeline.train [--input data/manifest.csv] [--output models]

A run continues from models/checkpoint.pt when that checkpoint was made with the same params
(only the number of epochs, the device and the logging cadence may differ), so a killed run, or
`dvc exp run -S train.epochs=300` after a 100-epoch run, picks up where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.devices import resolve_device
from pipeline.core.params import read_section
from pipeline.data.faces import load_faces
from pipeline.training.loop import train

EVAL_SAMPLES_DURING_TRAINING = 200  # enough to rank checkpoints, cheap enough to repeat


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("data/manifest.csv"),
                        help="face manifest (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("models"),
                        help="folder for generator.pt, checkpoint.pt and dvclive/ "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("train", args.params)
    evaluator = None
    if params.eval_every:
        from pipeline.evaluation.scoring import Evaluator  # Inception and the cascade: only when used

        evaluation = read_section("evaluate", args.params)
        evaluation = replace(
            evaluation, samples=min(evaluation.samples, EVAL_SAMPLES_DURING_TRAINING))
        device = resolve_device(params.device, "train.device")
        evaluator = Evaluator.prepare(load_faces(args.input, "val", params.image_size), evaluation,
                                      read_section("crop", args.params), device)
    train(params, args.input, args.output, evaluator)


if __name__ == "__main__":
    run_stage(main)
