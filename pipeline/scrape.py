"""Stage scrape: download illustrations and their metadata from a booru listing, politely.

python -m pipeline.scrape [--output data/raw]

The output folder is a growing collection: a rerun (after a kill, or with more pages) skips every
post it already holds, so nothing is fetched twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from pipeline.boorus import SITES, Post, moebooru_listing_url, parse_moebooru_listing
from pipeline.cli import run_stage, stage_parser
from pipeline.demo_booru import DemoBooru
from pipeline.files import write_bytes, write_json, write_text
from pipeline.http import CloudflareChallenge, FetchError, PoliteSession
from pipeline.params import ScrapeParams, read_section

log = logging.getLogger("pipeline.scrape")

MAX_IMAGE_BYTES = 64 * 1024 * 1024
FORMAT_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}


@dataclass
class ScrapeStats:
    pages: int = 0
    listed: int = 0
    downloaded: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    without_file: int = 0
    requests: int = 0
    robots_refused: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        summary = {k: v for k, v in vars(self).items() if k != "failures"}
        summary["failures"] = self.failures[:20]
        return summary


class Collection:
    """data/raw: images named <source>_<post id>.<ext> and posts.jsonl, one record per image."""

    def __init__(self, root: Path, source: str) -> None:
        self.images = root / "images"
        self.posts_file = root / "posts.jsonl"
        self.source = source
        self.images.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        if self.posts_file.is_file():
            for line in self.posts_file.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a torn last line from a killed run
                    continue
                self.records[record["file"]] = record
        others = sorted({r["source"] for r in self.records.values()} - {source})
        if others:
            log.warning("%s already holds posts from %s; they stay in the data set "
                        "(delete %s to start clean)", root, ", ".join(others), root)

    def stem(self, post: Post) -> str:
        return f"{self.source}_{post.id}"

    def existing_file(self, post: Post) -> Path | None:
        """A file already downloaded for this post, whose content still matches the listing."""
        for path in self.images.glob(f"{self.stem(post)}.*"):
            if post.md5 is None or hashlib.md5(path.read_bytes()).hexdigest() == post.md5:
                return path
        return None

    def known_md5s(self) -> set[str]:
        return {r["md5"] for r in self.records.values()}

    def add(self, post: Post, page_url: str, path: Path, md5: str, size: tuple[int, int]) -> None:
        record = {
            "file": path.name, "source": self.source, "id": post.id, "tags": list(post.tags),
            "rating": post.rating, "url": post.file_url, "page": page_url, "md5": md5,
            "width": size[0], "height": size[1],
        }
        self.records[path.name] = record
        with self.posts_file.open("a") as handle:  # appended at once: a kill loses no record
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def compact(self) -> None:
        """Rewrite posts.jsonl with one line per image, in a stable order."""
        lines = [json.dumps(self.records[name]) for name in sorted(self.records)]
        write_text(self.posts_file, "".join(line + "\n" for line in lines))


def decode_image(data: bytes) -> tuple[str, tuple[int, int]]:
    """Full decode, so a truncated or fake image is never kept; returns (suffix, size)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        suffix = FORMAT_SUFFIXES.get(image.format or "")
        if suffix is None:
            raise ValueError(f"unsupported image format {image.format}")
        return suffix, image.size


def download_post(session: PoliteSession, collection: Collection, post: Post, page_url: str,
                  stats: ScrapeStats) -> None:
    existing = collection.existing_file(post)
    if existing is not None:
        stats.skipped += 1
        if existing.name not in collection.records:  # killed between file and record
            data = existing.read_bytes()
            collection.add(post, page_url, existing, hashlib.md5(data).hexdigest(),
                           decode_image(data)[1])
        return
    if post.md5 is not None and post.md5 in collection.known_md5s():
        stats.duplicates += 1
        return
    try:
        data = session.get(post.file_url, max_bytes=MAX_IMAGE_BYTES, accept=("image/",)).content
        md5 = hashlib.md5(data).hexdigest()
        if post.md5 is not None and md5 != post.md5:
            raise ValueError(f"md5 {md5} does not match the listed {post.md5}")
        if md5 in collection.known_md5s():
            stats.duplicates += 1
            return
        suffix, size = decode_image(data)
    except CloudflareChallenge:
        raise
    except (FetchError, ValueError, OSError) as exc:
        stats.failed += 1
        stats.failures.append(f"post {post.id}: {exc}")
        log.warning("post %d failed: %s", post.id, exc)
        return
    path = collection.images / f"{collection.stem(post)}{suffix}"
    write_bytes(path, data)
    collection.add(post, page_url, path, md5, size)
    stats.downloaded += 1


@contextmanager
def site_url(params: ScrapeParams) -> Iterator[str]:
    """The base URL to scrape: the demo booru is started here and stopped afterwards."""
    if params.base_url:
        yield params.base_url
    elif params.source == "demo":
        with DemoBooru(seed=params.demo_seed) as booru:
            yield booru.url
    else:
        yield SITES[params.source]


def scrape(params: ScrapeParams, output: Path) -> ScrapeStats:
    collection = Collection(output, params.source)
    stats = ScrapeStats()
    session = PoliteSession(params.user_agent, rate=params.rate, timeout=params.timeout,
                            retries=params.retries)
    progress = tqdm(total=params.max_posts or None, desc="scrape", unit="post")
    try:
        with site_url(params) as base_url, session:
            for page in range(1, params.pages + 1):
                page_url = moebooru_listing_url(base_url, page, params.tags)
                listing = parse_moebooru_listing(session.get(page_url).text, page_url)
                stats.pages += 1
                stats.without_file += listing.without_file
                for post in listing.posts:
                    if params.max_posts and stats.listed >= params.max_posts:
                        break
                    stats.listed += 1
                    download_post(session, collection, post, page_url, stats)
                    progress.update()
                if not listing.has_next or (params.max_posts and stats.listed >= params.max_posts):
                    break
    finally:
        progress.close()
        stats.requests = session.requests_sent
        stats.robots_refused = session.robots_refused
        collection.compact()
    log.info("%d listed: %d downloaded, %d already here, %d duplicates, %d failed (%d requests)",
             stats.listed, stats.downloaded, stats.skipped, stats.duplicates, stats.failed,
             stats.requests)
    return stats


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
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
