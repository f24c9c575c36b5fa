"""The HTTP side of pipeline.serve, on the standard library alone: the page, /faces.png and
/conditions.json, and a one-line plain-text reason for any request it refuses.

It has no authentication and every grid costs CPU time, which is why it listens on 127.0.0.1
unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from pipeline.core.params import PipelineError
from pipeline.serving.faces import FaceServer
from pipeline.serving.page import page_html

log = logging.getLogger("pipeline.serve")

PAGE_PATHS = ("/", "/index.html")


class FacesHandler(BaseHTTPRequestHandler):
    server: FacesHTTPServer
    server_version = "anime-face-dcgan"
    sys_version = ""

    def do_GET(self) -> None:  # http.server calls it by this name
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
                png = faces.png(query)
            except Exception as exc:  # a bug, not the request: say so in one line, keep serving
                log.exception("drawing %s failed", self.path)
                self.refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"drawing failed ({exc.__class__.__name__})")
                return
            self.reply(HTTPStatus.OK, "image/png", png)
        else:
            self.refuse(HTTPStatus.NOT_FOUND, f"no such page {url.path[:60]!r}; "
                                              "try / (the page), /faces.png?n=16 or /conditions.json")

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
            log.debug("%s left before %s was sent", self.address_string(), self.path)

    def refuse(self, status: HTTPStatus, reason: str) -> None:
        """One line of plain text: the page shows it as it is, and curl prints it."""
        line = " ".join(reason.split())
        self.reply(status, "text/plain; charset=utf-8", f"{line}\n".encode())

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


class FacesHTTPServer(ThreadingHTTPServer):
    """One thread per request (a slow grid does not block the page), one lock around the generator."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], faces: FaceServer) -> None:
        self.faces = faces
        self.page = page_html(faces).encode()
        super().__init__(address, FacesHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"


class FacesHTTPServer6(FacesHTTPServer):
    address_family = socket.AF_INET6


def make_server(faces: FaceServer, host: str, port: int) -> FacesHTTPServer:
    """Bound and listening (port 0: a free one); a port in use or an unknown host is one line."""
    kind = FacesHTTPServer6 if ":" in host else FacesHTTPServer
    try:
        return kind((host, port), faces)
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
