"""A Moebooru-shaped test server on 127.0.0.1 whose posts and faults each test scripts itself."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image


def jpeg_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class FakePost:
    id: int
    body: bytes
    tags: str = "1girl solo"
    content_type: str = "image/jpeg"
    listed_md5: str | None = None  # None: the md5 of the body

    @property
    def md5(self) -> str:
        return self.listed_md5 or hashlib.md5(self.body).hexdigest()


@dataclass
class FakeBooru:
    pages: list[list[FakePost]]
    listing_html: str | None = None  # replaces every listing page (changed markup)
    hits: Counter = field(default_factory=Counter)
    url: str = ""

    def listing(self, page: int) -> str:
        if self.listing_html is not None:
            return self.listing_html
        posts = self.pages[page - 1] if page <= len(self.pages) else []
        items = "".join(
            f'<li id="p{p.id}"><a class="thumb" href="/post/show/{p.id}"><img class="preview" '
            f'src="/data/preview/{p.id}.jpg" alt="Rating: Safe Score: 1 Tags: {p.tags} User: t">'
            f'</a><a class="directlink smallimg" href="/image/{p.id}/Fake%20-%20{p.id}.jpg">'
            f'<span class="directlink-res">64 x 48</span></a></li>' for p in posts)
        scripts = "\n".join(
            "Post.register(" + json.dumps({"id": p.id, "tags": p.tags, "md5": p.md5,
                                           "rating": "s", "width": 64, "height": 48}) + ");"
            for p in posts)
        more = page < len(self.pages)
        nav = f'<a class="next_page" rel="next" href="/post?page={page + 1}">Next</a>' \
            if more else '<span class="next_page disabled">Next</span>'
        return (f'<html><body><ul id="post-list-posts">{items}</ul><div id="paginator">{nav}'
                f'</div><script>\n{scripts}\n</script></body></html>')

    def post(self, post_id: int) -> FakePost | None:
        return next((p for page in self.pages for p in page if p.id == post_id), None)


def serve(booru: FakeBooru):
    """Start `booru` on a free port; returns the server (call shutdown() and server_close())."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            booru.hits[parts.path] += 1
            if parts.path == "/post":
                page = int(parse_qs(parts.query).get("page", ["1"])[0])
                self.reply(200, "text/html", booru.listing(page).encode())
            elif parts.path.startswith("/image/") and (post := booru.post(
                    int(parts.path.split("/")[2]))):
                self.reply(200, post.content_type, post.body)
            else:
                self.reply(404, "text/plain", b"not found")

        def reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    booru.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server
