"""Stage evaluate: score train's snapshots, keep the best as models/best.pt, and check it for copying.

python -m pipeline.evaluate [--params params.yaml] [--snapshots models/snapshots]
                            [--manifest data/manifest.csv] [--best models/best.pt] [--output metrics]

Every evaluate.snapshots-th snapshot (counted back from the last, always scored) gets
evaluate.snapshot_samples samples: FID and KID against the train split (torch-fidelity's Inception;
null offline without its weights) and the face rate. The best (FID where reliable, else KID, else
face rate) becomes models/best.pt, scored again on evaluate.samples samples for eval.json, with the
memorisation check and, if conditional, how often it draws the tag values asked for (docs/evaluate.md).
Damaged snapshots are left out and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.devices import resolve_device
from pipeline.core.files import save_png, write_csv, write_json
from pipeline.core.params import read_section
from pipeline.data.faces import load_faces
from pipeline.evaluation import snapshots
from pipeline.evaluation.conditional import score_conditions
from pipeline.evaluation.memorisation import memorisation, neighbour_sheet, train_face_hashes, verdict
from pipeline.evaluation.scoring import Evaluator
from pipeline.models.networks import save_generator

log = logging.getLogger("pipeline.evaluate")

# the columns `dvc exp show` compares across experiments; words go to eval_details.json
METRICS = ("fid", "fid_reliable", "kid_mean", "kid_std", "face_rate", "face_rate_real",
           "near_copies_samples", "near_copies_val", "copies_train_faces", "nn_distance_samples",
           "nn_distance_val", "best_epoch", "samples", "reference_images", "val_faces",
           "snapshots_scored", "snapshots_damaged")


@dataclass(frozen=True)
class Paths:
    snapshots: Path
    manifest: Path
    best: Path
    output: Path


def evaluate(params_path: Path, paths: Paths) -> dict:
    """Score, choose, write best.pt (last: a killed run leaves the previous one), return eval.json."""
    params = read_section("evaluate", params_path)
    crop = read_section("crop", params_path)
    distance = max(read_section("manifest", params_path).dedup_distance, 0)
    device = resolve_device(params.device, "evaluate.device")
    listed = snapshots.list_snapshots(paths.snapshots)
    scored, damaged = snapshots.load_snapshots(snapshots.chosen(listed, params.snapshots), device)
    size = scored[-1].generator.config.image_size  # one run's snapshots share their config
    train = load_faces(paths.manifest, "train", size)
    val = load_faces(paths.manifest, "val", size)
    evaluator = Evaluator.prepare(train, val, params, crop, device)

    snapshots.score_snapshots(scored, evaluator, params.snapshot_samples)
    best, metric = snapshots.best_of(scored)
    samples = evaluator.sample(best.generator, params.samples)
    scores = evaluator.score_images(samples)
    hashes = train_face_hashes(train)  # for both the copy check and the one per tag value
    copying, neighbours = memorisation(samples, val[:params.samples], train, distance, device, hashes)
    by_value, by_condition = score_conditions(best.generator, paths.manifest, train, val, evaluator,
                                              hashes, distance)
    scores |= copying | {
        "best_epoch": best.snapshot.epoch, "samples": len(samples), "reference_images": len(train),
        "val_faces": len(val), "snapshots_scored": len(scored), "snapshots_damaged": len(damaged)}
    shown = min(params.nearest, len(samples))
    save_png(neighbour_sheet(samples[:shown], train, neighbours[:shown]),
             paths.output / "nearest_neighbours.png")
    write_csv(paths.output / "snapshots.csv", snapshots.curve_rows(scored))
    details = {"fid_status": scores["fid_status"], "selected_by": metric,
               "memorisation": verdict(copying), "damaged_snapshots": damaged,
               "conditions": by_condition}
    write_json(paths.output / "eval_details.json", details)
    metrics = {name: scores[name] for name in METRICS} | by_value
    write_json(paths.output / "eval.json", metrics)
    save_generator(paths.best, best.generator, best.generator.config, ema=best.payload["ema"],
                   epoch=best.snapshot.epoch, extra={"selected_by": metric})
    log.info("best: epoch %d by %s; FID %s, KID %s, face rate %.3f (real %s); %s", best.snapshot.epoch,
             metric, scores["fid"], scores["kid_mean"], scores["face_rate"], scores["face_rate_real"],
             details["memorisation"])
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
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
