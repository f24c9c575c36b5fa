"""The scrape stage against real HTTP servers on 127.0.0.1: the demo booru and scripted fakes."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from fake_booru import FakeBooru, FakePost, Fault, jpeg_bytes, served

from pipeline.core.cli import run_stage
from pipeline.core.files import write_bytes
from pipeline.scrape import main
from pipeline.sources.collection import Collection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_params(tmp_path, **scrape):
    values = {"rate": 200.0, "retries": 1, "timeout": 5.0, **scrape}
    path = tmp_path / "params.yaml"
    path.write_text("scrape:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


def run(tmp_path, params):
    out = tmp_path / "raw"
    main(["--params", str(params), "--output", str(out), "--stats", str(out / "stats.json")])
    records = [json.loads(line) for line in (out / "posts.jsonl").read_text().splitlines()]
    return json.loads((out / "stats.json").read_text()), records, out


def run_failing(tmp_path, params, capsys):
    """Run the stage as `python -m` would; returns its exit status and its error lines."""
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ["--params", str(params), "--output", str(tmp_path / "raw"),
                         "--stats", str(tmp_path / "stats.json")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    return exit_info.value.code, errors


@pytest.fixture
def fake():
    booru = FakeBooru(pages=[
        [FakePost(11, jpeg_bytes((200, 0, 0))), FakePost(10, jpeg_bytes((0, 200, 0)))],
        [FakePost(9, jpeg_bytes((0, 0, 200)))],
    ])
    with served(booru):
        yield booru


def test_demo_source_end_to_end(tmp_path):
    stats, records, out = run(tmp_path, write_params(tmp_path, max_posts=25))
    assert stats["downloaded"] == 25 and stats["failed"] == 0 and stats["pages"] == 2
    assert len(records) == 25
    for record in records:
        path = out / "images" / record["file"]
        assert record["file"] == f"demo_{record['id']}.jpg"
        assert hashlib.md5(path.read_bytes()).hexdigest() == record["md5"]
        assert (record["width"], record["height"]) == (640, 480)
        assert record["rating"] == "safe" and "/sample/" in record["url"]
        assert record["url"].startswith("http://127.0.0.1:")
        assert any(tag.endswith("_hair") for tag in record["tags"]) or "no_humans" in record["tags"]

    again, records_again, _ = run(tmp_path, write_params(tmp_path, max_posts=25))
    assert again["downloaded"] == 0 and again["skipped"] == 25
    assert again["requests"] == 1 + 2  # robots.txt and two listing pages: no image fetched twice
    assert records_again == records


def test_demo_json_api_and_previews(tmp_path):
    stats, records, out = run(tmp_path, write_params(tmp_path, api="json", file="preview",
                                                     max_posts=3))
    assert stats["downloaded"] == 3 and stats["pages"] == 1
    assert sorted(r["id"] for r in records) == [998, 999, 1000]  # the newest
    assert all("/data/preview/" in r["url"] for r in records)
    assert {(r["width"], r["height"]) for r in records} == {(150, 112)}


def test_demo_tag_query(tmp_path):
    _, records, _ = run(tmp_path, write_params(tmp_path, max_posts=3, tags="blue_hair"))
    assert len(records) == 3 and all("blue_hair" in r["tags"] for r in records)


def test_pages_resume_and_file_names(tmp_path, fake):
    stats, records, out = run(tmp_path, write_params(tmp_path, base_url=fake.url))
    assert stats["downloaded"] == 3 and stats["pages"] == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "demo_10.jpg", "demo_11.jpg", "demo_9.jpg"]
    # a lost record (killed between file and record) and a lost file are both recovered
    (out / "posts.jsonl").write_text(json.dumps(records[0]) + "\n{\"file\": \"torn")
    (out / "images" / "demo_9.jpg").unlink()
    stats, records, _ = run(tmp_path, write_params(tmp_path, base_url=fake.url))
    assert stats["downloaded"] == 1 and stats["skipped"] == 2 and len(records) == 3
    image_hits = {path: n for path, n in fake.hits.items() if path.startswith("/image/")}
    assert sorted(image_hits.values()) == [1, 1, 2]
    assert image_hits[fake.file_paths(fake.pages[1][0])["original"]] == 2


def test_a_file_changed_on_disk_or_on_the_site_is_fetched_again(tmp_path, fake):
    params = write_params(tmp_path, base_url=fake.url)
    _, _, out = run(tmp_path, params)
    (out / "images" / "demo_11.jpg").write_bytes(jpeg_bytes((1, 1, 1)))  # damaged on disk
    fake.pages[1][0].body = jpeg_bytes((9, 9, 9))  # post 9 replaced on the site
    stats, records, _ = run(tmp_path, params)
    assert stats["downloaded"] == 2 and stats["skipped"] == 1 and stats["duplicates"] == 0
    by_id = {r["id"]: r for r in records}
    assert by_id[9]["md5"] == hashlib.md5(jpeg_bytes((9, 9, 9))).hexdigest()
    assert hashlib.md5((out / "images" / "demo_11.jpg").read_bytes()).hexdigest() == by_id[11]["md5"]


def busiest_second(arrivals: list[float]) -> int:
    """The most requests that arrived within any one-second window."""
    return max(sum(start <= t < start + 1.0 for t in arrivals) for start in arrivals)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_rate_limit_holds_for_all_workers_as_seen_by_the_server(tmp_path, workers):
    rate = 4.0
    posts = [FakePost(i, jpeg_bytes((i * 30, 255 - i * 30, 0))) for i in range(8, 0, -1)]
    posts[2].faults = [Fault(503)]
    posts[4].faults = [Fault(429, {"Retry-After": "1"})]
    with served(FakeBooru(pages=[posts])) as booru:
        stats, records, _ = run(tmp_path, write_params(tmp_path, base_url=booru.url, rate=rate,
                                                       workers=workers))
    assert stats["downloaded"] == 8 and len(booru.arrivals) == 1 + 1 + 8 + 2
    # Request starts are at least 1/rate apart, so a one-second window holds `rate` of them; one
    # more is allowed for delivery jitter (up to 1/rate late). Without the limiter, 9 or more of
    # the 12 requests arrive within one second, retries and the 429's pause notwithstanding.
    assert busiest_second([at for at, _ in booru.arrivals]) <= rate + 1


def test_cloudflare_challenge_stops_the_run_with_one_line(tmp_path, fake, capsys):
    challenge = Fault(403, {"Server": "cloudflare", "cf-mitigated": "challenge"},
                      body=b"<html>Just a moment...</html>")
    fake.pages = [[FakePost(i, jpeg_bytes((i, i, i)), faults=[challenge] * 3) for i in range(1, 9)]]
    params = write_params(tmp_path, base_url=fake.url, workers=2, retries=3)
    code, errors = run_failing(tmp_path, params, capsys)
    assert code == 2 and len(errors) == 1 and "Cloudflare" in errors[0]
    image_hits = sum(n for path, n in fake.hits.items() if path.startswith("/image/"))
    assert image_hits <= 2  # the downloads already in flight, each asked once: no retry, no more


def test_changed_markup_stops_with_one_line(tmp_path, fake, capsys):
    fake.changed_listing = "<html><body><div class='post-grid'></div></body></html>"
    code, errors = run_failing(tmp_path, write_params(tmp_path, base_url=fake.url), capsys)
    assert code == 2 and len(errors) == 1
    assert "ul#post-list-posts" in errors[0] and fake.url in errors[0]


def test_changed_api_stops_with_one_line(tmp_path, fake, capsys):
    fake.changed_listing = '{"posts": []}'
    params = write_params(tmp_path, base_url=fake.url, source="yandere", api="json")
    code, errors = run_failing(tmp_path, params, capsys)
    assert code == 2 and len(errors) == 1
    assert f"{fake.url}/post.json" in errors[0] and "expected a JSON array" in errors[0]


def test_sigkill_then_rerun_fetches_nothing_twice(tmp_path, fake):
    fake.pages = [[FakePost(i, jpeg_bytes((i, 2 * i, 3 * i))) for i in range(40, 20, -1)]]
    params = write_params(tmp_path, base_url=fake.url, rate=10.0, workers=2)
    command = [sys.executable, "-m", "pipeline.scrape", "--params", str(params),
               "--output", str(tmp_path / "raw"), "--stats", str(tmp_path / "stats.json")]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    images = tmp_path / "raw" / "images"
    deadline = time.monotonic() + 300  # only against a hang
    while time.monotonic() < deadline and len(list(images.glob("demo_*.jpg"))) < 5:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 5 <= len(list(images.glob("demo_*.jpg"))) < 20
    (images / ".demo_39.jpg.4242.tmp").write_bytes(b"half a jpeg")  # as if killed mid-write
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    image_hits = {path: n for path, n in fake.hits.items() if path.startswith("/image/")}
    assert len(image_hits) == 20 and max(image_hits.values()) <= 2
    assert sum(n > 1 for n in image_hits.values()) <= 2  # at most the two in flight at the kill
    for path in images.iterdir():
        assert path.suffix == ".jpg"  # no partial file under its final name, no temp file left
    records = [json.loads(line) for line in (tmp_path / "raw" / "posts.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == list(range(21, 41))


# Hostile servers and pages: the post is skipped and counted with its reason, the run goes on

class ServedBytes(bytes):
    """A body that counts the one-byte slices a trickling server takes of it: how much was sent
    before the client hung up, measured in bytes rather than in seconds."""

    def __new__(cls, data: bytes) -> "ServedBytes":
        body = super().__new__(cls, data)
        body.sliced = 0
        return body

    def __getitem__(self, index):
        if isinstance(index, slice):
            self.sliced += 1
        return super().__getitem__(index)


def test_a_trickling_file_is_cut_at_the_deadline_and_the_run_goes_on(tmp_path, fake):
    # one byte every 10 ms never trips the 0.5 s read timeout; the whole file would take 7 s an attempt
    body = ServedBytes(fake.pages[0][0].body)
    fake.pages[0][0].faults = [Fault(trickle=0.01, body=body)] * 2
    params = write_params(tmp_path, base_url=fake.url, timeout=0.5, deadline=1.0, retries=1)
    stats, records, _ = run(tmp_path, params)
    assert stats["failed"] == 1 and stats["downloaded"] == 2
    assert len(stats["failures"]) == 1
    assert stats["failures"][0].startswith("post 11:") and "1 s deadline" in stats["failures"][0]
    assert sorted(r["id"] for r in records) == [9, 10]
    # the server sends at most a byte per 10 ms, so two 1 s attempts take about 200 bytes, and a slow
    # machine slows the sending as well; reading on past the deadline would take the whole file twice
    assert body.sliced < len(body), (body.sliced, len(body))


def test_a_trickling_listing_page_stops_the_run_with_one_line(tmp_path, fake, capsys):
    fake.page_faults[1] = [Fault(trickle=0.01)] * 2
    params = write_params(tmp_path, base_url=fake.url, timeout=0.5, deadline=1.0, retries=1)
    code, errors = run_failing(tmp_path, params, capsys)
    assert code == 2 and len(errors) == 1
    assert f"{fake.url}/post?page=1" in errors[0] and "1 s deadline" in errors[0]


def test_robots_server_error_stops_the_run_with_one_line(tmp_path, fake, capsys):
    """RFC 9309: a robots.txt that answers 5xx disallows everything, so not even page 1 is read."""
    fake.robots_status = 503
    code, errors = run_failing(tmp_path, write_params(tmp_path, base_url=fake.url), capsys)
    assert code == 2 and len(errors) == 1
    assert "robots.txt could not be read" in errors[0] and "HTTP 503" in errors[0]
    assert fake.hits["/post"] == 0


@pytest.mark.parametrize(("site", "source", "api", "bad_id"), [
    ("moebooru", "yandere", "html", "abc"), ("moebooru", "yandere", "json", "abc"),
    ("danbooru", "danbooru", "json", "abc"), ("gelbooru", "gelbooru", "json", "abc"),
    ("moebooru", "yandere", "html", "1.5"), ("moebooru", "yandere", "json", True),
    ("moebooru", "yandere", "json", 1.5), ("moebooru", "yandere", "json", -3),
    ("danbooru", "danbooru", "json", "12x")])
def test_a_post_with_a_malformed_id_is_counted_and_skipped(tmp_path, fake, site, source, api,
                                                           bad_id, caplog):
    fake.site = site
    fake.pages[0][1].listed_id = bad_id
    params = write_params(tmp_path, base_url=fake.url, source=source, api=api)
    with caplog.at_level("WARNING", logger="pipeline.scrape"):
        stats, records, _ = run(tmp_path, params)
    assert stats["malformed"] == 1 and stats["failed"] == 0
    assert stats["downloaded"] == 2 and sorted(r["id"] for r in records) == [9, 11]
    assert len(stats["failures"]) == 1 and "malformed post(s) skipped" in stats["failures"][0]
    assert sum("malformed" in message for message in caplog.messages) == 1


def test_a_listed_md5_is_compared_without_regard_to_case(tmp_path, fake):
    right, wrong = fake.pages[0]
    right.listed_md5 = right.md5.upper()
    wrong.listed_md5 = "ABCDEF" * 5 + "AB"  # not its md5, in upper case
    stats, records, _ = run(tmp_path, write_params(tmp_path, base_url=fake.url, file="original"))
    assert stats["downloaded"] == 2 and stats["failed"] == 1
    assert "does not match" in stats["failures"][0] and stats["failures"][0].startswith("post 10:")
    by_id = {r["id"]: r for r in records}
    assert by_id[11]["post_md5"] == right.md5.lower() == by_id[11]["md5"]


def test_a_damaged_file_without_a_record_is_fetched_again(tmp_path, fake):
    """After a power loss a file may stand under its final name with its bytes lost and no record:
    it must decode whole to count, else it is fetched again."""
    params = write_params(tmp_path, base_url=fake.url)
    _, records, out = run(tmp_path, params)
    kept = [r for r in records if r["id"] != 10]
    (out / "posts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    damaged = out / "images" / "demo_10.jpg"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a JPEG cut short
    stats, records, _ = run(tmp_path, params)
    assert stats["downloaded"] == 1 and stats["skipped"] == 2 and stats["failed"] == 0
    assert damaged.read_bytes() == fake.pages[0][1].body
    assert sorted(r["id"] for r in records) == [9, 10, 11]


def test_a_torn_last_line_of_posts_jsonl_is_cut_before_appending(tmp_path):
    """A record appended after a torn line must read back even if the run never compacts
    (a local import killed again, say)."""
    root = tmp_path / "raw"
    first = Collection(root, "local")
    record = {"source": "local", "tags": [], "rating": "", "page": None, "post_md5": None}
    first.keep("local_a", jpeg_bytes((10, 20, 30)), {**record, "id": "a", "url": "a.jpg"})
    posts = root / "posts.jsonl"
    with posts.open("a") as handle:
        handle.write('{"file": "local_b.jpg", "source": "lo')  # killed mid-append
    second = Collection(root, "local")
    second.keep("local_c", jpeg_bytes((30, 20, 10)), {**record, "id": "c", "url": "c.jpg"})
    lines = posts.read_text().splitlines()
    assert [json.loads(line)["file"] for line in lines] == ["local_a.jpg", "local_c.jpg"]
    assert posts.read_text().endswith("\n")


def test_a_local_import_adopts_a_file_whose_record_was_lost(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg_bytes((200, 100, 0)))
    params = write_params(tmp_path, source="local", local_path=str(folder), max_posts=0)
    _, records, out = run(tmp_path, params)
    (out / "posts.jsonl").write_text('{"file": "loc')  # only a torn line left
    stats, again, _ = run(tmp_path, params)
    assert stats["skipped"] == 1 and again == records


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    """fsync of the file's bytes, then the rename, then fsync of the folder (POSIX)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", None)),
                                                     real_replace(a, b)))
    target = tmp_path / "images" / "a.jpg"
    write_bytes(target, b"picture")
    assert target.read_bytes() == b"picture"
    inode = target.stat().st_ino  # a rename keeps the inode
    assert events[:2] == [("fsync", inode), ("replace", None)]
    if os.name == "posix":
        assert events[2:] == [("fsync", target.parent.stat().st_ino)]
