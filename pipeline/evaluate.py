"""Stage evaluate: score train's snapshots, keep the best as models/best.pt, and check it for copying.

python -m pipeline.evaluate [--params params.yaml] [--snapshots models/snapshots]
                            [--manifest data/manifest.csv] [--best models/best.pt] [--output metrics]

Every evaluate.snapshots-th snapshot (counted back from the last, always scored) gets
evaluate.snapshot_samples samples: FID and KID against the train split (torch-fidelity's Inception;
null offline without its weights), precision/recall/density/coverage in a fixed random network's
embedding, variety, near-identical share, high-frequency energy and the face rate. The best (FID
where reliable, else KID, else coverage; never the face rate) becomes models/best.pt, scored again
on evaluate.samples samples for eval.json beside its raw generator, with the memorisation check
and, if conditional, the same numbers per tag value and how often it draws the value asked for
(docs/evaluate.md). Damaged snapshots are left out and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.evaluation.scorecard import Paths, evaluate

__all__ = ["Paths", "evaluate", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0], "pipeline.evaluate")
    parser.add_argument("--snapshots", type=Path, default=Path("models/snapshots"),
                        help="train's generator snapshots (default: %(default)s)")
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest.csv"),
                        help="face manifest: train faces to compare with, val faces for the real "
                             "face rate (default: %(default)s)")
    parser.add_argument("--best", type=Path, default=Path("models/best.pt"),
                        help="where the best snapshot is written (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("metrics"),
                        help="folder for eval.json, eval_details.json, snapshots.csv and "
                             "nearest_neighbours.png (default: %(default)s)")
    args = parser.parse_args(argv)
    evaluate(Path(args.params), Paths(args.snapshots, args.manifest, args.best, args.output))


if __name__ == "__main__":
    run_stage(main)
