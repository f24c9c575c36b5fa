"""Does a tag-conditional generator draw what it is asked for? Measured, not claimed:

- a classifier of D's shape (its convolutions, one class head per tag group, as AC-GAN's D) is
  trained on the labelled train faces alone; its accuracy on the labelled val faces is the ceiling,
  what any judge of this size and data can tell apart;
- for each value of each group, G is asked for it (the other groups at "any") and the classifier
  says which value it sees: the share that comes out as asked is the conditional accuracy;
- per value, the face rate, the near-copy share and the spread of those samples beside the spread
  of the value's train faces, so a value with few faces that collapsed (one face for every noise),
  or copies its few faces, shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pipeline.core.params import EvaluateParams
from pipeline.data.faces import condition_labels
from pipeline.data.formats import split_rows
from pipeline.evaluation.memorisation import near_copy_share
from pipeline.evaluation.scoring import Evaluator
from pipeline.models.conditions import group_value_labels
from pipeline.models.losses import acgan_class_loss
from pipeline.models.networks import Discriminator, NetConfig
from pipeline.models.sampling import generate

log = logging.getLogger("pipeline.evaluate")

CLASSIFIER_BATCH = 64
CLASSIFIER_LR = 2e-4


def to_input(faces: torch.Tensor) -> torch.Tensor:
    return faces.float().div(127.5).sub(1.0)


def classifier_config(config: NetConfig) -> NetConfig:
    """D's shape (arch, size, width, batch norm) with AC-GAN's class heads; no projection."""
    return replace(config, num_classes=0, conditioning="acgan", spectral_norm=False, d_norm=True)


def train_classifier(config: NetConfig, faces: torch.Tensor, labels: torch.Tensor, steps: int,
                     seed: int, device: torch.device) -> Discriminator:
    """Fit the class heads to the labelled faces (uint8, (N, groups) labels, "any" ignored), with
    random flips; the same seed gives the same classifier."""
    torch.manual_seed(seed)
    classifier = Discriminator(classifier_config(config)).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=CLASSIFIER_LR, betas=(0.5, 0.999))
    faces, labels = faces.to(device), labels.to(device)
    sizes = config.group_sizes
    classifier.train()
    for _ in range(steps):
        index = torch.randint(0, faces.shape[0], (min(CLASSIFIER_BATCH, faces.shape[0]),),
                              device=device)
        images = to_input(faces[index])
        mirrored = torch.rand(images.shape[0], 1, 1, 1, device=device) < 0.5
        images = torch.where(mirrored, images.flip(3), images)
        loss = acgan_class_loss(classifier(images)[:, 1:], labels[index], sizes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return classifier.eval()


@torch.no_grad()
def predict(classifier: nn.Module, faces: torch.Tensor, sizes: tuple[int, ...],
            device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """(N, groups): the value each group's head finds most likely (never "any")."""
    outputs = torch.cat([classifier(to_input(chunk.to(device)))[:, 1:].float().cpu()
                         for chunk in faces.split(batch_size)])
    columns, start = [], 0
    for size in sizes:
        columns.append(outputs[:, start:start + size].argmax(1))
        start += size
    return torch.stack(columns, 1)


def group_accuracy(predicted: torch.Tensor, labels: torch.Tensor, group: int,
                   size: int) -> tuple[float | None, int]:
    """Share of the faces labelled in `group` whose prediction is their label, and their count."""
    labelled = labels[:, group] < size
    count = int(labelled.sum())
    if not count:
        return None, 0
    return float((predicted[labelled, group] == labels[labelled, group]).float().mean()), count


def spread(faces: torch.Tensor) -> float | None:
    """How much faces differ: the per-pixel standard deviation across them, averaged, on [0, 1].
    Near 0 when every noise gives the same face; None for fewer than two faces."""
    if faces.shape[0] < 2:
        return None
    return float((faces.float() / 255).std(0).mean())


def conditional_samples(generator: nn.Module, group: int, value: int, count: int, seed: int,
                        batch_size: int) -> torch.Tensor:
    """`count` faces asked for one value of one group; the same noise for every value."""
    labels = group_value_labels(generator.config, group, value, count)
    return generate(generator, count, seed, batch_size, labels)


def score_conditions(generator: nn.Module, manifest: Path, train: torch.Tensor, val: torch.Tensor,
                     evaluator: Evaluator, train_hashes: list[int], distance: int) -> tuple[dict, dict]:
    """measure_conditions for a conditional generator, on the labels the manifest's rows give
    under the generator's own tag groups (near copies against `train_hashes`, train_face_hashes);
    nothing for an unconditional one."""
    conditions = dict(generator.config.conditions)
    if not conditions:
        return {}, {}
    return measure_conditions(
        generator, (train, condition_labels(split_rows(manifest, "train"), conditions)),
        (val, condition_labels(split_rows(manifest, "val"), conditions)), evaluator.params,
        evaluator.device, evaluator.face_rate_of,
        lambda faces: near_copy_share(faces, train_hashes, distance))


def measure_conditions(generator: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                       val: tuple[torch.Tensor, torch.Tensor], params: EvaluateParams,
                       device: torch.device, rate: Callable[[torch.Tensor], float | None],
                       copies: Callable[[torch.Tensor], float]) -> tuple[dict, dict]:
    """eval.json's numbers per group (cond_<group>_accuracy, _ceiling, _of_ceiling) and the
    details per value; `train` and `val` are (faces, labels), `rate` and `copies` give the face
    rate and near-copy share of a set of samples."""
    config: NetConfig = generator.config
    sizes = config.group_sizes
    faces, labels = train
    labelled = (labels < torch.tensor(sizes)).any(1)
    if not bool(labelled.any()):
        log.warning("no train face is labelled in any tag group: conditional accuracy unmeasured")
        classifier = None
    else:
        classifier = train_classifier(config, faces[labelled], labels[labelled],
                                      params.classifier_steps, params.seed, device)
    val_predicted = None if classifier is None else predict(classifier, val[0], sizes, device)
    metrics: dict[str, float | None] = {}
    details: dict = {}
    for g, (group, tags) in enumerate(config.conditions):
        ceiling, val_count = (None, int((val[1][:, g] < len(tags)).sum())) if val_predicted is None \
            else group_accuracy(val_predicted, val[1], g, len(tags))
        values = {}
        for v, tag in enumerate(tags):
            samples = conditional_samples(generator, g, v, params.condition_samples, params.seed,
                                          params.batch_size)
            accuracy = None if classifier is None else float(
                (predict(classifier, samples, sizes, device)[:, g] == v).float().mean())
            values[tag] = {"accuracy": accuracy, "face_rate": rate(samples),
                           "near_copies": copies(samples), "spread": spread(samples),
                           "spread_train": spread(faces[labels[:, g] == v]),
                           "train_faces": int((labels[:, g] == v).sum())}
        accuracies = [value["accuracy"] for value in values.values()]
        accuracy = None if None in accuracies else sum(accuracies) / len(accuracies)
        share = None if accuracy is None or not ceiling else accuracy / ceiling
        metrics |= {f"cond_{group}_accuracy": accuracy, f"cond_{group}_ceiling": ceiling,
                    f"cond_{group}_of_ceiling": share}
        details[group] = {"accuracy": accuracy, "ceiling": ceiling, "of_ceiling": share,
                          "labelled_train_faces": int((labels[:, g] < len(tags)).sum()),
                          "labelled_val_faces": val_count, "values": values}
        log.info("%s: %s of conditional samples show the value asked for; the classifier's val "
                 "accuracy (ceiling) %s on %d faces", group, _percent(accuracy), _percent(ceiling),
                 val_count)
    return metrics, details


def _percent(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:.1%}"
