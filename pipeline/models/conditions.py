"""Labels as the networks take them, (N, groups) indices where each group's len(tags) is "any":
from tags a person asks for, drawn at random, or hidden from training at random."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pipeline.core.params import PipelineError
from pipeline.models.networks import NetConfig, any_labels

# Share of the labels hidden (set to "any") on each training step, independently per group: a
# single-character face is labelled in every group, so without it G and D would never see "blonde
# hair, any eyes", which is what asking for one tag means.
LABEL_DROPOUT = 0.3


def known_tags(config: NetConfig) -> str:
    """`hair: black_hair brown_hair; eyes: ...`, or why there are none, for error messages."""
    if not config.conditions:
        return "none: this generator is unconditional"
    return "; ".join(f"{group}: {' '.join(tags)}" for group, tags in config.conditions)


def labels_for_tags(config: NetConfig, tags: Sequence[str]) -> torch.Tensor:
    """(groups,) labels asking for `tags` (at most one per group), "any" in the other groups; an
    unknown tag or two tags of one group is one line naming the known ones."""
    labels = any_labels(config, 1)[0]
    chosen: dict[str, str] = {}
    for tag in tags:
        found = [(g, group, values) for g, (group, values) in enumerate(config.conditions)
                 if tag in values]
        if not found:
            raise PipelineError(f"unknown tag {tag!r}; known tags: {known_tags(config)}")
        g, group, values = found[0]
        if group in chosen and chosen[group] != tag:
            raise PipelineError(f"{chosen[group]!r} and {tag!r} are both {group} tags; "
                                "ask for one value per group")
        chosen[group] = tag
        labels[g] = values.index(tag)
    return labels


def group_value_labels(config: NetConfig, group: int, value: int, count: int) -> torch.Tensor:
    """(count, groups) labels asking for one value of one group, "any" elsewhere."""
    labels = any_labels(config, count)
    labels[:, group] = value
    return labels


def random_labels(config: NetConfig, count: int, noise: torch.Generator,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform over every value of each group, "any" included."""
    columns = [torch.randint(0, size + 1, (count,), generator=noise, device=device)
               for size in config.group_sizes]
    return torch.stack(columns, 1) if columns else torch.zeros(count, 0, dtype=torch.long,
                                                                 device=device)


def training_like_labels(config: NetConfig, labels: torch.Tensor | None, count: int,
                         noise: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """`count` rows drawn from the train faces' `labels`, each hidden with LABEL_DROPOUT as the
    training step hides them: the labels G saw; uniform (random_labels) without train labels."""
    if labels is None or not len(labels):
        return random_labels(config, count, noise, device)
    rows = labels.to(device)[torch.randint(0, len(labels), (count,), generator=noise, device=device)]
    hidden = torch.rand(rows.shape, generator=noise, device=device) < LABEL_DROPOUT
    sizes = torch.tensor(config.group_sizes, dtype=torch.long, device=device)
    return torch.where(hidden, sizes.expand_as(rows), rows)


def hide_labels(labels: torch.Tensor, sizes: torch.Tensor, share: float) -> torch.Tensor:
    """Each label set to its group's "any" with probability `share` (no host sync)."""
    hidden = torch.rand(labels.shape, device=labels.device) < share
    return torch.where(hidden, sizes.expand_as(labels), labels)
