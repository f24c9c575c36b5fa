"""Stage scrape: download illustrations and their metadata from a booru, or take them from disk.

python -m pipeline.scrape [--output data/raw]

scrape.source picks the site adapter (pipeline/boorus.py) or a local folder or archive
(pipeline/local_source.py); every site goes through the one polite session (pipeline/http.py).
The output folder is a growing collection: a rerun (after a kill, or with more pages) skips every
post it already holds, so nothing is fetched twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from pipeline.boorus import SITES, Adapter, Listing, Post
from pipeline.cli import run_stage, stage_parser
from pipeline.demo_booru import DemoBooru
from pipeline.files import remove_stale_temporaries, write_bytes, write_json, write_text
from pipeline.http import CloudflareChallenge, FetchError, PoliteSession
from pipeline.local_source import Member, local_images
from pipeline.params import ScrapeParams, read_section

log = logging.getLogger("pipeline.scrape")

LISTING_MAX_BYTES = 20 * 1024 * 1024  # a listing page or API answer; more is not a listing
FORMAT_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
LOCAL_NAME_HEX = 16  # sha1 hex digits in local_<sha1>.<ext>: unique for any real data set


@dataclass(frozen=True)
class Outcome:
    """What became of one post: the ScrapeStats counter it adds to, and why when it failed."""
    counter: str
    failure: str | None = None


DOWNLOADED, SKIPPED, DUPLICATE = Outcome("downloaded"), Outcome("skipped"), Outcome("duplicates")


@dataclass
class ScrapeStats:
    pages: int = 0
    listed: int = 0  # posts taken: downloaded + skipped + duplicates + failed
    downloaded: int = 0
    skipped: int = 0  # already in the collection
    duplicates: int = 0  # the same picture as another post
    repeated: int = 0  # a post listed again on a later page (pages shift as posts are added)
    filtered: int = 0  # of a rating not in scrape.ratings
    failed: int = 0
    without_file: int = 0  # listed without a file: deleted, or hidden from anonymous users
    requests: int = 0
    robots_refused: int = 0
    failures: list[str] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome.counter, getattr(self, outcome.counter) + 1)
        if outcome.failure is not None:
            self.failures.append(outcome.failure)

    def summary(self) -> dict:
        summary = {k: v for k, v in vars(self).items() if k != "failures"}
        summary["failures"] = self.failures[:20]
        return summary


def decode_image(data: bytes) -> tuple[str, tuple[int, int]]:
    """Full decode, so a truncated or fake image is never kept; returns (suffix, size)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            suffix = FORMAT_SUFFIXES.get(image.format or "")
            size = image.size
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # Pillow's "broken image"
        raise ValueError(f"not a readable image ({exc})") from exc
    if suffix is None:
        raise ValueError(f"unsupported image format {image.format}")
    return suffix, size


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Collection:
    """data/raw: images named <source>_<post id>.<ext> (local_<sha1>.<ext> for local files) and
    posts.jsonl, one record per image. Thread-safe: download threads share one."""

    def __init__(self, root: Path, source: str) -> None:
        self.images = root / "images"
        self.posts_file = root / "posts.jsonl"
        self.source = source
        self.images.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.images)  # a killed run's half-written download
        self.records: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.posts_file.is_file():
            for line in self.posts_file.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a torn last line from a killed run
                    continue
                self.records[record["file"]] = record
        # md5 -> file, for the files kept and the originals their posts listed: a post whose
        # picture is either, under another name, is a duplicate
        self._owners: dict[str, str] = {}
        for record in self.records.values():
            self._own(record)
        self._on_disk: dict[str, list[Path]] = {}  # stem -> files; one listing, not one per post
        for path in sorted(self.images.iterdir()):
            if not path.name.startswith("."):  # temporary files of a killed run
                self._on_disk.setdefault(path.stem, []).append(path)
        others = sorted({r["source"] for r in self.records.values()} - {source})
        if others:
            log.warning("%s already holds posts from %s; they stay in the data set "
                        "(delete %s to start clean)", root, ", ".join(others), root)

    def stem(self, post: Post) -> str:
        return f"{self.source}_{post.id}"

    def existing(self, stem: str, post_md5: str | None) -> Path | None:
        """The file already kept under `stem`, if it is intact (its md5 is the recorded one) and
        its post unchanged on the site (the listed md5 is the one recorded with it). A file with
        no record yet (killed between the two) was checked before it got its name: it counts."""
        with self._lock:
            candidates = [(path, self.records.get(path.name)) for path in self._on_disk.get(stem, [])]
        for path, record in candidates:
            if record is None:
                return path
            listed = record.get("post_md5", record["md5"])  # older records: originals only
            unchanged = post_md5 is None or listed is None or listed == post_md5
            if unchanged and md5_of(path.read_bytes()) == record["md5"]:
                return path
        return None

    def held_elsewhere(self, md5: str | None, stem: str) -> bool:
        """Whether another post of the collection has this picture."""
        with self._lock:
            return self._held_elsewhere(md5, stem)

    def adopt(self, path: Path, record: dict) -> None:
        """Write the record a killed run did not get to write for a kept file."""
        if path.name in self.records:
            return
        data = path.read_bytes()
        width, height = decode_image(data)[1]
        with self._lock:
            self._append({**record, "file": path.name, "md5": md5_of(data), "width": width,
                          "height": height})

    def keep(self, stem: str, data: bytes, record: dict) -> Outcome:
        """Decode `data`, then write it under its final name with its record, unless the same
        picture is already here. Replaces an older version of the same post."""
        md5 = md5_of(data)
        suffix, (width, height) = decode_image(data)
        with self._lock:
            if self._held_elsewhere(md5, stem):
                return DUPLICATE
            path = self.images / f"{stem}{suffix}"
            write_bytes(path, data)
            for old in self._on_disk.get(stem, []):
                if old != path:
                    old.unlink(missing_ok=True)
                    self.records.pop(old.name, None)
            self._on_disk[stem] = [path]
            self._append({**record, "file": path.name, "md5": md5, "width": width,
                          "height": height})
        return DOWNLOADED

    def _held_elsewhere(self, md5: str | None, stem: str) -> bool:
        owner = self._owners.get(md5) if md5 else None
        return owner is not None and not owner.startswith(f"{stem}.")

    def _own(self, record: dict) -> None:
        for md5 in (record["md5"], record.get("post_md5")):
            if md5:
                self._owners[md5] = record["file"]

    def _append(self, record: dict) -> None:
        self.records[record["file"]] = record
        self._own(record)
        with self.posts_file.open("a") as handle:  # appended at once: a kill loses no record
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def compact(self) -> None:
        """Rewrite posts.jsonl with one line per image, in a stable order."""
        lines = [json.dumps(self.records[name]) for name in sorted(self.records)]
        write_text(self.posts_file, "".join(line + "\n" for line in lines))


def fetch_post(session: PoliteSession, collection: Collection, post: Post, kind: str,
               page_url: str, max_bytes: int) -> Outcome:
    """Download one post's file unless the collection has it; every check before it is kept."""
    url = post.url(kind)
    stem = collection.stem(post)
    record = {"source": collection.source, "id": post.id, "tags": list(post.tags),
              "rating": post.rating, "url": url, "page": page_url, "post_md5": post.md5}
    try:
        if existing := collection.existing(stem, post.md5):
            collection.adopt(existing, record)
            return SKIPPED
        if collection.held_elsewhere(post.md5, stem):
            return DUPLICATE
        data = session.get(url, max_bytes=max_bytes, accept=("image/",)).content
        expected = post.expected_md5(url)
        if expected is not None and md5_of(data) != expected:
            raise ValueError(f"md5 {md5_of(data)} does not match the listed {expected}")
        return collection.keep(stem, data, record)
    except CloudflareChallenge:
        raise
    except (FetchError, ValueError, OSError) as exc:
        log.warning("post %d failed: %s", post.id, exc)
        return Outcome("failed", f"post {post.id}: {exc}")


def fetch_all(pool: ThreadPoolExecutor, fetch: Callable[[Post], Outcome],
              posts: list[Post]) -> Iterator[Outcome]:
    """Outcomes as downloads finish. Once one raises (a Cloudflare challenge), no other download
    starts, so the run stops with that error after the few already in flight."""
    stop = threading.Event()

    def guarded(post: Post) -> Outcome | None:
        if stop.is_set():
            return None
        try:
            return fetch(post)
        except BaseException:
            stop.set()
            raise

    futures = [pool.submit(guarded, post) for post in posts]
    try:
        for future in as_completed(futures):
            if (outcome := future.result()) is not None:
                yield outcome
    finally:
        stop.set()
        for future in futures:
            future.cancel()


def listing_pages(session: PoliteSession, adapter: Adapter, base_url: str,
                  params: ScrapeParams) -> Iterator[tuple[str, Listing]]:
    """Pages from first_page until an empty or last one, or `pages` of them."""
    lowest_id = None
    for page in range(params.first_page, params.first_page + params.pages):
        url = adapter.page_url(base_url, params.tags, page, lowest_id)
        # boorus serve UTF-8, whatever their Content-Type says or leaves out
        body = session.get(url, max_bytes=LISTING_MAX_BYTES).content.decode("utf-8", "replace")
        listing = adapter.parse(body, url)
        yield url, listing
        if not listing.has_next:
            return
        lowest_id = min((x for x in (lowest_id, listing.lowest_id) if x is not None), default=None)


def wanted_posts(listing: Listing, params: ScrapeParams, seen: set[int],
                 stats: ScrapeStats) -> list[Post]:
    """The posts of a page to fetch: not seen before in this run, of a wanted rating, within
    max_posts."""
    wanted = []
    for post in listing.posts:
        if post.id in seen:
            stats.repeated += 1
        elif post.rating not in params.ratings:
            stats.filtered += 1
        elif params.max_posts and stats.listed >= params.max_posts:
            break
        else:
            stats.listed += 1
            wanted.append(post)
        seen.add(post.id)
    return wanted


@contextmanager
def site_url(params: ScrapeParams) -> Iterator[str]:
    """The base URL to scrape: the demo booru is started here and stopped afterwards."""
    if params.base_url:
        yield params.base_url
    elif params.source == "demo":
        with DemoBooru(seed=params.demo_seed) as booru:
            yield booru.url
    else:
        yield SITES[params.source].default_url


def scrape_site(params: ScrapeParams, collection: Collection) -> ScrapeStats:
    stats = ScrapeStats()
    adapter = SITES[params.source].adapter(params.api)
    session = PoliteSession(params.user_agent, rate=params.rate, timeout=params.timeout,
                            retries=params.retries)
    seen: set[int] = set()
    progress = tqdm(total=params.max_posts or None, desc="scrape", unit="post")
    try:
        with site_url(params) as base_url, session, ThreadPoolExecutor(params.workers) as pool:
            for page_url, listing in listing_pages(session, adapter, base_url, params):
                stats.pages += 1
                stats.without_file += listing.without_file
                posts = wanted_posts(listing, params, seen, stats)
                fetch = partial(fetch_post, session, collection, kind=params.file,
                                page_url=page_url, max_bytes=params.max_bytes)
                for outcome in fetch_all(pool, fetch, posts):
                    stats.count(outcome)
                    progress.update()
                if params.max_posts and stats.listed >= params.max_posts:
                    break
    finally:
        progress.close()
        stats.requests = session.requests_sent
        stats.robots_refused = session.robots_refused
    return stats


def import_member(collection: Collection, member: Member) -> Outcome:
    """One local file into the collection, named by its content."""
    if member.data is None:
        log.warning("%s refused: %s", member.name, member.problem)
        return Outcome("failed", f"{member.name}: {member.problem}")
    digest = hashlib.sha1(member.data).hexdigest()[:LOCAL_NAME_HEX]
    record = {"source": "local", "id": digest, "tags": [], "rating": "", "url": member.name,
              "page": None, "post_md5": None}
    try:
        if collection.existing(f"local_{digest}", None):
            return SKIPPED
        return collection.keep(f"local_{digest}", member.data, record)
    except (ValueError, OSError) as exc:
        log.warning("%s failed: %s", member.name, exc)
        return Outcome("failed", f"{member.name}: {exc}")


def scrape_local(params: ScrapeParams, collection: Collection) -> ScrapeStats:
    """scrape.local_path into the collection: no network, each image decoded like a download."""
    stats = ScrapeStats()
    assert params.local_path is not None  # validated: source local requires it
    members = local_images(Path(params.local_path), params.max_bytes)
    with tqdm(members, desc="import", unit="file") as progress:
        for member in progress:
            if params.max_posts and stats.listed >= params.max_posts:
                break
            stats.listed += 1
            stats.count(import_member(collection, member))
    return stats


def scrape(params: ScrapeParams, output: Path) -> ScrapeStats:
    collection = Collection(output, params.source)
    try:
        stats = (scrape_local if params.source == "local" else scrape_site)(params, collection)
    finally:
        collection.compact()
    log.info("%d listed: %d downloaded, %d already here, %d duplicates, %d failed, %d of other "
             "ratings (%d requests)", stats.listed, stats.downloaded, stats.skipped,
             stats.duplicates, stats.failed, stats.filtered, stats.requests)
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
