"""data/raw as a growing collection: images named by their post, and posts.jsonl, one record each.

A rerun (after a kill, or with more pages) finds every post it already holds, so nothing is
fetched twice; a picture already held under another post is a duplicate.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pipeline.core.files import remove_stale_temporaries, write_bytes, write_text
from pipeline.core.params import ScrapeParams
from pipeline.web.boorus import Post

log = logging.getLogger("pipeline.scrape")

FORMAT_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
# What Pillow's plugins raise on damaged or hostile data, beside its "broken image" OSError and
# SyntaxError: a file that raises any of them is not a picture worth keeping.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                 struct.error, zlib.error)
# scrape.max_pixels, checked on the header before decoding, replaces Pillow's warning at its own
# (higher) limit, which would only add lines to the log
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


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
    malformed: int = 0  # listed in a shape no post has (an id that is not a number, ...): skipped
    bad_sidecars: int = 0  # local: tag files not used (not UTF-8 or JSON, too large): images kept
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


def decode_image(data: bytes, max_pixels: int = ScrapeParams.max_pixels) -> tuple[str, tuple[int, int]]:
    """Full decode, so a truncated or fake image is never kept; but first the size on the header,
    so an image bomb (a small file of a huge picture) is refused before it is decoded. Returns
    (suffix, size); raises ValueError with the reason."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # past Pillow's own limit, checked on opening
        raise ValueError(f"too many pixels ({exc})") from exc
    except DECODE_ERRORS as exc:
        raise ValueError(f"not a readable image ({exc})") from exc
    with image:
        suffix = FORMAT_SUFFIXES.get(image.format or "")
        if suffix is None:
            raise ValueError(f"unsupported image format {image.format}")
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(f"{width}x{height} pixels, over the scrape.max_pixels limit of "
                             f"{max_pixels}")
        try:
            image.load()
        except DECODE_ERRORS as exc:
            raise ValueError(f"not a readable image ({exc})") from exc
    return suffix, (width, height)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Collection:
    """data/raw: images named <source>_<post id>.<ext> (local_<sha1>.<ext> for local files) and
    posts.jsonl, one record per image. Thread-safe: download threads share one. `max_pixels` is
    scrape.max_pixels: no picture larger is decoded or kept."""

    def __init__(self, root: Path, source: str, max_pixels: int = ScrapeParams.max_pixels) -> None:
        self.images = root / "images"
        self.posts_file = root / "posts.jsonl"
        self.source = source
        self.max_pixels = max_pixels
        self.images.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.images)  # a killed run's half-written download
        self.records: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.posts_file.is_file():
            for line in _cut_torn_tail(self.posts_file).splitlines():
                if (record := _record(line)) is not None:
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
        no record yet (killed between the two) counts if it decodes whole; one that does not (the
        power went before its bytes reached the disk) is deleted, to be fetched again."""
        with self._lock:
            candidates = [(path, self.records.get(path.name)) for path in self._on_disk.get(stem, [])]
        for path, record in candidates:
            if record is None:
                if self._decodes(path):
                    return path
                continue
            listed = record.get("post_md5", record["md5"])  # older records: originals only
            unchanged = post_md5 is None or not isinstance(listed, str) \
                or listed.lower() == post_md5.lower()
            if unchanged and md5_of(path.read_bytes()) == record["md5"]:
                return path
        return None

    def _decodes(self, path: Path) -> bool:
        """Whether a file without a record decodes whole; if not, it is deleted and forgotten."""
        try:
            decode_image(path.read_bytes(), self.max_pixels)
            return True
        except ValueError as exc:
            log.warning("%s has no record and does not decode (%s); deleted, to be fetched again",
                        path, exc)
        path.unlink(missing_ok=True)
        with self._lock:
            on_disk = self._on_disk.get(path.stem, [])
            if path in on_disk:
                on_disk.remove(path)
        return False

    def held_elsewhere(self, md5: str | None, stem: str) -> bool:
        """Whether another post of the collection has this picture."""
        with self._lock:
            return self._held_elsewhere(md5, stem)

    def adopt(self, path: Path, record: dict) -> None:
        """Write the record a killed run did not get to write for a kept file."""
        if path.name in self.records:
            return
        data = path.read_bytes()
        width, height = decode_image(data, self.max_pixels)[1]
        with self._lock:
            self._append({**record, "file": path.name, "md5": md5_of(data), "width": width,
                          "height": height})

    def keep(self, stem: str, data: bytes, record: dict) -> Outcome:
        """Decode `data`, then write it under its final name with its record, unless the same
        picture is already here. Replaces an older version of the same post."""
        md5 = md5_of(data)
        suffix, (width, height) = decode_image(data, self.max_pixels)
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


def _cut_torn_tail(path: Path) -> str:
    """posts.jsonl read, after cutting off a last line without its newline: a run killed
    mid-append leaves one, and the next record appended would be glued onto it, unreadable too.
    Truncating is one system call, so a kill now leaves either file, never a third."""
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        log.warning("%s: cut a torn last line (%d bytes) left by a killed run", path,
                    len(data) - keep)
        with path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        data = data[:keep]
    return data.decode("utf-8", errors="replace")


def _record(line: str) -> dict | None:
    """One line of posts.jsonl as a record, or None for a line damaged some other way than a
    torn tail (a record is a JSON object naming its file, that file's md5 and its source)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        record = None
    if isinstance(record, dict) and all(isinstance(record.get(key), str)
                                        for key in ("file", "md5", "source")):
        return record
    if line.strip():
        log.warning("posts.jsonl: a damaged line was skipped: %.80s", line)
    return None


