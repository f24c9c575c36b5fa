"""The demo booru: a Moebooru look-alike served on 127.0.0.1, drawing its posts from a seed.

`scrape.source: demo` starts it in-process and scrapes it through exactly the code path of a real
site, so the whole pipeline runs offline and the scraper is exercised end to end.
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

from pipeline.demo_art import draw_artwork

PER_PAGE = 20
TOTAL_POSTS = 1000
WIDTH, HEIGHT = 640, 480


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
        image.thumbnail((150, 150))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
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
        data, tags = render_post(self.seed, post_id)
        md5 = hashlib.md5(data).hexdigest()
        self.post_by_md5[md5] = post_id
        name = quote(f"Demo - {post_id} {' '.join(tags[:3])}.jpg")
        return {
            "id": post_id, "tags": " ".join(tags), "md5": md5, "file_size": len(data),
            "file_ext": "jpg", "file_url": f"{self.url}/image/{md5}/{name}",
            "preview_url": f"{self.url}/data/preview/{md5[:2]}/{md5[2:4]}/{md5}.jpg",
            "width": WIDTH, "height": HEIGHT, "rating": "s",
        }

    def listing_page(self, page: int, tags: str) -> str:
        ids = self.post_ids(tags.split(), limit=page * PER_PAGE + 1)  # one more tells "next"
        chosen = ids[(page - 1) * PER_PAGE: page * PER_PAGE]
        items, scripts = [], []
        for post_id in chosen:
            post = self.api_object(post_id)
            alt = html.escape(f"Rating: Safe Score: 0 Tags: {post['tags']} User: demo")
            items.append(
                f'<li style="width: 160px;" id="p{post_id}" class=" javascript-hide creator-id-1">'
                f'<div class="inner" style="width: 150px; height: 150px;">'
                f'<a class="thumb" href="/post/show/{post_id}">'
                f'<img src="{post["preview_url"]}" alt="{alt}" class="preview" title="{alt}" '
                f'width="150" height="112"></a></div>'
                f'<a class="directlink smallimg" href="{html.escape(post["file_url"])}">'
                f'<span class="directlink-res">{WIDTH} x {HEIGHT}</span></a></li>')
            scripts.append(f"Post.register({json.dumps(post)});")
        paginator = '<span class="next_page disabled">Next &rarr;</span>'
        if page * PER_PAGE < len(ids):
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
            try:
                page = max(1, int(query.get("page", ["1"])[0]))
            except ValueError:
                page = 1
            body = self.site.listing_page(page, query.get("tags", [""])[0])
            self._send(200, "text/html; charset=utf-8", body.encode())
        elif segments[0] in ("image", "data") and (post_id := self._post_for(segments)):
            seed = self.site.seed
            data = render_post(seed, post_id)[0] if segments[0] == "image" else render_preview(
                seed, post_id)
            self._send(200, "image/jpeg", data)
        else:
            self._send(404, "text/plain", b"not found\n")

    def _post_for(self, segments: list[str]) -> int | None:
        """/image/<md5>/<name> and /data/preview/xx/yy/<md5>.jpg name posts by md5."""
        md5 = segments[1] if segments[0] == "image" and len(segments) > 1 else segments[-1][:32]
        return self.site.post_by_md5.get(md5)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
