"""Face crops from illustrations: the cascade's boxes, grown by a margin, cut out square and resized;
or, in passthrough mode, images that already are faces, square-cropped. One process per core."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.core.params import CropParams, PipelineError
from pipeline.data.formats import BOXES_FILE
from pipeline.vision.cascade import detect_faces, load_detector, resolve_cascade

log = logging.getLogger("pipeline.crop_faces")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
# Where a grown box leaves the picture, its edge pixels are repeated outwards: the padding
# continues the colours at the edge with no seam, where a constant colour would draw a hard bar
# (which the GAN learns to draw too) and a mirror would copy eyes and mouths into the margin.
PAD_BORDER = cv2.BORDER_REPLICATE

Box = tuple[int, int, int, int]  # x, y, w, h in source pixels


@dataclass(frozen=True)
class CropResult:
    source: str
    records: list[dict]
    error: str | None = None


_detector: cv2.CascadeClassifier | None = None


def _init_worker(cascade_path: str | None) -> None:
    global _detector
    cv2.setNumThreads(1)  # one image per process already uses every core
    if cascade_path is not None:
        _detector = load_detector(Path(cascade_path))


def read_bgr(path: Path) -> np.ndarray:
    """Decode fully with Pillow, which raises on truncated files that OpenCV would half-read."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def grow_box(box: Box, margin: float) -> Box:
    """Add margin * side on every side around the same centre, so hair and chin fit and every face
    keeps its place and scale in the crop (the box may now reach outside the picture)."""
    x, y, w, h = box
    dx, dy = round(margin * w), round(margin * h)
    return x - dx, y - dy, w + 2 * dx, h + 2 * dy


def centre_square(width: int, height: int) -> Box:
    """The largest centred square: face sets frame the face in the middle."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


def leaves_image(box: Sequence[int], width: int, height: int) -> bool:
    x, y, w, h = box
    return x < 0 or y < 0 or x + w > width or y + h > height


def cut(bgr: np.ndarray, box: Box) -> np.ndarray:
    """The pixels under `box`, padded with PAD_BORDER where it leaves the picture, never shifted
    or shrunk; `box` must overlap the picture."""
    x, y, w, h = box
    height, width = bgr.shape[:2]
    top, left = max(0, -y), max(0, -x)
    bottom, right = max(0, y + h - height), max(0, x + w - width)
    inside = bgr[y + top:y + h - bottom, x + left:x + w - right]
    if top or bottom or left or right:
        inside = cv2.copyMakeBorder(inside, top, bottom, left, right, PAD_BORDER)
    return inside


def face_boxes(bgr: np.ndarray, params: CropParams) -> list[tuple[Box, Box]]:
    """(found box, box to crop) for each face, in reading order."""
    height, width = bgr.shape[:2]
    if params.mode == "passthrough":
        square = centre_square(width, height)
        return [(square, square)]
    assert _detector is not None
    found = detect_faces(_detector, bgr, params.scale_factor, params.min_neighbors, params.min_size)
    return [(box, grow_box(box, params.margin)) for box in sorted(found)]


def crop_image(job: tuple[Path, Path, CropParams]) -> CropResult:
    source, output, params = job
    try:
        bgr = read_bgr(source)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return CropResult(source.name, [], f"{exc.__class__.__name__}: {exc}")
    height, width = bgr.shape[:2]
    records = []
    for k, (box, crop_box) in enumerate(face_boxes(bgr, params)):
        side = crop_box[2]
        face = cv2.resize(cut(bgr, crop_box), (params.size, params.size),
                          interpolation=cv2.INTER_AREA if side >= params.size else cv2.INTER_CUBIC)
        name = f"{source.stem}_{k}.png"
        cv2.imwrite(str(output / name), face)
        records.append({"face": name, "source_image": source.name, "box": list(box),
                        "crop_box": list(crop_box), "size": params.size,
                        "image_width": width, "image_height": height})
    return CropResult(source.name, records)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PipelineError(f"{folder}: input folder not found; run the scrape stage first")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def crop_folder(params: CropParams, source: Path, output: Path) -> dict[str, int]:
    """Crop every image of `source` into `output`, replacing it only once all crops are written."""
    cascade = str(resolve_cascade(params.cascade)) if params.mode == "detect" else None
    images = list_images(source)
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    workers = params.workers or os.cpu_count() or 1
    stats = {"images": len(images), "unreadable": 0, "images_with_faces": 0, "faces": 0,
             "faces_padded": 0}
    with (multiprocessing.Pool(workers, _init_worker, (cascade,)) as pool,
          (staging / BOXES_FILE).open("w") as boxes):
        jobs = [(path, staging, params) for path in images]
        for result in tqdm(pool.imap(crop_image, jobs, chunksize=4), total=len(jobs),
                           desc="crop_faces", unit="image"):
            if result.error:
                stats["unreadable"] += 1
                log.warning("skipped unreadable image %s (%s)", result.source, result.error)
                continue
            stats["images_with_faces"] += bool(result.records)
            stats["faces"] += len(result.records)
            for record in result.records:
                stats["faces_padded"] += leaves_image(record["crop_box"], record["image_width"],
                                                      record["image_height"])
                boxes.write(json.dumps(record) + "\n")
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    log.info("%d faces in %d of %d images (%d unreadable, %d padded at the picture's edge)",
             stats["faces"], stats["images_with_faces"], stats["images"], stats["unreadable"],
             stats["faces_padded"])
    return stats
