"""Stage evaluate: FID, KID, face rate and a memorisation check of the generator against the data.

python -m pipeline.evaluate [--params params.yaml] [--generator models/generator.pt]
                            [--manifest data/manifest.csv] [--output metrics]

FID and KID compare generated faces with the val split through torch-fidelity's Inception (the
standard FID features). Its weights come from evaluate.inception_weights, $ANIME_FACE_INCEPTION_WEIGHTS
or the torch hub cache, else are downloaded once; with none of those, both are reported as
unavailable (null), never estimated some other way. The train stage scores its generator with the
same Evaluator while it trains.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torchvision.utils import make_grid

from pipeline.cascade import detect_faces, load_detector, resolve_cascade
from pipeline.cli import run_stage, stage_parser
from pipeline.dataset import load_faces
from pipeline.devices import resolve_device
from pipeline.files import atomic_path, write_json
from pipeline.metrics import frechet_distance, gaussian_statistics, kernel_inception_distance, nearest_faces
from pipeline.models import load_generator
from pipeline.params import CropParams, EvaluateParams, PipelineError, read_section

log = logging.getLogger("pipeline.evaluate")

WEIGHTS_ENV = "ANIME_FACE_INCEPTION_WEIGHTS"
WEIGHTS_HOW_TO = (f"set evaluate.inception_weights or {WEIGHTS_ENV} to a local copy of torch-fidelity's "
                  "weights-inception-2015-12-05-6726825d.pth, or put it in $TORCH_HOME/hub/checkpoints/")
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FEATURE = "2048"  # the pool features FID and KID are defined on
DOWNLOAD_TIMEOUT = 20.0  # seconds without a byte before an offline machine gives up on the weights
KID_SUBSETS = 100  # torch-fidelity's defaults
KID_SUBSET_SIZE = 1000
NEIGHBOURS = 5  # train faces shown beside each sample
SHEET_SCALE = 2  # 48 px faces are too small to compare by eye

FeatureNet = Callable[[torch.Tensor], torch.Tensor]
"""uint8 images (N, 3, H, W) on the evaluation device -> float features (N, D)."""

Scores = dict[str, float | str | None]


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


@dataclass(frozen=True)
class FaceDetector:
    """lbpcascade_animeface with crop_faces' settings, so 'a face' means what it meant for the data."""

    cascade: cv2.CascadeClassifier
    crop: CropParams

    @classmethod
    def load(cls, crop: CropParams) -> FaceDetector:
        return cls(load_detector(resolve_cascade(crop.cascade)), crop)

    def finds_face(self, bgr: np.ndarray) -> bool:
        return bool(detect_faces(self.cascade, bgr, self.crop.scale_factor, self.crop.min_neighbors,
                                 self.crop.min_size))


def upscaled_bgr(face: torch.Tensor, size: int) -> np.ndarray:
    """uint8 (3, S, S) RGB -> (size, size, 3) BGR, bicubic: the cascade's minSize is 48 px."""
    rgb = np.ascontiguousarray(face.permute(1, 2, 0).numpy())
    return cv2.cvtColor(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR)


def face_rate(faces: torch.Tensor, detector: FaceDetector, size: int) -> float:
    """Share of faces in which the cascade finds a face once they are upscaled to `size`."""
    return sum(detector.finds_face(upscaled_bgr(face, size)) for face in faces) / len(faces)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255] on the CPU, as the real faces are stored."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()


@torch.no_grad()
def generate(generator: nn.Module, count: int, seed: int, batch_size: int) -> torch.Tensor:
    """`count` uint8 faces from seeded CPU noise (the same faces every call, on every device)."""
    z = torch.randn(count, generator.config.nz, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        return torch.cat([to_uint8(generator(batch.to(device))) for batch in z.split(batch_size)])
    finally:
        generator.train(was_training)


@torch.no_grad()
def extract_features(features: FeatureNet, faces: torch.Tensor, batch_size: int,
                     device: torch.device) -> np.ndarray:
    return torch.cat([features(batch.to(device)).float().cpu() for batch in faces.split(batch_size)]).numpy()


class Evaluator:
    """Scores generators against one val split, paying once for what does not change between calls.

    The feature network, the val faces' features and Gaussian fit, and the val face rate are
    computed here; `score` then costs sampling, features of the samples, and the cascade on them.
    """

    def __init__(self, real_val: torch.Tensor, params: EvaluateParams, device: torch.device,
                 features: FeatureNet | str, detector: FaceDetector | None) -> None:
        """`features`: a feature network, or why there is none (FID and KID are then null);
        `detector`: None leaves the face rates out."""
        if min(len(real_val), params.samples) < 2:
            raise PipelineError(f"FID and KID need at least 2 val faces and 2 samples, got "
                                f"{len(real_val)} and {params.samples}")
        self.params = params
        self.device = device
        self.features = features
        self.detector = detector
        self.real_features: np.ndarray | None = None
        self.real_statistics: tuple[np.ndarray, np.ndarray] | None = None
        if not isinstance(features, str):
            self.real_features = extract_features(features, real_val, params.batch_size, device)
            self.real_statistics = gaussian_statistics(self.real_features)
        self.face_rate_real = None if detector is None else face_rate(real_val, detector,
                                                                       params.face_rate_size)

    @classmethod
    def prepare(cls, real_val: torch.Tensor, params: EvaluateParams, crop: CropParams,
                device: torch.device) -> Evaluator:
        """Inception (or why not) and the cascade, both found the way the stage finds them."""
        features = load_features(params.inception_weights, device)
        if isinstance(features, str):
            log.warning("FID and KID unavailable: %s", features)
        return cls(real_val, params, device, features, FaceDetector.load(crop))

    def sample(self, generator: nn.Module) -> torch.Tensor:
        return generate(generator, self.params.samples, self.params.seed, self.params.batch_size)

    def score(self, generator: nn.Module) -> Scores:
        """fid, kid_mean, kid_std, fid_status, face_rate and face_rate_real of this generator."""
        return self.score_images(self.sample(generator))

    def score_images(self, faces: torch.Tensor) -> Scores:
        rates: Scores = {"face_rate": None, "face_rate_real": self.face_rate_real}
        if self.detector is not None:
            rates["face_rate"] = face_rate(faces, self.detector, self.params.face_rate_size)
        return self.distances(faces) | rates

    def distances(self, faces: torch.Tensor) -> Scores:
        if isinstance(self.features, str):
            return {"fid": None, "kid_mean": None, "kid_std": None,
                    "fid_status": f"unavailable: {self.features}"}
        assert self.real_features is not None and self.real_statistics is not None
        fake = extract_features(self.features, faces, self.params.batch_size, self.device)
        kid_mean, kid_std = kernel_inception_distance(self.real_features, fake, KID_SUBSETS,
                                                      KID_SUBSET_SIZE, self.params.seed)
        fid = frechet_distance(*self.real_statistics, *gaussian_statistics(fake))
        return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std, "fid_status": "ok"}


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


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    log.info("wrote %s (%dx%d px)", path, image.width, image.height)


def evaluate(params: EvaluateParams, crop: CropParams, generator_path: Path, manifest: Path,
             output: Path) -> Scores:
    """Write eval.json and nearest_neighbours.png for one generator; return the metrics."""
    device = resolve_device(params.device, "evaluate.device")
    generator, payload = load_generator(generator_path, device)
    size = generator.config.image_size
    val = load_faces(manifest, "val", size)
    train = load_faces(manifest, "train", size)
    evaluator = Evaluator.prepare(val, params, crop, device)
    samples = evaluator.sample(generator)
    scores = evaluator.score_images(samples)
    distances, neighbours = memorisation(samples, val[:params.samples], train, device)
    scores |= distances
    scores |= {"samples": len(samples), "val_faces": len(val), "train_faces": len(train),
               "generator_epoch": payload["epoch"]}
    shown = min(params.nearest, len(samples))
    save_png(neighbour_sheet(samples[:shown], train, neighbours[:shown]), output / "nearest_neighbours.png")
    write_json(output / "eval.json", scores)
    log.info("FID %s, KID %s, face rate %.3f (real %.3f), NN distance %.3f (val %.3f)",
             scores["fid"], scores["kid_mean"], scores["face_rate"], scores["face_rate_real"],
             scores["nn_distance_samples"], scores["nn_distance_val"])
    return scores


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, default=Path("models/generator.pt"),
                        help="generator to evaluate (default: %(default)s)")
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest.csv"),
                        help="face manifest: val faces to compare with, train faces to search "
                             "(default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("metrics"),
                        help="folder for eval.json and nearest_neighbours.png (default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("evaluate", args.params)
    crop = read_section("crop", args.params)
    evaluate(params, crop, args.generator, args.manifest, args.output)


if __name__ == "__main__":
    run_stage(main)
