"""lbpcascade_animeface: found locally or fetched once, always checked against its known hash.

The XML is another project's file, so it is never committed: a local path (param or environment
variable) serves offline machines, otherwise it is downloaded once into the user cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import requests

from pipeline.core.files import write_bytes
from pipeline.core.params import CropParams, PipelineError

log = logging.getLogger("pipeline.vision.cascade")

CASCADE_URL = (
    "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml"
)
CASCADE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"
CASCADE_ENV = "LBPCASCADE_ANIMEFACE"
CASCADE_NAME = "lbpcascade_animeface.xml"
HOW_TO_FIX = (f"set crop.cascade in params.yaml or the {CASCADE_ENV} environment variable "
              f"to a local copy of {CASCADE_NAME} (sha256 {CASCADE_SHA256[:12]}...)")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anime-face-dcgan"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked_local(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise PipelineError(f"{origin} points to {path}, which does not exist; {HOW_TO_FIX}")
    digest = sha256_of(path.read_bytes())
    if digest != CASCADE_SHA256:
        raise PipelineError(f"{origin} points to {path}, whose sha256 {digest[:12]}... is not "
                            f"that of {CASCADE_NAME}")
    return path


def resolve_cascade(configured: str | None, url: str = CASCADE_URL, timeout: float = 30.0) -> Path:
    """The verified cascade path: crop.cascade, then $LBPCASCADE_ANIMEFACE, then cache or download."""
    if configured:
        return _checked_local(Path(configured).expanduser(), "crop.cascade")
    if os.environ.get(CASCADE_ENV):
        return _checked_local(Path(os.environ[CASCADE_ENV]).expanduser(), CASCADE_ENV)
    cached = cache_dir() / CASCADE_NAME
    if cached.is_file() and sha256_of(cached.read_bytes()) == CASCADE_SHA256:
        return cached
    log.info("downloading %s", url)
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise PipelineError(f"could not download {CASCADE_NAME} from {url} "
                            f"({exc.__class__.__name__}); {HOW_TO_FIX}") from None
    digest = sha256_of(response.content)
    if digest != CASCADE_SHA256:
        raise PipelineError(f"{url} served a file with sha256 {digest[:12]}..., not the expected "
                            f"{CASCADE_NAME}; refusing it. {HOW_TO_FIX}")
    write_bytes(cached, response.content)
    return cached


def load_detector(path: Path) -> cv2.CascadeClassifier:
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise PipelineError(f"{path}: OpenCV could not load this cascade")
    return detector


def detect_faces(detector: cv2.CascadeClassifier, bgr: np.ndarray, scale_factor: float,
                 min_neighbors: int, min_size: int) -> list[tuple[int, int, int, int]]:
    """The reference recipe of lbpcascade_animeface: grayscale, equalised histogram."""
    gray = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    boxes = detector.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                      minSize=(min_size, min_size))
    return [tuple(int(v) for v in box) for box in boxes]


@dataclass(frozen=True)
class FaceDetector:
    """lbpcascade_animeface with crop_faces' settings, so 'a face' means what it meant for the data.

    One OpenCV classifier is not safe to share between threads: each thread takes its own copy."""

    path: Path
    crop: CropParams
    cascade: cv2.CascadeClassifier

    @classmethod
    def load(cls, crop: CropParams, path: Path | None = None) -> FaceDetector:
        path = path or resolve_cascade(crop.cascade)
        return cls(path, crop, load_detector(path))

    def copy(self) -> FaceDetector:
        return FaceDetector.load(self.crop, self.path)

    def finds_face(self, bgr: np.ndarray) -> bool:
        return bool(detect_faces(self.cascade, bgr, self.crop.scale_factor, self.crop.min_neighbors,
                                 self.crop.min_size))

