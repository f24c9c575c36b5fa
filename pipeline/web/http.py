"""The scraper's one HTTP client, shared by every site adapter, polite by construction.

Every request start, retries and robots.txt included, passes one per-host rate limiter; robots.txt
is obeyed (RFC 9309); only failures that can heal are retried, and their waits follow what the
server asked for (a Retry-After, a 429 or a 5xx pauses that host for every thread: the server means
this client, not one request); bodies are bounded in size, and every read of an answer, from its
status line to its body's last byte, by the attempt's deadline, so a bad server can neither fill the
disk nor hold a download forever; redirects stay on the origin the scrape was pointed at.
urllib3's own Retry is not used because its retries would bypass the rate limiter.
"""

from __future__ import annotations

import http.client
import io
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from protego import Protego
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

from pipeline.core.params import PipelineError, ScrapeParams

log = logging.getLogger("pipeline.web.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB; what lies beyond is ignored
DISALLOW_ALL = Protego.parse("User-agent: *\nDisallow: /\n")
DEFAULT_PORTS = {"http": 80, "https": 443}
CHALLENGE_SNIFF_BYTES = 256 * 1024  # a Cloudflare challenge page puts its marker well before this
CHUNK_BYTES = 64 * 1024
TRANSIENT_ERRORS = (
    requests.ConnectionError,  # refused, reset, DNS, and read timeouts while streaming the body
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # body cut short, Content-Length mismatch included
)
_DELTA_SECONDS = re.compile(r"\s*(\d+)\s*")


class FetchError(PipelineError):
    """A request that failed for good: the caller skips the item or stops, it never retries."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class CloudflareChallenge(FetchError):
    """The site answers with a bot challenge; retrying only annoys it, so stop that source."""


class DeadlineExceeded(requests.Timeout):
    """A download still unfinished at its deadline, however steadily its bytes trickle in: given up
    and retried like any timeout."""


@dataclass(frozen=True)
class Deadline:
    """The moment an attempt is given up: `seconds` after it started, on `clock`."""
    seconds: float
    at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def start(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(seconds, clock() + seconds, clock)

    def remaining(self) -> float:
        return self.at - self.clock()

    def exceeded(self, url: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"{url}: not finished within its {self.seconds:g} s deadline")

    def check(self, url: str) -> None:
        if self.remaining() < 0:
            raise self.exceeded(url)


_attempt = threading.local()  # .deadline: the Deadline of the request this thread is making


class _DeadlineReads(io.RawIOBase):
    """A response's socket reads, each bounded by the deadline as well as by the read timeout:
    a server trickling its status line, its headers, endless `100 Continue` answers or its body
    cannot hold an attempt past its deadline, and a read waiting at the deadline ends there."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._reads = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._reads.fileno()

    def readinto(self, buffer: bytearray | memoryview) -> int | None:
        remaining = self._deadline.remaining()
        if remaining <= 0:
            raise TimeoutError(f"not finished within its {self._deadline.seconds:g} s deadline")
        timeout = self._sock.gettimeout()  # the read timeout, restored for the connection's reuse
        self._sock.settimeout(remaining if timeout is None else min(timeout, remaining))
        try:
            return self._reads.readinto(buffer)
        finally:
            self._sock.settimeout(timeout)

    def close(self) -> None:
        self._reads.close()
        super().close()


class _SocketWithDeadline:
    """All that http.client's response asks of its socket, a file to read, with the reads bounded."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReads(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading through the deadline of the request that asked for it."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        deadline: Deadline | None = getattr(_attempt, "deadline", None)
        super().__init__(sock if deadline is None else _SocketWithDeadline(sock, deadline),
                         *args, **kwargs)


class _HTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse


class _HTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse


class _HTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_DEADLINE_POOLS = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections, direct or through an HTTP proxy, read each answer
    within its request's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # a SOCKS proxy needs pools of its own kind
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager


@dataclass(frozen=True)
class BodyLimits:
    """What a body must be to be read: at most `max_bytes` (a longer one is refused, or with
    `truncate` cut there: robots.txt), of a Content-Type starting with one of `accept`."""
    max_bytes: int | None = None
    accept: tuple[str, ...] | None = None
    truncate: bool = False


@dataclass(frozen=True)
class Robots:
    """An origin's robots.txt rules; `unreadable` says why none could be read, which disallows all."""
    rules: Protego
    unreadable: str | None = None


class HostRateLimiter:
    """Spaces request starts to each host at least 1/rate apart across all threads, so parallel
    downloads never add up to more than the budget the site is given."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start: dict[str, float] = {}

    def wait(self, host: str) -> None:
        """Reserve the host's next free slot under the lock, then sleep outside it, so waiting
        threads queue up in order instead of racing for the same slot. An idle host earns no
        burst: a slot is never earlier than now."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + self._interval
        if start > now:
            self._sleep(start - now)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Servers send either delta-seconds or an HTTP date (RFC 9110 10.2.3); a date already past
    means "now", and anything unreadable means the header might as well be absent."""
    if value is None:
        return None
    if match := _DELTA_SECONDS.fullmatch(value):
        return float(match[1])
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):  # Python 3.10 raises TypeError for some garbage
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (_as_utc(when) - _as_utc(now)).total_seconds())


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _hostname(url: str) -> str:
    return urlsplit(url).hostname or ""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _scheme_host_port(url: str) -> tuple[str, str, int] | None:
    """The origin of an http(s) URL with its default port filled in; None for any other URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port out of range or not a number
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def redirect_allowed(source: str, target: str) -> bool:
    """Only to the same scheme, host and port, or from http to https on the host's default https
    port: another host, another port (another service) or a downgrade to http is somewhere the
    scrape was not pointed, and robots.txt and the rate limit were set up for this origin."""
    here, there = _scheme_host_port(source), _scheme_host_port(target)
    if here is None or there is None:
        return False
    return there == here or (here[0] == "http" and there == ("https", here[1], DEFAULT_PORTS["https"]))


class PoliteSession:
    """A requests session that cannot be impolite: see the module docstring.

    `sleep` is used for retry waits and server-requested pauses only, and `clock` for deadlines
    only; the rate limiter always runs on the real clock, so a test that records sleeps or moves
    the clock cannot switch politeness off by accident.
    """

    def __init__(self, user_agent: str, rate: float, timeout: float = ScrapeParams.timeout,
                 deadline: float = ScrapeParams.deadline,
                 retries: int = ScrapeParams.retries, backoff: float = 1.0, max_backoff: float = 60.0,
                 default_retry_after: float = 30.0, max_retry_after: float = 300.0,
                 respect_robots: bool = True,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.user_agent = user_agent
        self.timeout = timeout  # to connect, and for each read
        self.deadline = deadline  # for a whole attempt, from its status line to its body's end
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.default_retry_after = default_retry_after
        self.max_retry_after = max_retry_after
        self.respect_robots = respect_robots
        self._sleep = sleep
        self._clock = clock
        self._limiter = HostRateLimiter(rate)
        self._session = requests.Session()
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, _DeadlineAdapter())
        self._session.headers["User-Agent"] = user_agent
        self._lock = threading.Lock()  # guards the counters and the robots lock table
        self._requests_sent = 0
        self._robots_refused = 0
        self._robots: dict[str, Robots] = {}
        self._robots_locks: dict[str, threading.Lock] = {}
        self._paused_until: dict[str, float] = {}  # host -> time.monotonic() its pause ends

    @property
    def requests_sent(self) -> int:
        """Every request put on the wire: attempts, redirect hops and robots.txt."""
        return self._requests_sent

    @property
    def robots_refused(self) -> int:
        return self._robots_refused

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets our user agent fetch `url` (RFC 9309 2.3.1). A site without a
        robots.txt (a 4xx other than 429) allows everything. One whose robots.txt cannot be read
        (5xx or 429 after the retries, no connection, a redirect off the origin or more than 5)
        disallows everything: the site may be down or overloaded, and what it forbids is unknown.
        A Cloudflare challenge on robots.txt is raised: the pages behind it would get one too."""
        if not self.respect_robots:
            return True
        return self._robots_for(_origin(url)).rules.can_fetch(url, self.user_agent)

    def get(self, url: str, *, max_bytes: int | None = None,
            accept: tuple[str, ...] | None = None) -> requests.Response:
        """GET `url` politely; the returned response has its body read, within `max_bytes` and the
        deadline, and a Content-Type starting with one of `accept` when given. Raises FetchError
        otherwise."""
        return self._get_following_redirects(url, BodyLimits(max_bytes, accept), obey_robots=True)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PoliteSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _robots_for(self, origin: str) -> Robots:
        """One fetch per origin even when many threads ask at once: a lock per origin, so a slow
        robots.txt on one site does not hold up the others."""
        with self._lock:
            origin_lock = self._robots_locks.setdefault(origin, threading.Lock())
        with origin_lock:
            if origin not in self._robots:
                self._robots[origin] = self._load_robots(origin)
            return self._robots[origin]

    def _load_robots(self, origin: str) -> Robots:
        robots_url = f"{origin}/robots.txt"
        try:
            response = self._get_following_redirects(
                robots_url, BodyLimits(ROBOTS_MAX_BYTES, truncate=True), obey_robots=False)
        except CloudflareChallenge:
            raise
        except FetchError as exc:
            if exc.status is not None and 400 <= exc.status < 500 \
                    and exc.status not in RETRY_STATUSES:
                log.debug("%s: HTTP %d, so everything is allowed", robots_url, exc.status)
                return Robots(Protego.parse(""))
            log.warning("%s; robots.txt cannot be read, so nothing on %s is fetched", exc, origin)
            return Robots(DISALLOW_ALL, unreadable=str(exc))
        return Robots(Protego.parse(response.content.decode("utf-8", errors="replace")))

    def _refusal(self, url: str) -> str:
        unreadable = self._robots_for(_origin(url)).unreadable
        if unreadable is None:
            return f"{url}: robots.txt disallows it for our user agent"
        return f"{url}: robots.txt could not be read, which disallows everything ({unreadable})"

    def _get_following_redirects(self, url: str, limits: BodyLimits,
                                 obey_robots: bool) -> requests.Response:
        """Redirects are followed here, not by requests, so every hop is rate-limited, checked
        against robots.txt, and kept on the origin the scrape was pointed at (redirect_allowed)."""
        requested_url = url
        for _ in range(MAX_REDIRECTS + 1):
            if obey_robots and not self.allowed(url):
                with self._lock:
                    self._robots_refused += 1
                raise FetchError(self._refusal(url), url=url)
            response = self._get_with_retries(url, limits)
            if not response.is_redirect:
                return response
            target = urljoin(url, response.headers["Location"])
            if not redirect_allowed(url, target):
                raise FetchError(f"{url}: redirects to another host, port or scheme ({target}); "
                                 "not following", url=url, status=response.status_code)
            url = target
        raise FetchError(f"{requested_url}: more than {MAX_REDIRECTS} redirects",
                         url=requested_url, status=response.status_code)

    def _get_with_retries(self, url: str, limits: BodyLimits) -> requests.Response:
        host = _hostname(url)
        attempt = 0
        while True:
            self._wait_turn(host)
            with self._lock:
                self._requests_sent += 1
            deadline = Deadline.start(self.deadline, self._clock)
            try:
                with _requested_within(deadline), self._session.get(
                        url, timeout=self.timeout, stream=True, allow_redirects=False) as response:
                    if _is_cloudflare_challenge(response, url, deadline):
                        raise CloudflareChallenge(
                            f"{url}: the site is behind a Cloudflare bot challenge "
                            f"(HTTP {response.status_code}); this scraper will not solve it",
                            url=url, status=response.status_code)
                    if response.status_code not in RETRY_STATUSES:
                        _check_and_read(response, url, limits, deadline)
                        return response
                    status: int | None = response.status_code
                    reason = f"HTTP {response.status_code}"
                    pause = self._pause_asked(response)
            except TRANSIENT_ERRORS as exc:
                # past the deadline, the deadline ended the attempt, whatever the error read like
                failure = deadline.exceeded(url) if deadline.remaining() < 0 else exc
                status, reason, pause = None, f"{type(failure).__name__}: {failure}", None
            except requests.RequestException as exc:  # a bad URL or body encoding: will not heal
                raise FetchError(f"{url}: {type(exc).__name__}: {exc}", url=url) from exc
            if attempt >= self.retries:
                raise FetchError(f"{url}: giving up after {attempt + 1} attempts, last: {reason}",
                                 url=url, status=status)
            wait = self._backoff(attempt) if pause is None else pause
            log.warning("%s: %s; retry %d of %d in %.1f s", url, reason, attempt + 1,
                        self.retries, wait)
            if status is None:  # no answer (a lost connection, a timeout): this request's bad luck
                self._sleep(wait)
            else:  # the server answered 429 or 5xx to this client, not to one request: all wait
                self._pause_host(host, wait)
            attempt += 1

    def _wait_turn(self, host: str) -> None:
        """Take a slot of the host's rate limit outside any pause it asked for. A pause that began
        while this thread waited for its slot is sat out and a fresh slot taken, so threads that
        wake from one pause still start 1/rate apart."""
        known = 0.0
        while True:
            known = self._sit_out_pause(host, known)
            self._limiter.wait(host)
            with self._lock:
                if self._paused_until.get(host, 0.0) <= known:
                    return

    def _sit_out_pause(self, host: str, known: float) -> float:
        """Sleep to the end of the host's pause if it ends later than `known`; returns that end."""
        with self._lock:
            until = self._paused_until.get(host, 0.0)
        remaining = until - time.monotonic()
        if until > known and remaining > 0:
            self._sleep(remaining)
        return until

    def _pause_host(self, host: str, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            self._paused_until[host] = max(until, self._paused_until.get(host, until))

    def _pause_asked(self, response: requests.Response) -> float | None:
        """How long the server asked us to stay away: its Retry-After within a bound, or for a
        429 without one a bounded default; None when it did not say (plain backoff then)."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        if response.status_code == 429:
            return self.default_retry_after
        return None

    def _backoff(self, attempt: int) -> float:
        """Exponential with equal jitter: at least half the step, so retries still back off,
        and a random rest, so threads that failed together do not come back together."""
        step = min(self.max_backoff, self.backoff * 2 ** attempt)
        return step / 2 + random.uniform(0, step / 2)


@contextmanager
def _requested_within(deadline: Deadline) -> Iterator[None]:
    """Answers to requests this thread makes meanwhile are read within `deadline`."""
    _attempt.deadline = deadline
    try:
        yield
    finally:
        _attempt.deadline = None


def _is_cloudflare_challenge(response: requests.Response, url: str, deadline: Deadline) -> bool:
    if response.status_code not in (403, 503):
        return False
    if response.headers.get("Server", "").strip().lower() != "cloudflare":
        return False
    if response.headers.get("cf-mitigated", "").strip().lower() == "challenge":
        return True
    sniffed = b""
    for chunk in _body_chunks(response, url, deadline):
        sniffed += chunk
        if len(sniffed) >= CHALLENGE_SNIFF_BYTES:
            break
    return b"_cf_chl_opt" in sniffed


def _check_and_read(response: requests.Response, url: str, limits: BodyLimits,
                    deadline: Deadline) -> None:
    """Fail permanently on a client error, a wrong Content-Type or an oversized body, and
    otherwise leave the whole body in `response.content`. Redirects are left unread."""
    status = response.status_code
    if status >= 400:
        raise FetchError(f"{url}: HTTP {status} {response.reason}", url=url, status=status)
    if response.is_redirect:
        return
    content_type = response.headers.get("Content-Type", "")
    if limits.accept is not None and not content_type.strip().lower().startswith(limits.accept):
        raise FetchError(f"{url}: Content-Type {content_type!r} is not one of "
                         f"{', '.join(limits.accept)}", url=url, status=status)
    max_bytes = limits.max_bytes
    declared = response.headers.get("Content-Length", "")
    if max_bytes is not None and not limits.truncate and declared.isdigit() \
            and int(declared) > max_bytes:
        raise FetchError(f"{url}: Content-Length {declared} is over the {max_bytes}-byte limit",
                         url=url, status=status)
    body = bytearray()
    for chunk in _body_chunks(response, url, deadline):
        body += chunk
        if max_bytes is not None and len(body) > max_bytes:
            if limits.truncate:
                del body[max_bytes:]
                break
            raise FetchError(f"{url}: body is over the {max_bytes}-byte limit",
                             url=url, status=status)
    response._content = bytes(body)  # requests has no public way to hand over a streamed body


def _body_chunks(response: requests.Response, url: str, deadline: Deadline) -> Iterator[bytes]:
    """The decoded body as it arrives, the deadline checked between chunks. urllib3's read1 returns
    what one socket read brings, and each read ends at the deadline (_DeadlineReads), so a server
    trickling bytes is cut off there; iter_content would wait for a whole chunk."""
    while True:
        deadline.check(url)
        chunk = _read1(response.raw)
        if not chunk:
            return
        yield chunk


def _read1(raw: urllib3.HTTPResponse) -> bytes:
    """One read of the body, its errors raised as requests' iter_content raises them, so the
    retry loop tells a connection that can heal from a body that cannot."""
    try:
        return raw.read1(CHUNK_BYTES, decode_content=True)
    except urllib3.exceptions.ProtocolError as exc:  # cut short, Content-Length mismatch
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
