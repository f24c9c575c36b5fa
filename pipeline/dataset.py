"""The face manifest, read back, and its faces decoded once into one uint8 tensor.

Decoding once and keeping uint8 (4x smaller than float) lets a whole face set live on the training
device: 50k faces at 64 px are 600 MB.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.params import PipelineError

MANIFEST_FIELDS = (
    "path", "sha256", "post_id", "source_image", "tags", "box", "width", "height", "split",
)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: manifest not found; run the manifest stage first")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise PipelineError(f"{path}: not a face manifest (missing columns {sorted(missing)})")
        return list(reader)


def split_rows(manifest_path: str | Path, split: str) -> list[dict[str, str]]:
    return [row for row in read_manifest(manifest_path) if row["split"] == split]


def class_labels(rows: list[dict[str, str]], class_tags: tuple[str, ...]) -> torch.Tensor:
    """Class index of each face from its post's tags, -1 where none or several class tags match
    (a post with two characters of different hair colours says nothing about each face)."""
    labels = []
    for row in rows:
        matches = [i for i, tag in enumerate(class_tags) if tag in row["tags"].split()]
        labels.append(matches[0] if len(matches) == 1 else -1)
    return torch.tensor(labels, dtype=torch.long)


def load_faces(manifest_path: str | Path, split: str, image_size: int) -> torch.Tensor:
    """Decode the faces of one split to a (N, 3, S, S) uint8 tensor; paths are manifest-relative."""
    manifest_path = Path(manifest_path)
    rows = split_rows(manifest_path, split)
    if not rows:
        raise PipelineError(f"{manifest_path}: no faces in the {split!r} split; scrape more images")
    faces = np.empty((len(rows), image_size, image_size, 3), dtype=np.uint8)
    for i, row in enumerate(rows):
        face_path = manifest_path.parent / row["path"]
        try:
            with Image.open(face_path) as image:
                image = image.convert("RGB")
                if image.size != (image_size, image_size):
                    image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
                faces[i] = np.asarray(image)
        except OSError as exc:
            raise PipelineError(f"{face_path}: unreadable face listed in the manifest ({exc})") from None
    return torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous()
