"""The files that pass faces between stages: crop_faces' boxes.jsonl and the manifest CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.core.params import PipelineError

BOXES_FILE = "boxes.jsonl"  # beside the face crops: one JSON record per face
MANIFEST_FIELDS = (
    "path", "sha256", "post_id", "source_image", "tags", "box", "width", "height", "split",
    "faces_in_image",
)
# faces_in_image (faces the cascade found in the face's picture) came later: without it, a face's
# labels trust only the `solo` tag
REQUIRED_FIELDS = MANIFEST_FIELDS[:-1]
# csv refuses a field over 131,072 characters by default. A face's tags are bounded well under
# that now (pipeline/sources/sidecars.py), but a manifest made before may hold a longer tags field
MANIFEST_FIELD_MAX_CHARS = 1 << 30


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    csv.field_size_limit(max(csv.field_size_limit(), MANIFEST_FIELD_MAX_CHARS))  # only ever raised
    if not path.is_file():
        raise PipelineError(f"{path}: manifest not found; run the manifest stage first")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(REQUIRED_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise PipelineError(f"{path}: not a face manifest (missing columns {sorted(missing)})")
        return list(reader)


def split_rows(manifest_path: str | Path, split: str) -> list[dict[str, str]]:
    return [row for row in read_manifest(manifest_path) if row["split"] == split]
