"""A clean face set: filtered by face size and post tags, exact and near copies (perceptual hash)
dropped, the first kept, each face given a stable train/val split."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from pipeline.core.files import atomic_path
from pipeline.core.params import ManifestParams, PipelineError
from pipeline.core.workers import watched_map
from pipeline.data.formats import BOXES_FILE, MANIFEST_FIELDS
from pipeline.data.labels import Conditions, label_counts

log = logging.getLogger("pipeline.manifest")

HASH_CHUNK = 64  # faces per task sent to a worker: a face takes well under a millisecond


def near_duplicates(phashes: Sequence[int], distance: int) -> list[bool]:
    """For each 64-bit hash in order: is it within `distance` bits of an earlier one that was kept?

    A vectorised scan (XOR and popcount against every kept hash) rather than a BK-tree or bucketed
    index: exact at every distance, 1-2 s for 50k distinct faces (hashing them takes 20x longer),
    where a pigeonhole-bucketed index was no faster at distance 4 and 10x slower at 8 on real,
    clustered hashes.
    """
    kept = np.empty(len(phashes), dtype=np.uint64)
    count = 0
    near = []
    for value in phashes:
        bits_apart = np.bitwise_count(kept[:count] ^ np.uint64(value))
        is_near = bool(count) and int(bits_apart.min()) <= distance
        if not is_near:
            kept[count] = value
            count += 1
        near.append(is_near)
    return near


def perceptual_hash(image: Image.Image) -> int:
    """64-bit pHash: what makes two faces near copies, here and in evaluate's memorisation check."""
    return int(str(imagehash.phash(image)), 16)


def within_distance(queries: Sequence[int], kept: Sequence[int], distance: int) -> list[bool]:
    """For each query hash: is some hash of `kept` within `distance` bits of it?"""
    pool = np.asarray(kept, dtype=np.uint64)
    if not len(pool):
        return [False] * len(queries)
    return [int(np.bitwise_count(pool ^ np.uint64(q)).min()) <= distance for q in queries]


def split_of(source_image: str, val_fraction: float) -> str:
    """The split of every face of one illustration (one post; a local image is its own post), from a
    hash of its file name: faces of one picture never sit on both sides, and a post keeps its split
    when the data set grows."""
    digest = hashlib.sha256(source_image.encode()).hexdigest()
    return "val" if int(digest[:8], 16) / 0x1_0000_0000 < val_fraction else "train"


def read_posts(path: Path | None) -> dict[str, dict]:
    """Scraped posts keyed by image file name; a torn last line (killed scrape) is skipped."""
    if path is None or not path.is_file():
        return {}
    posts = {}
    for line in path.read_text().splitlines():
        try:
            post = json.loads(line)
        except json.JSONDecodeError:
            continue
        posts[post["file"]] = post
    return posts


def read_boxes(faces: Path) -> list[dict]:
    boxes = faces / BOXES_FILE
    if not boxes.is_file():
        raise PipelineError(f"{boxes} not found; run the crop_faces stage first")
    return [json.loads(line) for line in boxes.read_text().splitlines() if line.strip()]


def drop_reason(record: dict, post: dict, params: ManifestParams) -> str | None:
    """The stats key a face is filtered out under before any hashing, or None to keep it."""
    if min(record["box"][2:]) < params.min_face_size:
        return "too_small"
    tags = set(post.get("tags", ()))
    if not tags.issuperset(params.include_tags) or not tags.isdisjoint(params.exclude_tags):
        return "tag_filtered"
    return None


def face_hashes(path: Path) -> tuple[str, int]:
    """sha256 (exact copies, and the split) and 64-bit pHash (near copies) of one face file."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            phash = perceptual_hash(image)
    except OSError as exc:
        raise PipelineError(f"{path}: face listed in {BOXES_FILE} is unreadable "
                            f"({exc.__class__.__name__}); rerun the crop_faces stage") from None
    return hashlib.sha256(data).hexdigest(), phash


def hash_faces(paths: list[Path]) -> list[tuple[str, int]]:
    """Hashes of every face on all cores: decoding and the DCT cost about 0.6 ms a face. A worker
    that dies stops the stage with one line naming the face it was reading."""
    workers = os.cpu_count() or 1
    chunk = max(1, min(HASH_CHUNK, len(paths) // (4 * workers)))  # few faces: still every core
    with watched_map(face_hashes, paths, [path.name for path in paths], stage="manifest",
                     advice="killed for lack of memory? free some, or rerun the crop_faces stage "
                            "if the face file is damaged",
                     workers=workers, chunksize=chunk) as hashes:
        return list(hashes)


def manifest_row(record: dict, post: dict, digest: str, face_path: Path, output: Path,
                 val_fraction: float, faces_in_image: int) -> dict:
    return {
        "path": os.path.relpath(face_path, output.parent),
        "sha256": digest,
        "post_id": post.get("id", ""),
        "source_image": record["source_image"],
        "tags": " ".join(post.get("tags", [])),
        "box": " ".join(str(v) for v in record["box"]),
        "width": record["size"],
        "height": record["size"],
        "split": split_of(record["source_image"], val_fraction),
        "faces_in_image": faces_in_image,
    }


def filter_faces(records: list[dict], posts: dict[str, dict],
                 params: ManifestParams) -> tuple[list[dict], Counter[str]]:
    """The records that pass the size and tag filters, and how many each filter dropped."""
    kept, dropped = [], Counter({"too_small": 0, "tag_filtered": 0})
    for record in records:
        reason = drop_reason(record, posts.get(record["source_image"], {}), params)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(record)
    return kept, dropped


def drop_copies(records: list[dict], hashes: list[tuple[str, int]],
                distance: int) -> tuple[list[tuple[dict, str]], Counter[str]]:
    """(record, sha256) of the first face of every group of copies, and how many copies were dropped:
    exact ones by sha256 first, then near ones by pHash (distance -1: none)."""
    seen: set[str] = set()
    unique = []
    for record, (digest, phash) in zip(records, hashes, strict=True):
        if digest not in seen:
            seen.add(digest)
            unique.append((record, digest, phash))
    phashes = [phash for _, _, phash in unique]
    near = near_duplicates(phashes, distance) if distance >= 0 else [False] * len(unique)
    kept = [(record, digest) for (record, digest, _), is_near in zip(unique, near, strict=True)
            if not is_near]
    return kept, Counter({"duplicates_dropped": len(records) - len(unique),
                          "near_duplicates_dropped": sum(near)})


def build_manifest(params: ManifestParams, faces: Path, posts_path: Path | None, output: Path,
                   conditions: Conditions) -> tuple[dict, dict[str, int]]:
    """Write the manifest; return its stats (counts worth comparing across experiments, with the
    faces labelled per value of each condition group) and the number of faces per tag, most common
    first (a data description, not a metric)."""
    posts = read_posts(posts_path)
    records = read_boxes(faces)
    # counted before any filter: a face dropped as too small or a near copy was still in the picture
    per_image = Counter(record["source_image"] for record in records)
    wanted, filtered = filter_faces(records, posts, params)
    hashes = hash_faces([faces / record["face"] for record in wanted])
    unique, copies = drop_copies(wanted, hashes, params.dedup_distance)
    rows = [manifest_row(record, posts.get(record["source_image"], {}), digest,
                         faces / record["face"], output, params.val_fraction,
                         per_image[record["source_image"]])
            for record, digest in unique]
    with atomic_path(output) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tags = Counter(tag for row in rows for tag in row["tags"].split())
    splits = Counter(row["split"] for row in rows)
    log.info("%d faces (%d train, %d val); dropped %d too small, %d by tag, %d exact and %d near "
             "duplicates", len(rows), splits["train"], splits["val"], filtered["too_small"],
             filtered["tag_filtered"], copies["duplicates_dropped"], copies["near_duplicates_dropped"])
    stats = {"faces": len(rows), **filtered, **copies,
             "split": {"train": splits["train"], "val": splits["val"]},
             "posts": {split: len({row["source_image"] for row in rows if row["split"] == split})
                       for split in ("train", "val")},
             "labels": label_counts([{k: str(v) for k, v in row.items()} for row in rows],
                                    conditions)}
    return stats, dict(tags.most_common())
