"""Stage manifest: one row per unique face, with its post's tags and a stable train/val split.

python -m pipeline.manifest [--input data/faces] [--posts data/raw/posts.jsonl]
                            [--output data/manifest.csv]

Faces are filtered (source face size, post tags) first, then exact copies (sha256) and near copies
(perceptual hash within manifest.dedup_distance bits of a kept face) are dropped, the first kept.
The stats count the faces labelled per value of each group of train.conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.files import write_json
from pipeline.core.params import read_section
from pipeline.data.curation import build_manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0], "pipeline.manifest")
    parser.add_argument("--input", type=Path, default=Path("data/faces"),
                        help="folder of face crops with boxes.jsonl (default: %(default)s)")
    parser.add_argument("--posts", type=Path, default=Path("data/raw/posts.jsonl"),
                        help="scraped post metadata for tags (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("data/manifest.csv"),
                        help="manifest CSV (default: %(default)s)")
    parser.add_argument("--stats", type=Path, default=Path("data/manifest_stats.json"),
                        help="counts of faces and posts per split, and of dropped faces "
                             "(default: %(default)s)")
    parser.add_argument("--tags", type=Path, default=Path("data/tag_counts.json"),
                        help="faces per tag (default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("manifest", args.params)
    conditions = read_section("train", args.params).conditions  # for the labelled-faces counts
    stats, tags = build_manifest(params, args.input, args.posts, args.output, conditions)
    write_json(args.stats, stats)
    write_json(args.tags, tags)


if __name__ == "__main__":
    run_stage(main)
