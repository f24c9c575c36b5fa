"""What the evaluate stage does, apart from its command line: score train's snapshots, choose the
best by a score a collapsed or speckled generator cannot win, write it as models/best.pt (last, so a
killed run keeps the previous one), and write eval.json, eval_details.json, the snapshot curve and
the nearest-neighbour sheet."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.devices import resolve_device
from pipeline.core.files import save_png, write_csv, write_json
from pipeline.core.params import read_section
from pipeline.data.faces import load_faces
from pipeline.evaluation import snapshots
from pipeline.evaluation.conditional import score_conditions
from pipeline.evaluation.memorisation import memorisation, neighbour_sheet, train_face_hashes, verdict
from pipeline.evaluation.scoring import Evaluator
from pipeline.evaluation.variety import wilson_interval
from pipeline.models.networks import save_generator

log = logging.getLogger("pipeline.evaluate")

# the columns `dvc exp show` compares across experiments: scores that rank a run
METRICS = ("fid", "fid_reliable", "kid_mean", "kid_std", "coverage", "precision", "recall", "density",
           "variety", "near_identical", "high_frequency", "inception_precision", "inception_recall",
           "inception_density", "inception_coverage", "face_rate", "near_copies_samples",
           "copies_train_faces", "best_epoch")
# what the scores rest on and the real faces' own figures, to read them by: eval_details.json's
# "reference", not experiment columns
REFERENCE = ("face_rate_real", "near_copies_val", "nn_distance_samples", "nn_distance_val", "samples",
             "reference_images", "val_faces", "snapshots_scored", "snapshots_damaged")
# the raw generator beside the EMA one: eval.json's raw_<name>
RAW_METRICS = ("coverage", "precision", "recall", "variety", "near_identical", "high_frequency", "face_rate")
# 95% intervals and counts go to eval_details.json
INTERVALS = ("variety_95", "near_identical_95")


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
    demo = read_section("scrape", params_path).source == "demo"  # the judge learns from drawn faces
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
    raw = snapshots.raw_generator(best, device)
    raw_count = min(params.samples, params.snapshot_samples)
    raw_scores = {} if raw is None else evaluator.score_images(evaluator.sample(raw, raw_count))
    hashes = train_face_hashes(train)  # for both the copy check and the one per tag value
    copying, neighbours = memorisation(samples, val[:params.samples], train, distance, device, hashes)
    by_value, by_condition = score_conditions(best.generator, paths.manifest, train, val, evaluator,
                                              hashes, distance, crop if demo else None)
    scores |= copying | {
        "best_epoch": best.snapshot.epoch, "samples": len(samples), "reference_images": len(train),
        "val_faces": len(val), "snapshots_scored": len(scored), "snapshots_damaged": len(damaged)}
    shown = min(params.nearest, len(samples))
    save_png(neighbour_sheet(samples[:shown], train, neighbours[:shown]),
             paths.output / "nearest_neighbours.png")
    curve = snapshots.curve_rows(scored)
    write_csv(paths.output / "snapshots.csv", curve)
    details = {"fid_status": scores["fid_status"], "selected_by": metric,
               "memorisation": verdict(copying), "damaged_snapshots": damaged,
               "reference": {name: scores[name] for name in REFERENCE},
               "intervals": {"ema": intervals(scores, len(samples)),
                             "raw": intervals(raw_scores, raw_count) if raw_scores else None},
               "conditions": by_condition, "snapshots": curve}
    write_json(paths.output / "eval_details.json", details)
    metrics = ({name: scores[name] for name in METRICS}
               | {f"raw_{name}": raw_scores.get(name) for name in RAW_METRICS} | by_value)
    write_json(paths.output / "eval.json", metrics)
    save_generator(paths.best, best.generator, best.generator.config, ema=best.payload["ema"],
                   epoch=best.snapshot.epoch, extra={"selected_by": metric})
    log.info("best: epoch %d by %s; FID %s, KID %s, face rate %.3f (real %s); %s", best.snapshot.epoch,
             metric, scores["fid"], scores["kid_mean"], scores["face_rate"], scores["face_rate_real"],
             details["memorisation"])
    return metrics


def intervals(scores: dict, samples: int) -> dict:
    """95% intervals of the shares and ratios that rest on few faces."""
    found = {name: scores.get(name) for name in INTERVALS}
    if scores.get("face_rate") is not None:
        found["face_rate_95"] = wilson_interval(float(scores["face_rate"]), samples)
    return found
