"""torch-fidelity's FID Inception, found locally or downloaded once; never estimated another way.

Its weights come from evaluate.inception_weights, $ANIME_FACE_INCEPTION_WEIGHTS or the torch hub
cache, else are downloaded once; with none of those, FID and KID are reported as unavailable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from pipeline.core.params import PipelineError

WEIGHTS_ENV = "ANIME_FACE_INCEPTION_WEIGHTS"
WEIGHTS_HOW_TO = (f"set evaluate.inception_weights or {WEIGHTS_ENV} to a local copy of torch-fidelity's "
                  "weights-inception-2015-12-05-6726825d.pth, or put it in $TORCH_HOME/hub/checkpoints/")
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_DIMENSIONS = 2048  # the pool features FID and KID are defined on
INCEPTION_FEATURE = str(INCEPTION_DIMENSIONS)
DOWNLOAD_TIMEOUT = 20.0  # seconds without a byte before an offline machine gives up on the weights

FeatureNet = Callable[[torch.Tensor], torch.Tensor]
"""uint8 images (N, 3, H, W) on the evaluation device -> float features (N, D)."""


def inception_weights_path(configured: str | None) -> Path | None:
    """The local weights named by the param or the environment; None means: cache, then download."""
    sources = (("evaluate.inception_weights", configured), (WEIGHTS_ENV, os.environ.get(WEIGHTS_ENV)))
    for origin, value in sources:
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise PipelineError(f"{origin} points to {path}, which does not exist; {WEIGHTS_HOW_TO}")
            return path
    return None


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub downloads without a timeout; an offline machine would otherwise wait on it."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_inception(weights: Path | None) -> nn.Module:
    """torch-fidelity's FID Inception; without a path, its own cached download (torch hub cache)."""
    path = None if weights is None else str(weights)
    with socket_timeout(DOWNLOAD_TIMEOUT):
        return FeatureExtractorInceptionV3(INCEPTION_NAME, [INCEPTION_FEATURE],
                                           feature_extractor_weights_path=path)


def load_features(configured: str | None, device: torch.device) -> FeatureNet | str:
    """The Inception feature network, or the one-line reason FID and KID are unavailable."""
    weights = inception_weights_path(configured)
    try:
        network = load_inception(weights)
    except OSError as exc:
        if weights is not None:
            raise PipelineError(f"{weights}: unreadable Inception weights ({exc})") from None
        return f"no Inception weights, download failed ({' '.join(str(exc).split())}); {WEIGHTS_HOW_TO}"
    except Exception as exc:  # torch raises many types for a damaged or foreign pickle
        source = weights or Path(torch.hub.get_dir()) / "checkpoints"
        raise PipelineError(f"{source}: not torch-fidelity's Inception weights "
                            f"({exc.__class__.__name__})") from None
    network.to(device)
    return lambda images: network(images)[0]


@torch.no_grad()
def extract_features(features: FeatureNet, faces: torch.Tensor, batch_size: int,
                     device: torch.device) -> np.ndarray:
    return torch.cat([features(batch.to(device)).float().cpu() for batch in faces.split(batch_size)]).numpy()

