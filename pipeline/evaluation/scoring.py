"""Scores of a generator against real faces: FID and KID on Inception features; precision, recall,
density and coverage in a random network's embedding (and Inception's); the variety, near-identical
share and high-frequency energy of the samples (variety.py); and the face rate (the share of samples
in which lbpcascade_animeface finds a face)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.core.params import CropParams, EvaluateParams, PipelineError
from pipeline.evaluation.inception import INCEPTION_DIMENSIONS, FeatureNet, extract_features, load_features
from pipeline.evaluation.metrics import frechet_distance, gaussian_statistics, kernel_inception_distance
from pipeline.evaluation.variety import RandomEmbedding, Reference, embed, prdc, variety_scores
from pipeline.models.sampling import generate
from pipeline.vision.cascade import FaceDetector

log = logging.getLogger("pipeline.evaluate")

KID_SUBSETS = 100  # torch-fidelity's defaults
KID_SUBSET_SIZE = 1000
VARIETY_FACES = 256  # samples (and train faces) the variety and near-identical share are taken on
PRDC_FACES = 5000  # at most this many train faces and samples in precision/recall/density/coverage

Scores = dict[str, float | bool | str | None]


def upscaled_bgr(face: torch.Tensor, size: int) -> np.ndarray:
    """uint8 (3, S, S) RGB -> (size, size, 3) BGR, bicubic: the cascade's minSize is 48 px."""
    rgb = np.ascontiguousarray(face.permute(1, 2, 0).numpy())
    return cv2.cvtColor(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR)


def face_rate(faces: torch.Tensor, detector: FaceDetector, size: int) -> float:
    """Share of faces in which the cascade finds a face once they are upscaled to `size`, counted on
    every core: OpenCV lets go of the GIL while it detects, and each thread has its own classifier."""

    def found(chunk: torch.Tensor) -> int:
        own = detector.copy()
        return sum(own.finds_face(upscaled_bgr(face, size)) for face in chunk)

    chunks = faces.chunk(os.cpu_count() or 1)
    with ThreadPoolExecutor(len(chunks)) as pool:
        return sum(pool.map(found, chunks)) / len(faces)


def selection_metric(scores: Scores) -> tuple[str, float]:
    """(name, value to minimise) that ranks snapshots: FID where it is reliable, else KID, else the
    coverage in the random embedding (every offline machine has it). Never the face rate: one face
    repeated, or faces under speckle, are faces to the cascade; coverage falls for both."""
    if scores.get("fid") is not None and scores.get("fid_reliable"):
        return "fid", float(scores["fid"])
    if scores.get("kid_mean") is not None:
        return "kid", float(scores["kid_mean"])
    return "coverage", -float(scores.get("coverage") or 0.0)


class Evaluator:
    """Scores generators against the train faces, paying once for what does not change between calls.

    FID and KID compare samples with the train split, the reference GAN papers use; the face rate of
    real faces is measured on the val split (faces training never saw). The feature network, the
    reference features and Gaussian fit, and the real face rate are computed here; `score` then costs
    sampling, features of the samples, and the cascade on them.
    """

    def __init__(self, reference: torch.Tensor, val: torch.Tensor, params: EvaluateParams,
                 device: torch.device, features: FeatureNet | str, detector: FaceDetector | None) -> None:
        """`features`: a feature network, or why there is none (FID and KID are then null);
        `detector`: None leaves the face rates out."""
        if len(reference) < 2:
            raise PipelineError(f"FID and KID need at least 2 train faces, got {len(reference)}")
        self.params = params
        self.device = device
        self.features = features
        self.detector = detector
        self.reference_images = len(reference)
        self.reference_features: np.ndarray | None = None
        self.reference_statistics: tuple[np.ndarray, np.ndarray] | None = None
        if not isinstance(features, str):
            self.reference_features = extract_features(features, reference, params.batch_size, device)
            self.reference_statistics = gaussian_statistics(self.reference_features)
        self.face_rate_real = self.face_rate_of(val)
        picked = torch.randperm(len(reference), generator=torch.Generator().manual_seed(params.seed))
        self.variety_reference = Reference.of(reference[picked[:VARIETY_FACES]])
        self.embedding = RandomEmbedding().to(device)
        self.reference_embedded = embed(self.embedding, reference[picked[:PRDC_FACES]],
                                        params.batch_size, device)

    @classmethod
    def prepare(cls, reference: torch.Tensor, val: torch.Tensor, params: EvaluateParams,
                crop: CropParams, device: torch.device) -> Evaluator:
        """Inception (or why not) and the cascade, both found the way the stage finds them."""
        features = load_features(params.inception_weights, device)
        if isinstance(features, str):
            log.warning("FID and KID unavailable: %s", features)
        return cls(reference, val, params, device, features, FaceDetector.load(crop))

    def sample(self, generator: nn.Module, count: int) -> torch.Tensor:
        if count < 2:
            raise PipelineError(f"FID and KID need at least 2 samples, got {count}")
        return generate(generator, count, self.params.seed, self.params.batch_size)

    def score(self, generator: nn.Module, count: int) -> Scores:
        """fid, fid_reliable, kid_mean, kid_std, fid_status, face_rate and face_rate_real of `count`
        samples of this generator."""
        return self.score_images(self.sample(generator, count))

    def face_rate_of(self, faces: torch.Tensor) -> float | None:
        """The face rate of these faces; None without a detector."""
        return None if self.detector is None else face_rate(faces, self.detector,
                                                            self.params.face_rate_size)

    def score_images(self, faces: torch.Tensor) -> Scores:
        rates: Scores = {"face_rate": self.face_rate_of(faces), "face_rate_real": self.face_rate_real}
        return self.distances(faces) | self.spread(faces) | rates

    def spread(self, faces: torch.Tensor, reference: Reference | None = None,
               embedded: torch.Tensor | None = None) -> Scores:
        """Variety, near-identical share and high-frequency energy of the first VARIETY_FACES faces,
        and precision, recall, density and coverage in the random embedding, against the train
        faces (or the given `reference` thumbnails and `embedded` train faces: one tag value's)."""
        reference = reference or self.variety_reference
        embedded = self.reference_embedded if embedded is None else embedded
        samples = embed(self.embedding, faces[:PRDC_FACES], self.params.batch_size, self.device)
        return variety_scores(faces[:VARIETY_FACES], reference, self.params.seed) | prdc(embedded, samples)

    def spread_of_value(self, faces: torch.Tensor, value_faces: torch.Tensor) -> Scores:
        """spread() against one tag value's train faces."""
        return self.spread(faces, Reference.of(value_faces[:VARIETY_FACES]),
                           embed(self.embedding, value_faces[:PRDC_FACES], self.params.batch_size,
                                 self.device))

    def distances(self, faces: torch.Tensor) -> Scores:
        if isinstance(self.features, str):
            return {"fid": None, "fid_reliable": False, "kid_mean": None, "kid_std": None,
                    "fid_status": f"unavailable: {self.features}", "inception_precision": None,
                    "inception_recall": None, "inception_density": None, "inception_coverage": None}
        assert self.reference_features is not None and self.reference_statistics is not None
        fake = extract_features(self.features, faces, self.params.batch_size, self.device)
        inception = {f"inception_{name}": value for name, value in prdc(
            torch.from_numpy(self.reference_features[:PRDC_FACES]),
            torch.from_numpy(fake[:PRDC_FACES])).items()}
        kid_mean, kid_std = kernel_inception_distance(self.reference_features, fake, KID_SUBSETS,
                                                      KID_SUBSET_SIZE, self.params.seed)
        fid = frechet_distance(*self.reference_statistics, *gaussian_statistics(fake))
        fewest = min(self.reference_images, len(faces))
        # below the feature dimension the covariance is singular and FID is biased upwards by a
        # term that depends on the counts; KID's estimator is unbiased at any size
        reliable = fewest >= INCEPTION_DIMENSIONS
        status = "ok" if reliable else (
            f"unreliable: {self.reference_images} train faces and {len(faces)} samples, fewer than the "
            f"{INCEPTION_DIMENSIONS} feature dimensions; compare KID")
        return {"fid": fid, "fid_reliable": reliable, "kid_mean": kid_mean, "kid_std": kid_std,
                "fid_status": status} | inception
