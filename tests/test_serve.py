"""pipeline.serve: the real server on 127.0.0.1 (grids, determinism, every refused request, the page),
the command line (one-line errors, Ctrl-C), and the page in a real headless Chromium driven by
Playwright (skipped with a reason where no Chromium is installed; required under CI)."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import Elements, as_trained, page_text_in, shipped, template_lines_in
from PIL import Image

from pipeline.core.cli import run_stage
from pipeline.generate import main as generate_main
from pipeline.models.ema import recalibrate_batchnorm
from pipeline.models.networks import Generator, NetConfig, load_generator, save_generator
from pipeline.serve import main
from pipeline.serving.faces import FaceServer
from pipeline.serving.page import page_html
from pipeline.serving.server import FacesHTTPServer, HostCheck, make_server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CONDITIONS = (("hair", ("black_hair", "blonde_hair", "blue_hair")), ("eyes", ("blue_eyes", "red_eyes")))
KNOWN_TAGS = "hair: black_hair blonde_hair blue_hair; eyes: blue_eyes red_eyes"
FACE_PX = 96  # 48 px faces upscaled 2x
HANG_GUARD_S = 600  # only against a hang: a busy machine may be slow, never this slow


def grid_px(faces: int) -> int:
    """Side of `faces` 96 px faces in a row, 2 px apart and around."""
    return faces * (FACE_PX + 2) + 2


def write_generator(path: Path, conditions: tuple = ()) -> Path:
    """A tiny untrained generator. Fresh DCGAN weights draw flat grey, the same for every seed and
    tag; calibrated batch norm, a louder output layer and conditional norms with the kind of weights
    training gives them give every face and tag its own texture."""
    config = NetConfig(ngf=8, conditions=conditions)
    generator = as_trained(Generator(config))
    recalibrate_batchnorm(generator, config.nz, torch.device("cpu"), seed=0, batches=1)
    with torch.no_grad():
        generator.net[-2].weight.mul_(10)
    save_generator(path, generator, config, ema=True, epoch=1)
    return path


@contextmanager
def serving(path: Path, host: str = "127.0.0.1", **options: Any) -> Iterator[FacesHTTPServer]:
    """The real server for a generator file, in a thread, on a free port of `host`."""
    generator, payload = load_generator(path, torch.device("cpu"))
    server = make_server(FaceServer(generator, payload, path), host, 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def start(path: Path) -> Iterator[str]:
    with serving(path) as server:
        yield server.url


@pytest.fixture(scope="module")
def conditional_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_generator(tmp_path_factory.mktemp("conditional") / "best.pt", CONDITIONS)


@pytest.fixture(scope="module")
def conditional(conditional_file: Path) -> Iterator[str]:
    yield from start(conditional_file)


@pytest.fixture(scope="module")
def unconditional_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_generator(tmp_path_factory.mktemp("unconditional") / "best.pt")


@pytest.fixture(scope="module")
def unconditional(unconditional_file: Path) -> Iterator[str]:
    yield from start(unconditional_file)


def get(url: str) -> tuple[int, str, bytes]:
    """Status, content type and body, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def faces(base: str, query: str) -> bytes:
    status, kind, body = get(f"{base}faces.png?{query}")
    assert (status, kind) == (200, "image/png"), body[:200]
    return body


def decoded(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return image


def test_grid_is_a_near_square_png_of_96_px_faces(conditional: str) -> None:
    assert decoded(faces(conditional, "n=16&seed=3&temperature=0.8&hair=blonde_hair&eyes=any")).size == (
        grid_px(4), grid_px(4))
    assert decoded(faces(conditional, "n=5")).size == (grid_px(3), grid_px(2))
    assert decoded(faces(conditional, "n=64")).size == (grid_px(8), grid_px(8))


def test_grid_is_pipeline_generates(unconditional: str, unconditional_file: Path, tmp_path: Path) -> None:
    """The same seeded noise and grid as the command line, so a face found here can be drawn big there."""
    out = tmp_path / "faces.png"
    generate_main(["--generator", str(unconditional_file), "--n", "9", "--seed", "3", "--temperature", "0.8",
                   "--size", "96", "--out", str(out)])
    assert faces(unconditional, "n=9&seed=3&temperature=0.8") == out.read_bytes()


def test_same_query_same_bytes_and_every_setting_counts(conditional: str) -> None:
    base = faces(conditional, "n=4&seed=3&temperature=0.8&hair=blonde_hair")
    assert faces(conditional, "n=4&seed=3&temperature=0.8&hair=blonde_hair") == base
    assert faces(conditional, "hair=blonde_hair&eyes=any&temperature=0.80&seed=3&n=4") == base
    others = [faces(conditional, query) for query in (
        "n=4&seed=4&temperature=0.8&hair=blonde_hair",
        "n=4&seed=3&temperature=0.5&hair=blonde_hair",
        "n=4&seed=3&temperature=0.8&hair=blue_hair",
        "n=4&seed=3&temperature=0.8&hair=blonde_hair&eyes=red_eyes",
        "n=4&seed=3&temperature=0.8",
    )]
    assert len({base, *others}) == 6
    assert faces(conditional, "n=4") == faces(conditional, "n=4&seed=0&temperature=1&hair=any&eyes=any")


def test_parallel_requests_get_the_bytes_of_serial_ones(conditional: str) -> None:
    queries = [f"n=9&seed={seed}&hair=black_hair" for seed in range(6)]
    serial = [faces(conditional, query) for query in queries]
    results: dict[str, bytes] = {}
    threads = [threading.Thread(target=lambda q=q: results.__setitem__(q, faces(conditional, q)))
               for q in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[query] for query in queries] == serial


def refused(url: str, status: int = 400) -> str:
    """The one-line plain-text reason of a refused request."""
    code, kind, body = get(url)
    assert (code, kind) == (status, "text/plain; charset=utf-8")
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.strip()


@pytest.mark.parametrize(("query", "reason"), [
    ("n=4&hair=green_hairr", f"unknown tag 'green_hairr'; known tags: {KNOWN_TAGS}; or any"),
    ("n=4&colour=blue_hair", "unknown parameter 'colour'; known: n, seed, temperature, hair, eyes"),
    ("n=4&hair=blue_eyes", "'blue_eyes' belongs to eyes, not hair; hair tags: black_hair blonde_hair "
                           "blue_hair or any"),
    ("n=4&eyes=Blue_eyes", f"unknown tag 'Blue_eyes'; known tags: {KNOWN_TAGS}; or any"),
    ("n=4&hair=", f"unknown tag ''; known tags: {KNOWN_TAGS}; or any"),
    ("n=4&hair=blue_hair&hair=black_hair", "'hair' given twice; give each parameter once"),
    ("n=4&temperature=warm", "temperature must be a number in (0, 2], got 'warm'"),
    ("n=4&temperature=0", "temperature must be a number in (0, 2], got '0'"),
    ("n=4&temperature=-0.5", "temperature must be a number in (0, 2], got '-0.5'"),
    ("n=4&temperature=2.01", "temperature must be a number in (0, 2], got '2.01'"),
    ("n=4&temperature=nan", "temperature must be a number in (0, 2], got 'nan'"),
    ("n=4&temperature=inf", "temperature must be a number in (0, 2], got 'inf'"),
    ("n=4&seed=1.5", "seed must be a whole number from 0 to 4294967295, got '1.5'"),
    ("n=4&seed=-1", "seed must be a whole number from 0 to 4294967295, got '-1'"),
    ("n=4&seed=4294967296", "seed must be a whole number from 0 to 4294967295, got '4294967296'"),
    ("n=4&seed=1_000", "seed must be a whole number from 0 to 4294967295, got '1_000'"),
    ("n=4&seed=%D9%A3", "seed must be a whole number from 0 to 4294967295, got '\u0663'"),
    ("n=4&temperature=0.0_5", "temperature must be a number in (0, 2], got '0.0_5'"),
    ("n=4&temperature=%EF%BC%91", "temperature must be a number in (0, 2], got '\uff11'"),
    ("n=4&temperature=%D9%A0.%D9%A5", "temperature must be a number in (0, 2], got '\u0660.\u0665'"),
    ("n=4&temperature=%200.5", "temperature must be a number in (0, 2], got ' 0.5'"),
    ("n=4&temperature=1e-1", "temperature must be a number in (0, 2], got '1e-1'"),
    ("n=4&temperature=%2B1", "temperature must be a number in (0, 2], got '+1'"),
    ("n=4&temperature=0.5.1", "temperature must be a number in (0, 2], got '0.5.1'"),
    ("n=4&temperature=.", "temperature must be a number in (0, 2], got '.'"),
    ("seed=3", "n is required: the number of faces, 1 to 64"),
    ("", "n is required: the number of faces, 1 to 64"),
    ("n=0", "n must be a whole number from 1 to 64, got '0'"),
    ("n=65", "n must be a whole number from 1 to 64, got '65'"),
    ("n=four", "n must be a whole number from 1 to 64, got 'four'"),
    ("n=4&hair=" + "x" * 5000, f"unknown tag '{'x' * 40}...'; known tags: {KNOWN_TAGS}; or any"),
    ("n=4&hair=%0Ablue_hair", f"unknown tag '\\nblue_hair'; known tags: {KNOWN_TAGS}; or any"),
    ("&".join(f"p{i}=1" for i in range(40)), "too many query parameters (at most 32)"),
])
def test_bad_requests_are_400_with_one_line(conditional: str, query: str, reason: str) -> None:
    assert refused(f"{conditional}faces.png?{query}") == reason


def test_tags_for_an_unconditional_generator_are_refused(unconditional: str) -> None:
    assert refused(f"{unconditional}faces.png?n=4&hair=any") == (
        "unknown parameter 'hair'; known: n, seed, temperature (this generator is unconditional)")


def test_unknown_path_is_404_with_one_line(conditional: str) -> None:
    assert refused(f"{conditional}faces.jpg?n=4", 404).startswith("no such page '/faces.jpg'")
    assert refused(f"{conditional}favicon.ico", 404).startswith("no such page '/favicon.ico'")


def test_conditions_list_groups_with_any_first(conditional: str, unconditional: str) -> None:
    status, kind, body = get(f"{conditional}conditions.json")
    assert (status, kind) == (200, "application/json")
    conditions = json.loads(body)
    assert conditions["groups"] == {"hair": ["any", "black_hair", "blonde_hair", "blue_hair"],
                                    "eyes": ["any", "blue_eyes", "red_eyes"]}
    assert conditions["generator"] == "EMA generator after epoch 1, 48 px faces"
    assert (conditions["image_size"], conditions["epoch"], conditions["max_faces"]) == (48, 1, 64)
    assert json.loads(get(f"{unconditional}conditions.json")[2])["groups"] == {}


def page(base: str) -> str:
    status, kind, body = get(base)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    return body.decode()


def test_page_has_a_labelled_picker_per_group_with_any_first(conditional: str) -> None:
    html = page(conditional)
    elements = Elements(html)
    pickers = elements.find("select", **{"class": "tag-picker"})
    assert [attrs["data-group"] for attrs in pickers] == ["hair", "eyes"]
    for attrs in pickers:
        assert elements.find("label", **{"for": attrs["id"]})
    assert '<option value="any">any</option><option value="black_hair">' in html
    assert "EMA generator after epoch 1, 48 px faces, conditioned on hair, eyes" in html
    slider = elements.find("input", id="temperature")[0]
    assert (slider["type"], slider["min"], slider["max"], slider["step"], slider["value"]) == (
        "range", "0.1", "2.0", "0.05", "1.0")
    for ident in ("temperature", "seed", "count"):
        assert elements.find("label", **{"for": ident})


def test_page_without_groups_has_no_pickers(unconditional: str) -> None:
    html = page(unconditional)
    assert not Elements(html).find("select", **{"class": "tag-picker"})
    assert "unconditional" in html and "<fieldset>" not in html


def test_page_is_the_shipped_templates_filled(conditional: str) -> None:
    """Markup, style and script are package files: page.html filled in, the report's base.css then
    page.css as the style, page.js as the script."""
    html = page(conditional)
    style = re.search(r"<style>\n(.*?)</style>", html, re.S)[1]
    assert style == shipped("pipeline.rendering", "base.css") + "\n" + shipped("pipeline.serving", "page.css")
    script = re.search(r"<script>\n(.*?)</script>", html, re.S)[1]
    assert script == shipped("pipeline.serving", "page.js")
    assert 'getElementById("controls")' in script and "a.button" in style
    assert template_lines_in(html, shipped("pipeline.serving", "page.html")) == []
    assert "$" not in html.replace(style, "").replace(script, "")


def test_page_code_holds_no_markup_style_or_script() -> None:
    assert page_text_in("pipeline.serving.page") == []


def test_a_file_name_with_markup_is_shown_escaped(conditional_file: Path, tmp_path: Path) -> None:
    odd = tmp_path / 'odd<b>&"name.pt'
    shutil.copyfile(conditional_file, odd)
    generator, payload = load_generator(odd, torch.device("cpu"))
    html = page_html(FaceServer(generator, payload, odd))
    assert 'conditioned on hair, eyes · odd&lt;b&gt;&amp;&quot;name.pt</p>' in html
    assert "<b>" not in html


def test_page_needs_nothing_but_this_server(conditional: str) -> None:
    elements = Elements(page(conditional))
    image, = elements.find("img", id="faces")
    link, = elements.find("a", id="download")
    assert image["src"] == link["href"] and link["download"] == "faces-seed-0.png"
    assert decoded(faces(conditional, image["src"].split("?", 1)[1])).size == (grid_px(4), grid_px(4))
    for tag, attrs in elements.tags:
        assert tag not in ("iframe", "object", "embed")
        assert not (tag == "script" and attrs.get("src"))
        for key in ("src", "href"):
            assert (attrs.get(key) or "faces.png?").startswith(("faces.png?", "data:")), (tag, attrs)


def test_no_answer_names_a_folder_of_this_machine(conditional: str, conditional_file: Path) -> None:
    """The file is shown by name (or relative to the project): a page or client learns no folder."""
    folder = str(conditional_file.parent)
    conditions = json.loads(get(f"{conditional}conditions.json")[2])
    assert conditions["file"] == "best.pt"
    html = page(conditional)
    assert "conditioned on hair, eyes · best.pt</p>" in html
    for body in (html, json.dumps(conditions), get(f"{conditional}nothing")[2].decode(),
                 get(f"{conditional}faces.png?n=99")[2].decode()):
        assert folder not in body


def test_a_generator_inside_the_project_is_shown_relative_to_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    write_generator(project / "models" / "best.pt")
    write_generator(tmp_path / "elsewhere" / "other.pt")
    monkeypatch.chdir(project)
    shown = {}
    for path in (Path("models/best.pt"), project / "models" / "best.pt", Path("models/../models/best.pt"),
                 Path("../elsewhere/other.pt"), tmp_path / "elsewhere" / "other.pt"):
        generator, payload = load_generator(path, torch.device("cpu"))
        shown[str(path)] = FaceServer(generator, payload, path).conditions()["file"]
    assert list(shown.values()) == ["models/best.pt"] * 3 + ["other.pt"] * 2, shown


def ask(server: FacesHTTPServer, path: str, host: str | None) -> tuple[int, str]:
    """Status and body of a GET sent with this Host header (None: without one), as a page on
    another site renamed to this machine would send it."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=HANG_GUARD_S)
    try:
        connection.putrequest("GET", path, skip_host=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


FOREIGN_HOSTS = ("attacker.example:{port}", "attacker.example", "localhost.attacker.example:{port}",
                 "127.0.0.1.nip.io:{port}", "127.0.0.1:{other}", "localhost", "localhost.:{port}",
                 "user@127.0.0.1:{port}", "127.0.0.1:{port}/x", "", "\x1b[2J:{port}")


def test_a_foreign_host_gets_421_with_one_line_and_nothing_else(conditional_file: Path) -> None:
    """DNS rebinding: a page elsewhere renames its site to 127.0.0.1, but still sends its own name."""
    with serving(conditional_file) as server:
        port = server.server_address[1]
        answers_to = f"127.0.0.1:{port}, localhost:{port}, [::1]:{port}"
        for path in ("/", "/conditions.json", "/faces.png?n=4", "/nothing"):
            for host in FOREIGN_HOSTS:
                header = host.format(port=port, other=port + 1 if port < 65535 else port - 1)
                refusal = f"unknown Host {header!r}; this server answers only to {answers_to}\n"
                assert ask(server, path, header) == (421, refusal), (path, header)
        assert ask(server, "/conditions.json", None) == (
            400, f"the request has no Host header; this server answers only to {answers_to}\n")


def test_the_names_of_the_loopback_address_are_served(conditional_file: Path) -> None:
    with serving(conditional_file) as server:
        port = server.server_address[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}",
                     f"[0:0::1]:{port}"):
            status, body = ask(server, "/conditions.json", host)
            assert status == 200 and json.loads(body)["epoch"] == 1, host


def test_an_ipv6_loopback_server_checks_the_host_too(conditional_file: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with serving(conditional_file, "::1") as server:
        port = server.server_address[1]
        for host in (f"[::1]:{port}", f"localhost:{port}", f"127.0.0.1:{port}"):
            assert ask(server, "/conditions.json", host)[0] == 200, host
        assert ask(server, "/", f"attacker.example:{port}") == (
            421, f"unknown Host 'attacker.example:{port}'; this server answers only to [::1]:{port}, "
                 f"localhost:{port}, 127.0.0.1:{port}\n")


def test_host_check_for_every_kind_of_address() -> None:
    everywhere = HostCheck.listening_on("0.0.0.0", "0.0.0.0", 8000)
    for host in ("192.168.1.5:8000", "[fe80::1]:8000", "localhost:8000", f"{socket.gethostname()}:8000",
                 "0.0.0.0:8000"):
        assert everywhere.admits(host), host
    for host in ("attacker.example:8000", "192.168.1.5:8001", "192.168.1.5", "192.168.001.5:8000"):
        assert not everywhere.admits(host), host
    assert everywhere.describe() == (f"an IP address of this machine, localhost or {socket.gethostname()}, "
                                     "with port 8000")
    lan = HostCheck.listening_on("192.168.1.5", "192.168.1.5", 8000)
    assert lan.admits("192.168.1.5:8000")
    assert not any(lan.admits(host) for host in ("localhost:8000", "127.0.0.1:8000", "192.168.1.6:8000"))
    named = HostCheck.listening_on("box.lan", "192.168.1.5", 8000)
    assert named.admits("box.lan:8000") and named.admits("BOX.lan:8000") and named.admits("192.168.1.5:8000")
    assert named.describe() == "192.168.1.5:8000, box.lan:8000"
    web = HostCheck.listening_on("localhost", "127.0.0.1", 80)
    assert web.admits("localhost") and web.admits("localhost:80") and web.admits(" 127.0.0.1 ")
    assert not web.admits("localhost:8000") and not web.admits("attacker.example")
    loopback = HostCheck.listening_on("127.0.0.1", "127.0.0.1", 8000)
    for host in ("", ":8000", "[::1", "::1:8000", "127.0.0.1:99999", "127.0.0.1:80a", "127.0.0.1:8000:8000",
                 "127.0.0.1:+8000", "localhost%00:8000", "ｌocalhost:8000"):
        assert not loopback.admits(host), host


def test_an_idle_connection_is_closed_and_the_server_goes_on(unconditional_file: Path) -> None:
    with serving(unconditional_file) as server:
        assert 0 < server.idle_timeout_s <= 60
    with serving(unconditional_file, idle_timeout_s=0.5) as server:
        for sent in (b"", b"GET /conditions.json HTTP/1.1\r\n"):  # nothing, and a request never finished
            with socket.create_connection(server.server_address[:2], timeout=HANG_GUARD_S) as idle:
                idle.sendall(sent)
                assert idle.recv(1) == b"", sent
        assert get(f"{server.url}conditions.json")[0] == 200


def wait_until(condition: Callable[[], bool]) -> None:
    """Polls; the deadline is only a guard against a hang."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def test_a_grid_whose_client_left_is_not_drawn(unconditional_file: Path) -> None:
    """The page drops a request when a control changes; the server skips that grid and draws the next."""
    with serving(unconditional_file) as server:
        drawn: list[bytes] = []
        with server.faces.lock:  # the generator is busy: both requests wait for it
            with socket.create_connection(server.server_address[:2], timeout=HANG_GUARD_S) as leaving:
                leaving.sendall(f"GET /faces.png?n=64 HTTP/1.1\r\nHost: {server.url[7:-1]}\r\n\r\n".encode())
            staying = threading.Thread(target=lambda: drawn.append(faces(server.url, "n=4")))
            staying.start()
        staying.join(HANG_GUARD_S)
        wait_until(lambda: server.faces.drawn + server.faces.skipped == 2)
        assert (server.faces.drawn, server.faces.skipped) == (1, 1)
        assert decoded(drawn[0]).size == (grid_px(2), grid_px(2))


def test_control_characters_from_a_request_reach_the_log_escaped(
        unconditional_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    with serving(unconditional_file) as server, caplog.at_level(logging.INFO, logger="pipeline.serve"):
        with socket.create_connection(server.server_address[:2], timeout=HANG_GUARD_S) as client:
            client.sendall(b"GET /\x1b[2J\x1b]0;owned\x07\x9b31m\\x1b HTTP/1.1\r\nHost: "
                           + server.url[7:-1].encode() + b"\r\n\r\n")
            reply = b"".join(iter(lambda: client.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.0 404 ")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\\\x1b HTTP/1.1" in logged
    assert not any(character in logged for character in "\x1b\x07\x9b")


def test_temperature_is_ascii_digits_and_one_dot(conditional: str) -> None:
    assert faces(conditional, "n=4&temperature=.5") == faces(conditional, "n=4&temperature=0.50")
    assert faces(conditional, "n=4&temperature=1.") == faces(conditional, "n=4")


def test_missing_generator_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline.serve", "--generator", str(tmp_path / "none.pt"),
                             "--port", "0"], cwd=ROOT, capture_output=True, text=True,
                            timeout=HANG_GUARD_S)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'none.pt'}: generator not found; "
                                     "run the train and evaluate stages first (dvc repro evaluate)")


def test_port_in_use_is_one_line(unconditional_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            run_stage(main, ["--generator", str(unconditional_file), "--port", str(port)])
    assert exit_info.value.code == 2
    reason = "Address already in use"
    assert capsys.readouterr().err.strip() == f"error: cannot listen on 127.0.0.1:{port}: {reason}"


def test_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "70000"])
    assert exit_info.value.code == 2
    assert "argument --port: must be in [0, 65535], got 70000" in capsys.readouterr().err


def ctrl_c_as_in_a_terminal() -> None:
    """The child takes Ctrl-C as a command typed in a terminal does, even where this test runs as a
    background job, whose shell starts it with SIGINT ignored (then Python never raises
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_real_command_prints_its_url_serves_and_stops_on_ctrl_c(unconditional_file: Path) -> None:
    server = subprocess.Popen([sys.executable, "-m", "pipeline.serve", "--generator", str(unconditional_file),
                               "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        ready, _, _ = select.select([server.stdout], [], [], HANG_GUARD_S)
        assert ready, f"no URL printed within {HANG_GUARD_S} s"
        line = server.stdout.readline().strip()
        assert line.startswith("serving http://127.0.0.1:") and line.endswith("/ (Ctrl-C to stop)")
        url = line.split()[1]
        assert decoded(faces(url, "n=4&seed=1")).size == (grid_px(2), grid_px(2))
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=HANG_GUARD_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert out.strip() == "stopped"
    assert "Traceback" not in err and "error" not in err


# The page in a real browser: Playwright drives Debian's Chromium (never a downloaded one).


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium): no browser to check the page in")
    if os.environ.get("CI"):
        from playwright.sync_api import sync_playwright
    else:
        playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
        sync_playwright = playwright_api.sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def is_grid(response: Any) -> bool:
    return "/faces.png?" in response.url


def shown_grid(tab: Any) -> int:
    """Wait until the page's picture is decoded; its natural width."""
    tab.wait_for_function("() => { const image = document.getElementById('faces');"
                          " return image.complete && image.naturalWidth > 0"
                          " && !image.hasAttribute('aria-busy'); }")
    return tab.eval_on_selector("#faces", "image => image.naturalWidth")


def test_chromium_redraws_on_a_pick_and_on_new_faces(tab: Any, conditional: str, tmp_path: Path) -> None:
    with tab.expect_response(is_grid) as first:
        tab.goto(conditional)
    before = first.value.body()
    assert shown_grid(tab) == decoded(before).width == grid_px(4)

    hair = tab.get_by_label("hair", exact=True)
    assert hair.evaluate("select => [...select.options].map(option => option.value)") == [
        "any", "black_hair", "blonde_hair", "blue_hair"]
    with tab.expect_response(is_grid) as picked:
        hair.select_option("blue_hair")
    assert picked.value.status == 200 and "hair=blue_hair" in picked.value.url
    after_pick = picked.value.body()
    assert after_pick != before
    shown_grid(tab)
    assert "hair: blue_hair" in tab.locator("#status").inner_text()

    seed = tab.get_by_label("seed", exact=True).input_value()
    with tab.expect_response(is_grid) as fresh:
        tab.get_by_role("button", name="new faces").click()
    after_new = fresh.value.body()
    assert tab.get_by_label("seed", exact=True).input_value() != seed
    assert "hair=blue_hair" in fresh.value.url and after_new not in (before, after_pick)
    shown_grid(tab)

    link = tab.locator("#download")
    href = link.evaluate("link => link.href")
    assert href == tab.eval_on_selector("#faces", "image => image.src") == fresh.value.url
    status, kind, linked = get(href)
    assert (status, kind, linked) == (200, "image/png", after_new)
    assert decoded(linked).size == (grid_px(4), grid_px(4))
    with tab.expect_download() as download:
        link.click()
    new_seed = tab.get_by_label("seed", exact=True).input_value()
    assert download.value.suggested_filename == f"faces-seed-{new_seed}.png"
    assert Path(download.value.path()).read_bytes() == after_new


def test_chromium_slider_count_and_seed_redraw_and_a_refusal_is_shown(tab: Any, conditional: str) -> None:
    tab.goto(conditional)
    shown_grid(tab)
    with tab.expect_response(is_grid) as slid:
        tab.get_by_label("temperature", exact=True).evaluate(
            "slider => { slider.value = '0.5'; slider.dispatchEvent(new Event('input'));"
            " slider.dispatchEvent(new Event('change')); }")
    assert "temperature=0.5" in slid.value.url
    assert tab.locator("#temperature-value").inner_text() == "0.50"
    with tab.expect_response(is_grid) as counted:
        tab.get_by_label("faces", exact=True).select_option("9")
    assert decoded(counted.value.body()).size == (grid_px(3), grid_px(3))
    assert shown_grid(tab) == grid_px(3)
    seed = tab.get_by_label("seed", exact=True)
    with tab.expect_response(is_grid) as seeded:
        seed.fill("12")
        seed.press("Enter")
    assert "seed=12" in seeded.value.url and seeded.value.body() == faces(
        conditional, "n=9&seed=12&temperature=0.5&hair=any&eyes=any")

    seed.fill("-3")
    seed.press("Enter")
    tab.wait_for_selector("body.failed")
    assert tab.locator("#status").inner_text() == "seed must be a whole number from 0 to 4294967295, got '-3'"


def test_chromium_page_of_an_unconditional_generator(tab: Any, unconditional: str) -> None:
    with tab.expect_response(is_grid) as first:
        tab.goto(unconditional)
    assert shown_grid(tab) == grid_px(4)
    assert tab.locator("select.tag-picker").count() == 0
    assert tab.locator("select").count() == 1  # the number of faces
    with tab.expect_response(is_grid) as fresh:
        tab.get_by_role("button", name="new faces").click()
    assert fresh.value.body() != first.value.body()
    shown_grid(tab)
