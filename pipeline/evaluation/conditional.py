"""Does a tag-conditional generator draw what it is asked for? Measured, not claimed:

- a judge, a classifier of D's shape (its convolutions, one class head per tag group, as AC-GAN's
  D), is trained apart from the generator: on the demo, on thousands of freshly drawn faces whose
  colours are known exactly, and its accuracy on a thousand more is the ceiling; on other data, on
  the labelled train faces, with the labelled val faces for the ceiling (few, so its 95% interval
  and count go beside it). Accuracy and ceiling are both means over the values;
- for each value of each group, G is asked for it (the other groups at "any") and the classifier
  says which value it sees: the share that comes out as asked is the conditional accuracy;
- per value, the face rate, the near-copy share, and the variety, near-identical share,
  high-frequency energy and coverage of those samples against the value's own train faces, so a
  value with few faces that collapsed (one face for every noise), or copies its few faces, shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from pipeline.core.params import CropParams, EvaluateParams
from pipeline.data.faces import condition_labels, resize_face
from pipeline.data.formats import split_rows
from pipeline.demo.art import draw_labelled_faces
from pipeline.evaluation.memorisation import near_copy_share
from pipeline.evaluation.scoring import Evaluator
from pipeline.evaluation.variety import wilson_interval
from pipeline.models.classifier import fit_classifier
from pipeline.models.conditions import group_value_labels
from pipeline.models.losses import acgan_class_loss
from pipeline.models.networks import Discriminator, NetConfig
from pipeline.models.sampling import from_uint8, generate

log = logging.getLogger("pipeline.evaluate")

CLASSIFIER_BATCH = 64
CLASSIFIER_LR = 2e-4
JUDGE_TRAIN_FACES = 2000  # demo faces drawn for the judge to learn from
JUDGE_TEST_FACES = 1000  # and for its ceiling


def classifier_config(config: NetConfig) -> NetConfig:
    """D's shape (arch, size, width, batch norm) with AC-GAN's class heads; no projection."""
    return replace(config, num_classes=0, conditioning="acgan", spectral_norm=False, d_norm=True,
                   mbstd_group=0)


def train_classifier(config: NetConfig, faces: torch.Tensor, labels: torch.Tensor, steps: int,
                     seed: int, device: torch.device) -> Discriminator:
    """Fit the class heads to the labelled faces (uint8, (N, groups) labels, "any" ignored), with
    random flips; the same seed gives the same classifier."""
    torch.manual_seed(seed)
    classifier = Discriminator(classifier_config(config)).to(device)
    sizes = config.group_sizes
    fit_classifier(classifier, faces.to(device), labels.to(device), steps=steps, batch_size=CLASSIFIER_BATCH,
                   lr=CLASSIFIER_LR, beta1=0.5, prepare=randomly_mirrored,
                   loss=lambda outputs, asked: acgan_class_loss(outputs[:, 1:], asked, sizes))
    return classifier.eval()


def randomly_mirrored(faces: torch.Tensor) -> torch.Tensor:
    """uint8 faces in the networks' scale, each mirrored with probability 1/2 (faces are near symmetric)."""
    images = from_uint8(faces)
    mirrored = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
    return torch.where(mirrored, images.flip(3), images)


@torch.no_grad()
def predict(classifier: nn.Module, faces: torch.Tensor, sizes: tuple[int, ...],
            device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """(N, groups): the value each group's head finds most likely (never "any")."""
    outputs = torch.cat([classifier(from_uint8(chunk.to(device)))[:, 1:].float().cpu()
                         for chunk in faces.split(batch_size)])
    columns, start = [], 0
    for size in sizes:
        columns.append(outputs[:, start:start + size].argmax(1))
        start += size
    return torch.stack(columns, 1)


def conditional_samples(generator: nn.Module, group: int, value: int, count: int, seed: int,
                        batch_size: int) -> torch.Tensor:
    """`count` faces asked for one value of one group; the same noise for every value."""
    labels = group_value_labels(generator.config, group, value, count)
    return generate(generator, count, seed, batch_size, labels)


@dataclass(frozen=True)
class JudgeSets:
    """What the judge learns from and what its ceiling is measured on: (faces, labels) each."""

    source: str
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def demo_judge_sets(conditions: dict[str, tuple[str, ...]], image_size: int, crop: CropParams,
                    seed: int) -> JudgeSets:
    """Freshly drawn demo faces, framed as the crop stage frames them, whose colours are known
    exactly: JUDGE_TRAIN_FACES to learn from, JUDGE_TEST_FACES for the ceiling."""
    count = JUDGE_TRAIN_FACES + JUDGE_TEST_FACES
    pixels, tags = draw_labelled_faces(seed, count, crop.size, crop.margin)
    faces = torch.stack([torch.from_numpy(resize_face(face, image_size)) for face in pixels])
    faces = faces.permute(0, 3, 1, 2).contiguous()
    rows = [{"tags": " ".join(face_tags), "faces_in_image": "1"} for face_tags in tags]
    labels = condition_labels(rows, conditions)
    split = JUDGE_TRAIN_FACES
    return JudgeSets(f"{split} freshly drawn demo faces ({count - split} more for the ceiling)",
                     (faces[:split], labels[:split]), (faces[split:], labels[split:]))


def manifest_judge_sets(conditions: dict[str, tuple[str, ...]], manifest: Path, train: torch.Tensor,
                        val: torch.Tensor) -> JudgeSets:
    """The labelled train faces to learn from, the labelled val faces for the ceiling."""
    return JudgeSets("the manifest's labelled train and val faces",
                     (train, condition_labels(split_rows(manifest, "train"), conditions)),
                     (val, condition_labels(split_rows(manifest, "val"), conditions)))


def score_conditions(generator: nn.Module, manifest: Path, train: torch.Tensor, val: torch.Tensor,
                     evaluator: Evaluator, train_hashes: list[int], distance: int,
                     demo: CropParams | None) -> tuple[dict, dict]:
    """measure_conditions for a conditional generator under its own tag groups, judged by a
    classifier of drawn demo faces when `demo` (the crop params the demo faces were cut with) is
    given, else of the manifest's labelled faces; near copies against `train_hashes`
    (train_face_hashes); nothing for an unconditional generator."""
    conditions = dict(generator.config.conditions)
    if not conditions:
        return {}, {}
    train_labels = condition_labels(split_rows(manifest, "train"), conditions)
    judge = (demo_judge_sets(conditions, generator.config.image_size, demo, evaluator.params.seed)
             if demo is not None else manifest_judge_sets(conditions, manifest, train, val))
    return measure_conditions(
        generator, judge, (train, train_labels), evaluator.params, evaluator.device,
        evaluator.face_rate_of, lambda faces: near_copy_share(faces, train_hashes, distance),
        evaluator.spread_of_value)


def per_value_accuracy(predicted: torch.Tensor, labels: torch.Tensor, group: int,
                       size: int) -> tuple[float | None, int]:
    """The mean over the group's values of the share of each value's faces predicted as it (so a
    common value weighs as much as a rare one, as the generator's accuracy is averaged), and how
    many faces that rests on."""
    shares, count = [], 0
    for value in range(size):
        mine = labels[:, group] == value
        if bool(mine.any()):
            shares.append(float((predicted[mine, group] == value).float().mean()))
            count += int(mine.sum())
    return (sum(shares) / len(shares) if shares else None), count


def measure_conditions(generator: nn.Module, judge: JudgeSets,
                       train: tuple[torch.Tensor, torch.Tensor], params: EvaluateParams,
                       device: torch.device, rate: Callable[[torch.Tensor], float | None],
                       copies: Callable[[torch.Tensor], float],
                       spread_against: Callable[[torch.Tensor, torch.Tensor], dict]) -> tuple[dict, dict]:
    """eval.json's numbers per group (cond_<group>_of_ceiling and _min_variety, the lowest variety of
    its values) and the details per group (accuracy, ceiling) and per value, with 95% intervals and
    the counts they rest on. `train` is the train faces and labels each value's samples are
    compared with; `rate` and `copies` give the face rate and near-copy share of a set of samples,
    `spread_against` their variety, near-identical share, high-frequency energy and PRDC against a
    value's train faces."""
    config: NetConfig = generator.config
    sizes = config.group_sizes
    judge_faces, judge_labels = judge.train
    labelled = (judge_labels < torch.tensor(sizes)).any(1)
    if not bool(labelled.any()):
        log.warning("no face of %s is labelled in any tag group: conditional accuracy unmeasured",
                    judge.source)
        classifier = None
    else:
        classifier = train_classifier(config, judge_faces[labelled], judge_labels[labelled],
                                      params.classifier_steps, params.seed, device)
    test_faces, test_labels = judge.test
    test_predicted = None if classifier is None else predict(classifier, test_faces, sizes, device)
    faces, labels = train
    metrics: dict[str, float | None] = {}
    details: dict = {"judge": judge.source}
    for g, (group, tags) in enumerate(config.conditions):
        ceiling, ceiling_faces = (None, 0) if test_predicted is None \
            else per_value_accuracy(test_predicted, test_labels, g, len(tags))
        values = {}
        for v, tag in enumerate(tags):
            samples = conditional_samples(generator, g, v, params.condition_samples, params.seed,
                                          params.batch_size)
            accuracy = None if classifier is None or ceiling is None else float(
                (predict(classifier, samples, sizes, device)[:, g] == v).float().mean())
            own = faces[labels[:, g] == v]
            values[tag] = {"accuracy": accuracy,
                           "accuracy_95": _interval(accuracy, len(samples)),
                           "face_rate": rate(samples), "near_copies": copies(samples),
                           "train_faces": len(own),
                           **(spread_against(samples, own) if len(own) >= 2 else {})}
        accuracies = [value["accuracy"] for value in values.values()]
        accuracy = None if None in accuracies else sum(accuracies) / len(accuracies)
        share = None if accuracy is None or not ceiling else accuracy / ceiling
        varieties = [value["variety"] for value in values.values() if value.get("variety") is not None]
        metrics |= {f"cond_{group}_of_ceiling": share,
                    f"cond_{group}_min_variety": min(varieties) if varieties else None}
        samples_asked = params.condition_samples * len(tags)
        details[group] = {"accuracy": accuracy, "accuracy_95": _interval(accuracy, samples_asked),
                          "samples": samples_asked, "ceiling": ceiling,
                          "ceiling_95": _interval(ceiling, ceiling_faces), "ceiling_faces": ceiling_faces,
                          "of_ceiling": share,
                          "labelled_train_faces": int((labels[:, g] < len(tags)).sum()),
                          "values": values}
        log.info("%s: %s of conditional samples show the value asked for; the judge (learned from %s) "
                 "is right on %s of %d faces it never saw (the ceiling)", group, _percent(accuracy),
                 judge.source, _percent(ceiling), ceiling_faces)
    return metrics, details


def _interval(share: float | None, count: int) -> list[float] | None:
    interval = None if share is None else wilson_interval(share, count)
    return None if interval is None else [interval[0], interval[1]]


def _percent(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:.1%}"
