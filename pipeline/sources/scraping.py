"""The scrape stage's engine: every source into the collection. A site's listing pages (the demo
booru's too, started here) through its adapter, or the files of a local folder or archive.

Every site goes through the one polite session (pipeline/web/http.py); downloads run in threads
inside its per-host rate limit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from tqdm import tqdm

from pipeline.core.params import ScrapeParams
from pipeline.demo.booru import DemoBooru
from pipeline.sources.collection import DUPLICATE, SKIPPED, Collection, Outcome, ScrapeStats, md5_of
from pipeline.sources.local import Member, local_images
from pipeline.web.boorus import SITES, Adapter, Listing, Post
from pipeline.web.http import CloudflareChallenge, FetchError, PoliteSession

log = logging.getLogger("pipeline.scrape")

LISTING_MAX_BYTES = 20 * 1024 * 1024  # a listing page or API answer; more is not a listing
LOCAL_NAME_HEX = 16  # sha1 hex digits in local_<sha1>.<ext>: unique for any real data set


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
        if expected is not None and md5_of(data) != expected:  # both lower-case hex
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


def count_malformed(listing: Listing, page_url: str, stats: ScrapeStats) -> None:
    """Posts skipped for their shape: all counted, one log line and one failure reason a page,
    however many a hostile page holds."""
    if not listing.malformed:
        return
    count = len(listing.malformed)
    reason = f"{page_url}: {count} malformed post(s) skipped, first: {listing.malformed[0]}"
    log.warning("%s", reason)
    stats.malformed += count
    stats.failures.append(reason)


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
    site = SITES[params.source]
    adapter = site.adapter(params.api)
    session = PoliteSession(params.user_agent, rate=params.rate or site.rate, timeout=params.timeout,
                            deadline=params.deadline, retries=params.retries)
    seen: set[int] = set()
    progress = tqdm(total=params.max_posts or None, desc="scrape", unit="post")
    try:
        with site_url(params) as base_url, session, ThreadPoolExecutor(params.workers) as pool:
            for page_url, listing in listing_pages(session, adapter, base_url, params):
                stats.pages += 1
                stats.without_file += listing.without_file
                count_malformed(listing, page_url, stats)
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


def import_member(collection: Collection, member: Member, recorded: set[str] | None = None) -> Outcome:
    """One local file into the collection, named by its content, with its tags. A file already
    held takes the tags its source gives now (sidecars added or edited since the last run), unless
    this run has already recorded the same picture under another name: as that first name stays,
    so do its tags. `recorded` collects the digests this run has recorded."""
    if member.data is None:
        log.warning("%s refused: %s", member.name, member.problem)
        return Outcome("failed", f"{member.name}: {member.problem}")
    digest = hashlib.sha1(member.data).hexdigest()[:LOCAL_NAME_HEX]
    stem = f"local_{digest}"
    record = {"source": "local", "id": digest, "tags": list(member.tags), "rating": "",
              "url": member.name, "page": None, "post_md5": None}
    first = recorded is None or digest not in recorded
    try:
        if existing := collection.existing(stem, None):
            held = collection.records.get(existing.name)
            if held is None:
                collection.adopt(existing, record)  # a file whose record a killed run did not write
            elif first and held.get("tags") != record["tags"]:
                collection.keep(stem, member.data, record)  # the same file, recorded anew
            outcome = SKIPPED
        else:
            outcome = collection.keep(stem, member.data, record)
    except (ValueError, OSError) as exc:
        log.warning("%s failed: %s", member.name, exc)
        return Outcome("failed", f"{member.name}: {exc}")
    if recorded is not None:
        recorded.add(digest)
    return outcome


def scrape_local(params: ScrapeParams, collection: Collection) -> ScrapeStats:
    """scrape.local_path into the collection: no network, each image decoded like a download."""
    stats = ScrapeStats()
    assert params.local_path is not None  # validated: source local requires it
    members = local_images(Path(params.local_path), params.max_bytes)
    recorded: set[str] = set()
    with tqdm(members, desc="import", unit="file") as progress:
        for member in progress:
            if params.max_posts and stats.listed >= params.max_posts:
                break
            stats.listed += 1
            for problem in member.bad_sidecars:  # the image goes on without these tags
                log.warning("sidecar %s; its tags are not used", problem)
                stats.bad_sidecars += 1
            stats.count(import_member(collection, member, recorded))
    return stats


def scrape(params: ScrapeParams, output: Path) -> ScrapeStats:
    collection = Collection(output, params.source, max_pixels=params.max_pixels)
    try:
        stats = (scrape_local if params.source == "local" else scrape_site)(params, collection)
    finally:
        collection.compact()
    log.info("%d listed: %d downloaded, %d already here, %d duplicates, %d failed, %d of other "
             "ratings, %d malformed (%d requests)", stats.listed, stats.downloaded, stats.skipped,
             stats.duplicates, stats.failed, stats.filtered, stats.malformed, stats.requests)
    return stats

