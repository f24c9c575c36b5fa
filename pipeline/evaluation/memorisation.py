"""Did the generator copy its train faces? Distances to the nearest train face, for samples and for
val faces alike, and a sheet that shows each sample beside its nearest train faces."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.utils import make_grid

from pipeline.evaluation.metrics import nearest_faces

NEIGHBOURS = 5  # train faces shown beside each sample
SHEET_SCALE = 2  # 48 px faces are too small to compare by eye



def memorisation(samples: torch.Tensor, val: torch.Tensor, train: torch.Tensor,
                 device: torch.device) -> tuple[dict[str, float], torch.Tensor]:
    """Mean distance of samples, and of val faces, to their nearest train face; and the samples'
    nearest train faces. Val faces are new faces from the same distribution: samples much closer
    to the train faces than they are were copied rather than learned."""
    sample_distances, neighbours = nearest_faces(samples, train, NEIGHBOURS, device)
    val_distances, _ = nearest_faces(val, train, 1, device)
    return {
        "nn_distance_samples": float(sample_distances[:, 0].mean()),
        "nn_distance_val": float(val_distances[:, 0].mean()),
    }, neighbours



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

