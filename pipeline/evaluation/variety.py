"""Numbers that see what a person sees in a grid of samples, with no download: one face repeated,
colour speckle, a narrow palette.

- variety: the mean distance between two samples' blurred 12x12 colour thumbnails, over the same for
  train faces. Blurring first means speckle cannot pass for variety; a collapsed generator scores
  near 0, a generator as varied as its data near 1.
- near-identical share: the samples whose nearest other sample is closer than almost any two train
  faces are (the 1st percentile of train faces' nearest-neighbour distances): the birthday-paradox
  test of Arora & Zhang 2017, read off the distances instead of by eye.
- high-frequency energy: the mean |x - 3x3 box blur of x| of samples over that of train faces:
  speckle and checkerboards raise it above 1.
- precision, recall, density and coverage (Kynkaanniemi et al. 2019, Naeem et al. 2020) in any
  embedding: here a fixed, randomly initialised network's (Naeem et al. show one serves), and
  Inception's where its weights are there.

95% intervals go with the shares (Wilson) and, where a reference rests on few faces, with the
variety ratio (bootstrap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.sampling import from_uint8

THUMBNAIL = 12  # side of the thumbnails variety is measured on
DUPLICATE_QUANTILE = 0.01  # train faces' nearest-neighbour distance below which two samples are alike
PRDC_NEIGHBOURS = 5  # k of Naeem et al.
SMALLEST_EMBEDDED = 32  # smaller pictures are enlarged to this before the random network sees them
HIGH_PASS_GAIN = 8.0  # weight of the high-pass residual in what the random network sees
EMBEDDING_SEED = 20200522  # the random network's weights: fixed, so every run is embedded alike
BOOTSTRAP_ROUNDS = 200
FEW_FACES = 100  # below this many faces a figure gets a 95% interval


def to_unit(faces: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float in [0, 1]."""
    return faces.float().div(255.0)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, borders replicated."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(images.shape[1], 1, 1, 1)
    padded = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    images = F.conv2d(padded, kernel, groups=images.shape[1])
    padded = F.pad(images, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel.transpose(2, 3), groups=images.shape[1])


def thumbnails(faces: torch.Tensor) -> torch.Tensor:
    """(N, 3 * 12 * 12) blurred colour thumbnails in [0, 1]: what the eye takes in of a face at a
    glance (hair, skin, eyes, background), with pixel noise averaged away."""
    images = to_unit(faces)
    blurred = gaussian_blur(images, images.shape[-1] / 24)
    return F.interpolate(blurred, size=(THUMBNAIL, THUMBNAIL), mode="bilinear", antialias=True,
                         align_corners=False).flatten(1)


def _pairwise(points: torch.Tensor) -> torch.Tensor:
    return torch.cdist(points.double(), points.double())


def mean_pairwise_distance(points: torch.Tensor) -> float:
    """Mean distance between two different points; nan for fewer than two."""
    n = len(points)
    if n < 2:
        return float("nan")
    return float(_pairwise(points).sum() / (n * (n - 1)))


def nearest_other(points: torch.Tensor) -> torch.Tensor:
    """Each point's distance to its nearest other point."""
    distances = _pairwise(points)
    distances.fill_diagonal_(float("inf"))
    return distances.min(1).values


def duplicate_threshold(train_thumbnails: torch.Tensor) -> float:
    """The distance below which two faces count as near-identical: closer than all but 1% of train
    faces are to their nearest other train face."""
    return float(torch.quantile(nearest_other(train_thumbnails), DUPLICATE_QUANTILE))


def near_identical_share(sample_thumbnails: torch.Tensor, threshold: float) -> float:
    """Share of samples with another sample nearer than `threshold`."""
    return float((nearest_other(sample_thumbnails) < threshold).double().mean())


def box_blur(images: torch.Tensor) -> torch.Tensor:
    kernel = torch.full((images.shape[1], 1, 3, 3), 1 / 9, dtype=images.dtype, device=images.device)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=images.shape[1])


def high_frequency_energy(faces: torch.Tensor) -> float:
    """Mean |x - 3x3 box blur of x| over pixels and channels, x in [0, 1]."""
    images = to_unit(faces)
    return float((images - box_blur(images)).abs().mean())


def wilson_interval(share: float, count: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% interval of a share of `count` trials (Wilson score): honest at 0, 1 and small counts."""
    if count <= 0 or math.isnan(share):
        return None
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ratio_interval(samples: torch.Tensor, reference: torch.Tensor,
                             seed: int) -> tuple[float, float] | None:
    """95% bootstrap interval of mean_pairwise_distance(samples) / that of reference, both sets
    resampled with replacement (pairs of one point with itself are left out)."""
    if len(samples) < 2 or len(reference) < 2:
        return None
    d_samples, d_reference = _pairwise(samples), _pairwise(reference)
    rng = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(BOOTSTRAP_ROUNDS):
        ratio = _resampled_mean(d_samples, rng) / max(_resampled_mean(d_reference, rng), 1e-12)
        ratios.append(ratio)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def _resampled_mean(distances: torch.Tensor, rng: torch.Generator) -> float:
    n = len(distances)
    pick = torch.randint(0, n, (n,), generator=rng)
    block = distances[pick][:, pick]
    different = pick[:, None] != pick[None, :]
    return float(block[different].mean()) if bool(different.any()) else 0.0


@dataclass(frozen=True)
class Reference:
    """What the samples are compared with, computed once: the train faces' thumbnails, variety,
    high-frequency energy and near-identical threshold."""

    thumbnails: torch.Tensor
    variety: float
    high_frequency: float
    threshold: float

    @classmethod
    def of(cls, faces: torch.Tensor) -> Reference:
        thumbs = thumbnails(faces)
        return cls(thumbs, mean_pairwise_distance(thumbs), high_frequency_energy(faces),
                   duplicate_threshold(thumbs) if len(faces) > 1 else 0.0)


def variety_scores(samples: torch.Tensor, reference: Reference, seed: int) -> dict[str, float | list | None]:
    """variety (ratio to the train faces'), near_identical share and high_frequency (ratio), with
    95% intervals where samples or train faces are few."""
    thumbs = thumbnails(samples)
    ratio = mean_pairwise_distance(thumbs) / reference.variety if reference.variety > 0 else float("nan")
    share = near_identical_share(thumbs, reference.threshold) if len(samples) > 1 else float("nan")
    scores: dict[str, float | list | None] = {
        "variety": _finite(ratio),
        "near_identical": _finite(share),
        "high_frequency": _finite(high_frequency_energy(samples) / reference.high_frequency)
        if reference.high_frequency > 0 else None,
    }
    if min(len(samples), len(reference.thumbnails)) < FEW_FACES:
        interval = bootstrap_ratio_interval(thumbs, reference.thumbnails, seed)
        scores["variety_95"] = None if interval is None else [interval[0], interval[1]]
    interval = None if scores["near_identical"] is None else wilson_interval(share, len(samples))
    scores["near_identical_95"] = None if interval is None else [interval[0], interval[1]]
    return scores


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else float(value)


# --- precision, recall, density, coverage ----------------------------------------------------


def kth_neighbour_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Each point's distance to its k-th nearest other point."""
    distances = _pairwise(points)
    distances.fill_diagonal_(float("inf"))
    k = min(k, len(points) - 1)
    return distances.kthvalue(k, dim=1).values


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = PRDC_NEIGHBOURS) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real` features (Naeem et al. 2020):
    each real point's ball reaches its k-th nearest real neighbour. Precision: fakes inside some real
    ball; recall: reals inside some fake ball; density: how many real balls a fake is in, over k;
    coverage: real balls with a fake inside. One repeated face has precision near 1 but coverage and
    recall near 0."""
    if len(real) < 2 or len(fake) < 2:
        return {"precision": None, "recall": None, "density": None, "coverage": None}
    real, fake = real.double(), fake.double()
    real_radii = kth_neighbour_radii(real, k)
    fake_radii = kth_neighbour_radii(fake, k)
    distances = torch.cdist(fake, real)  # (fakes, reals)
    inside_real = distances <= real_radii[None, :]
    inside_fake = distances <= fake_radii[:, None]
    return {
        "precision": float(inside_real.any(1).double().mean()),
        "recall": float(inside_fake.any(0).double().mean()),
        "density": float(inside_real.double().sum(1).mean() / min(k, len(real) - 1)),
        "coverage": float((distances.min(0).values <= real_radii).double().mean()),
    }


class RandomEmbedding(nn.Module):
    """A fixed, randomly initialised convolutional network as the feature space of PRDC: no
    download, the same weights on every machine (drawn from a seeded CPU generator).

    It sees each face at its own resolution beside the face's high-pass residual (x minus its 3x3
    box blur) amplified HIGH_PASS_GAIN times: random features of the image alone average pixel
    noise away, so speckled faces would sit among clean ones; with the residual, texture counts
    as much as shape and colour."""

    def __init__(self) -> None:
        super().__init__()
        widths = (6, 32, 64, 128, 256)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.AvgPool2d(2)]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        noise = torch.Generator().manual_seed(EMBEDDING_SEED)
        with torch.no_grad():
            for module in self.net:
                if isinstance(module, nn.Conv2d):  # He init, drawn from our own generator
                    fan_in = module.weight[0].numel()
                    module.weight.copy_(torch.randn(module.weight.shape, generator=noise)
                                        * math.sqrt(2.0 / fan_in))
                    module.bias.zero_()
        self.requires_grad_(False).eval()

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        images = from_uint8(faces)
        if images.shape[-1] < SMALLEST_EMBEDDED:  # four halvings need a side of 16; faces are 48 or 64
            images = F.interpolate(images, size=(SMALLEST_EMBEDDED, SMALLEST_EMBEDDED), mode="nearest")
        return self.net(torch.cat([images, HIGH_PASS_GAIN * (images - box_blur(images))], 1))


@torch.no_grad()
def embed(network: nn.Module, faces: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Features of uint8 faces, on the CPU."""
    return torch.cat([network(chunk.to(device)).float().cpu() for chunk in faces.split(batch_size)])
