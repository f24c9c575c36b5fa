"""The demo booru: a Moebooru look-alike served on 127.0.0.1, drawing its posts from a seed.

`scrape.source: demo` starts it in-process and scrapes it through exactly the code path of a real
site, so the whole pipeline runs offline and the scraper is exercised end to end. Like Moebooru it
serves listing pages (/post) and the post.json API, previews (/data/preview/xx/yy/<md5>.jpg),
samples (/sample/<md5>/...) and originals (/image/<md5>/...); a 640x480 drawing is below the size
Moebooru makes samples for, so its sample is the original picture under the sample URL.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from PIL import Image

from pipeline.demo.art import draw_artwork

PER_PAGE = 20
API_DEFAULT_LIMIT, API_MAX_LIMIT = 40, 100  # as Moebooru's post.json
TOTAL_POSTS = 1000
WIDTH, HEIGHT = 640, 480
PREVIEW_SIZE = (150, 112)  # Moebooru's 150-px box, at the drawings' 4:3


@lru_cache(maxsize=512)
def render_post(seed: int, post_id: int) -> tuple[bytes, tuple[str, ...]]:
    """JPEG bytes and tags of one post; cached because a listing needs every post's md5."""
    artwork = draw_artwork(seed, post_id, WIDTH, HEIGHT)
    buffer = io.BytesIO()
    artwork.image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue(), artwork.tags


@lru_cache(maxsize=512)
def render_preview(seed: int, post_id: int) -> bytes:
    data, _ = render_post(seed, post_id)
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.resize(PREVIEW_SIZE, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class DemoBooru:
    """Context manager: `with DemoBooru(seed) as booru: booru.url` is a live Moebooru-style site."""

    def __init__(self, seed: int = 0, total_posts: int = TOTAL_POSTS) -> None:
        self.seed = seed
        self.total_posts = total_posts
        self.post_by_md5: dict[str, int] = {}  # filled as listings reveal posts, as on a real site
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the demo booru first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> DemoBooru:
        booru = self

        class Handler(_DemoHandler):
            site = booru

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def post_ids(self, tags: list[str], limit: int) -> list[int]:
        """Up to `limit` matching ids, newest first, like a booru; a tag query draws posts until
        it has found enough."""
        ids = range(self.total_posts, 0, -1)
        if not tags:
            return list(ids[:limit])
        wanted = set(tags)
        return list(islice((i for i in ids if wanted <= set(render_post(self.seed, i)[1])), limit))

    def api_object(self, post_id: int) -> dict:
        """The post as post.json and Post.register give it (the fields of booru-formats.md)."""
        data, tags = render_post(self.seed, post_id)
        md5 = hashlib.md5(data).hexdigest()
        self.post_by_md5[md5] = post_id
        name = quote(f"Demo - {post_id} {' '.join(tags[:3])}.jpg")
        return {
            "id": post_id, "tags": " ".join(tags), "created_at": 1_700_000_000 + post_id,
            "score": 0, "md5": md5, "file_size": len(data), "file_ext": "jpg",
            "file_url": f"{self.url}/image/{md5}/{name}",
            "preview_url": f"{self.url}/data/preview/{md5[:2]}/{md5[2:4]}/{md5}.jpg",
            "preview_width": PREVIEW_SIZE[0], "preview_height": PREVIEW_SIZE[1],
            "sample_url": f"{self.url}/sample/{md5}/{name}",
            "sample_width": WIDTH, "sample_height": HEIGHT,
            "jpeg_url": f"{self.url}/image/{md5}/{name}",
            "width": WIDTH, "height": HEIGHT, "rating": "s", "status": "active",
            "parent_id": None, "has_children": False, "source": "", "author": "demo",
        }

    def page_ids(self, page: int, per_page: int, tags: str) -> tuple[list[int], bool]:
        """The ids on one page, and whether another page follows."""
        ids = self.post_ids(tags.split(), limit=page * per_page + 1)  # one more tells "next"
        return ids[(page - 1) * per_page: page * per_page], page * per_page < len(ids)

    def api_page(self, page: int, limit: int, tags: str) -> str:
        return json.dumps([self.api_object(i) for i in self.page_ids(page, limit, tags)[0]])

    def listing_page(self, page: int, tags: str) -> str:
        chosen, has_next = self.page_ids(page, PER_PAGE, tags)
        items, scripts = [], []
        for post_id in chosen:
            post = self.api_object(post_id)
            alt = html.escape(f"Rating: Safe Score: 0 Tags: {post['tags']} User: demo")
            items.append(
                f'<li style="width: 160px;" id="p{post_id}" class=" javascript-hide creator-id-1">'
                f'<div class="inner" style="width: 150px; height: 150px;">'
                f'<a class="thumb" href="/post/show/{post_id}">'
                f'<img src="{post["preview_url"]}" alt="{alt}" class="preview" title="{alt}" '
                f'width="{PREVIEW_SIZE[0]}" height="{PREVIEW_SIZE[1]}"></a></div>'
                f'<a class="directlink smallimg" href="{html.escape(post["file_url"])}">'
                f'<span class="directlink-res">{WIDTH} x {HEIGHT}</span></a></li>')
            scripts.append(f"Post.register({json.dumps(post)});")
        paginator = '<span class="next_page disabled">Next &rarr;</span>'
        if has_next:
            href = html.escape(f"/post?{urlencode({'page': page + 1, 'tags': tags})}")
            paginator = f'<a class="next_page" rel="next" href="{href}">Next &rarr;</a>'
        return (
            "<!DOCTYPE html><html><head><title>Demo booru</title></head><body>"
            '<div id="post-list"><ul id="post-list-posts">' + "".join(items) + "</ul>"
            f'<div id="paginator">{paginator}</div></div>'
            '<script type="text/javascript">\n' + "\n".join(scripts) + "\n</script>"
            "</body></html>")


class _DemoHandler(BaseHTTPRequestHandler):
    site: DemoBooru
    server_version = "DemoBooru/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        """Quiet: the scrape stage reports what it fetched."""

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        segments = parts.path.strip("/").split("/")
        if parts.path == "/robots.txt":
            self._send(200, "text/plain", b"User-agent: *\nAllow: /\n")
        elif parts.path == "/post":
            body = self.site.listing_page(_number(query, "page", 1), query.get("tags", [""])[0])
            self._send(200, "text/html; charset=utf-8", body.encode())
        elif parts.path == "/post.json":
            limit = min(API_MAX_LIMIT, _number(query, "limit", API_DEFAULT_LIMIT))
            body = self.site.api_page(_number(query, "page", 1), limit, query.get("tags", [""])[0])
            self._send(200, "application/json; charset=utf-8", body.encode())
        elif segments[0] in ("image", "sample", "data") and (post_id := self._post_for(segments)):
            seed = self.site.seed
            data = render_preview(seed, post_id) if segments[0] == "data" else render_post(
                seed, post_id)[0]
            self._send(200, "image/jpeg", data)
        else:
            self._send(404, "text/plain", b"not found\n")

    def _post_for(self, segments: list[str]) -> int | None:
        """/image/<md5>/<name>, /sample/<md5>/<name> and /data/preview/xx/yy/<md5>.jpg name posts
        by md5."""
        md5 = segments[-1][:32] if segments[0] == "data" else segments[1] if len(segments) > 1 else ""
        return self.site.post_by_md5.get(md5)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _number(query: dict[str, list[str]], name: str, default: int) -> int:
    """A positive number from the query string; anything else gets the default, as on Moebooru."""
    try:
        return max(1, int(query.get(name, [str(default)])[0]))
    except ValueError:
        return default
