"""Did the generator copy its train faces? Two measures, each taken for samples and for val faces
alike (val faces are new faces of the same kind, so they show what "not copied" looks like):

- near copies: the share whose nearest train face (as is or mirrored) is within
  manifest.dedup_distance bits of perceptual hash, the measure the manifest drops duplicates by.
  A copier scores near 1 and val faces near 0; a blurry generator also scores near 0, since a blur
  of many faces hashes like none of them.
- pixel distance to the nearest train face: small for copies, but also for blurry, average-looking
  faces, so on its own it would call a blurry generator a copier.

A sheet shows each sample beside its nearest train faces.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.utils import make_grid

from pipeline.data.curation import perceptual_hash, within_distance
from pipeline.evaluation.metrics import nearest_faces

NEIGHBOURS = 5  # train faces shown beside each sample
SHEET_SCALE = 2  # 48 px faces are too small to compare by eye
COPIER_SHARE = 0.05  # samples' near-copy share that flags copying when val faces show far fewer


def face_hashes(faces: torch.Tensor) -> list[int]:
    """pHash of each uint8 (3, S, S) face."""
    return [perceptual_hash(Image.fromarray(face.permute(1, 2, 0).numpy())) for face in faces]


def near_copy_share(faces: torch.Tensor, train_hashes: list[int], distance: int) -> float:
    return sum(within_distance(face_hashes(faces), train_hashes, distance)) / len(faces)


def train_face_hashes(train: torch.Tensor) -> list[int]:
    """pHashes of the train faces as they are and mirrored: training flips faces."""
    return face_hashes(train) + face_hashes(train.flip(3))


def memorisation(samples: torch.Tensor, val: torch.Tensor, train: torch.Tensor, distance: int,
                 device: torch.device, train_hashes: list[int] | None = None,
                 ) -> tuple[dict[str, float | bool], torch.Tensor]:
    """Both measures for samples and val faces, whether they flag copying, and the samples'
    nearest train faces (for the sheet); `train_hashes` (train_face_hashes) when already made."""
    if train_hashes is None:
        train_hashes = train_face_hashes(train)
    sample_distances, neighbours = nearest_faces(samples, train, NEIGHBOURS, device)
    val_distances, _ = nearest_faces(val, train, 1, device)
    scores: dict[str, float | bool] = {
        "near_copies_samples": near_copy_share(samples, train_hashes, distance),
        "near_copies_val": near_copy_share(val, train_hashes, distance),
        "nn_distance_samples": float(sample_distances[:, 0].mean()),
        "nn_distance_val": float(val_distances[:, 0].mean()),
    }
    scores["copies_train_faces"] = copies(scores)
    return scores, neighbours


def copies(scores: dict[str, float | bool]) -> bool:
    """Samples are near copies of train faces clearly more often than new real faces are."""
    samples, val = float(scores["near_copies_samples"]), float(scores["near_copies_val"])
    return samples >= COPIER_SHARE and samples > 2 * val


def verdict(scores: dict[str, float | bool]) -> str:
    """What the two measures say, in words, for the report."""
    near = (f"{scores['near_copies_samples']:.1%} of samples are near copies of a train face "
            f"(val faces: {scores['near_copies_val']:.1%})")
    pixels = (f"mean pixel distance to the nearest train face {scores['nn_distance_samples']:.3f} "
              f"(val faces: {scores['nn_distance_val']:.3f})")
    if scores["copies_train_faces"]:
        return f"copies train faces: {near}; {pixels}"
    if scores["nn_distance_samples"] < scores["nn_distance_val"]:
        return (f"no copying: {near}; samples sit closer to train faces in pixels than val faces do "
                f"({pixels}), as blurry or average-looking faces do")
    return f"no copying: {near}; {pixels}"


def train_face(train: torch.Tensor, index: int) -> torch.Tensor:
    """Face `index` of nearest_faces' numbering, where indices past the end are mirrored faces."""
    face = train[index % len(train)]
    return face.flip(2) if index >= len(train) else face


def neighbour_sheet(samples: torch.Tensor, train: torch.Tensor, neighbours: torch.Tensor) -> Image.Image:
    """One row per sample: the sample, then its nearest train faces (as matched: maybe mirrored)."""
    rows = [torch.stack([sample, *(train_face(train, int(i)) for i in row)])
            for sample, row in zip(samples, neighbours, strict=True)]
    faces = torch.cat(rows).repeat_interleave(SHEET_SCALE, 2).repeat_interleave(SHEET_SCALE, 3)
    grid = make_grid(faces, nrow=neighbours.shape[1] + 1, padding=2)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())

