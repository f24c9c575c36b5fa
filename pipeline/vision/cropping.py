"""Face crops from illustrations: the cascade's boxes, grown by a margin, cut out square and resized;
or, in passthrough mode, images that already are faces, square-cropped. One process per core.

A file that cannot be decoded, or holds more pixels than scrape.max_pixels, is skipped and counted
under its reason; a worker process that dies (the kernel's OOM killer, a crash in a decoder) stops
the stage with one line naming the image it was reading, and so does a face that cannot be written
(a full disk). Every face is on the disk before the output folder is swapped in.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.core.files import atomic_path, fsync_directory, write_bytes
from pipeline.core.params import CropParams, PipelineError, ScrapeParams
from pipeline.core.workers import watched_map
from pipeline.data.formats import BOXES_FILE
from pipeline.vision.cascade import detect_faces, load_detector, resolve_cascade

log = logging.getLogger("pipeline.crop_faces")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
# Where a grown box leaves the picture, its edge pixels are repeated outwards: the padding
# continues the colours at the edge with no seam, where a constant colour would draw a hard bar
# (which the GAN learns to draw too) and a mirror would copy eyes and mouths into the margin.
PAD_BORDER = cv2.BORDER_REPLICATE

# What Pillow's plugins raise on damaged or hostile data, beside its "broken image" OSError and
# SyntaxError (a PNG chunk that breaks off, say): whichever it is, the file cannot be cropped.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                 struct.error, zlib.error)
UNREADABLE, TOO_MANY_PIXELS = "unreadable", "too_many_pixels"  # the reasons an image is skipped
CHUNK = 4  # images per task sent to a worker: fewer round trips, still an even spread

Box = tuple[int, int, int, int]  # x, y, w, h in source pixels


@dataclass(frozen=True)
class CropResult:
    source: str
    records: list[dict]
    skipped: str | None = None  # why the image was skipped: UNREADABLE or TOO_MANY_PIXELS
    error: str | None = None  # the details, for the log


class SkippedImage(Exception):
    """An image that is not cropped, and why: `reason` is a key of the stats' `skipped`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# A worker process's own state, set by _setup_worker: its detector and the pixel limit.
_detector: cv2.CascadeClassifier | None = None
_max_pixels = ScrapeParams.max_pixels


def _setup_worker(cascade_path: str | None, max_pixels: int) -> None:
    global _detector, _max_pixels
    cv2.setNumThreads(1)  # one image per process already uses every core
    # scrape.max_pixels, checked on the header, replaces Pillow's warning at its own higher limit
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    if cascade_path is not None:
        _detector = load_detector(Path(cascade_path))
    _max_pixels = max_pixels


def read_bgr(path: Path, max_pixels: int = ScrapeParams.max_pixels) -> np.ndarray:
    """Decode fully with Pillow, which raises on truncated files that OpenCV would half-read; but
    first the size on the header, so an image bomb (a small file of a huge picture) is refused
    before it is decoded. Raises SkippedImage with the reason."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise SkippedImage(TOO_MANY_PIXELS, f"{width}x{height} pixels, over the "
                                                    f"scrape.max_pixels limit of {max_pixels}")
            rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except Image.DecompressionBombError as exc:  # past Pillow's own limit, checked on opening
        raise SkippedImage(TOO_MANY_PIXELS, str(exc)) from exc
    except DECODE_ERRORS as exc:
        raise SkippedImage(UNREADABLE, f"{exc.__class__.__name__}: {exc}") from exc
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


def save_face(face: np.ndarray, path: Path) -> None:
    """The face as a PNG, its bytes on the disk before the stage swaps its output in (a power loss
    leaves no empty face under its name). A face that cannot be written stops the stage: a full disk
    would fail every face after it too, and a face set with holes is worse than the old one."""
    encoded, png = cv2.imencode(".png", face)
    if not encoded:
        raise PipelineError(f"crop_faces could not encode {path.name} as PNG; the previous output is "
                            "left as it was")
    try:
        write_bytes(path, png.tobytes())
    except OSError as exc:
        raise PipelineError(f"crop_faces could not write {path}: {exc.strerror or exc} (a full disk?); "
                            "the previous output is left as it was") from None


def crop_image(job: tuple[Path, Path, CropParams],
               max_pixels: int = ScrapeParams.max_pixels) -> CropResult:
    source, output, params = job
    try:
        bgr = read_bgr(source, max_pixels)
    except SkippedImage as exc:
        return CropResult(source.name, [], exc.reason, str(exc))
    height, width = bgr.shape[:2]
    records = []
    for k, (box, crop_box) in enumerate(face_boxes(bgr, params)):
        side = crop_box[2]
        face = cv2.resize(cut(bgr, crop_box), (params.size, params.size),
                          interpolation=cv2.INTER_AREA if side >= params.size else cv2.INTER_CUBIC)
        name = f"{source.stem}_{k}.png"
        save_face(face, output / name)
        records.append({"face": name, "source_image": source.name, "box": list(box),
                        "crop_box": list(crop_box), "size": params.size,
                        "image_width": width, "image_height": height})
    return CropResult(source.name, records)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PipelineError(f"{folder}: input folder not found; run the scrape stage first")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _crop_in_worker(job: tuple[Path, Path, CropParams]) -> CropResult:
    """crop_image in a worker, under the pixel limit its setup was given."""
    return crop_image(job, _max_pixels)


def crop_folder(params: CropParams, source: Path, output: Path,
                max_pixels: int) -> dict[str, int | dict[str, int]]:
    """Crop every image of `source` into `output`, replacing it only once all crops are written.
    `max_pixels` is scrape.max_pixels: larger images are skipped before they are decoded."""
    cascade = str(resolve_cascade(params.cascade)) if params.mode == "detect" else None
    images = list_images(source)
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    workers = params.workers or os.cpu_count() or 1
    skipped = {UNREADABLE: 0, TOO_MANY_PIXELS: 0}
    stats: dict = {"images": len(images), "unreadable": 0, "images_with_faces": 0, "faces": 0,
                   "faces_padded": 0, "skipped": skipped}
    jobs = [(path, staging, params) for path in images]
    with (watched_map(_crop_in_worker, jobs, [path.name for path in images], stage="crop_faces",
                      advice="killed for lack of memory? lower crop.workers or scrape.max_pixels, or "
                             "remove the file",
                      workers=workers, chunksize=CHUNK, setup=_setup_worker,
                      setup_args=(cascade, max_pixels)) as results,
          atomic_path(staging / BOXES_FILE) as boxes_file, boxes_file.open("w") as boxes):
        for result in tqdm(results, total=len(images), desc="crop_faces", unit="image"):
            if result.skipped:
                skipped[result.skipped] += 1
                log.warning("skipped %s, %s: %s", result.source, result.skipped, result.error)
                continue
            stats["images_with_faces"] += bool(result.records)
            stats["faces"] += len(result.records)
            for record in result.records:
                stats["faces_padded"] += leaves_image(record["crop_box"], record["image_width"],
                                                      record["image_height"])
                boxes.write(json.dumps(record) + "\n")
    stats["unreadable"] = skipped[UNREADABLE]  # the key of earlier runs, kept for comparisons
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)  # every face and boxes.jsonl are on the disk: this swaps in a whole set
    fsync_directory(output.parent)
    log.info("%d faces in %d of %d images (%d unreadable, %d over scrape.max_pixels, %d padded at "
             "the picture's edge)", stats["faces"], stats["images_with_faces"], stats["images"],
             skipped[UNREADABLE], skipped[TOO_MANY_PIXELS], stats["faces_padded"])
    return stats
