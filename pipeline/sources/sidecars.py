"""Tags for images of a local source, from where dataset tools put them: sidecar files beside an
image (`x.txt` with comma- or space-separated tags, `x.json` with a `tags` field, for `x.png`; and
gallery-dl's `x.png.json`, the post's metadata as the booru gave it) and, as in an ImageFolder tree,
the name of the folder it lies in. A sidecar is parsed from bytes read with a bound; one that holds
no readable tags says why, and costs its image only those tags. A face keeps each tag once, and a
bounded number of them (bounded_tags)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

SIDECAR_SUFFIXES = (".txt", ".json")
# A tag file of a million bytes is already some ten thousand tags: more is not a tag file, and
# every sidecar of a tar is read before its images (local._tar_sidecars)
SIDECAR_MAX_BYTES = 1 << 20
# The field of a JSON sidecar that holds its tags, the first one present: `tags` as dataset tools,
# gallery-dl, Moebooru and Gelbooru write it (a list, or a string); Danbooru's `tag_string`
# (a string, always space-separated)
JSON_TAG_FIELDS = ("tags", "tag_string")
# A booru post has a few dozen tags, rarely a few hundred, and a tag is a few words. Within these
# bounds a face's tags fill at most 512 x 201 characters of a manifest row: under csv's default
# limit of 131,072 characters a field, so any csv reader reads the manifest
FACE_MAX_TAGS = 512
TAG_MAX_CHARS = 200

Dropped = tuple[tuple[str, int], ...]  # (why, how many tags) for the tags a face does not keep


@dataclass(frozen=True)
class Sidecar:
    """The tags of one sidecar file, or why they are not used."""
    name: str
    tags: tuple[str, ...] = ()
    problem: str | None = None
    dropped: Dropped = ()  # tags read but not kept (bounded_tags)


def bounded_tags(tags: Iterable[str]) -> tuple[tuple[str, ...], Dropped]:
    """Each tag once, in the order read, at most FACE_MAX_TAGS of at most TAG_MAX_CHARS characters;
    and the tags dropped, counted by why. A caption of `ab ab ab ...` is one tag, and no sidecar
    can make a face's tags too large for the manifest."""
    seen: set[str] = set()
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    for tag in tags:
        if tag in seen:
            continue
        seen.add(tag)
        if len(tag) > TAG_MAX_CHARS:
            dropped[f"over {TAG_MAX_CHARS} characters"] += 1
        elif len(kept) >= FACE_MAX_TAGS:
            dropped[f"past the first {FACE_MAX_TAGS} of a face"] += 1
        else:
            kept.append(tag)
    return tuple(kept), tuple(dropped.items())


def member_path(name: str) -> PurePosixPath:
    """A member name as a path, in either slash style (`./a//b` is `a/b`)."""
    return PurePosixPath(name.replace("\\", "/"))


def image_stem(name: str) -> str:
    """What pairs an image with its sidecars: its path without the suffix."""
    return member_path(name).with_suffix("").as_posix()


def image_keys(name: str) -> tuple[str, str]:
    """What an image's sidecars are named after: its stem (`x` for `x.txt`, `x.json` beside
    `x.png`) and its full name (`x.png` for gallery-dl's `x.png.json`)."""
    return image_stem(name), member_path(name).as_posix()


def sidecar_stem(name: str) -> str | None:
    """The image key (image_keys) a sidecar's name pairs it with, or None if the name is no
    sidecar's: `x.json` pairs with every `x.*` image, `x.png.json` with `x.png` alone."""
    path = member_path(name)
    return path.with_suffix("").as_posix() if path.suffix.lower() in SIDECAR_SUFFIXES else None


def as_tag(text: str) -> str:
    """One tag with its inner whitespace as underscores: the manifest separates tags by spaces."""
    return "_".join(text.split())


def split_tags(text: str) -> Iterator[str]:
    """Tags of a caption: comma-separated (`blonde hair, blue eyes`, as tagger tools write them),
    else whitespace-separated (`blonde_hair blue_eyes`, as boorus write them). One at a time: a
    megabyte of `ab ab ab ...` is never half a million strings at once."""
    parts = re.finditer(r"[^,\r\n]+" if "," in text else r"\S+", text)
    return (tag for part in parts if (tag := as_tag(part.group())))


def parse_sidecar(name: str, data: bytes) -> Iterable[str]:
    """The tags a `.txt` or `.json` sidecar holds, as written (repeats too); ValueError with the
    reason when it holds none readable. A tag that could not be written as UTF-8 (a lone surrogate
    escaped in JSON) is refused too: the manifest could not hold it."""
    try:
        text = data.decode("utf-8-sig")  # Windows tools start UTF-8 text with a byte-order mark
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if member_path(name).suffix.lower() == ".txt":
        return split_tags(text)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__}: {exc})") from None
    found = json_tags(value)
    try:
        "".join(found).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a tag that is not UTF-8 text (a lone surrogate)") from None
    return found


def json_tags(value: object) -> tuple[str, ...]:
    """The tags of a JSON sidecar's object, from the first of JSON_TAG_FIELDS it has."""
    fields = [field for field in JSON_TAG_FIELDS if field in value] if isinstance(value, dict) else []
    if not fields:
        raise ValueError(f"not a JSON object with a {' or '.join(JSON_TAG_FIELDS)} field")
    tags = value[fields[0]]
    if fields[0] == "tag_string":
        if not isinstance(tags, str):
            raise ValueError(f"tag_string is {type(tags).__name__}, not a string")
        return tuple(word.group() for word in re.finditer(r"\S+", tags))
    if isinstance(tags, str):
        return tuple(split_tags(tags))
    if isinstance(tags, list) and all(isinstance(tag, str) for tag in tags):
        return tuple(tag for text in tags if (tag := as_tag(text)))
    raise ValueError(f"tags is {type(tags).__name__}, not a list of strings or a string")


def read_sidecar(name: str, data: bytes) -> Sidecar:
    """`data` was read up to one byte past the limit, so a larger file shows as larger."""
    if len(data) > SIDECAR_MAX_BYTES:
        return Sidecar(name, problem=f"over the {SIDECAR_MAX_BYTES}-byte limit of a sidecar")
    try:
        tags, dropped = bounded_tags(parse_sidecar(name, data))
    except ValueError as exc:
        return Sidecar(name, problem=str(exc))
    return Sidecar(name, tags, dropped=dropped)


def top_folder(name: str) -> str:
    """The first folder of a name; "" for a name at the top."""
    parts = member_path(name).parts
    return parts[0] if len(parts) > 1 else ""


def shared_root(tops: set[str]) -> str | None:
    """The one folder all of an archive's images lie in (`tar czf faces.tar.gz faces/` makes
    one), which is then its root: the archive of a folder tags its images as the folder does."""
    return next(iter(tops)) if len(tops) == 1 and "" not in tops else None


def folder_tags(name: str, root: str | None = None) -> tuple[str, ...]:
    """The folder an image lies in, as in an ImageFolder tree (`cats/0001.png` is a `cats`);
    none for an image at the root of the source."""
    parts = member_path(name).parts[1 if root is not None else 0:]
    tag = as_tag(parts[-2]) if len(parts) > 1 else ""
    return (tag,) if tag else ()
