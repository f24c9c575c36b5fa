"""Booru-shaped test servers on 127.0.0.1 whose posts and faults each test scripts itself.

One FakeBooru plays a Moebooru (listing HTML and post.json), a Danbooru (posts.json) or a Gelbooru
0.2 (the dapi) site, in the shapes those sites serve, awkward parts included:
protocol-relative URLs, `&amp;` in hrefs, deleted posts without files, Danbooru's 410 past page
1000 and its `page=b<id>`, Gelbooru's empty sample_url and empty body for no results; and hostile
ones a test asks for: bodies trickled a byte at a time, ids that are not numbers. Every
request is recorded with its arrival time, so tests measure politeness on the server side.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from PIL import Image

ALLOW_ALL = "User-agent: *\nAllow: /\n"


def jpeg_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


PREVIEW = jpeg_bytes((128, 128, 128), (16, 12))


@dataclass(frozen=True)
class Fault:
    """An answer served instead of the real one: a status and headers, a stall, a cut body."""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: the real body
    delay: float = 0.0  # seconds before answering, to trip the client's timeout
    truncate_to: int | None = None  # send only this many bytes of a body announced in full
    trickle: float = 0.0  # send the body a byte at a time, this many seconds apart


@dataclass
class FakePost:
    id: int
    body: bytes  # the original file
    tags: str = "1girl solo"
    rating: str = "safe"  # safe | questionable | explicit; each site writes it its own way
    content_type: str = "image/jpeg"
    listed_md5: str | None = None  # None: the md5 of the body
    sample: bytes | None = None  # None: no sample of its own, the site lists the original
    preview: bytes = PREVIEW
    deleted: bool = False  # listed without any file, as deleted and hidden posts are
    listed_id: object = None  # None: its id; else what every listing gives as its id ("abc")
    faults: list[Fault] = field(default_factory=list)  # answers to its file requests, in order

    @property
    def md5(self) -> str:
        return self.listed_md5 or hashlib.md5(self.body).hexdigest()

    @property
    def shown_id(self) -> object:
        return self.id if self.listed_id is None else self.listed_id


MOEBOORU_RATINGS = {"safe": "s", "questionable": "q", "explicit": "e"}
DANBOORU_RATINGS = {"safe": "g", "questionable": "q", "explicit": "e"}
GELBOORU_RATINGS = {"safe": "general", "questionable": "questionable", "explicit": "explicit"}


@dataclass
class FakeBooru:
    pages: list[list[FakePost]]
    site: str = "moebooru"  # moebooru | danbooru | gelbooru
    first_page: int = 1  # the page number of pages[0]
    robots: str = ALLOW_ALL
    robots_status: int = 200  # another status answers robots.txt with an empty body
    changed_listing: str | None = None  # served for every listing and API page (changed markup)
    page_faults: dict[int, list[Fault]] = field(default_factory=dict)  # by page number
    hits: Counter = field(default_factory=Counter)  # requests by path
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, path?query)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, target: str) -> None:
        with self._lock:
            self.hits[urlsplit(target).path] += 1
            self.arrivals.append((time.monotonic(), target))

    def page(self, number: int) -> list[FakePost]:
        index = number - self.first_page
        return self.pages[index] if 0 <= index < len(self.pages) else []

    def all_posts(self) -> list[FakePost]:
        return [post for page in self.pages for post in page]

    # file URLs, site by site (paths on this server; the listings make some of them absolute)

    def file_paths(self, post: FakePost) -> dict[str, str]:
        md5, name = post.md5, quote(f"Fake - {post.id}.jpg")
        if self.site == "moebooru":
            paths = {"original": f"/image/{md5}/{name}", "sample": f"/sample/{md5}/{name}",
                     "preview": f"/data/preview/{md5[:2]}/{md5[2:4]}/{md5}.jpg"}
        elif self.site == "danbooru":
            paths = {"original": f"/original/{md5[:2]}/{md5[2:4]}/{md5}.jpg",
                     "sample": f"/sample/{md5[:2]}/{md5[2:4]}/sample-{md5}.jpg",
                     "preview": f"/180x180/{md5[:2]}/{md5[2:4]}/{md5}.jpg"}
        else:
            directory, image = post.id // 1000, f"img{post.id}.jpg"
            paths = {"original": f"/images/{directory}/{image}",
                     "sample": f"/samples/{directory}/sample_{image}",
                     "preview": f"/thumbnails/{directory}/thumbnail_{image}"}
        if post.sample is None:
            paths["sample"] = paths["original"]
        return paths

    def file_at(self, path: str) -> tuple[FakePost, bytes] | None:
        for post in self.all_posts():
            if post.deleted:
                continue
            paths = self.file_paths(post)
            for kind, body in (("original", post.body), ("sample", post.sample or post.body),
                               ("preview", post.preview)):
                if paths[kind] == path:
                    return post, body
        return None

    # listings

    def moebooru_object(self, post: FakePost) -> dict:
        """The post.json / Post.register object; URLs protocol-relative, as Moebooru may send."""
        host = "//" + self.url.split("://", 1)[1]
        data = {"id": post.shown_id, "tags": post.tags, "created_at": 1_700_000_000, "score": 1,
                "md5": post.md5, "file_size": len(post.body), "file_ext": "jpg",
                "rating": MOEBOORU_RATINGS[post.rating], "width": 64, "height": 48,
                "status": "deleted" if post.deleted else "active", "parent_id": None,
                "has_children": False, "source": "", "author": "tester",
                "preview_width": 16, "preview_height": 12}
        if not post.deleted:
            paths = self.file_paths(post)
            data |= {"file_url": host + paths["original"], "sample_url": host + paths["sample"],
                     "jpeg_url": host + paths["original"], "preview_url": host + paths["preview"]}
        return data

    def moebooru_html(self, number: int, tags: str) -> str:
        posts, items = self.page(number), []
        for post in posts:
            paths = self.file_paths(post)
            alt = html.escape(f"Rating: {post.rating.title()} Score: 1 Tags: {post.tags} User: t")
            preview = "/deleted-preview.png" if post.deleted else paths["preview"]
            link = "" if post.deleted else (
                f'<a class="directlink smallimg" href="{self.url}{paths["original"]}">'
                f'<span class="directlink-res">64 x 48</span></a>')
            items.append(
                f'<li style="width: 160px;" id="p{post.shown_id}" class=" javascript-hide creator-id-1">'
                f'<div class="inner" style="width: 150px; height: 150px;">'
                f'<a class="thumb" href="/post/show/{post.id}"><img src="{preview}" alt="{alt}" '
                f'class="preview" title="{alt}" width="16" height="12"></a></div>{link}</li>')
        scripts = "\n".join(f"Post.register({json.dumps(self.moebooru_object(p))});" for p in posts)
        if number - self.first_page + 1 < len(self.pages):  # a scripted page follows, empty or not
            href = html.escape(f"/post?{urlencode({'page': number + 1, 'tags': tags})}")
            nav = f'<a class="next_page" rel="next" href="{href}">Next &rarr;</a>'
        else:
            nav = '<span class="next_page disabled">Next &rarr;</span>'
        if not posts:
            return "<html><body><p>Nobody here but us chickens!</p></body></html>"
        return (f'<html><body><div id="post-list"><ul id="post-list-posts">{"".join(items)}</ul>'
                f'<div id="paginator">{nav}</div></div>'
                f'<script type="text/javascript">\n{scripts}\n</script></body></html>')

    def danbooru_object(self, post: FakePost) -> dict:
        data = {"id": post.shown_id, "rating": DANBOORU_RATINGS[post.rating], "tag_string": post.tags,
                "file_ext": "jpg", "file_size": len(post.body), "image_width": 64,
                "image_height": 48, "is_deleted": post.deleted, "is_banned": False, "score": 1}
        if not post.deleted:
            paths = self.file_paths(post)
            data |= {"md5": post.md5, "file_url": self.url + paths["original"],
                     "large_file_url": self.url + paths["sample"],
                     "preview_file_url": self.url + paths["preview"]}
        return data

    def danbooru_page(self, page: str, limit: int) -> tuple[int, str]:
        """Numbered pages up to 1000, 410 beyond; `b<id>`: the posts before that id."""
        if page.startswith("b"):
            before = int(page[1:])
            posts = [p for p in self.all_posts() if p.id < before][:limit]
        elif int(page) > 1000:
            return 410, json.dumps({"success": False, "error": "PaginationExtension::PaginationError",
                                    "message": "You cannot go beyond page 1000."})
        else:
            posts = self.page(int(page))
        return 200, json.dumps([self.danbooru_object(p) for p in posts])

    def gelbooru_object(self, post: FakePost) -> dict:
        directory, image = post.id // 1000, f"img{post.id}.jpg"
        data = {"id": post.shown_id, "hash": post.md5, "image": image, "directory": directory,
                "width": 64, "height": 48, "rating": GELBOORU_RATINGS[post.rating],
                "tags": f" {post.tags} ", "score": 1, "source": "", "status": "active",
                "sample_url": "", "file_url": "", "preview_url": ""}
        if not post.deleted:
            paths = self.file_paths(post)
            data |= {"file_url": self.url + paths["original"],
                     "preview_url": self.url + paths["preview"],
                     "sample_url": "" if post.sample is None else self.url + paths["sample"]}
        return data

    def listing(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, str] | None:
        """(status, content type, body) of a listing or API page, None for other paths."""
        page = query.get("page", ["1"])[0]
        tags = query.get("tags", [""])[0]
        limit = int(query.get("limit", ["20"])[0])
        if self.site == "moebooru" and path == "/post":
            return 200, "text/html; charset=utf-8", self.moebooru_html(int(page), tags)
        if self.site == "moebooru" and path == "/post.json":
            body = json.dumps([self.moebooru_object(p) for p in self.page(int(page))])
            return 200, "application/json; charset=utf-8", body
        if self.site == "danbooru" and path == "/posts.json":
            status, body = self.danbooru_page(page, limit)
            return status, "application/json; charset=utf-8", body
        if self.site == "gelbooru" and path == "/index.php" and page == "dapi":
            posts = self.page(int(query.get("pid", ["0"])[0]) + 1)
            body = json.dumps([self.gelbooru_object(p) for p in posts]) if posts else ""
            return 200, "application/json; charset=utf-8", body
        return None

    def page_number(self, query: dict[str, list[str]]) -> int | None:
        if self.site == "gelbooru":
            return int(query.get("pid", ["0"])[0]) + 1
        page = query.get("page", ["1"])[0]
        return int(page) if page.isdigit() else None


class _Handler(BaseHTTPRequestHandler):
    booru: FakeBooru

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        booru = self.booru
        booru.record(self.path)
        if parts.path == "/robots.txt":
            robots = booru.robots.encode() if booru.robots_status == 200 else b""
            self.reply(booru.robots_status, "text/plain", robots)
        elif (listing := booru.listing(parts.path, query)) is not None:
            status, content_type, body = listing
            if booru.changed_listing is not None:
                body = booru.changed_listing
            faults = booru.page_faults.get(booru.page_number(query), [])
            self.reply(status, content_type, body.encode(), faults.pop(0) if faults else None)
        elif found := booru.file_at(parts.path):
            post, body = found
            self.reply(200, post.content_type, body, post.faults.pop(0) if post.faults else None)
        else:
            self.reply(404, "text/plain", b"not found")

    def reply(self, status: int, content_type: str, body: bytes, fault: Fault | None = None) -> None:
        if fault is not None:
            time.sleep(fault.delay)
            status = fault.status
            body = body if fault.body is None else fault.body
        self.send_response_only(status)  # no automatic Server header: a fault may set its own
        headers = {"Server": "FakeBooru", "Content-Type": content_type,
                   "Content-Length": str(len(body)), **(fault.headers if fault else {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if fault is not None and fault.trickle:
            for i in range(len(body)):  # until the client hangs up
                self.wfile.write(body[i:i + 1])
                time.sleep(fault.trickle)
        else:
            self.wfile.write(body[:fault.truncate_to] if fault else body)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that timed out has hung up before the reply; that is the point, not news."""


@contextmanager
def served(booru: FakeBooru) -> Iterator[FakeBooru]:
    """`booru` live on a free port of 127.0.0.1 (booru.url) for the block."""
    handler = type("Handler", (_Handler,), {"booru": booru})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    booru.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield booru
    finally:
        server.shutdown()
        server.server_close()
