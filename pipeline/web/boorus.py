"""Site adapters: what each booru's listing looks like, turned into Posts.

Every adapter gives the scrape stage the same two things, a listing URL for a page and a parser
turning that page into a Listing, so the download, resume and politeness machinery is written once.
The shapes parsed here are those the sites serve: HTML listings with Post.register lines, and
their JSON APIs. A page is untrusted input: parsing is linear in its size, and a post in a shape no
post has (an id that is not a number, an md5 that is not one) is skipped and named in
Listing.malformed, while the rest of the page is taken.

Which file a listed md5 describes, site by site (Post.expected_md5 checks exactly these):
- Moebooru (konachan, yande.re, the demo booru): `md5` is the original's (`file_url`). The sample
  and the JPEG version are re-encodings, and previews are thumbnails, none with an md5 of its own;
  a picture too small for a sample lists its original as `sample_url`, which is then checked.
- Danbooru: `md5` is the original's (`file_url`); `large_file_url` is a re-encoded sample unless the
  picture is small, when it is the original's URL; the preview is a thumbnail.
- Gelbooru 0.2: `hash` is the original's md5 (`file_url`); an empty `sample_url` means the original
  stands in for the sample; the preview is a thumbnail.
No site lists an md5 for a sample or a preview, so those are checked by decoding only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode, urljoin

from bs4 import BeautifulSoup

from pipeline.core.params import FILE_KINDS, PipelineError, shown


class MarkupError(PipelineError):
    """The page no longer looks like the site we know: stop rather than scrape nothing."""


class MalformedPost(ValueError):
    """One listed post in a shape no post has: skipped and counted, the rest of the page taken."""


@dataclass(frozen=True)
class Post:
    id: int
    urls: Mapping[str, str]  # file kind (preview, sample, original) -> absolute URL, as listed
    tags: tuple[str, ...] = ()
    rating: str = ""  # safe | questionable | explicit; "" when the site does not say
    md5: str | None = None  # of the original file, as the site lists it (lower-case hex)

    def url(self, kind: str) -> str:
        """The wanted file, else the next larger one: a small picture has no sample of its own."""
        return next(self.urls[k] for k in FILE_KINDS[FILE_KINDS.index(kind):] if self.urls.get(k))

    def expected_md5(self, url: str) -> str | None:
        """The listed md5 describes the original only (see the module docstring), so a download
        is checked against it when its URL is the original's, whichever kind listed it."""
        if self.md5 is None or url != self.urls.get("original"):
            return None
        return self.md5.lower()


@dataclass(frozen=True)
class Listing:
    posts: list[Post]
    has_next: bool
    without_file: int = 0  # posts listed without a file (deleted, or hidden from anonymous users)
    lowest_id: int | None = None  # of every post on the page, hidden ones too: Danbooru pages by id
    malformed: tuple[str, ...] = ()  # why each post in a shape no post has was skipped


PageUrl = Callable[[str, str, int, int | None], str]  # (base URL, tags, page, lowest id) -> URL
Parser = Callable[[str, str], Listing]  # (body, page URL) -> Listing


@dataclass(frozen=True)
class Adapter:
    page_url: PageUrl
    parse: Parser


@dataclass(frozen=True)
class Site:
    default_url: str | None  # None: the demo booru, started by the scrape stage
    json: Adapter
    html: Adapter | None = None  # None: the listing HTML carries no file URLs, use the API
    rate: float = 1.0  # requests per second per host when scrape.rate is null: polite to real sites

    def adapter(self, api: str) -> Adapter:
        return self.html if api == "html" and self.html is not None else self.json


MOEBOORU_RATINGS = {"s": "safe", "q": "questionable", "e": "explicit",
                    "safe": "safe", "questionable": "questionable", "explicit": "explicit"}
DANBOORU_RATINGS = {"g": "safe", "s": "questionable", "q": "questionable", "e": "explicit"}
GELBOORU_RATINGS = {"safe": "safe", "general": "safe", "questionable": "questionable",
                    "sensitive": "questionable", "explicit": "explicit"}
API_PAGE_SIZE = 100  # posts per JSON page: Moebooru's maximum, within Danbooru's and Gelbooru's
DANBOORU_LAST_NUMBERED_PAGE = 1000  # page 1001 answers 410; beyond, pages go by id

MAX_POST_ID = 10**18  # ids are database keys; a longer number is not one

FIRST_SLICE_CHARS = 64  # the least of a page handed to the JSON decoder for one Post.register call
CUT_TOKEN_CHARS = 16  # an error this near a slice's end may be a token the slice cut (-Infinity, \uXXXX)

_REGISTER_CALL = "Post.register("
_JSON_STARTS = frozenset('{["-0123456789tfnNI')  # what a JSON value can start with, NaN and Infinity too
_SPACE = re.compile(r"\s*")
_JSON = json.JSONDecoder()
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_ALT_RATING = re.compile(r"Rating:\s*(\w+)")


def _rating(table: Mapping[str, str], value: Any) -> str:
    return table.get(str(value).strip().lower(), "")


def post_id(value: Any) -> int:
    """A post id as the sites give it, a positive integer or its decimal digits; else the post is
    malformed. bool is not a number here, and neither are floats or non-ASCII digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_POST_ID:
        return value
    raise MalformedPost(f"post id {shown(repr(value))} is not a number")


def _md5(value: Any, post: int) -> str | None:
    """The listed md5 in lower case (sites differ in case; md5_of gives lower); None if none."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and _MD5.fullmatch(value):
        return value.lower()
    raise MalformedPost(f"post {post}: md5 {shown(repr(value))} is not an md5")


def _text(value: Any) -> str | None:
    """A string field, or None for a missing, empty or non-string one."""
    return value if isinstance(value, str) and value else None


def _absolute(page_url: str, urls: Mapping[str, Any]) -> dict[str, str]:
    """Relative and protocol-relative URLs resolved; empty ones dropped (Gelbooru's sample_url)."""
    return {kind: urljoin(page_url, url) for kind, url in urls.items() if isinstance(url, str) and url}


def _query(base_url: str, path: str, **query: Any) -> str:
    return f"{base_url.rstrip('/')}{path}?{urlencode(query)}"


# Moebooru: konachan, yande.re and the demo booru

def moebooru_listing_url(base_url: str, tags: str, page: int, lowest_id: int | None = None) -> str:
    return _query(base_url, "/post", page=page, tags=tags)


def moebooru_json_url(base_url: str, tags: str, page: int, lowest_id: int | None = None) -> str:
    return _query(base_url, "/post.json", limit=API_PAGE_SIZE, page=page, tags=tags)


def register_calls(script: str) -> Iterator[Any]:
    """The argument of each Post.register(...) call in a script, in one pass: find the call, decode
    the JSON value from there (json stops where the value ends), go on after it. Every character is
    looked at a bounded number of times, however the page is built; a regular expression retrying
    a lazy match from each call was quadratic on a long line of them."""
    start = script.find(_REGISTER_CALL)
    while start != -1:
        value_at = _SPACE.match(script, start + len(_REGISTER_CALL)).end()
        next_call = script.find(_REGISTER_CALL, value_at)
        decoded = _json_value_at(script, value_at, len(script) if next_call == -1 else next_call)
        if decoded is None:
            start = next_call
            continue
        value, end = decoded
        yield value
        start = next_call if next_call == -1 or next_call >= end else script.find(_REGISTER_CALL, end)


def _json_value_at(script: str, at: int, next_call: int) -> tuple[Any, int] | None:
    """The JSON value starting at `at` and the index after it; None if none starts there.

    The decoder is handed a slice of the page, never the rest of it: a JSONDecodeError counts the
    lines of everything before the error, so every failing call cost the whole page, and a 20 MiB
    page of them about an hour. The slice reaches the next call (a value rarely runs past it) and
    doubles while the value runs past its end; each doubling was earned by decoding as much, so the
    work stays linear in what the value covers."""
    if script[at:at + 1] not in _JSON_STARTS:  # spares the decoder's costly error on most junk
        return None
    size = max(next_call - at, FIRST_SLICE_CHARS)
    while True:
        piece = script[at:at + size]
        to_the_end = at + size >= len(script)
        try:
            value, end = _JSON.raw_decode(piece)
        except RecursionError:  # nested too deep: more of the page nests no shallower
            return None
        except json.JSONDecodeError as error:
            if to_the_end or not _ran_past(error, piece):
                return None
        except ValueError:  # a number longer than ints may be: more of the page is no shorter
            return None
        else:
            if to_the_end or end < len(piece):  # a number ending at the slice's end may go on
                return value, at + end
        size *= 2


def _ran_past(error: json.JSONDecodeError, piece: str) -> bool:
    """Whether decoding may have failed only because the slice ended: a string still open, or an
    error near the end, where a literal, number or escape may have been cut."""
    return error.msg.startswith("Unterminated string") or error.pos >= len(piece) - CUT_TOKEN_CHARS


def _registered_posts(soup: BeautifulSoup) -> dict[int, dict]:
    """Moebooru repeats each post's API object in a Post.register({...}) script line. An object
    without a usable id is left out: its post, if the markup lists one, is read from the markup."""
    registered = {}
    for script in soup.find_all("script"):
        for data in register_calls(script.string or ""):
            if isinstance(data, dict):
                try:
                    registered[post_id(data.get("id"))] = data
                except MalformedPost:
                    continue
    return registered


def _alt_tags(alt: str) -> str:
    """The tags in a preview's alt text, "Rating: Safe Score: 0 Tags: a b User: x"; "" without
    both labels. Found with str.partition, linear in the text: the regular expression it replaces
    backtracked cubically on a long run of spaces after "Tags:"."""
    _, tags_label, after_tags = alt.partition("Tags:")
    tags, user_label, _ = after_tags.partition("User:")
    return tags if tags_label and user_label else ""


def _post_from_item(item, number: int, page_url: str, registered: dict[int, dict]) -> Post | None:
    """The markup gives the preview and the direct link; Post.register, when present, the rest."""
    data = registered.get(number, {})
    link = item.select_one("a.directlink")
    direct = _text(link.get("href")) if link else None
    original = _text(data.get("file_url")) or direct
    if not original:
        return None
    preview = item.select_one("img.preview")
    alt = str(preview.get("alt", "")) if preview else ""
    tags = _text(data.get("tags"))
    if tags is None:
        tags = _alt_tags(alt)
    rating = data.get("rating")
    if rating is None:
        found = _ALT_RATING.search(alt)
        rating = found.group(1) if found else ""
    urls = {"preview": preview.get("src") if preview else None,
            "sample": _text(data.get("sample_url")) or direct, "original": original}
    return Post(id=number, urls=_absolute(page_url, urls), tags=tuple(tags.split()),
                rating=_rating(MOEBOORU_RATINGS, rating), md5=_md5(data.get("md5"), number))


def parse_moebooru_listing(html: str, page_url: str) -> Listing:
    """Posts of a Moebooru /post listing page: each li#p<id> of ul#post-list-posts."""
    soup = BeautifulSoup(html, "html.parser")
    container = soup.select_one("ul#post-list-posts")
    if container is None:
        if "Nobody here but us chickens" in soup.get_text():
            return Listing([], has_next=False)
        raise MarkupError(f"{page_url}: expected the post list ul#post-list-posts, found none "
                          "(the site's markup changed?)")
    registered = _registered_posts(soup)
    items = container.find_all("li", id=re.compile(r"^p"))
    has_next = soup.select_one("a.next_page, a[rel=next]") is not None
    listing = _listing(((item["id"][1:], partial(_post_from_item, item, page_url=page_url,
                                                 registered=registered)) for item in items), has_next)
    if container.find("li") and listing.lowest_id is None:
        raise MarkupError(f"{page_url}: expected li#p<id> items in ul#post-list-posts, found none")
    return listing


@dataclass(frozen=True)
class ApiFields:
    """Where a site's API object keeps what a Post needs."""
    preview: str
    sample: str
    original: str
    tags: str
    md5: str
    ratings: Mapping[str, str]


MOEBOORU_FIELDS = ApiFields("preview_url", "sample_url", "file_url", "tags", "md5", MOEBOORU_RATINGS)
DANBOORU_FIELDS = ApiFields("preview_file_url", "large_file_url", "file_url", "tag_string", "md5",
                            DANBOORU_RATINGS)
GELBOORU_FIELDS = ApiFields("preview_url", "sample_url", "file_url", "tags", "hash", GELBOORU_RATINGS)


def _load_json(body: str, page_url: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, a 5000-digit number, or nested too deep
        raise MarkupError(f"{page_url}: expected a JSON array of posts, got something else "
                          "(not JSON)") from None


def _post_objects(data: Any, page_url: str) -> list[dict]:
    """The array of post objects of an API page; anything else means the API changed (or, for
    Danbooru's {"success": false, ...}, refused), which must stop the scrape, not end it quietly."""
    if isinstance(data, dict) and "message" in data:
        raise MarkupError(f"{page_url}: expected a JSON array of posts, got an error: "
                          f"{data['message']}")
    if not isinstance(data, list) or not all(isinstance(p, dict) and "id" in p for p in data):
        raise MarkupError(f"{page_url}: expected a JSON array of post objects with an id, "
                          f"got {type(data).__name__}")
    return data


def _api_post(data: dict, number: int, page_url: str, fields: ApiFields) -> Post | None:
    """None for a post without a file: deleted, or hidden from anonymous users. Raises
    MalformedPost for a post in a shape no post has."""
    original = data.get(fields.original)
    if not original or data.get("is_deleted") or data.get("status") == "deleted":
        return None
    if not isinstance(original, str):
        raise MalformedPost(f"post {number}: {fields.original} {shown(repr(original))} is not a URL")
    urls = {"preview": data.get(fields.preview), "sample": data.get(fields.sample),
            "original": original}
    return Post(id=number, urls=_absolute(page_url, urls),
                tags=tuple((_text(data.get(fields.tags)) or "").split()),
                rating=_rating(fields.ratings, data.get("rating")),
                md5=_md5(data.get(fields.md5), number))


def _api_listing(objects: list[dict], page_url: str, fields: ApiFields) -> Listing:
    """APIs have no next link: a page with nothing on it is the last (malformed posts count as
    something on it)."""
    return _listing(((data["id"], partial(_api_post, data, page_url=page_url, fields=fields))
                     for data in objects), has_next=bool(objects))


def _listing(entries: Iterable[tuple[Any, Callable[[int], Post | None]]], has_next: bool) -> Listing:
    """A page's posts from (listed id, build the post) pairs, whatever the site's format: a post in
    a shape no post has is skipped and named, one without a file counted."""
    posts: list[Post] = []
    ids: list[int] = []
    without_file = 0
    malformed: list[str] = []
    for listed_id, build in entries:
        try:
            ids.append(number := post_id(listed_id))
            post = build(number)
        except MalformedPost as exc:
            malformed.append(str(exc))
            continue
        if post is None:
            without_file += 1
        else:
            posts.append(post)
    return Listing(posts, has_next, without_file, min(ids, default=None), tuple(malformed))


def parse_moebooru_json(body: str, page_url: str) -> Listing:
    """post.json: a bare array; deleted posts lack file_url."""
    return _api_listing(_post_objects(_load_json(body, page_url), page_url), page_url, MOEBOORU_FIELDS)


# Danbooru: safebooru.donmai.us, danbooru.donmai.us

def danbooru_json_url(base_url: str, tags: str, page: int, lowest_id: int | None = None) -> str:
    """Numbered pages stop at 1000 (page 1001 answers 410); beyond, `b<id>` asks for older posts."""
    if page <= DANBOORU_LAST_NUMBERED_PAGE:
        return _query(base_url, "/posts.json", limit=API_PAGE_SIZE, page=page, tags=tags)
    if lowest_id is None:
        raise PipelineError(f"scrape.first_page: Danbooru numbers pages only up to "
                            f"{DANBOORU_LAST_NUMBERED_PAGE}; start at or below it, got {page}")
    return _query(base_url, "/posts.json", limit=API_PAGE_SIZE, page=f"b{lowest_id}", tags=tags)


def parse_danbooru_json(body: str, page_url: str) -> Listing:
    """posts.json: posts hidden from anonymous users lack file_url and md5."""
    return _api_listing(_post_objects(_load_json(body, page_url), page_url), page_url, DANBOORU_FIELDS)


# Gelbooru 0.2: safebooru.org

def gelbooru_json_url(base_url: str, tags: str, page: int, lowest_id: int | None = None) -> str:
    """The dapi's pid is a page index counted from 0 (the HTML listing's pid is a post offset)."""
    return _query(base_url, "/index.php", page="dapi", s="post", q="index", json=1,
                  limit=API_PAGE_SIZE, pid=page - 1, tags=tags)


def parse_gelbooru_json(body: str, page_url: str) -> Listing:
    """safebooru.org answers a bare array, and an empty body when nothing matches; newer Gelbooru
    versions wrap the array as {"@attributes": ..., "post": [...]}. An empty sample_url means the
    picture is its own sample."""
    data = _load_json(body, page_url) if body.strip() else []
    if isinstance(data, dict) and "@attributes" in data:
        data = data.get("post", [])
    return _api_listing(_post_objects(data, page_url), page_url, GELBOORU_FIELDS)


MOEBOORU_HTML = Adapter(moebooru_listing_url, parse_moebooru_listing)
MOEBOORU_JSON = Adapter(moebooru_json_url, parse_moebooru_json)

SITES: dict[str, Site] = {
    # the project's own server on 127.0.0.1: no one else to be polite to
    "demo": Site(None, MOEBOORU_JSON, MOEBOORU_HTML, rate=100.0),
    "konachan": Site("https://konachan.net", MOEBOORU_JSON, MOEBOORU_HTML),
    "yandere": Site("https://yande.re", MOEBOORU_JSON, MOEBOORU_HTML),
    "danbooru": Site("https://safebooru.donmai.us", Adapter(danbooru_json_url, parse_danbooru_json)),
    "gelbooru": Site("https://safebooru.org", Adapter(gelbooru_json_url, parse_gelbooru_json)),
}
