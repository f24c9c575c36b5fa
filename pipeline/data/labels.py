"""Condition labels a face can trust, from its post's tags.

A post's tags describe the whole picture, not each face in it: "blonde_hair" on a picture of three
characters does not say whose hair. So a face takes a value of a tag group only when its picture has
one character (exactly one detected face, or the tag `solo`) and exactly one tag of the group; any
other face is unlabelled in that group, which the generator learns as the group's own "any" value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.core.params import ANY

Conditions = Mapping[str, Sequence[str]]  # group name -> its tags, in label order
SOLO_TAG = "solo"


def one_character(row: Mapping[str, str]) -> bool:
    """Whether the face's picture shows one character: the cascade found one face in it, or the
    post says `solo` (where a second face was a false detection, or too small to find)."""
    return row.get("faces_in_image") == "1" or SOLO_TAG in row["tags"].split()


def face_labels(row: Mapping[str, str], conditions: Conditions) -> list[int]:
    """One label per group: the index of its tag, or len(tags) (any) where that is ambiguous."""
    single = one_character(row)
    tags = set(row["tags"].split())
    labels = []
    for values in conditions.values():
        found = [i for i, tag in enumerate(values) if tag in tags]
        labels.append(found[0] if single and len(found) == 1 else len(values))
    return labels


def label_rows(rows: Sequence[Mapping[str, str]], conditions: Conditions) -> list[list[int]]:
    return [face_labels(row, conditions) for row in rows]


def label_counts(rows: Sequence[Mapping[str, str]], conditions: Conditions) -> dict:
    """Faces per value of each group, per split: {group: {tag or "any": {"train": n, "val": n}}}."""
    counts: dict = {group: {value: {"train": 0, "val": 0} for value in (*values, ANY)}
                    for group, values in conditions.items()}
    for row in rows:
        for (group, values), label in zip(conditions.items(), face_labels(row, conditions),
                                          strict=True):
            value = values[label] if label < len(values) else ANY
            counts[group][value][row["split"]] += 1
    return counts
