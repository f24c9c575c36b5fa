"""Scoring apart from training: which snapshots evaluate scores, how it picks models/best.pt, FID's
reliability at small reference sets, the memorisation check, and damaged or interrupted runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.core.params import EvaluateParams, TrainParams
from pipeline.evaluate import Paths, evaluate
from pipeline.evaluation import scoring
from pipeline.evaluation.memorisation import memorisation, verdict
from pipeline.evaluation.scoring import Evaluator, selection_metric
from pipeline.evaluation.snapshots import Scored, Snapshot, best_of, chosen
from pipeline.models.networks import load_generator
from pipeline.training.loop import train

CPU = torch.device("cpu")


def tiny(**overrides) -> TrainParams:
    values = {"epochs": 3, "batch_size": 8, "ngf": 8, "ndf": 8, "device": "cpu", "precision": "fp32",
              "threads": 1, "sample_every": 1}
    return TrainParams(**{**values, **overrides})


def snaps(*epochs: int) -> list[Snapshot]:
    return [Snapshot(epoch, Path(f"epoch-{epoch:05d}.pt")) for epoch in epochs]


def test_every_kth_snapshot_counted_back_from_the_last():
    five = snaps(10, 20, 30, 40, 50)
    assert [s.epoch for s in chosen(five, 1)] == [10, 20, 30, 40, 50]
    assert [s.epoch for s in chosen(five, 2)] == [10, 30, 50]
    assert [s.epoch for s in chosen(five, 3)] == [20, 50]
    assert [s.epoch for s in chosen(five, 0)] == [50]


def scored(epoch: int, **scores) -> Scored:
    return Scored(Snapshot(epoch, Path(f"epoch-{epoch:05d}.pt")), None, {}, scores)


def test_best_by_reliable_fid_else_kid_else_coverage_ties_to_the_later():
    # offline: coverage ranks, never the face rate (epoch 1 draws one face the cascade always finds)
    offline = [scored(1, coverage=0.01, face_rate=1.0), scored(2, coverage=0.6, face_rate=0.8),
               scored(3, coverage=0.6, face_rate=0.7)]
    best, metric = best_of(offline)
    assert (best.snapshot.epoch, metric) == (3, "coverage")
    small = [scored(e, fid=f, fid_reliable=False, kid_mean=k, face_rate=0.9)
             for e, f, k in ((1, 50.0, 0.04), (2, 40.0, 0.05), (3, 60.0, 0.03))]
    assert (best_of(small)[0].snapshot.epoch, best_of(small)[1]) == (3, "kid")  # FID unreliable
    large = [scored(e, fid=f, fid_reliable=True, kid_mean=0.01, face_rate=0.1)
             for e, f in ((1, 50.0), (2, 40.0), (3, 60.0))]
    assert (best_of(large)[0].snapshot.epoch, best_of(large)[1]) == (2, "fid")
    assert selection_metric({"fid": None, "kid_mean": None, "coverage": None}) == ("coverage", -0.0)


def pooled_features(images: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in feature network: 4x4 average colours, 48 dimensions."""
    return torch.nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1)


@pytest.mark.parametrize(("reference", "reliable"), [(300, False), (2048, True)])
def test_fid_is_marked_unreliable_below_the_feature_dimension(reference, reliable):
    faces = torch.randint(0, 256, (reference, 3, 8, 8), dtype=torch.uint8)
    params = EvaluateParams(samples=2048, batch_size=512, seed=0)
    evaluator = Evaluator(faces, faces[:4], params, CPU, pooled_features, detector=None)
    scores = evaluator.distances(torch.randint(0, 256, (2048, 3, 8, 8), dtype=torch.uint8))
    assert scores["fid_reliable"] is reliable and scores["fid"] is not None and scores["kid_mean"] is not None
    assert (scores["fid_status"] == "ok") is reliable
    if not reliable:
        assert f"{reference} train faces and 2048 samples" in scores["fid_status"]


@pytest.fixture(scope="module")
def drawn_faces() -> tuple[torch.Tensor, torch.Tensor]:
    """60 train and 20 val faces with structure a perceptual hash sees: random colour blocks."""
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (80, 3, 6, 6), dtype=np.uint8)
    faces = torch.from_numpy(blocks).repeat_interleave(8, 2).repeat_interleave(8, 3)
    return faces[:60], faces[60:]


def test_a_copier_is_flagged(drawn_faces):
    train_faces, val = drawn_faces
    copies = train_faces[torch.arange(40) % 60]
    copies[::2] = copies[::2].flip(3)  # training flips faces: a mirrored copy is still a copy
    scores, _ = memorisation(copies, val, train_faces, distance=4, device=CPU)
    assert scores["near_copies_samples"] == 1.0 and scores["near_copies_val"] < 0.1
    assert scores["copies_train_faces"] is True
    assert verdict(scores).startswith("copies train faces")


def test_a_blurry_generator_is_not_called_a_copier(drawn_faces):
    train_faces, val = drawn_faces
    mean = train_faces.float().mean(0, keepdim=True)
    blurred = torch.nn.functional.avg_pool2d(mean, 9, stride=1, padding=4, count_include_pad=False)
    samples = (blurred + torch.randn(40, 3, 48, 48)).clamp(0, 255).round().to(torch.uint8)
    scores, _ = memorisation(samples, val, train_faces, distance=4, device=CPU)
    # the pixel measure alone would call it a copier: the mean sits closer than any real face
    assert scores["nn_distance_samples"] < scores["nn_distance_val"]
    assert scores["near_copies_samples"] == 0.0 and scores["copies_train_faces"] is False
    assert verdict(scores).startswith("no copying") and "blurry" in verdict(scores)


@pytest.fixture
def trained(tiny_manifest: Path, tmp_path: Path, cascade_path: Path, monkeypatch) -> tuple[Path, Paths]:
    """Three snapshots of a tiny run, params for evaluate, and no Inception (as offline)."""
    monkeypatch.setattr(scoring, "load_features", lambda weights, device: "offline in this test")
    train(tiny(epochs=3, snapshot_every=1), tiny_manifest, tmp_path / "models")
    params = {"crop": {"cascade": str(cascade_path)},
              "evaluate": {"samples": 8, "snapshot_samples": 4, "batch_size": 8, "nearest": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml", Paths(tmp_path / "models/snapshots", tiny_manifest,
                                           tmp_path / "models/best.pt", tmp_path / "metrics")


def test_evaluate_scores_each_snapshot_and_keeps_the_best(trained):
    params, paths = trained
    scores = evaluate(params, paths)
    # scores only: numbers and flags (the experiment table's columns); words and counts go to the details
    assert not [name for name, value in scores.items() if isinstance(value, str)]
    assert scores["raw_coverage"] is not None
    details = json.loads((paths.output / "eval_details.json").read_text())
    reference = details["reference"]
    assert reference["snapshots_scored"] == 3 and reference["snapshots_damaged"] == 0
    assert reference["reference_images"] == 16 and reference["val_faces"] == 4 and reference["samples"] == 8
    assert details["selected_by"] == "coverage" and details["fid_status"].startswith("unavailable")
    assert [row["epoch"] for row in details["snapshots"]] == [1, 2, 3]
    rows = (paths.output / "snapshots.csv").read_text().splitlines()
    assert rows[0] == ("epoch,coverage,precision,recall,variety,near_identical,high_frequency,"
                       "face_rate,fid,kid_mean")
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]
    _, payload = load_generator(paths.best)
    assert payload["epoch"] == scores["best_epoch"] and payload["selected_by"] == "coverage"


def test_files_beside_the_snapshots_are_kept_and_not_scored(trained, tiny_manifest):
    """Notes, a copy made by hand, a folder: neither a continued run nor a fresh one deletes what is
    not a snapshot, and evaluate scores only the snapshots."""
    params, paths = trained
    foreign = [paths.snapshots / "notes.txt", paths.snapshots / "epoch-00002 (copy).pt",
               paths.snapshots / "epoch-00002.pt.bak"]
    for path in foreign:
        path.write_bytes(b"kept by hand")
    models = paths.snapshots.parent
    train(tiny(epochs=4, snapshot_every=1), tiny_manifest, models)  # continues from epoch 3
    assert all(path.read_bytes() == b"kept by hand" for path in foreign)
    evaluate(params, paths)
    assert json.loads((paths.output / "eval_details.json").read_text())["reference"]["snapshots_scored"] == 4
    (paths.snapshots / "epoch-00007.pt").mkdir()  # a folder with a snapshot's name
    train(tiny(epochs=1, snapshot_every=1, ngf=16), tiny_manifest, models)  # another network: fresh
    assert all(path.read_bytes() == b"kept by hand" for path in foreign)
    assert (paths.snapshots / "epoch-00007.pt").is_dir()
    assert sorted(path.name for path in paths.snapshots.glob("epoch-?????.pt")) == ["epoch-00001.pt",
                                                                                     "epoch-00007.pt"]


def test_damaged_snapshot_is_left_out_and_counted(trained):
    params, paths = trained
    (paths.snapshots / "epoch-00002.pt").write_bytes(b"cut short by a power loss")
    evaluate(params, paths)
    details = json.loads((paths.output / "eval_details.json").read_text())
    assert details["reference"]["snapshots_scored"] == 2 and details["reference"]["snapshots_damaged"] == 1
    assert details["damaged_snapshots"] == ["epoch-00002.pt"]


def test_interrupted_evaluate_keeps_the_previous_best(trained, monkeypatch):
    params, paths = trained
    evaluate(params, paths)
    before = paths.best.read_bytes()
    (paths.snapshots / "epoch-00001.pt").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.evaluation.scorecard.write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(params, paths)
    assert paths.best.read_bytes() == before
