"""Stage crop_faces: find anime faces with lbpcascade_animeface and save each as a square crop.

python -m pipeline.crop_faces [--input data/raw/images] [--output data/faces]

crop.mode passthrough takes images that already are faces (a local face set): each is centre-cropped
to a square and resized, and no cascade is needed. scrape.max_pixels, the decoded-pixel limit of the
scrape, guards this stage too: a larger image is skipped before it is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.files import write_json
from pipeline.core.params import read_section
from pipeline.vision.cropping import crop_folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0], "pipeline.crop_faces")
    parser.add_argument("--input", type=Path, default=Path("data/raw/images"),
                        help="folder of illustrations (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("data/faces"),
                        help="folder for the face crops and boxes.jsonl (default: %(default)s)")
    parser.add_argument("--stats", type=Path, default=Path("data/crop_stats.json"),
                        help="counts of images, faces, padded faces and skipped files "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("crop", args.params)
    max_pixels = read_section("scrape", args.params).max_pixels
    stats = crop_folder(params, args.input, args.output, max_pixels)
    write_json(args.stats, stats)


if __name__ == "__main__":
    run_stage(main)
