"""The evaluate stage: FID and KID against hand values and torch-fidelity, the face rate on faces
drawn by the demo art, the memorisation check, offline behaviour, and the stage's files."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from PIL import Image
from torch import nn
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

from pipeline.core.params import CropParams, EvaluateParams, PipelineError
from pipeline.data.faces import load_faces
from pipeline.data.formats import MANIFEST_FIELDS
from pipeline.evaluate import main
from pipeline.evaluation.inception import WEIGHTS_ENV, FeatureNet, inception_weights_path, load_features
from pipeline.evaluation.memorisation import memorisation
from pipeline.evaluation.metrics import (
    frechet_distance,
    gaussian_statistics,
    kernel_inception_distance,
    nearest_faces,
)
from pipeline.evaluation.scoring import Evaluator
from pipeline.models.networks import Generator, NetConfig, load_generator, save_generator
from pipeline.vision.cascade import FaceDetector

CPU = torch.device("cpu")
VAL_FACES = 12
TRAIN_FACES = 30


def correlated(rng: np.random.Generator, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    """Gaussian features with a fixed non-diagonal covariance, moved by `shift`."""
    mixing = np.random.default_rng(99).normal(size=(dim, dim))
    return (rng.normal(size=(n, dim)) @ mixing + shift).astype(np.float32)


def fid_of(x: np.ndarray, y: np.ndarray) -> float:
    return frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y))


def test_frechet_distance_matches_hand_computed_values() -> None:
    # 1-D: means 1 and 3, variances 2 and 8: (1 - 3)^2 + (sqrt 2 - sqrt 8)^2 = 4 + 2
    assert fid_of(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(6.0)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sd1 - sd2)^2 = (1 + 4) + (1 + 1)
    sigma1, sigma2 = np.diag([1.0, 4.0]), np.diag([4.0, 9.0])
    assert frechet_distance(np.zeros(2), sigma1, np.array([1.0, 2.0]), sigma2) == pytest.approx(7.0)


def test_frechet_distance_matches_torch_fidelity_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(0)
    x, y = correlated(rng, 400, 6), correlated(rng, 300, 6, shift=0.5)
    stats_x, stats_y = gaussian_statistics(x), gaussian_statistics(y)
    reference = fid_statistics_to_metric({"mu": stats_x[0], "sigma": stats_x[1]},
                                         {"mu": stats_y[0], "sigma": stats_y[1]}, verbose=False)
    assert fid_of(x, y) == pytest.approx(reference["frechet_inception_distance"], rel=1e-9)

    assert fid_of(x, x) == pytest.approx(0.0, abs=1e-9)
    fids = [fid_of(x, correlated(np.random.default_rng(1), 400, 6, shift)) for shift in (0.0, 1.0, 2.0)]
    assert fids == sorted(fids) and fids[0] < 0.1 * fids[1]  # sampling noise, then the shift


def test_kid_matches_torch_fidelity_on_whole_sets() -> None:
    rng = np.random.default_rng(2)
    x, y = correlated(rng, 64, 8), correlated(rng, 64, 8, shift=0.3)
    reference = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=3,
                                       kid_subset_size=64, verbose=False, rng_seed=0)
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=64, seed=5)
    assert mean == pytest.approx(reference[KEY_METRIC_KID_MEAN], rel=1e-5)
    assert std == 0.0  # whole sets: one subset, nothing to spread


def test_kid_is_near_zero_for_one_distribution_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    kids = [kernel_inception_distance(x, (rng.normal(size=(400, 8)) + shift).astype(np.float32), subsets=20,
                                      subset_size=100, seed=0) for shift in (0.0, 0.5, 1.0)]
    (same, same_std), (near, _), (far, _) = kids
    assert same_std > 0  # subsets of 100 out of 300 and 400 differ
    assert abs(same) < 2 * same_std  # unbiased: centred on 0 when nothing differs
    assert near > 10 * abs(same) and far > near


def test_nearest_faces_finds_copies_and_mirrors_across_chunks() -> None:
    seeded = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=seeded)
    queries = torch.stack([faces[7], faces[3].flip(2), torch.full((3, 8, 8), 128, dtype=torch.uint8)])

    distances, indices = nearest_faces(queries, faces, k=4, device=CPU, chunk=3)

    assert indices[0, 0] == 7 and indices[1, 0] == 10 + 3  # 10 and on: mirrored faces
    assert distances[:2, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-3)
    assert all(len(set((row % 10).tolist())) == 4 for row in indices)  # each face once
    vectors = queries.float().div(127.5).sub(1).flatten(1)
    brute = torch.minimum(*(torch.cdist(vectors, candidates.float().div(127.5).sub(1).flatten(1))
                            for candidates in (faces, faces.flip(3))))
    expected, expected_indices = (brute / math.sqrt(3 * 8 * 8)).topk(4, dim=1, largest=False)
    assert torch.allclose(distances, expected, atol=1e-4)
    assert torch.equal(indices % 10, expected_indices)


@pytest.fixture(scope="module")
def manifest(demo_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first faces cut from the demo art as a manifest: 12 val, 30 train (absolute paths)."""
    paths = sorted(demo_faces.glob("*.jpg"))[:VAL_FACES + TRAIN_FACES]
    assert len(paths) == VAL_FACES + TRAIN_FACES
    path = tmp_path_factory.mktemp("data") / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, MANIFEST_FIELDS)
        writer.writeheader()
        for i, face in enumerate(paths):
            writer.writerow({"path": str(face), "sha256": hashlib.sha256(face.read_bytes()).hexdigest(),
                             "post_id": i, "source_image": face.name, "tags": "", "box": "0 0 96 96",
                             "width": 96, "height": 96, "split": "val" if i < VAL_FACES else "train"})
    return path


@pytest.fixture(scope="module")
def val(manifest: Path) -> torch.Tensor:
    return load_faces(manifest, "val", 48)


@pytest.fixture(scope="module")
def detector(cascade_path: Path) -> FaceDetector:
    return FaceDetector.load(CropParams(), cascade_path)


@pytest.fixture
def generator_path(tmp_path: Path) -> Path:
    """A tiny untrained generator: its faces are nothing like the drawn ones, which is the point."""
    torch.manual_seed(0)
    config = NetConfig(image_size=48, ngf=8)
    path = tmp_path / "models" / "snapshots" / "epoch-00003.pt"
    save_generator(path, Generator(config), config, ema=True, epoch=3)
    return path


def stand_in_features() -> FeatureNet:
    """A fixed random conv net: a cheap, deterministic stand-in for Inception's pool features."""
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 5, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        for i, parameter in enumerate(net.parameters()):
            parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(i)) * 0.2)
    return lambda images: net(images.float() / 127.5 - 1.0)


# More samples than val faces, so KID's subsets of the samples differ and its std means something.
SMALL = EvaluateParams(samples=20, batch_size=8, nearest=3, device="cpu", seed=1)


def test_evaluator_scores_real_and_generated_faces(val: torch.Tensor, detector: FaceDetector,
                                                   generator_path: Path) -> None:
    evaluator = Evaluator(val, val, SMALL, CPU, stand_in_features(), detector)

    real = evaluator.score_images(val)
    assert real["fid"] == pytest.approx(0.0, abs=1e-6)  # float32 features
    assert real["face_rate"] == real["face_rate_real"]
    assert real["face_rate_real"] >= 0.5  # the cascade finds faces in the val crops, upscaled from 48 px

    generator, _ = load_generator(generator_path)
    generator.train()
    scores = evaluator.score(generator, SMALL.samples)
    assert generator.training  # left as it was
    assert scores["fid_status"].startswith("unreliable: 12 train faces and 20 samples")
    assert scores["fid_reliable"] is False
    assert scores["fid"] > 1.0 and scores["kid_mean"] > 10 * scores["kid_std"] > 0
    assert scores["face_rate"] == 0.0  # flat grey: no face
    assert scores["face_rate_real"] == real["face_rate_real"]
    assert evaluator.score(generator, SMALL.samples) == scores  # seeded noise, nothing consumed between calls


def test_evaluator_without_features_reports_why(val: torch.Tensor, generator_path: Path) -> None:
    generator, _ = load_generator(generator_path)
    scores = Evaluator(val, val, SMALL, CPU, "no weights here", None).score(generator, SMALL.samples)
    inception = {f"inception_{name}": None for name in ("precision", "recall", "density", "coverage")}
    assert {name: scores[name] for name in (*inception, "fid", "fid_reliable", "kid_mean", "kid_std",
                                            "face_rate", "face_rate_real", "fid_status")} == {
        "fid": None, "fid_reliable": False, "kid_mean": None, "kid_std": None, "face_rate": None,
        "face_rate_real": None, "fid_status": "unavailable: no weights here", **inception}
    # the offline numbers are there all the same
    assert {"coverage", "precision", "recall", "density", "variety", "near_identical",
            "high_frequency"} <= {name for name, value in scores.items() if value is not None}


def test_memorisation_shows_copied_faces_closer_than_val(val: torch.Tensor, manifest: Path) -> None:
    train = load_faces(manifest, "train", 48)
    copies = torch.stack([train[4], train[9].flip(2), train[0]])
    distances, neighbours = memorisation(copies, val, train, 4, CPU)
    assert distances["nn_distance_samples"] == pytest.approx(0.0, abs=5e-3)  # float32 cdist rounding
    assert distances["nn_distance_val"] > 0.1
    assert neighbours[:, 0].tolist() == [4, TRAIN_FACES + 9, 0]
    assert neighbours.shape == (3, 5)


def closed_port_url() -> str:
    """An address where nothing listens: the download fails at once, as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights-inception.pth"


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No weights anywhere: an empty torch hub cache, no variable, and a download that fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(tf_inception, "URL_INCEPTION_V3", closed_port_url())


@pytest.mark.usefixtures("offline")
def test_offline_without_weights_reports_the_reason() -> None:
    reason = load_features(None, CPU)
    assert isinstance(reason, str)
    assert "download failed" in reason and WEIGHTS_ENV in reason and "\n" not in reason


def test_configured_weights_that_are_missing_or_foreign_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"evaluate.inception_weights points to .*missing.pth"):
        load_features(str(tmp_path / "missing.pth"), CPU)
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match=r"foreign.pth: not torch-fidelity's Inception weights"):
        load_features(str(foreign), CPU)


def test_weights_come_from_the_param_then_the_environment(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    param, variable = tmp_path / "param.pth", tmp_path / "variable.pth"
    param.touch()
    variable.touch()
    monkeypatch.setenv(WEIGHTS_ENV, str(variable))
    assert inception_weights_path(str(param)) == param
    assert inception_weights_path(None) == variable
    monkeypatch.delenv(WEIGHTS_ENV)
    assert inception_weights_path(None) is None  # the torch hub cache, then the download


def write_params(path: Path, cascade: Path) -> Path:
    path.write_text(f"crop:\n  cascade: {cascade}\n"
                    "evaluate:\n  samples: 8\n  snapshot_samples: 4\n  batch_size: 4\n  nearest: 3\n"
                    "  device: cpu\n")
    return path


def run_stage(params: Path, generator: Path, manifest: Path, output: Path) -> dict:
    main(["--params", str(params), "--snapshots", str(generator.parent), "--manifest", str(manifest),
          "--best", str(output / "best.pt"), "--output", str(output)])
    return json.loads((output / "eval.json").read_text())


@pytest.mark.usefixtures("offline")
def test_stage_offline_writes_every_other_metric_and_the_sheet(
    tmp_path: Path, cascade_path: Path, generator_path: Path, manifest: Path
) -> None:
    params = write_params(tmp_path / "params.yaml", cascade_path)
    metrics = run_stage(params, generator_path, manifest, tmp_path / "first")

    assert metrics["fid"] is None and metrics["kid_mean"] is None and metrics["kid_std"] is None
    details = json.loads((tmp_path / "first" / "eval_details.json").read_text())
    assert details["fid_status"].startswith("unavailable: no Inception weights, download failed")
    reference = details["reference"]
    assert metrics["face_rate"] == 0.0 and reference["face_rate_real"] >= 0.5
    assert reference["nn_distance_samples"] > 0 and reference["nn_distance_val"] > 0
    assert (reference["samples"], reference["val_faces"], reference["reference_images"]) == (8, VAL_FACES,
                                                                                            TRAIN_FACES)
    assert metrics["best_epoch"] == 3 and reference["snapshots_scored"] == 1
    with Image.open(tmp_path / "first" / "nearest_neighbours.png") as sheet:
        face = 48 * 2
        assert sheet.size == (6 * (face + 2) + 2, 3 * (face + 2) + 2)  # sample + 5 neighbours, 3 rows

    run_stage(params, generator_path, manifest, tmp_path / "second")
    names = ["best.pt", "eval.json", "eval_details.json", "nearest_neighbours.png", "snapshots.csv"]
    for name in names:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == names
