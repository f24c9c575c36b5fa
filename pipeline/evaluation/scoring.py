"""Scores of a generator against real faces: FID and KID on Inception features, and the face rate
(the share of samples in which lbpcascade_animeface finds a face)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.core.params import CropParams, EvaluateParams, PipelineError
from pipeline.evaluation.inception import FeatureNet, extract_features, load_features
from pipeline.evaluation.metrics import frechet_distance, gaussian_statistics, kernel_inception_distance
from pipeline.models.sampling import generate
from pipeline.vision.cascade import FaceDetector

log = logging.getLogger("pipeline.evaluate")

KID_SUBSETS = 100  # torch-fidelity's defaults
KID_SUBSET_SIZE = 1000

Scores = dict[str, float | str | None]



def upscaled_bgr(face: torch.Tensor, size: int) -> np.ndarray:
    """uint8 (3, S, S) RGB -> (size, size, 3) BGR, bicubic: the cascade's minSize is 48 px."""
    rgb = np.ascontiguousarray(face.permute(1, 2, 0).numpy())
    return cv2.cvtColor(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR)



def face_rate(faces: torch.Tensor, detector: FaceDetector, size: int) -> float:
    """Share of faces in which the cascade finds a face once they are upscaled to `size`."""
    return sum(detector.finds_face(upscaled_bgr(face, size)) for face in faces) / len(faces)



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

