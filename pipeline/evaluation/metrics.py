"""The numbers behind evaluate, as pure functions of features and pixels.

FID and KID follow Heusel et al. 2017 and Binkowski et al. 2018 as torch-fidelity computes them
(the tests check that); they are written out here so that any feature network can feed them and so
that a matrix square root needs no SciPy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.models.sampling import from_uint8


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64: FID's Gaussian fit."""
    features = features.astype(np.float64)
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; rounding's tiny negative
    eigenvalues are taken as 0."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2).

    tr (S1 S2)^1/2 is taken as tr (R S2 R)^1/2 with R = S1^1/2: the same eigenvalues, but of a
    symmetric matrix, so a symmetric eigensolver gives them stably (S1 S2 is not symmetric).
    """
    root = sqrt_psd(sigma1)
    inner = root @ sigma2 @ root
    cross = np.linalg.eigvalsh((inner + inner.T) / 2).clip(min=0.0)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.sqrt(cross).sum())


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel (x.y / D + 1)^3, in float32 like torch-fidelity (three such products per subset)."""
    return ((x @ y.T) / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD of two equal-sized sets: within-set sums leave out k(x, x)."""
    m = x.shape[0]
    k_xx = polynomial_kernel(x, x).astype(np.float64)
    k_yy = polynomial_kernel(y, y).astype(np.float64)
    k_xy = polynomial_kernel(x, y).astype(np.float64)
    within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int,
                              seed: int) -> tuple[float, float]:
    """Mean and std of the unbiased MMD over random subsets (the KID estimate and its spread).

    Subsets are capped at the smaller set; when both sets fit whole, every subset would be the same
    sets reordered (MMD ignores order), so one is computed.
    """
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(real)} and {len(fake)}")
    if size == len(real) == len(fake):
        subsets = 1
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                      fake[rng.choice(len(fake), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def as_vectors(faces: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float (N, 3*S*S) in [-1, 1], the scale the generator draws in."""
    return from_uint8(faces.to(device)).flatten(1)


def nearest_faces(queries: torch.Tensor, faces: torch.Tensor, k: int, device: torch.device,
                  chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest of `faces` to each query, each face as it is or mirrored, whichever is nearer.

    Training flips faces, so a memorised face may come out mirrored. Returns distances and indices,
    both (Q, k), nearest first; an index i >= len(faces) is face i - len(faces) mirrored. The
    distance is the RMS pixel difference in [-1, 1] (L2 over sqrt(3*S*S)), so 48 and 64 px runs
    compare. `faces` is read a chunk at a time: a float copy of 50k train faces would not fit everywhere.
    """
    q = as_vectors(queries, device)
    n = len(faces)
    best_d = q.new_empty((len(q), 0))
    best_i = torch.empty((len(q), 0), dtype=torch.long, device=device)
    for start in range(0, n, chunk):
        block = faces[start:start + chunk]
        direct = torch.cdist(q, as_vectors(block, device))
        mirrored = torch.cdist(q, as_vectors(block.flip(3), device))
        i = torch.arange(start, start + len(block), device=device) + n * (mirrored < direct)
        best_d, order = torch.cat([best_d, torch.minimum(direct, mirrored)], 1).topk(
            min(k, best_d.shape[1] + len(block)), dim=1, largest=False)
        best_i = torch.cat([best_i, i], 1).gather(1, order)
    return (best_d / math.sqrt(q.shape[1])).cpu(), best_i.cpu()
