"""The numbers that see collapse and speckle: each is fed real faces (drawn by the demo art), one of
them repeated, and the same faces under pixel noise, and must move the way a person's eye does."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.core.params import EvaluateParams
from pipeline.demo.art import draw_labelled_faces
from pipeline.evaluation.scoring import Evaluator, selection_metric
from pipeline.evaluation.variety import (
    RandomEmbedding,
    Reference,
    embed,
    high_frequency_energy,
    prdc,
    thumbnails,
    variety_scores,
    wilson_interval,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    pixels, _ = draw_labelled_faces(3, 400, 48, 0.25)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def noisy(faces: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(faces.shape, generator=torch.Generator().manual_seed(1)) * sigma
    return (faces.float() + noise).clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def sets(faces: torch.Tensor) -> dict[str, torch.Tensor]:
    """Train faces to compare with, and three sample sets: new real faces, one of them repeated,
    and the new real faces under speckle."""
    real = faces[200:]
    return {"train": faces[:200], "real": real, "repeated": real[:1].repeat(200, 1, 1, 1),
            "speckled": noisy(real, 30.0)}


def test_variety_is_near_one_for_real_faces_near_zero_for_one_face_and_blind_to_speckle(sets) -> None:
    reference = Reference.of(sets["train"])
    real = variety_scores(sets["real"], reference, seed=0)
    repeated = variety_scores(sets["repeated"], reference, seed=0)
    speckled = variety_scores(sets["speckled"], reference, seed=0)
    assert 0.85 < real["variety"] < 1.15
    assert repeated["variety"] < 0.01
    assert speckled["variety"] < 1.1 * real["variety"]  # speckle never passes for variety


def test_near_identical_share_counts_the_repeats(sets) -> None:
    reference = Reference.of(sets["train"])
    assert variety_scores(sets["real"], reference, seed=0)["near_identical"] < 0.05
    assert variety_scores(sets["repeated"], reference, seed=0)["near_identical"] == 1.0
    two_faces = torch.cat([sets["real"][:1].repeat(100, 1, 1, 1), sets["real"][1:2].repeat(100, 1, 1, 1)])
    assert variety_scores(two_faces, reference, seed=0)["near_identical"] == 1.0
    low, high = variety_scores(sets["repeated"], reference, seed=0)["near_identical_95"]
    assert low > 0.95 and high == 1.0


def test_high_frequency_energy_sees_speckle_and_not_real_faces(sets) -> None:
    reference = Reference.of(sets["train"])
    assert 0.85 < variety_scores(sets["real"], reference, seed=0)["high_frequency"] < 1.15
    assert variety_scores(sets["speckled"], reference, seed=0)["high_frequency"] > 1.5
    assert high_frequency_energy(noisy(sets["real"], 10.0)) > high_frequency_energy(sets["real"])


def test_few_faces_get_an_interval_around_the_variety(sets) -> None:
    reference = Reference.of(sets["train"][:20])
    scores = variety_scores(sets["real"][:30], reference, seed=0)
    low, high = scores["variety_95"]
    assert low < scores["variety"] < high and high - low > 0.05
    assert "variety_95" not in variety_scores(sets["real"], Reference.of(sets["train"]), seed=0)


def test_thumbnails_are_blurred_small_colour_pictures(sets) -> None:
    thumbs = thumbnails(sets["real"][:4])
    assert thumbs.shape == (4, 3 * 12 * 12) and 0.0 <= float(thumbs.min()) <= float(thumbs.max()) <= 1.0


def test_prdc_on_points_counted_by_hand() -> None:
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    # k = 1: the real balls' radii are 1, 1, 1 and 8
    fake = torch.tensor([[0.5], [30.0]])
    scores = prdc(real, fake, k=1)
    assert scores["precision"] == 0.5  # 0.5 is inside two balls, 30 inside none
    assert scores["density"] == 1.0  # (2 + 0) balls / (1 * 2 fakes)
    assert scores["coverage"] == 0.5  # the balls of 0 and 1 hold a fake; those of 2 and 10 do not
    # the fakes' own radii are both 29.5: 0, 1, 2 and 10 all lie within 29.5 of 0.5
    assert scores["recall"] == 1.0


def test_prdc_in_the_random_embedding_sees_collapse_and_speckle(sets) -> None:
    network = RandomEmbedding()
    train = embed(network, sets["train"], 100, CPU)
    scores = {name: prdc(train, embed(network, sets[name], 100, CPU))
              for name in ("real", "repeated", "speckled")}
    assert scores["real"]["precision"] > 0.8 and scores["real"]["coverage"] > 0.6
    assert scores["repeated"]["coverage"] < 0.1 and scores["repeated"]["recall"] < 0.1
    assert scores["speckled"]["precision"] < 0.5 * scores["real"]["precision"]
    assert scores["speckled"]["coverage"] < 0.5 * scores["real"]["coverage"]


def test_the_random_embedding_is_the_same_on_every_build(sets) -> None:
    first, second = RandomEmbedding(), RandomEmbedding()
    batch = sets["real"][:8]
    assert torch.equal(first(batch), second(batch))


def test_a_collapsed_or_speckled_generator_never_wins_the_offline_ranking(sets) -> None:
    params = EvaluateParams(samples=200, snapshot_samples=200, batch_size=100)
    evaluator = Evaluator(sets["train"], sets["real"][:20], params, CPU, "offline", detector=None)
    ranked = {name: selection_metric(evaluator.score_images(sets[name]))
              for name in ("real", "repeated", "speckled")}
    assert {metric for metric, _ in ranked.values()} == {"coverage"}
    assert ranked["real"][1] < ranked["repeated"][1] and ranked["real"][1] < ranked["speckled"][1]


def test_wilson_intervals() -> None:
    low, high = wilson_interval(1.0, 13)
    assert low == pytest.approx(0.772, abs=0.001) and high == 1.0
    low, high = wilson_interval(0.5, 1000)
    assert low == pytest.approx(0.469, abs=0.001) and high == pytest.approx(0.531, abs=0.001)
    assert wilson_interval(0.5, 0) is None and wilson_interval(math.nan, 10) is None
