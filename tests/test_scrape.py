"""The scrape stage against real HTTP servers on 127.0.0.1: the demo booru and scripted fakes."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from fake_booru import FakeBooru, FakePost, jpeg_bytes, serve

from pipeline.cli import run_stage
from pipeline.scrape import main

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


@pytest.fixture
def fake():
    booru = FakeBooru(pages=[
        [FakePost(11, jpeg_bytes((200, 0, 0))), FakePost(10, jpeg_bytes((0, 200, 0)))],
        [FakePost(9, jpeg_bytes((0, 0, 200)))],
    ])
    server = serve(booru)
    yield booru
    server.shutdown()
    server.server_close()


def test_demo_source_end_to_end(tmp_path):
    stats, records, out = run(tmp_path, write_params(tmp_path, max_posts=25))
    assert stats["downloaded"] == 25 and stats["failed"] == 0 and stats["pages"] == 2
    assert len(records) == 25
    for record in records:
        path = out / "images" / record["file"]
        assert record["file"] == f"demo_{record['id']}.jpg"
        assert hashlib.md5(path.read_bytes()).hexdigest() == record["md5"]
        assert (record["width"], record["height"]) == (640, 480)
        assert record["rating"] == "s" and record["url"].startswith("http://127.0.0.1:")
        assert any(tag.endswith("_hair") for tag in record["tags"]) or "no_humans" in record["tags"]

    again, records_again, _ = run(tmp_path, write_params(tmp_path, max_posts=25))
    assert again["downloaded"] == 0 and again["skipped"] == 25
    assert again["requests"] == 1 + 2  # robots.txt and two listing pages: no image fetched twice
    assert records_again == records


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
    assert fake.hits["/image/11/Fake%20-%2011.jpg"] == 1
    assert fake.hits["/image/9/Fake%20-%209.jpg"] == 2


def test_bad_downloads_are_counted_not_kept(tmp_path, fake):
    same = jpeg_bytes((10, 20, 30))
    fake.pages = [[
        FakePost(1, same),
        FakePost(2, same),  # the same picture posted twice
        FakePost(3, b"<html>login</html>", content_type="text/html"),
        FakePost(4, jpeg_bytes((1, 2, 3)), listed_md5="0" * 32),
        FakePost(5, jpeg_bytes((5, 5, 5))[:200]),  # truncated JPEG
        FakePost(6, b"\xff\xd8\xff not a jpeg at all"),
    ], [FakePost(7, same), FakePost(1, same)]]  # again on the next page, and the same post
    stats, records, out = run(tmp_path, write_params(tmp_path, base_url=fake.url))
    assert [r["id"] for r in records] == [1]
    assert stats["downloaded"] == 1 and stats["duplicates"] == 2 and stats["failed"] == 4
    assert stats["skipped"] == 1
    assert sorted(p.name for p in (out / "images").iterdir()) == ["demo_1.jpg"]
    assert not list((out / "images").glob(".*"))


def test_changed_markup_stops_with_one_line(tmp_path, fake, capsys):
    fake.listing_html = "<html><body><div class='post-grid'></div></body></html>"
    params = write_params(tmp_path, base_url=fake.url)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ["--params", str(params), "--output", str(tmp_path / "raw")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert exit_info.value.code == 2 and len(errors) == 1
    err = errors[0]
    assert "ul#post-list-posts" in err and fake.url in err


def test_sigkill_then_rerun_fetches_nothing_twice(tmp_path, fake):
    fake.pages = [[FakePost(i, jpeg_bytes((i, 2 * i, 3 * i))) for i in range(40, 20, -1)]]
    params = write_params(tmp_path, base_url=fake.url, rate=10.0)
    command = [sys.executable, "-m", "pipeline.scrape", "--params", str(params),
               "--output", str(tmp_path / "raw"), "--stats", str(tmp_path / "stats.json")]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    images = tmp_path / "raw" / "images"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(images.glob("demo_*.jpg"))) < 5:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 5 <= len(list(images.glob("demo_*.jpg"))) < 20
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    image_hits = {path: n for path, n in fake.hits.items() if path.startswith("/image/")}
    assert len(image_hits) == 20 and max(image_hits.values()) <= 1 + 1  # at most the one in flight
    assert sum(n > 1 for n in image_hits.values()) <= 1
    for path in images.iterdir():
        assert path.suffix == ".jpg"  # no partial file under its final name, no temp file left
    records = [json.loads(line) for line in (tmp_path / "raw" / "posts.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == list(range(21, 41))
