"""Stage scrape: download illustrations and their metadata from a booru, or take them from disk.

python -m pipeline.scrape [--output data/raw]

scrape.source picks the site adapter (pipeline/web/boorus.py) or a local folder or archive
(pipeline/sources/local.py); every site goes through the one polite session (pipeline/web/http.py).
The output folder is a growing collection: a rerun (after a kill, or with more pages) skips every
post it already holds, so nothing is fetched twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.files import write_json
from pipeline.core.params import read_section
from pipeline.sources.scraping import scrape


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0], "pipeline.scrape")
    parser.add_argument("--output", type=Path, default=Path("data/raw"),
                        help="folder for images/ and posts.jsonl (default: %(default)s)")
    parser.add_argument("--stats", type=Path, default=Path("data/raw/scrape_stats.json"),
                        help="counts of this run (default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("scrape", args.params)
    stats = scrape(params, args.output)
    write_json(args.stats, stats.summary())


if __name__ == "__main__":
    run_stage(main)
