"""The snapshots train wrote, scored one by one: the curve over training and the best of them.

Scoring apart from training (as StyleGAN2-ADA does) means a change to how runs are scored reruns
this, never the training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pipeline.core.params import PipelineError
from pipeline.evaluation.scoring import Evaluator, Scores, selection_metric
from pipeline.models.networks import RAW_STATE, Generator, load_generator, snapshot_epoch

log = logging.getLogger("pipeline.evaluate")


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    path: Path


@dataclass
class Scored:
    snapshot: Snapshot
    generator: Generator
    payload: dict[str, Any]
    scores: Scores = field(default_factory=dict)


def list_snapshots(folder: Path) -> list[Snapshot]:
    """epoch-NNNNN.pt files of `folder`, oldest first."""
    if not folder.is_dir():
        raise PipelineError(f"{folder}: no snapshots folder; run the train stage first (dvc repro train)")
    found = [Snapshot(epoch, path) for path in folder.iterdir()
             if (epoch := snapshot_epoch(path)) is not None]
    if not found:
        raise PipelineError(f"{folder}: no snapshots (epoch-NNNNN.pt); run the train stage first")
    return sorted(found, key=lambda snapshot: snapshot.epoch)


def chosen(snapshots: list[Snapshot], every: int) -> list[Snapshot]:
    """Every `every`-th snapshot counted back from the last, which is always scored (0: it alone)."""
    if every == 0:
        return snapshots[-1:]
    return snapshots[::-1][::every][::-1]


def load_snapshots(snapshots: list[Snapshot], device: torch.device) -> tuple[list[Scored], list[str]]:
    """The readable snapshots, and the names of the damaged ones (left out, one log line each)."""
    loaded, damaged = [], []
    for snapshot in snapshots:
        try:
            generator, payload = load_generator(snapshot.path, device)
        except PipelineError as exc:
            log.warning("skipped snapshot %s", exc)
            damaged.append(snapshot.path.name)
            continue
        loaded.append(Scored(snapshot, generator, payload))
    if not loaded:
        raise PipelineError(f"none of the {len(snapshots)} snapshots to score is readable "
                            f"({', '.join(damaged)}); rerun the train stage")
    return loaded, damaged


def score_snapshots(loaded: list[Scored], evaluator: Evaluator, samples: int) -> None:
    for item in tqdm(loaded, desc="evaluate", unit="snapshot"):
        item.scores = evaluator.score(item.generator, samples)
        log.info("epoch %d: %s %.4g", item.snapshot.epoch, *_shown(selection_metric(item.scores)))


def _shown(metric: tuple[str, float]) -> tuple[str, float]:
    name, value = metric
    return name, abs(value)


def best_of(scored: list[Scored]) -> tuple[Scored, str]:
    """The snapshot with the best selection metric (ties go to the later epoch: offline, early face
    rates are often all 0), and the metric's name. All are ranked by the metric the last one has."""
    metric = selection_metric(scored[-1].scores)[0]
    ranked = [item for item in scored if selection_metric(item.scores)[0] == metric]
    best = min(reversed(ranked), key=lambda item: selection_metric(item.scores)[1])
    return best, metric


def raw_generator(item: Scored, device: torch.device) -> Generator | None:
    """The raw (not averaged) generator a snapshot carries beside its EMA one, in eval mode; None
    for snapshots without it."""
    state = item.payload.get(RAW_STATE)
    if not isinstance(state, dict):
        return None
    raw = Generator(item.generator.config)
    try:
        raw.load_state_dict(state)
    except RuntimeError:
        log.warning("snapshot %s: its raw generator does not match its config; left out",
                    item.snapshot.path.name)
        return None
    return raw.to(device).eval()


def curve_rows(scored: list[Scored]) -> list[dict[str, Any]]:
    """One row per scored snapshot for the DVC plot (empty cells where a score is unavailable)."""
    columns = ("coverage", "precision", "recall", "variety", "near_identical", "high_frequency",
               "face_rate", "fid", "kid_mean")
    return [{"epoch": item.snapshot.epoch,
             **{name: "" if item.scores.get(name) is None else item.scores[name] for name in columns}}
            for item in scored]
