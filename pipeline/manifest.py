"""Stage manifest: one row per unique face, with its post's tags and a stable train/val split.

python -m pipeline.manifest [--input data/faces] [--posts data/raw/posts.jsonl]
                            [--output data/manifest.csv]
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import run_stage, stage_parser
from pipeline.crop_faces import BOXES_FILE
from pipeline.dataset import MANIFEST_FIELDS
from pipeline.files import atomic_path, write_json
from pipeline.params import ManifestParams, PipelineError, read_section

log = logging.getLogger("pipeline.manifest")

TOP_TAGS = 25  # metrics files with thousands of tag columns would swamp `dvc exp show`


def split_of(sha256: str, val_fraction: float) -> str:
    """Deterministic from the face's content, so a face keeps its split when the data set grows."""
    return "val" if int(sha256[:8], 16) / 0x1_0000_0000 < val_fraction else "train"


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


def build_manifest(params: ManifestParams, faces: Path, posts_path: Path | None,
                   output: Path) -> dict:
    posts = read_posts(posts_path)
    rows, seen = [], set()
    duplicates = 0
    for record in read_boxes(faces):
        face_path = faces / record["face"]
        digest = hashlib.sha256(face_path.read_bytes()).hexdigest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        post = posts.get(record["source_image"], {})
        rows.append({
            "path": os.path.relpath(face_path, output.parent),
            "sha256": digest,
            "post_id": post.get("id", ""),
            "source_image": record["source_image"],
            "tags": " ".join(post.get("tags", [])),
            "box": " ".join(str(v) for v in record["box"]),
            "width": record["size"],
            "height": record["size"],
            "split": split_of(digest, params.val_fraction),
        })
    with atomic_path(output) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tags = Counter(tag for row in rows for tag in row["tags"].split())
    splits = Counter(row["split"] for row in rows)
    stats = {
        "faces": len(rows),
        "duplicates_dropped": duplicates,
        "split": {"train": splits["train"], "val": splits["val"]},
        "tags": dict(tags.most_common(TOP_TAGS)),
    }
    log.info("%d faces (%d train, %d val), %d exact duplicates dropped", len(rows),
             splits["train"], splits["val"], duplicates)
    return stats


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("data/faces"),
                        help="folder of face crops with boxes.jsonl (default: %(default)s)")
    parser.add_argument("--posts", type=Path, default=Path("data/raw/posts.jsonl"),
                        help="scraped post metadata for tags (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("data/manifest.csv"),
                        help="manifest CSV (default: %(default)s)")
    parser.add_argument("--stats", type=Path, default=Path("data/manifest_stats.json"),
                        help="counts per split and tag (default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("manifest", args.params)
    stats = build_manifest(params, args.input, args.posts, args.output)
    write_json(args.stats, stats)


if __name__ == "__main__":
    run_stage(main)
