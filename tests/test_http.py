"""pipeline.web.http against real HTTP servers on 127.0.0.1 that play back scripted replies."""

from __future__ import annotations

import gzip
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.web.http import (
    ROBOTS_MAX_BYTES,
    CloudflareChallenge,
    FetchError,
    HostRateLimiter,
    PoliteSession,
    parse_retry_after,
    redirect_allowed,
)

USER_AGENT = "anime-face-dcgan-tests/0.1 (+https://example.invalid)"
DANBOORU_ROBOTS = "User-agent: *\nDisallow: /\nAllow: /posts\nAllow: /data/*.jpg$\n"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # stall this long before answering, to trip the client's timeout
    truncate_to: int | None = None  # send only this many body bytes, then hang up
    send_length: bool = True  # False: no Content-Length, the body ends when the connection does
    trickle: float = 0.0  # send the body one byte at a time, this many seconds apart
    chunked: bool = False  # Transfer-Encoding: chunked, one chunk per 1000 bytes


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() when the server read the request
    path: str
    user_agent: str


class ScriptedServer(ThreadingHTTPServer):
    """Answers each path with its scripted replies in order, the last one repeating; any
    other path gets a 404. Records every request that arrives."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.scripts: dict[str, list[Reply]] = {}
        self.arrivals: list[Arrival] = []
        self.trickled = 0  # body bytes sent a byte at a time, all replies together
        self._lock = threading.Lock()

    def script(self, path: str, *replies: Reply) -> str:
        self.scripts[path] = list(replies)
        return self.url(path)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_port}{path}"

    def hits(self, path: str) -> int:
        return sum(arrival.path == path for arrival in self.arrivals)

    def next_reply(self, path: str, user_agent: str) -> Reply:
        with self._lock:
            self.arrivals.append(Arrival(time.monotonic(), path, user_agent))
            replies = self.scripts.get(path)
            if not replies:
                return Reply(404, b"not found")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that timed out has hung up before the reply; that is the point, not news."""


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_GET(self) -> None:
        reply = self.server.next_reply(self.path, self.headers.get("User-Agent", ""))
        time.sleep(reply.delay)
        self.send_response_only(reply.status)  # no automatic Server header: tests set their own
        headers = {"Content-Type": "text/plain", **reply.headers}
        if reply.chunked:
            headers["Transfer-Encoding"] = "chunked"
        elif reply.send_length:
            headers["Content-Length"] = str(len(reply.body))
        else:
            headers["Connection"] = "close"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        body = reply.body[:reply.truncate_to]
        if reply.chunked:
            chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)] + [b""]
            self.wfile.write(b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks))
        elif reply.trickle:
            for i in range(len(body)):  # until the client hangs up, if it does
                self.wfile.write(body[i:i + 1])
                with self.server._lock:
                    self.server.trickled += 1
                time.sleep(reply.trickle)
        else:
            self.wfile.write(body)
        if reply.truncate_to is not None or not (reply.send_length or reply.chunked):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    yield scripted
    scripted.shutdown()
    scripted.server_close()


class SleepRecorder:
    """Stands in for time.sleep in retry waits: records the wait, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def slept() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def session(slept: SleepRecorder) -> Iterator[PoliteSession]:
    """Fast enough for tests: a high rate, short backoff, waits recorded instead of slept."""
    with PoliteSession(USER_AGENT, rate=1000, timeout=5, retries=3, backoff=0.01,
                       max_backoff=0.05, sleep=slept) as polite:
        yield polite


class FakeClock:
    """A clock that moves only when slept on, and by `tick` each time it is read: a deadline on it
    is reached after a known number of reads, however fast or slow the machine is."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now = 0.0
        self.tick = tick
        self.slept: list[float] = []

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_limiter_spaces_starts_per_host_without_earning_bursts() -> None:
    clock = FakeClock()
    limiter = HostRateLimiter(rate=2, clock=clock, sleep=clock.sleep)
    limiter.wait("a.example")
    limiter.wait("a.example")
    limiter.wait("b.example")  # another host has its own budget
    assert clock.slept == [0.5]
    clock.now += 10  # a long idle spell
    limiter.wait("a.example")
    limiter.wait("a.example")
    assert clock.slept == [0.5, 0.5]


def test_limiter_gives_concurrent_callers_distinct_slots() -> None:
    clock = FakeClock()
    waits: list[float] = []
    lock = threading.Lock()

    def record(seconds: float) -> None:  # the clock stands still: every caller arrives at 0
        with lock:
            waits.append(seconds)

    limiter = HostRateLimiter(rate=4, clock=clock, sleep=record)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: limiter.wait("a.example"), range(12)))
    assert sorted(waits) == [0.25 * slot for slot in range(1, 12)]


def test_rate_limit_holds_across_threads_as_seen_by_the_server(server: ScriptedServer) -> None:
    """The limiter's spacing is checked exactly on a fake clock above; here, on the real socket,
    that 4 threads together take at least count / rate seconds. A busy machine only stretches
    that time, so the bound holds however loaded the machine is; without the limiter all 13
    requests land within a few milliseconds."""
    rate, count = 20.0, 12
    for page in range(count):
        server.script(f"/posts?page={page}", Reply())
    with PoliteSession(USER_AGENT, rate=rate) as polite, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda page: polite.get(server.url(f"/posts?page={page}")), range(count)))
    assert server.hits("/robots.txt") == 1
    starts = sorted(arrival.at for arrival in server.arrivals)
    assert len(starts) == count + 1
    # 13 starts 1/rate apart span 12 / rate seconds; a little is allowed for the server's
    # reading of each request
    assert starts[-1] - starts[0] >= count / rate - 0.1


def pause_seen_by_later_requests(server: ScriptedServer, slept: SleepRecorder, path: str,
                                  first: Reply) -> list[float]:
    """`path` answers `first`, then 200; a request on another thread follows the retry. Waits
    are recorded, not slept, and the pause is minutes long, so however slow the machine, the
    second request still falls inside it: the waits each request sat out, in order."""
    server.script(path, first, Reply())
    server.script("/next", Reply())
    with PoliteSession(USER_AGENT, rate=1000, retries=1, backoff=240.0, max_backoff=240.0,
                       sleep=slept) as polite, ThreadPoolExecutor(1) as other_thread:
        polite.get(server.url(path))
        other_thread.submit(polite.get, server.url("/next")).result()
    assert server.hits(path) == 2 and server.hits("/next") == 1
    return slept.waits


def test_retry_after_pauses_the_host_for_every_thread(server: ScriptedServer,
                                                      slept: SleepRecorder) -> None:
    """The server asks this client to wait, not one request: a request from another thread
    during the pause sits out the rest of it too."""
    waits = pause_seen_by_later_requests(
        server, slept, "/limited", Reply(429, headers={"Retry-After": "120"}))
    assert len(waits) == 2, waits
    assert 119 < waits[0] <= 120 and 110 < waits[1] <= waits[0], waits


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
    ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # already past: go now, never a negative wait
    ("soon", None),
    ("", None),
    ("-5", None),
    ("1.5", None),
    (None, None),
])
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


def test_parse_retry_after_without_now_uses_the_current_time() -> None:
    in_a_minute = datetime.now(UTC).timestamp() + 60
    header = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(in_a_minute))
    assert 55 <= parse_retry_after(header) <= 60


def test_429_waits_for_retry_after_then_succeeds(
        server: ScriptedServer, session: PoliteSession, slept: SleepRecorder,
        caplog: pytest.LogCaptureFixture) -> None:
    url = server.script("/posts", Reply(429, headers={"Retry-After": "1"}), Reply(body=b"page"))
    with caplog.at_level(logging.INFO, logger="pipeline.web.http"):
        assert session.get(url).content == b"page"
    assert slept.waits == pytest.approx([1.0], abs=0.05)  # the pause, less the time already gone
    assert server.hits("/posts") == 2
    assert "HTTP 429" in caplog.text and "in 1.0 s" in caplog.text


def test_429_without_retry_after_waits_the_default(
        server: ScriptedServer, slept: SleepRecorder) -> None:
    url = server.script("/posts", Reply(429), Reply())
    with PoliteSession(USER_AGENT, rate=1000, default_retry_after=7, sleep=slept) as polite:
        polite.get(url)
    assert slept.waits == pytest.approx([7], abs=0.05)


def test_retry_after_is_capped(server: ScriptedServer, slept: SleepRecorder) -> None:
    url = server.script("/posts", Reply(503, headers={"Retry-After": "86400"}), Reply())
    with PoliteSession(USER_AGENT, rate=1000, max_retry_after=5, sleep=slept) as polite:
        polite.get(url)
    assert slept.waits == pytest.approx([5], abs=0.05)


def test_503_is_retried_with_backoff(
        server: ScriptedServer, session: PoliteSession, slept: SleepRecorder) -> None:
    url = server.script("/posts", Reply(503), Reply(body=b"page"))
    assert session.get(url).content == b"page"
    assert server.hits("/posts") == 2
    # the host's pause, less the moment gone between setting it and sitting it out
    assert len(slept.waits) == 1 and 0.004 <= slept.waits[0] <= 0.01


def test_retries_exhausted_raise_with_status(
        server: ScriptedServer, session: PoliteSession, slept: SleepRecorder) -> None:
    url = server.script("/posts", Reply(500))
    with pytest.raises(FetchError) as caught:
        session.get(url)
    assert caught.value.status == 500 and caught.value.url == url
    assert url in str(caught.value)
    assert server.hits("/posts") == 4  # the first attempt and 3 retries
    steps = [0.01, 0.02, 0.04]  # backoff * 2**attempt, under max_backoff
    assert all(step / 2 - 0.001 <= wait <= step
               for wait, step in zip(slept.waits, steps, strict=True))


def test_backoff_is_capped(server: ScriptedServer, slept: SleepRecorder) -> None:
    url = server.script("/posts", Reply(502))
    with PoliteSession(USER_AGENT, rate=1000, retries=6, backoff=1, max_backoff=3,
                       sleep=slept) as polite, pytest.raises(FetchError):
        polite.get(url)
    assert len(slept.waits) == 6 and max(slept.waits) <= 3


def test_404_fails_at_once(
        server: ScriptedServer, session: PoliteSession, slept: SleepRecorder) -> None:
    with pytest.raises(FetchError) as caught:
        session.get(server.url("/posts/missing"))
    assert caught.value.status == 404
    assert server.hits("/posts/missing") == 1 and slept.waits == []


def test_timeout_is_retried(server: ScriptedServer, slept: SleepRecorder) -> None:
    url = server.script("/posts", Reply(delay=2.0), Reply(body=b"page"))
    with PoliteSession(USER_AGENT, rate=1000, timeout=0.5, backoff=0.01, sleep=slept) as polite:
        assert polite.get(url).content == b"page"
    assert server.hits("/posts") == 2 and len(slept.waits) == 1


def test_truncated_body_is_retried(server: ScriptedServer, session: PoliteSession) -> None:
    image = bytes(range(256)) * 4
    url = server.script("/data/a.jpg", Reply(body=image, truncate_to=100), Reply(body=image))
    assert session.get(url).content == image
    assert server.hits("/data/a.jpg") == 2


def test_redirect_to_another_host_is_refused(
        server: ScriptedServer, session: PoliteSession) -> None:
    elsewhere = server.url("/data/a.jpg", host="localhost")
    url = server.script("/posts/1", Reply(302, headers={"Location": elsewhere}))
    with pytest.raises(FetchError, match="another host"):
        session.get(url)
    assert server.hits("/data/a.jpg") == 0


def test_redirect_to_another_port_of_the_same_host_is_refused(
        server: ScriptedServer, session: PoliteSession) -> None:
    other = ScriptedServer()  # another service on the same host: never asked
    other.script("/data/a.jpg", Reply(body=b"elsewhere"))
    thread = threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    try:
        url = server.script("/posts/1", Reply(302, headers={"Location": other.url("/data/a.jpg")}))
        with pytest.raises(FetchError, match="another host, port or scheme"):
            session.get(url)
        assert other.arrivals == []
    finally:
        other.shutdown()
        other.server_close()


@pytest.mark.parametrize(("source", "target", "allowed"), [
    ("http://h.example/a", "http://h.example/b", True),
    ("http://h.example/a", "http://h.example:80/b", True),  # default ports are the same origin
    ("https://h.example:443/a", "https://H.example/b", True),  # host names ignore case
    ("http://h.example/a", "https://h.example/b", True),  # the upgrade to https
    ("http://h.example:8080/a", "https://h.example/b", True),
    ("https://h.example/a", "http://h.example/b", False),  # a downgrade
    ("http://h.example/a", "http://h.example:8080/b", False),  # another port: another service
    ("https://h.example/a", "https://h.example:8443/b", False),
    ("http://h.example/a", "https://h.example:8443/b", False),
    ("http://h.example/a", "http://cdn.h.example/b", False),
    ("http://h.example/a", "ftp://h.example/b", False),
    ("http://h.example/a", "http://h.example:99999/b", False),  # not a port
    ("http://h.example/a", "file:///etc/passwd", False),
])
def test_redirect_policy(source: str, target: str, allowed: bool) -> None:
    assert redirect_allowed(source, target) is allowed


def test_redirect_on_the_same_host_is_followed(
        server: ScriptedServer, session: PoliteSession) -> None:
    url = server.script("/old", Reply(301, headers={"Location": "/new"}))
    server.script("/new", Reply(body=b"moved here"))
    assert session.get(url).content == b"moved here"
    assert [arrival.path for arrival in server.arrivals] == ["/robots.txt", "/old", "/new"]


def test_redirect_to_another_scheme_is_refused(
        server: ScriptedServer, session: PoliteSession) -> None:
    ftp = server.url("/new").replace("http://", "ftp://")
    url = server.script("/old", Reply(301, headers={"Location": ftp}))
    with pytest.raises(FetchError, match="another host, port or scheme"):
        session.get(url)


def test_invalid_url_is_a_fetch_error(session: PoliteSession) -> None:
    with pytest.raises(FetchError, match="InvalidURL"):
        session.get("http://127.0.0.1:99999/posts")


def test_redirect_loop_stops(server: ScriptedServer, session: PoliteSession) -> None:
    url = server.script("/loop", Reply(302, headers={"Location": "/loop"}))
    with pytest.raises(FetchError, match="redirects"):
        session.get(url)
    assert server.hits("/loop") == 6  # the request and 5 redirects


@pytest.mark.parametrize("challenge", [
    Reply(403, b"<html>Just a moment...</html>",
          {"Server": "cloudflare", "cf-mitigated": "challenge"}),
    Reply(503, b"<script>window._cf_chl_opt={cvId: '3'}</script>", {"Server": "cloudflare"}),
])
def test_cloudflare_challenge_stops_at_once(
        server: ScriptedServer, session: PoliteSession, challenge: Reply) -> None:
    url = server.script("/posts", challenge)
    with pytest.raises(CloudflareChallenge, match="Cloudflare.*will not solve it"):
        session.get(url)
    assert server.hits("/posts") == 1


def test_plain_403_from_cloudflare_is_not_a_challenge(
        server: ScriptedServer, session: PoliteSession) -> None:
    url = server.script("/posts", Reply(403, b"forbidden", {"Server": "cloudflare"}))
    with pytest.raises(FetchError) as caught:
        session.get(url)
    assert not isinstance(caught.value, CloudflareChallenge) and caught.value.status == 403


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "until-close"])
def test_body_over_max_bytes_fails_without_retry(
        server: ScriptedServer, session: PoliteSession, send_length: bool) -> None:
    url = server.script("/data/big.jpg", Reply(body=b"x" * 200_000, send_length=send_length))
    with pytest.raises(FetchError, match="100000-byte limit"):
        session.get(url, max_bytes=100_000)
    assert server.hits("/data/big.jpg") == 1
    assert session.get(url, max_bytes=200_000).content == b"x" * 200_000


def test_wrong_content_type_fails_without_retry(
        server: ScriptedServer, session: PoliteSession) -> None:
    page = server.script("/data/a.jpg", Reply(headers={"Content-Type": "text/html"}))
    jpeg = {"Content-Type": "image/jpeg"}
    image = server.script("/data/b.jpg", Reply(body=b"\xff\xd8", headers=jpeg))
    with pytest.raises(FetchError, match="text/html"):
        session.get(page, accept=("image/",))
    assert server.hits("/data/a.jpg") == 1
    assert session.get(image, accept=("image/",)).content == b"\xff\xd8"


def test_robots_disallow_is_refused_counted_and_fetched_once(
        server: ScriptedServer, session: PoliteSession) -> None:
    server.script("/robots.txt", Reply(body=b"User-agent: *\nDisallow: /private\n"))
    server.script("/public", Reply())
    for _ in range(2):
        with pytest.raises(FetchError, match="robots.txt disallows") as caught:
            session.get(server.url("/private/a"))
        assert caught.value.status is None
        session.get(server.url("/public"))
    assert session.robots_refused == 2
    assert server.hits("/robots.txt") == 1 and server.hits("/private/a") == 0
    assert session.requests_sent == 3  # robots.txt once, /public twice


def test_robots_for_our_user_agent_by_product_token(
        server: ScriptedServer, session: PoliteSession) -> None:
    server.script("/robots.txt", Reply(body=b"User-agent: anime-face-dcgan-tests\nDisallow: /\n"))
    assert not session.allowed(server.url("/posts"))


def test_danbooru_style_robots(server: ScriptedServer, session: PoliteSession) -> None:
    server.script("/robots.txt", Reply(body=DANBOORU_ROBOTS.encode()))
    assert session.allowed(server.url("/posts?page=2"))
    assert session.allowed(server.url("/data/x.jpg"))
    assert not session.allowed(server.url("/data/x.jpg.html"))
    assert not session.allowed(server.url("/users"))


@pytest.mark.parametrize("status", [500, 503, 429])
def test_robots_server_error_disallows_all_with_a_warning(
        server: ScriptedServer, slept: SleepRecorder, caplog: pytest.LogCaptureFixture,
        status: int) -> None:
    """RFC 9309 2.3.1.4: a robots.txt unreachable through a server error means complete disallow."""
    server.script("/robots.txt", Reply(status))
    server.script("/posts", Reply())
    with PoliteSession(USER_AGENT, rate=1000, retries=1, sleep=slept) as polite:
        with pytest.raises(FetchError, match="robots.txt could not be read") as caught:
            polite.get(server.url("/posts"))
        assert f"HTTP {status}" in str(caught.value)
        assert not polite.allowed(server.url("/anything"))
        assert polite.robots_refused == 1
    assert server.hits("/posts") == 0 and server.hits("/robots.txt") == 2  # with its one retry
    assert "nothing on" in caplog.text


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_robots_client_error_allows_all(server: ScriptedServer, session: PoliteSession,
                                        status: int) -> None:
    server.script("/robots.txt", Reply(status))
    url = server.script("/posts", Reply(body=b"page"))
    assert session.get(url).content == b"page"


def test_robots_redirect_off_the_origin_disallows_all(
        server: ScriptedServer, session: PoliteSession) -> None:
    """Chosen over RFC 9309's "follow five redirects, even across authorities": the scraper follows
    redirects on its origin only, so a robots.txt elsewhere counts as unreachable."""
    elsewhere = server.url("/robots.txt", host="localhost")
    server.script("/robots.txt", Reply(301, headers={"Location": elsewhere}))
    server.script("/posts", Reply())
    with pytest.raises(FetchError, match="robots.txt could not be read.*another host"):
        session.get(server.url("/posts"))
    assert server.hits("/posts") == 0 and server.hits("/robots.txt") == 1


def test_robots_redirect_loop_disallows_all(server: ScriptedServer, session: PoliteSession) -> None:
    server.script("/robots.txt", Reply(302, headers={"Location": "/robots.txt"}))
    assert not session.allowed(server.url("/posts"))
    assert server.hits("/robots.txt") == 6  # the request and 5 redirects


def test_robots_redirect_on_the_origin_is_followed(
        server: ScriptedServer, session: PoliteSession) -> None:
    server.script("/robots.txt", Reply(301, headers={"Location": "/robots-2024.txt"}))
    server.script("/robots-2024.txt", Reply(body=b"User-agent: *\nDisallow: /private\n"))
    server.script("/public", Reply())
    session.get(server.url("/public"))
    assert not session.allowed(server.url("/private/a"))


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "until-close"])
def test_robots_over_500_kib_is_parsed_up_to_500_kib(
        server: ScriptedServer, session: PoliteSession, send_length: bool) -> None:
    """RFC 9309 2.5: at least 500 KiB must be parsed; a longer file is not thrown away whole."""
    head = b"User-agent: *\nDisallow: /private\n"
    padding = b"# " + b"x" * (ROBOTS_MAX_BYTES + 100_000) + b"\n"
    body = head + padding + b"Disallow: /beyond\n"
    server.script("/robots.txt", Reply(body=body, send_length=send_length))
    assert not session.allowed(server.url("/private/a"))
    assert session.allowed(server.url("/beyond/a"))  # past the first 500 KiB: never read
    assert session.allowed(server.url("/public"))


def test_without_respect_robots_robots_txt_is_never_fetched(
        server: ScriptedServer) -> None:
    server.script("/robots.txt", Reply(body=b"User-agent: *\nDisallow: /\n"))
    url = server.script("/posts", Reply())
    with PoliteSession(USER_AGENT, rate=1000, respect_robots=False) as polite:
        polite.get(url)
        assert polite.requests_sent == 1
    assert server.hits("/robots.txt") == 0


def test_server_error_pauses_the_host_for_every_thread(server: ScriptedServer,
                                                       slept: SleepRecorder) -> None:
    """A 5xx without Retry-After backs off the whole host, as a 429 does: the server is struggling
    for this client, not for one request."""
    waits = pause_seen_by_later_requests(server, slept, "/flaky", Reply(503))
    # backoff 240 s: the first retry waits between 120 and 240 s
    assert len(waits) == 2, waits
    assert 119 < waits[0] <= 240 and waits[0] - 10 < waits[1] <= waits[0], waits


def test_a_trickling_body_is_cut_at_the_deadline_and_retried(server: ScriptedServer) -> None:
    """One byte every 20 ms never trips the read timeout; the deadline for the whole download does,
    on every attempt, without waiting for the body to fill a read buffer. The deadline runs on a
    clock that moves 10 s a read: 200 s is about 20 reads, however fast or slow the machine is, and
    every real wait on a read stays 10 s or more, far above the 20 ms between bytes."""
    body = b"x" * 200
    url = server.script("/data/slow.jpg", Reply(body=body, trickle=0.02))
    with PoliteSession(USER_AGENT, rate=1000, timeout=60.0, deadline=200.0, retries=1, backoff=0.01,
                       clock=FakeClock(tick=10.0)) as polite, pytest.raises(FetchError) as caught:
        polite.get(url)
    assert "DeadlineExceeded" in str(caught.value) and "200 s deadline" in str(caught.value)
    assert server.hits("/data/slow.jpg") == 2
    # about 10 bytes an attempt (a clock read before each read and one in it); reading on to the
    # end of the body before the deadline is looked at would take all 200 on the first attempt
    assert server.trickled < len(body) // 2, server.trickled


class RawServer:
    """One connection on 127.0.0.1 answered with what no HTTP server library sends: after the
    request's head it sends `chunks`, `gap` seconds apart, then waits up to `stall` seconds for the
    client to hang up. `cut_short` is set when the client hung up before all that was done; `sent`
    counts the bytes sent."""

    def __init__(self, chunks: Callable[[], Iterable[bytes]], gap: float = 0.0,
                 stall: float = 0.0) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/data/a.jpg"
        self._chunks, self._gap, self._stall = chunks, gap, stall
        self.cut_short = threading.Event()
        self.done = threading.Event()
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            connection.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(4096)
            try:
                for chunk in self._chunks():
                    connection.sendall(chunk)
                    self.sent += len(chunk)
                    time.sleep(self._gap)
                if self._stall:
                    connection.settimeout(self._stall)
                    if connection.recv(1) == b"":
                        self.cut_short.set()
            except TimeoutError:
                pass
            except OSError:  # reset or broken pipe: the client hung up mid-send
                self.cut_short.set()
        self.done.set()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(chunks: Callable[[], Iterable[bytes]], gap: float = 0.0, stall: float = 0.0) -> RawServer:
        servers.append(RawServer(chunks, gap, stall))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _deadline_session(deadline: float, timeout: float = 5.0, clock: Callable[[], float] | None = None,
                      ) -> PoliteSession:
    extra = {} if clock is None else {"clock": clock}
    return PoliteSession(USER_AGENT, rate=1000, timeout=timeout, deadline=deadline, retries=0,
                         respect_robots=False, **extra)


def test_a_trickled_status_line_and_headers_are_cut_at_the_deadline(
        raw_server: Callable[..., RawServer]) -> None:
    """A byte every 2 ms never trips the 5 s read timeout, and http.client takes 64 KiB a header
    line: the status line and headers must fall under the 0.3 s deadline as the body does."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"a" * 3000
            + b"\r\nContent-Length: 2\r\n\r\nok")
    server = raw_server(lambda: (head[i:i + 1] for i in range(len(head))), gap=0.002)
    with _deadline_session(0.3) as polite, pytest.raises(FetchError) as caught:
        polite.get(server.url)
    assert "DeadlineExceeded" in str(caught.value) and "0.3 s deadline" in str(caught.value)
    assert server.done.wait(300) and server.cut_short.is_set()
    assert server.sent < len(head) // 2  # hung up long before the head was through (6 s)


def test_endless_100_continue_lines_are_cut_at_the_deadline(
        raw_server: Callable[..., RawServer]) -> None:
    """http.client skips any number of interim 100 Continue answers; every read they take counts
    towards the deadline. On a clock that moves 0.01 s a read, the 1 s deadline is reached after
    about 100 reads of the 20,000 lines sent."""
    server = raw_server(lambda: itertools.repeat(b"HTTP/1.1 100 Continue\r\n\r\n", 20_000), gap=0.001)
    with _deadline_session(1.0, clock=FakeClock(tick=0.01)) as polite, \
            pytest.raises(FetchError, match="DeadlineExceeded.*1 s deadline"):
        polite.get(server.url)
    assert server.done.wait(300) and server.cut_short.is_set()


def test_a_read_waiting_at_the_deadline_ends_there_not_at_the_timeout(
        raw_server: Callable[..., RawServer]) -> None:
    """The server sends a status line, then nothing: the read waiting for the headers ends at the
    0.3 s deadline, not at the 60 s read timeout (the server gives up waiting after 10 s)."""
    server = raw_server(lambda: [b"HTTP/1.1 200 OK\r\n"], stall=10.0)
    with _deadline_session(0.3, timeout=60.0) as polite, \
            pytest.raises(FetchError, match="DeadlineExceeded.*0.3 s deadline"):
        polite.get(server.url)
    assert server.done.wait(300) and server.cut_short.is_set()


def test_a_trickled_head_through_an_http_proxy_is_cut_at_the_deadline(
        raw_server: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy in HTTP_PROXY is what the client reads from: its answer has the same deadline."""
    head = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 3000 + b"\r\n\r\n"
    proxy = raw_server(lambda: (head[i:i + 1] for i in range(len(head))), gap=0.002)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/data/a.jpg"))
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with _deadline_session(0.3) as polite, \
            pytest.raises(FetchError, match="DeadlineExceeded.*0.3 s deadline"):
        polite.get("http://booru.invalid/data/a.jpg")
    assert proxy.done.wait(300) and proxy.sent < len(head) // 2


def test_a_compressed_body_decoding_to_nothing_is_cut_at_the_deadline(
        raw_server: Callable[..., RawServer]) -> None:
    """A gzip header whose comment never ends decodes to no data: urllib3 reads on for more, and
    each of those reads ends at the deadline."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Encoding: gzip\r\n"
            b"Connection: close\r\n\r\n\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\x03")
    server = raw_server(lambda: itertools.chain([head], itertools.repeat(b"c", 3000)), gap=0.002)
    with _deadline_session(0.3) as polite, \
            pytest.raises(FetchError, match="DeadlineExceeded.*0.3 s deadline"):
        polite.get(server.url)
    assert server.done.wait(300) and server.cut_short.is_set()
    assert server.sent < len(head) + 1500  # hung up long before the 6 s comment was through


def test_a_slow_body_within_the_deadline_is_read_whole(server: ScriptedServer) -> None:
    url = server.script("/data/slow.jpg", Reply(body=b"abcdefghij", trickle=0.02))
    with PoliteSession(USER_AGENT, rate=1000, timeout=1.0, deadline=5.0) as polite:
        assert polite.get(url).content == b"abcdefghij"


def test_chunked_and_compressed_bodies_are_read_whole(
        server: ScriptedServer, session: PoliteSession) -> None:
    data = bytes(range(256)) * 40
    chunked = server.script("/chunked", Reply(body=data, chunked=True))
    gzipped = server.script("/gzip", Reply(body=gzip.compress(data),
                                           headers={"Content-Encoding": "gzip"}))
    assert session.get(chunked).content == data
    assert session.get(gzipped).content == data


def test_a_compressed_body_is_limited_as_decoded(
        server: ScriptedServer, session: PoliteSession) -> None:
    """A 10 KB gzip of 10 MB of zeros counts as 10 MB: the limit holds for what is kept."""
    bomb = gzip.compress(bytes(10_000_000))
    url = server.script("/bomb", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(FetchError, match="1000000-byte limit"):
        session.get(url, max_bytes=1_000_000)


def test_every_request_carries_our_user_agent(
        server: ScriptedServer, session: PoliteSession) -> None:
    url = server.script("/posts", Reply(503), Reply())
    session.get(url)
    assert {arrival.user_agent for arrival in server.arrivals} == {USER_AGENT}
    assert session.requests_sent == 3
