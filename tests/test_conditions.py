"""Tag-conditional generation: the labels a face can trust, the conditional networks and losses,
asking a generator for tags, and the measure of whether it draws what it is asked for."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import as_trained
from PIL import Image
from torch import nn

import pipeline.evaluation.conditional as conditional
from pipeline.core.params import (
    CropParams,
    EvaluateParams,
    ParamError,
    PipelineError,
    TrainParams,
    parse_section,
)
from pipeline.data.labels import face_labels, label_counts
from pipeline.evaluation.conditional import (
    JudgeSets,
    demo_judge_sets,
    measure_conditions,
    predict,
    train_classifier,
)
from pipeline.models.classifier import fit_classifier
from pipeline.models.conditions import hide_labels, labels_for_tags, training_like_labels
from pipeline.models.losses import acgan_class_loss
from pipeline.models.networks import (
    Discriminator,
    Generator,
    NetConfig,
    any_labels,
    save_generator,
)
from pipeline.models.sampling import from_uint8
from pipeline.training.loop import train
from pipeline.training.run import new_run
from pipeline.training.step import build_step

CONDITIONS = {"hair": ("black_hair", "blonde_hair", "blue_hair"), "eyes": ("blue_eyes", "red_eyes")}
CONFIG = NetConfig(ngf=8, ndf=8, conditions=tuple(CONDITIONS.items()))
# solid colours standing in for faces of each hair value
HAIR_RGB = ((20, 20, 30), (240, 210, 120), (50, 90, 200))




def row(tags: str, faces: str = "", split: str = "train") -> dict[str, str]:
    return {"tags": tags, "faces_in_image": faces, "split": split}


@pytest.mark.parametrize(("tags", "faces", "expected"), [
    ("blonde_hair red_eyes", "1", [1, 1]),  # one face found: both groups labelled
    ("solo blonde_hair red_eyes", "", [1, 1]),  # the post says solo
    ("solo blonde_hair red_eyes", "2", [1, 1]),  # solo outweighs a second, false detection
    ("2girls blonde_hair red_eyes", "2", [3, 2]),  # whose hair? nobody's
    ("solo blonde_hair blue_hair red_eyes", "1", [3, 1]),  # two hair tags: hair unknown, eyes known
    ("solo pink_hair", "1", [3, 2]),  # no tag of either group
])
def test_a_face_is_labelled_only_where_its_post_is_unambiguous(tags, faces, expected):
    assert face_labels(row(tags, faces), CONDITIONS) == expected


def test_label_counts_per_group_value_and_split():
    rows = [row("solo blonde_hair red_eyes"), row("solo blonde_hair blue_eyes", split="val"),
            row("3girls blonde_hair", "3")]
    counts = label_counts(rows, CONDITIONS)
    assert counts["hair"]["blonde_hair"] == {"train": 1, "val": 1}
    assert counts["hair"]["any"] == {"train": 1, "val": 0}
    assert counts["eyes"]["red_eyes"] == {"train": 1, "val": 0}
    assert counts["eyes"]["blue_eyes"] == {"train": 0, "val": 1}


def test_conditions_param_is_a_mapping_of_tag_lists():
    params = parse_section("train", {"conditions": {"hair": ["a_hair", "b_hair"]}})
    assert params.conditions == {"hair": ("a_hair", "b_hair")}
    assert parse_section("train", {"conditions": {}}).conditions == {}
    for bad, named in [({"conditions": ["a_hair"]}, "train.conditions"),
                       ({"conditions": {"hair": "a_hair b_hair"}}, "train.conditions.hair"),
                       ({"conditions": {"hair": ["a_hair"]}}, "train.conditions.hair"),
                       ({"conditions": {"hair": ["x", "y"], "eyes": ["y", "z"]}}, "train.conditions.eyes"),
                       ({"conditioning": "concat"}, "train.conditioning")]:
        with pytest.raises(ParamError) as error:
            parse_section("train", bad)
        assert str(error.value).startswith(named) and "\n" not in str(error.value)


@pytest.mark.parametrize("size", [48, 64])
@pytest.mark.parametrize("conditioning", ["projection", "acgan", "tac"])
def test_conditional_networks_take_labels(size, conditioning):
    config = NetConfig(image_size=size, ngf=8, ndf=8, conditions=CONFIG.conditions,
                       conditioning=conditioning)
    generator, discriminator = Generator(config).eval(), Discriminator(config).eval()
    z = torch.randn(4, config.nz)
    blonde, blue = (labels_for_tags(config, [tag]).expand(4, -1) for tag in ("blonde_hair", "blue_hair"))
    assert torch.equal(generator(z, blonde), generator(z, blue))  # fresh: the unconditional G
    as_trained(generator)
    images = generator(z, blonde)
    assert images.shape == (4, 3, size, size)
    assert not torch.equal(images, generator(z, blue))  # the labels reach the picture
    assert torch.equal(generator(z), generator(z, any_labels(config, 4)))  # no labels: any
    out = discriminator(images, blonde)
    if conditioning == "acgan":
        assert out.shape == (4, 1 + 3 + 2)  # the logit, then each group's classes
    elif conditioning == "tac":
        assert out.shape == (4, 1 + 3 + 2 + 3 + 2)  # and the twin's classes
    else:
        assert out.shape == (4,)
        assert not torch.equal(out, discriminator(images, blue))  # projection: labels change D


def test_acgan_class_loss_ignores_any():
    logits = torch.randn(3, 5)
    labels = torch.tensor([[1, 2], [3, 0], [0, 2]])  # hair (3 values), eyes (2): 3 and 2 are any
    expected = (torch.nn.functional.cross_entropy(logits[[0, 2], :3], torch.tensor([1, 0]))
                + torch.nn.functional.cross_entropy(logits[[1], 3:], torch.tensor([0])))
    assert torch.allclose(acgan_class_loss(logits, labels, (3, 2)), expected)


def test_hidden_labels_become_any():
    labels = torch.zeros(1000, 2, dtype=torch.long)
    hidden = hide_labels(labels, torch.tensor([3, 2]), 0.3)
    assert set(hidden[:, 0].tolist()) == {0, 3} and set(hidden[:, 1].tolist()) == {0, 2}
    assert 0.25 < float((hidden[:, 0] == 3).float().mean()) < 0.35


def test_asking_for_unknown_or_clashing_tags_is_one_line():
    with pytest.raises(PipelineError) as error:
        labels_for_tags(CONFIG, ["green_hair"])
    message = str(error.value)
    assert "green_hair" in message and "hair: black_hair blonde_hair blue_hair" in message
    assert "\n" not in message
    with pytest.raises(PipelineError, match="both hair tags"):
        labels_for_tags(CONFIG, ["black_hair", "blue_hair"])
    assert labels_for_tags(CONFIG, ["blue_hair", "red_eyes"]).tolist() == [2, 1]
    with pytest.raises(PipelineError, match="unconditional"):
        labels_for_tags(NetConfig(), ["blue_hair"])


def solid_faces(hair: list[int], size: int = 48) -> torch.Tensor:
    """uint8 faces of one colour each, with a little noise so no two are equal."""
    colours = torch.tensor([HAIR_RGB[h] for h in hair], dtype=torch.float32)
    faces = colours[:, :, None, None].expand(-1, -1, size, size)
    return (faces + torch.randn(faces.shape) * 8).clamp(0, 255).to(torch.uint8)


class ColourGenerator(nn.Module):
    """Draws the hair colour it is asked for (`obeys`), or always the first one; the eyes group
    is ignored."""

    def __init__(self, obeys: bool) -> None:
        super().__init__()
        self.config = CONFIG
        self.obeys = obeys
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so it has a device

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        hair = labels[:, 0].clamp(max=2) if labels is not None and self.obeys else torch.zeros(
            z.shape[0], dtype=torch.long)
        colours = torch.tensor(HAIR_RGB, dtype=torch.float32)[hair] / 127.5 - 1
        noise = 0.05 * z[:, :1, None, None]
        return (colours[:, :, None, None] + noise).expand(-1, -1, 48, 48).clamp(-1, 1) * self.scale


@pytest.mark.parametrize("obeys", [True, False])
def test_conditional_accuracy_tells_a_generator_that_obeys_from_one_that_ignores(obeys):
    hair = [i % 3 for i in range(60)]
    labels = torch.tensor([[h, 2] for h in hair])  # eyes unknown everywhere
    val_hair = [i % 3 for i in range(12)]
    val = (solid_faces(val_hair), torch.tensor([[h, 2] for h in val_hair]))
    params = EvaluateParams(condition_samples=30, classifier_steps=60, batch_size=30)
    train = (solid_faces(hair), labels)
    spreads = []

    def spread_against(samples: torch.Tensor, own: torch.Tensor) -> dict:
        spreads.append((len(samples), len(own)))
        return {"variety": 0.25 * len(spreads)}

    metrics, details = measure_conditions(ColourGenerator(obeys), JudgeSets("solid faces", train, val),
                                          train, params, torch.device("cpu"), lambda faces: 0.5,
                                          lambda faces: 0.0, spread_against)
    assert set(metrics) == {"cond_hair_of_ceiling", "cond_hair_min_variety", "cond_eyes_of_ceiling",
                            "cond_eyes_min_variety"}  # accuracy and ceiling are details, not columns
    assert details["hair"]["ceiling"] == 1.0  # solid colours: the classifier tells them apart
    low, high = details["hair"]["ceiling_95"]  # on 12 val faces: a wide interval
    assert details["hair"]["ceiling_faces"] == 12 and low < 0.8 and high == 1.0
    assert details["judge"] == "solid faces"
    # each hair value's samples against its own 20 train faces; the lowest variety is eval.json's
    assert spreads[:3] == [(30, 20)] * 3 and metrics["cond_hair_min_variety"] == 0.25
    if obeys:
        assert details["hair"]["accuracy"] >= 0.95 and metrics["cond_hair_of_ceiling"] >= 0.95
    else:  # every face comes out black-haired: right only when black was asked
        assert details["hair"]["accuracy"] == pytest.approx(1 / 3)
        assert details["hair"]["values"]["black_hair"]["accuracy"] == 1.0
        assert details["hair"]["values"]["blue_hair"]["accuracy"] == 0.0
    assert details["eyes"]["ceiling"] is None and metrics["cond_eyes_of_ceiling"] is None
    assert details["hair"]["labelled_train_faces"] == 60
    assert details["hair"]["values"]["blonde_hair"]["face_rate"] == 0.5


def test_the_demo_judge_learns_from_drawn_faces_whose_colours_are_known() -> None:
    conditions = {"hair": ("black_hair", "blonde_hair", "blue_hair", "pink_hair"),
                  "eyes": ("blue_eyes", "red_eyes", "green_eyes", "yellow_eyes")}
    judge = demo_judge_sets(conditions, 48, CropParams(), seed=5)
    faces, labels = judge.train
    assert faces.shape[1:] == (3, 48, 48) and faces.dtype == torch.uint8
    # every drawn face is one character: labelled in every group whose tags name its colour
    assert bool((labels[:, 1] < 4).all()) and 0.5 < float((labels[:, 0] < 4).float().mean()) < 0.85
    config = NetConfig(ngf=8, ndf=8, conditions=tuple(conditions.items()))
    classifier = train_classifier(config, faces, labels, 150, 0, torch.device("cpu"))
    test_faces, test_labels = judge.test
    predicted = predict(classifier, test_faces, config.group_sizes, torch.device("cpu"))
    for group in (0, 1):
        known = test_labels[:, group] < 4
        assert float((predicted[known, group] == test_labels[known, group]).float().mean()) > 0.9


@pytest.fixture
def labelled_manifest(tmp_path):
    """24 solid-colour faces, each of a single-character post tagged with its hair colour."""
    (tmp_path / "faces").mkdir()
    fields = ["path", "sha256", "post_id", "source_image", "tags", "box", "width", "height",
              "split", "faces_in_image"]
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for i, face in enumerate(solid_faces([i % 3 for i in range(24)], 96)):
            Image.fromarray(face.permute(1, 2, 0).numpy()).save(tmp_path / "faces" / f"{i}.png")
            tags = f"{CONDITIONS['hair'][i % 3]} {CONDITIONS['eyes'][i % 2]}"
            writer.writerow([f"faces/{i}.png", f"{i:064x}", i, f"{i}.jpg", tags, "", 96, 96,
                             "val" if i >= 20 else "train", 1])
    return tmp_path / "manifest.csv"


@pytest.mark.parametrize("conditioning", ["projection", "acgan"])
def test_conditional_training_continues_and_writes_conditional_snapshots(labelled_manifest, tmp_path,
                                                                         conditioning):
    from pipeline.models.networks import load_generator

    params = TrainParams(epochs=2, batch_size=8, ngf=8, ndf=8, device="cpu", precision="fp32",
                         threads=1, checkpoint_every=1, sample_every=1, snapshot_every=1,
                         conditions=dict(CONDITIONS), conditioning=conditioning)
    out = tmp_path / "run"
    train(params, labelled_manifest, out)
    train(TrainParams(**{**params.__dict__, "epochs": 3}), labelled_manifest, out)  # continued
    generator, payload = load_generator(out / "snapshots" / "epoch-00003.pt")
    assert payload["config"]["conditions"] == tuple(CONDITIONS.items())
    z = torch.randn(2, 100)
    assert not torch.equal(generator(z, labels_for_tags(generator.config, ["blue_hair"]).expand(2, -1)),
                           generator(z, labels_for_tags(generator.config, ["black_hair"]).expand(2, -1)))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["params"]["conditioning"] == conditioning


def test_unconditional_generator_file_is_unchanged_by_conditioning(tmp_path):
    config = NetConfig(ngf=8)
    generator = Generator(config)
    save_generator(tmp_path / "g.pt", generator, config, ema=True, epoch=1)
    payload = torch.load(tmp_path / "g.pt", weights_only=True)
    assert not any(key.startswith("embeddings") for key in payload["state_dict"])
    assert json.loads(json.dumps(payload["config"]["conditions"])) == []


def test_batch_norm_is_recalibrated_on_the_labels_training_saw():
    config = NetConfig(ngf=8, ndf=8, conditions=tuple(CONDITIONS.items()))
    train_labels = torch.tensor([[0, 1]] * 90 + [[2, 2]] * 10)  # mostly black hair, red eyes
    drawn = training_like_labels(config, train_labels, 4000, torch.Generator().manual_seed(0))
    hidden = drawn == torch.tensor(config.group_sizes)
    assert 0.25 < float(hidden[:, 0].float().mean()) < 0.35  # hidden as the training step hides
    shown = drawn[~hidden.any(1)]
    assert float((shown[:, 0] == 0).float().mean()) > 0.85  # as common as in the train labels
    assert not bool((shown[:, 0] == 1).any())  # blonde: no train face, never asked
    uniform = training_like_labels(config, None, 4000, torch.Generator().manual_seed(0))
    assert float((uniform[:, 0] == 1).float().mean()) > 0.15


@pytest.mark.parametrize("conditions", [{}, CONDITIONS])
def test_colour_augmentation_never_reaches_the_class_terms(conditions):
    params = TrainParams(conditions=conditions, ngf=8, ndf=8, device="cpu", augment="fixed",
                         augment_policy=("color", "translation", "cutout"))
    run = new_run(params, torch.device("cpu"))
    policy = build_step(run, params, torch.device("cpu")).policy
    assert policy == (("translation", "cutout") if conditions else ("color", "translation", "cutout"))


def test_the_twin_classifier_learns_what_the_generator_was_asked_for():
    """TAC-GAN: D's twin head is trained on the fakes with the labels G was asked for, the first
    head on the reals alone; G's class term is the first head's loss less the twin's."""
    params = TrainParams(conditions=CONDITIONS, conditioning="tac", ngf=8, ndf=8, device="cpu",
                         batch_size=16, lr=0.002)
    torch.manual_seed(0)
    run = new_run(params, torch.device("cpu"))
    step = build_step(run, params, torch.device("cpu"))
    classes = run.config.classes
    reals = torch.randint(0, 256, (16, 3, 48, 48), dtype=torch.uint8)
    labels = torch.zeros(16, len(CONDITIONS), dtype=torch.long)  # every face the first value

    def twin_loss() -> float:
        torch.manual_seed(1)
        shown = labels.clone()
        fakes = run.generator(torch.randn(16, params.nz), shown)
        with torch.no_grad():
            outputs = run.discriminator(fakes)
        return float(acgan_class_loss(outputs[:, 1 + classes:], shown, run.config.group_sizes))

    before = twin_loss()
    for _ in range(10):
        stats = step(reals, labels)
        assert all(bool(torch.isfinite(value)) for value in stats.values())
    assert twin_loss() < before


def test_the_judge_is_fitted_by_the_shared_classifier_loop(monkeypatch):
    """The conditional judge and the semi-supervised baseline are one loop (fit_classifier): the
    judge's faces are scaled and randomly mirrored, its loss the class heads' alone."""
    fits = []

    def recorded(classifier, faces, labels, **how):
        fits.append(how)
        return fit_classifier(classifier, faces, labels, **how)

    monkeypatch.setattr(conditional, "fit_classifier", recorded)
    config = NetConfig(ngf=8, ndf=8, conditions=tuple(CONDITIONS.items()))
    faces = torch.randint(0, 256, (12, 3, 48, 48), dtype=torch.uint8)
    labels = torch.zeros(12, len(CONDITIONS), dtype=torch.long)
    classifier = train_classifier(config, faces, labels, 2, 0, torch.device("cpu"))
    [how] = fits
    assert how["steps"] == 2 and not classifier.training
    torch.manual_seed(0)
    shown = how["prepare"](faces)
    assert shown.min() >= -1 and shown.max() <= 1
    assert all(torch.equal(image, from_uint8(face)) or torch.equal(image, from_uint8(face).flip(2))
               for image, face in zip(shown, faces, strict=True))
