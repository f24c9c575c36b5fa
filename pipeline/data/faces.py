"""The manifest's faces decoded once into one uint8 tensor, and their class labels.

Decoding once and keeping uint8 (4x smaller than float) lets a whole face set live on the training
device: 50k faces at 64 px are 600 MB.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.core.params import PipelineError
from pipeline.data.formats import split_rows
from pipeline.data.labels import Conditions, label_rows

log = logging.getLogger("pipeline.train")

DEVICE_MEMORY_FOR_FACES = 0.5  # share of the free accelerator memory the resident faces may take


def class_labels(rows: list[dict[str, str]], class_tags: tuple[str, ...]) -> torch.Tensor:
    """Class index of each face from its post's tags, -1 where none or several class tags match
    (a post with two characters of different hair colours says nothing about each face)."""
    labels = []
    for row in rows:
        matches = [i for i, tag in enumerate(class_tags) if tag in row["tags"].split()]
        labels.append(matches[0] if len(matches) == 1 else -1)
    return torch.tensor(labels, dtype=torch.long)


def condition_labels(rows: list[dict[str, str]], conditions: Conditions) -> torch.Tensor:
    """(N, groups) labels the networks take: each tag's index in its group, len(group) for "any"."""
    return torch.tensor(label_rows(rows, conditions), dtype=torch.long).reshape(len(rows),
                                                                                 len(conditions))


def resize_face(face: np.ndarray, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8 RGB at the training size, as every face the networks see is resized."""
    if face.shape[:2] == (image_size, image_size):
        return face
    return np.array(Image.fromarray(face).resize((image_size, image_size), Image.Resampling.LANCZOS))


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
                faces[i] = resize_face(np.asarray(image.convert("RGB")), image_size)
        except OSError as exc:
            raise PipelineError(f"{face_path}: unreadable face listed in the manifest ({exc})") from None
    return torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous()


@dataclass
class Faces:
    """The train faces as uint8, resident on the training device when they fit there, else in
    (pinned) host memory from which each batch is gathered and copied asynchronously."""

    images: torch.Tensor
    device: torch.device

    @property
    def resident(self) -> bool:
        return self.images.device == self.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def permutation(self) -> torch.Tensor:
        """A random order, made where the images are, so indexing never waits on a copy."""
        return torch.randperm(len(self), device=self.images.device)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        batch = self.images[index]
        if self.resident:
            return batch
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # the caching host allocator keeps it alive until copied
        return batch.to(self.device, non_blocking=True)


def free_device_memory(device: torch.device) -> int | None:
    """Bytes free on an accelerator; None where memory is the host's (CPU) or unknown (MPS)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None


def place_faces(images: torch.Tensor, device: torch.device, free_bytes: int | None) -> Faces:
    """Put the faces on the device unless they would crowd out training there."""
    if free_bytes is None or images.nbytes <= DEVICE_MEMORY_FOR_FACES * free_bytes:
        return Faces(images.to(device), device)
    log.warning("%d faces take %.2f GiB, more than %.0f%% of the %.2f GiB free on %s: keeping them in "
                "pinned host memory and copying each batch asynchronously (slower)", images.shape[0],
                images.nbytes / 2**30, 100 * DEVICE_MEMORY_FOR_FACES, free_bytes / 2**30, device)
    if device.type == "cuda":
        images = images.pin_memory()
    return Faces(images, device)

