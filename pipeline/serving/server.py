"""The HTTP side of pipeline.serve, on the standard library alone: the page, /faces.png and
/conditions.json, and a one-line plain-text reason for any request it refuses.

It has no authentication and every grid costs CPU time, which is why it listens on 127.0.0.1
unless told otherwise, and answers only requests that name it in their Host header.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from pipeline.core.params import PipelineError
from pipeline.serving.faces import FaceServer, shown
from pipeline.serving.page import page_html

log = logging.getLogger("pipeline.serve")

PAGE_PATHS = ("/", "/index.html")
IDLE_TIMEOUT_S = 30.0  # a connection that sends nothing for this long is closed, freeing its thread
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HTTP_PORT = 80  # the port of a Host header that names none
HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))"  # [IPv6] or name/IPv4
                         r"(?::(?P<port>[0-9]{1,5}))?")


def host_key(host: str) -> tuple[str, bool]:
    """A host as compared, and whether it is an IP address: an address in its one spelling
    (0:0::1 is ::1), a name in lower case."""
    try:
        return str(ipaddress.ip_address(host)), True
    except ValueError:
        return host.lower(), False


def with_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class HostCheck:
    """The Host header values this server answers to. DNS rebinding points another site's name at
    this machine, so a page of that site can reach the server; but its requests still carry that
    name, so they are refused before anything is drawn or sent."""

    port: int
    names: tuple[str, ...]  # as host_key spells them, in the order the refusal lists them
    every_ip_address: bool = False  # listening on every address: any IP address may name this machine

    @classmethod
    def listening_on(cls, asked: str, bound: str, port: int) -> HostCheck:
        """For a server asked to listen on `asked` and bound to the address `bound`: those two, and
        the loopback names when the loopback is among the addresses it listens on."""
        address = ipaddress.ip_address(bound)
        names = [host_key(bound)[0], host_key(asked)[0]]
        if address.is_loopback or address.is_unspecified:
            names += LOOPBACK_NAMES
        if address.is_unspecified:
            names.append(host_key(socket.gethostname())[0])
        return cls(port, tuple(dict.fromkeys(name for name in names if name)), address.is_unspecified)

    def admits(self, header: str) -> bool:
        match = HOST_HEADER.fullmatch(header.strip())
        if match is None or int(match["port"] or HTTP_PORT) != self.port:
            return False
        if match["ipv6"] is not None:
            try:
                host, is_address = str(ipaddress.IPv6Address(match["ipv6"])), True
            except ValueError:
                return False
        else:
            host, is_address = host_key(match["name"])
        return host in self.names or (is_address and self.every_ip_address)

    def describe(self) -> str:
        if self.every_ip_address:
            names = " or ".join(name for name in self.names if not host_key(name)[1])
            return f"an IP address of this machine, {names}, with port {self.port}"
        return ", ".join(with_port(name, self.port) for name in self.names)


def printable(text: str) -> str:
    """Text from a request as it may reach a terminal: control and other unprintable characters
    (and the backslash, so an escape cannot be faked) as Python escapes."""
    return "".join(character if character.isprintable() and character != "\\"
                   else character.encode("unicode_escape").decode("ascii") for character in text)


def client_left(connection: socket.socket) -> bool:
    """Whether the client has closed its end (what is left to read is the end of the stream),
    found without blocking; a request still being answered sends nothing more."""
    timeout = connection.gettimeout()
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset by the client
        return True
    finally:
        connection.settimeout(timeout)


class FacesHandler(BaseHTTPRequestHandler):
    server: FacesHTTPServer
    server_version = "anime-face-dcgan"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s  # StreamRequestHandler puts it on the socket
        super().setup()

    def do_GET(self) -> None:  # http.server calls it by this name
        if not self.host_is_served():
            return
        url = urlsplit(self.path)
        faces = self.server.faces
        if url.path in PAGE_PATHS:
            self.reply(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page)
        elif url.path == "/conditions.json":
            body = json.dumps(faces.conditions(), indent=1).encode() + b"\n"
            self.reply(HTTPStatus.OK, "application/json", body)
        elif url.path == "/faces.png":
            try:
                query = faces.parse(url.query)
            except PipelineError as exc:
                self.refuse(HTTPStatus.BAD_REQUEST, str(exc))
                return
            try:
                png = faces.png(query, still_wanted=lambda: not client_left(self.connection))
            except Exception as exc:  # a bug, not the request: say so in one line, keep serving
                log.exception("drawing %s failed", printable(self.path))
                self.refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"drawing failed ({exc.__class__.__name__})")
                return
            if png is None:
                log.info("%s left before %s was drawn; skipped", self.address_string(), printable(self.path))
                self.close_connection = True
                return
            self.reply(HTTPStatus.OK, "image/png", png)
        else:
            self.refuse(HTTPStatus.NOT_FOUND, f"no such page {url.path[:60]!r}; "
                                              "try / (the page), /faces.png?n=16 or /conditions.json")

    def host_is_served(self) -> bool:
        """False, with a one-line refusal sent, for a request without exactly one Host header that
        names this server (see HostCheck)."""
        hosts = self.headers.get_all("Host") or []
        served = self.server.hosts
        if len(hosts) != 1:
            missing = "has no Host header" if not hosts else "has more than one Host header"
            self.refuse(HTTPStatus.BAD_REQUEST, f"the request {missing}; this server answers only to "
                                                f"{served.describe()}")
            return False
        if not served.admits(hosts[0]):
            self.refuse(HTTPStatus.MISDIRECTED_REQUEST,
                        f"unknown Host {shown(hosts[0])}; this server answers only to {served.describe()}")
            return False
        return True

    def reply(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page asked for a newer grid meanwhile
            log.debug("%s left before %s was sent", self.address_string(), printable(self.path))

    def refuse(self, status: HTTPStatus, reason: str) -> None:
        """One line of plain text: the page shows it as it is, and curl prints it."""
        line = " ".join(reason.split())
        self.reply(status, "text/plain; charset=utf-8", f"{line}\n".encode())

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), printable(format % args))


class FacesHTTPServer(ThreadingHTTPServer):
    """One thread per request (a slow grid does not block the page), one lock around the generator."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], faces: FaceServer,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.faces = faces
        self.page = page_html(faces).encode()
        self.idle_timeout_s = idle_timeout_s
        super().__init__(address, FacesHandler)
        self.hosts = HostCheck.listening_on(address[0], *self.server_address[:2])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"


class FacesHTTPServer6(FacesHTTPServer):
    address_family = socket.AF_INET6


def make_server(faces: FaceServer, host: str, port: int,
                idle_timeout_s: float = IDLE_TIMEOUT_S) -> FacesHTTPServer:
    """Bound and listening (port 0: a free one); a port in use or an unknown host is one line."""
    kind = FacesHTTPServer6 if ":" in host else FacesHTTPServer
    try:
        return kind((host, port), faces, idle_timeout_s)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise PipelineError(f"cannot listen on {host}:{port}: {reason}") from None


def serve(server: FacesHTTPServer) -> None:
    """Until Ctrl-C, which stops it cleanly: a normal end, not an error."""
    print(f"serving {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
