"""Site adapters: what each booru's listing looks like, turned into Posts.

Every adapter gives the scrape stage the same thing (listing URLs in, Posts out), so the download,
resume and politeness machinery is written once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin

from bs4 import BeautifulSoup

from pipeline.params import PipelineError


class MarkupError(PipelineError):
    """The page no longer looks like the site we know: stop rather than scrape nothing."""


@dataclass(frozen=True)
class Post:
    id: int
    file_url: str
    tags: tuple[str, ...] = ()
    rating: str = ""
    md5: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Listing:
    posts: list[Post]
    has_next: bool
    without_file: int = 0  # posts listed without a file link (deleted or hidden)


SITES = {"konachan": "https://konachan.net"}

_REGISTER = re.compile(r"Post\.register\((\{.*?\})\)\s*;?\s*$", re.MULTILINE)
_ALT_RATING = re.compile(r"Rating:\s*(\w+)")
_ALT_TAGS = re.compile(r"Tags:\s*(.*?)\s*User:")
_RESOLUTION = re.compile(r"(\d+)\s*x\s*(\d+)")
_RATINGS = {"safe": "s", "questionable": "q", "explicit": "e"}


def moebooru_listing_url(base_url: str, page: int, tags: str) -> str:
    return f"{base_url.rstrip('/')}/post?{urlencode({'page': page, 'tags': tags})}"


def _registered_posts(soup: BeautifulSoup) -> dict[int, dict]:
    """Moebooru repeats each post's API object in a Post.register({...}) script line."""
    registered = {}
    for script in soup.find_all("script"):
        for match in _REGISTER.finditer(script.string or ""):
            try:
                data = json.loads(match.group(1))
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and "id" in data:
                registered[int(data["id"])] = data
    return registered


def _post_from_item(item, page_url: str, registered: dict[int, dict]) -> Post | None:
    post_id = int(item["id"].lstrip("p"))
    data = registered.get(post_id, {})
    link = item.select_one("a.directlink")
    href = link.get("href") if link else data.get("file_url")
    if not href:
        return None
    preview = item.select_one("img.preview")
    alt = preview.get("alt", "") if preview else ""
    tags = data.get("tags")
    if tags is None:
        found = _ALT_TAGS.search(alt)
        tags = found.group(1) if found else ""
    rating = data.get("rating")
    if rating is None:
        found = _ALT_RATING.search(alt)
        rating = _RATINGS.get(found.group(1).lower(), "") if found else ""
    width, height = data.get("width"), data.get("height")
    resolution = item.select_one(".directlink-res")
    if width is None and resolution and (found := _RESOLUTION.search(resolution.get_text())):
        width, height = int(found.group(1)), int(found.group(2))
    return Post(id=post_id, file_url=urljoin(page_url, href), tags=tuple(tags.split()),
                rating=rating, md5=data.get("md5"), width=width, height=height)


def parse_moebooru_listing(html: str, page_url: str) -> Listing:
    """Posts of a Moebooru /post listing page (konachan, yande.re, and the demo booru)."""
    soup = BeautifulSoup(html, "html.parser")
    container = soup.select_one("ul#post-list-posts")
    if container is None:
        if "Nobody here but us chickens" in soup.get_text():
            return Listing([], has_next=False)
        raise MarkupError(f"{page_url}: expected the post list ul#post-list-posts, found none "
                          "(the site's markup changed?)")
    registered = _registered_posts(soup)
    posts, without_file = [], 0
    for item in container.find_all("li", id=re.compile(r"^p\d+$")):
        post = _post_from_item(item, page_url, registered)
        if post is None:
            without_file += 1
        else:
            posts.append(post)
    if container.find("li") and not posts and not without_file:
        raise MarkupError(f"{page_url}: expected li#p<id> items in ul#post-list-posts, found none")
    has_next = soup.select_one("a.next_page, a[rel=next]") is not None
    return Listing(posts, has_next, without_file)
