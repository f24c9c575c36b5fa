"""torch-fidelity's FID Inception, built only from its published weights; never estimated another way.

Its weights come from evaluate.inception_weights, $ANIME_FACE_INCEPTION_WEIGHTS or the torch hub
cache, else are downloaded once; with none of those, FID and KID are reported as unavailable.
A weights file is a pickle, and a pickle can run code: whatever its source, the file is taken only
if its bytes are the published ones (length and sha256), and even then it is unpickled as tensors
only. torch-fidelity itself would unpickle a local file, and its download, in full.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import torch
import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
from torch import nn

from pipeline.core.files import write_bytes
from pipeline.core.params import PipelineError

log = logging.getLogger("pipeline.evaluation.inception")


@dataclass(frozen=True)
class PublishedFile:
    """A file another project publishes, known by its name, exact length and sha256."""

    name: str
    size: int
    sha256: str

    def difference(self, data: bytes) -> str | None:
        """None for exactly the published bytes, else how these differ, in words."""
        digest = hashlib.sha256(data).hexdigest()
        if len(data) == self.size and digest == self.sha256:
            return None
        return f"sha256 {digest[:12]}..., not the published {self.sha256[:12]}..."


# torch-fidelity's release v0.2.0 (its URL is torch-fidelity's URL_INCEPTION_V3). As torch hub names
# files, the 8 hex digits in the name begin the sha256.
INCEPTION_WEIGHTS = PublishedFile(
    "weights-inception-2015-12-05-6726825d.pth", 95_628_359,
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2")
WEIGHTS_ENV = "ANIME_FACE_INCEPTION_WEIGHTS"
WEIGHTS_HOW_TO = (f"set evaluate.inception_weights or {WEIGHTS_ENV} to a local copy of torch-fidelity's "
                  f"{INCEPTION_WEIGHTS.name}, or put it in $TORCH_HOME/hub/checkpoints/")
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_DIMENSIONS = 2048  # the pool features FID and KID are defined on
INCEPTION_FEATURE = str(INCEPTION_DIMENSIONS)
DOWNLOAD_TIMEOUT = 20.0  # seconds without a byte before an offline machine gives up on the weights
DOWNLOAD_CHUNK = 1 << 20
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # torch: weights_only=True whatever the caller says
FORCE_FULL_PICKLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # its opposite, which must not be set alongside

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


def cached_weights_path() -> Path:
    """Where torch hub (and so torch-fidelity) caches the download: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS.name


def read_verified(path: Path) -> bytes:
    """The file's bytes, if they are the published weights; read no further than their length."""
    try:
        with path.open("rb") as handle:
            data = handle.read(INCEPTION_WEIGHTS.size + 1)
    except OSError as exc:
        raise PipelineError(f"{path}: unreadable Inception weights ({exc})") from None
    difference = INCEPTION_WEIGHTS.difference(data)
    if difference is not None:
        raise PipelineError(f"{path}: not torch-fidelity's Inception weights ({difference}); "
                            f"{WEIGHTS_HOW_TO}")
    return data


def download(url: str) -> bytes:
    """The body at `url`, cut one byte past the published length (enough to tell it is not the
    file). Raises requests.RequestException when it cannot be had."""
    body = bytearray()
    with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT) as response:
        response.raise_for_status()
        for chunk in response.iter_content(DOWNLOAD_CHUNK):
            body += chunk
            if len(body) > INCEPTION_WEIGHTS.size:
                break
    return bytes(body[:INCEPTION_WEIGHTS.size + 1])


def downloaded_weights() -> tuple[bytes, Path] | str:
    """The cached weights, else downloaded once, verified, then cached; or the one-line reason
    there are none (offline)."""
    cached = cached_weights_path()
    if cached.is_file():
        return read_verified(cached), cached
    url = fidelity_inception.URL_INCEPTION_V3
    try:
        data = download(url)
    except requests.RequestException as exc:
        return f"no Inception weights, download failed ({exc.__class__.__name__}); {WEIGHTS_HOW_TO}"
    difference = INCEPTION_WEIGHTS.difference(data)
    if difference is not None:
        raise PipelineError(f"{url} served a file with {difference}; refusing it. {WEIGHTS_HOW_TO}")
    try:
        write_bytes(cached, data)
    except OSError as exc:  # a read-only cache costs a download next time, not this run
        log.warning("%s: the verified Inception weights could not be cached (%s)", cached, exc)
    return data, cached


@contextmanager
def tensors_only_unpickling() -> Iterator[None]:
    """torch-fidelity calls torch.load(..., weights_only=False); torch's documented switch makes
    every torch.load in this block unpickle tensors only, whatever its caller asked."""
    saved = {name: os.environ.get(name) for name in (FORCE_WEIGHTS_ONLY, FORCE_FULL_PICKLE)}
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    os.environ.pop(FORCE_FULL_PICKLE, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_inception(data: bytes, source: Path) -> nn.Module:
    """torch-fidelity's FID Inception with these (verified) weights, unpickled as tensors only
    from the very bytes that were verified, not from the file again."""
    try:
        with tensors_only_unpickling():
            return fidelity_inception.FeatureExtractorInceptionV3(
                INCEPTION_NAME, [INCEPTION_FEATURE], feature_extractor_weights_path=io.BytesIO(data))
    except Exception as exc:  # torch raises many types for a damaged or foreign pickle
        raise PipelineError(f"{source}: not torch-fidelity's Inception weights "
                            f"({exc.__class__.__name__})") from None


def load_features(configured: str | None, device: torch.device) -> FeatureNet | str:
    """The Inception feature network, or the one-line reason FID and KID are unavailable."""
    weights = inception_weights_path(configured)
    found = (read_verified(weights), weights) if weights is not None else downloaded_weights()
    if isinstance(found, str):
        return found
    network = load_inception(*found)
    network.to(device)
    return lambda images: network(images)[0]


@torch.no_grad()
def extract_features(features: FeatureNet, faces: torch.Tensor, batch_size: int,
                     device: torch.device) -> np.ndarray:
    return torch.cat([features(batch.to(device)).float().cpu() for batch in faces.split(batch_size)]).numpy()
