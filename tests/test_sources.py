"""Every source of the scrape stage end to end: each site adapter against a fake of that site on
127.0.0.1 (see fake_booru.py), and the local source on face crops cut from the demo art."""

import hashlib
import io
import json
import stat
import tarfile
import zipfile
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_booru import FakeBooru, FakePost, Fault, jpeg_bytes, served
from PIL import Image

from pipeline.core.cli import run_stage
from pipeline.scrape import main

ADAPTERS = [  # (scrape.source, scrape.api, the kind of site it reads)
    ("konachan", "html", "moebooru"),
    ("konachan", "json", "moebooru"),
    ("yandere", "json", "moebooru"),
    ("danbooru", "html", "danbooru"),  # its listing HTML has no file URLs: the API all the same
    ("gelbooru", "json", "gelbooru"),
]
KIND_SIZES = {"preview": (16, 12), "sample": (32, 24), "original": (64, 48)}


def write_params(tmp_path, **scrape):
    values = {"rate": 200.0, "retries": 1, "timeout": 5.0, **scrape}
    path = tmp_path / "params.yaml"
    path.write_text("scrape:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


def run(tmp_path, **scrape):
    out = tmp_path / "raw"
    params = write_params(tmp_path, **scrape)
    main(["--params", str(params), "--output", str(out), "--stats", str(out / "stats.json")])
    records = [json.loads(line) for line in (out / "posts.jsonl").read_text().splitlines()]
    return json.loads((out / "stats.json").read_text()), records, out


def run_failing(tmp_path, capsys, **scrape):
    params = write_params(tmp_path, **scrape)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ["--params", str(params), "--output", str(tmp_path / "raw"),
                         "--stats", str(tmp_path / "stats.json")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    return exit_info.value.code, errors


def listing_queries(booru: FakeBooru) -> list[dict[str, str]]:
    """The query of every listing or API request, in order of arrival."""
    queries = []
    for _, target in booru.arrivals:
        parts = urlsplit(target)
        if parts.path in ("/post", "/post.json", "/posts.json", "/index.php"):
            queries.append({k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()})
    return queries


def image_requests(booru: FakeBooru) -> int:
    return sum(n for path, n in booru.hits.items()
               if path != "/robots.txt" and not path.startswith(("/post", "/index.php")))


@pytest.mark.parametrize(("source", "api", "site"), ADAPTERS)
def test_adapter_end_to_end(tmp_path, source, api, site):
    same = jpeg_bytes((0, 90, 200))
    booru = FakeBooru(site=site, pages=[
        [FakePost(6, jpeg_bytes((200, 0, 0))), FakePost(5, jpeg_bytes((0, 200, 0)), rating="questionable"),
         FakePost(4, jpeg_bytes((0, 0, 200)), deleted=True)],
        [FakePost(3, same), FakePost(6, jpeg_bytes((200, 0, 0)))],  # 6 again: the pages shifted
        [FakePost(2, same, tags="again")],  # the picture of post 3, posted twice
        [],  # the empty last page
    ])
    with served(booru):
        stats, records, out = run(tmp_path, source=source, api=api, base_url=booru.url,
                                  tags="solo")
        assert sorted(p.name for p in (out / "images").iterdir()) == [f"{source}_3.jpg",
                                                                      f"{source}_6.jpg"]
        assert {r["id"]: r["rating"] for r in records} == {3: "safe", 6: "safe"}
        assert all(r["tags"] == ["1girl", "solo"] and r["source"] == source for r in records)
        assert stats["pages"] == 4 and stats["downloaded"] == 2 and stats["duplicates"] == 1
        assert stats["repeated"] == 1 and stats["filtered"] == 1 and stats["without_file"] == 1
        assert stats["failed"] == 0 and image_requests(booru) == 2
        queries = listing_queries(booru)
        assert all(q["tags"] == "solo" for q in queries) and len(queries) == 4

        again, records_again, _ = run(tmp_path, source=source, api=api, base_url=booru.url,
                                      tags="solo")
        assert again["skipped"] == 2 and again["downloaded"] == 0 and image_requests(booru) == 2
        assert records_again == records


def noise_jpeg(side: int = 120) -> bytes:
    """A JPEG that does not compress: tens of kilobytes."""
    pixels = hashlib.shake_256(b"noise").digest(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize(("source", "api", "site"), ADAPTERS)
def test_every_fault_is_counted_and_nothing_bad_is_kept(tmp_path, source, api, site):
    same = jpeg_bytes((10, 20, 30))
    good = [FakePost(i, jpeg_bytes((40 * i, 100, 100))) for i in (1, 2, 3, 4, 5)]
    good[0].faults = [Fault(429, {"Retry-After": "1"})]
    good[1].faults = [Fault(503)]
    good[2].faults = [Fault(delay=2.5)]  # over the 1-s timeout
    good[3].faults = [Fault(truncate_to=100)]  # the connection drops mid-body
    disallowed, cross_host = FakePost(28, jpeg_bytes((8, 8, 8))), FakePost(20, jpeg_bytes((5, 5, 5)))
    bad = [
        FakePost(21, same),
        FakePost(22, b"<html>login</html>", content_type="text/html"),
        FakePost(23, jpeg_bytes((1, 2, 3)), listed_md5="0" * 32),
        FakePost(24, noise_jpeg()),  # over max_bytes
        FakePost(25, jpeg_bytes((5, 5, 5))[:200]),  # a truncated JPEG, served whole
        FakePost(26, b"\xff\xd8\xff not a jpeg at all"),
        FakePost(27, jpeg_bytes((7, 7, 7)), faults=[Fault(500)] * 2),  # retries run out
        disallowed,
        cross_host,
        FakePost(29, jpeg_bytes((9, 9, 9)), rating="questionable"),
        FakePost(30, jpeg_bytes((3, 3, 3)), deleted=True),
    ]
    booru = FakeBooru(site=site, pages=[good + bad, [FakePost(31, same), FakePost(1, good[0].body)], []],
                      page_faults={2: [Fault(503)]})
    with served(booru):
        booru.robots = f"User-agent: *\nDisallow: {booru.file_paths(disallowed)['original']}\n"
        elsewhere = booru.url.replace("127.0.0.1", "localhost") + booru.file_paths(cross_host)["original"]
        cross_host.faults = [Fault(302, {"Location": elsewhere})]
        stats, records, out = run(tmp_path, source=source, api=api, base_url=booru.url, workers=3,
                                  timeout=1.0, max_bytes=5000)
    assert sorted(r["id"] for r in records) == [1, 2, 3, 4, 5, 21]
    assert stats["downloaded"] == 6 and stats["failed"] == 8 and stats["robots_refused"] == 1
    assert stats["duplicates"] == 1  # post 31: the picture of post 21 again
    assert stats["repeated"] == 1  # post 1 again on page 2
    assert stats["filtered"] == 1 and stats["without_file"] == 1
    assert stats["pages"] == 3  # page 2 after its 503; the empty last page ends it
    failures = "\n".join(stats["failures"])
    for expected in ("Content-Type 'text/html'", "does not match the listed 0000", "5000-byte limit",
                     "not a readable image", "giving up after 2 attempts", "robots.txt disallows",
                     "another host"):
        assert expected in failures
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(r["file"] for r in records)
    assert booru.hits[booru.file_paths(disallowed)["original"]] == 0
    for record in records:
        with Image.open(out / "images" / record["file"]) as image:
            image.load()


@pytest.mark.parametrize("kind", sorted(KIND_SIZES))
@pytest.mark.parametrize(("source", "api", "site"), ADAPTERS)
def test_file_kind(tmp_path, source, api, site, kind):
    posts = [FakePost(7, jpeg_bytes((200, 0, 0)), sample=jpeg_bytes((0, 200, 0), (32, 24)),
                      preview=jpeg_bytes((0, 0, 200), (16, 12)))]
    with served(FakeBooru(site=site, pages=[posts])) as booru:
        stats, records, _ = run(tmp_path, source=source, api=api, base_url=booru.url, file=kind)
    assert stats["downloaded"] == 1
    assert (records[0]["width"], records[0]["height"]) == KIND_SIZES[kind]
    assert records[0]["url"] == booru.url + booru.file_paths(posts[0])[kind]


@pytest.mark.parametrize(("source", "api", "site"), ADAPTERS)
def test_ratings_param_takes_other_ratings_too(tmp_path, source, api, site):
    posts = [FakePost(i, jpeg_bytes((60 * i, 0, 0)), rating=rating)
             for i, rating in ((3, "safe"), (2, "questionable"), (1, "explicit"))]
    with served(FakeBooru(site=site, pages=[posts])) as booru:
        stats, records, _ = run(tmp_path, source=source, api=api, base_url=booru.url,
                                ratings=["safe", "questionable"])
    assert {r["id"]: r["rating"] for r in records} == {3: "safe", 2: "questionable"}
    assert stats["filtered"] == 1


def test_max_posts_and_pages_bound_the_run(tmp_path):
    pages = [[FakePost(10 * p + i, jpeg_bytes((20 * p, 40 * i, 90))) for i in (3, 2, 1)]
             for p in (4, 3, 2, 1)]
    with served(FakeBooru(pages=pages, first_page=3)) as booru:
        stats, records, _ = run(tmp_path, source="konachan", base_url=booru.url, first_page=4,
                                pages=2)
        assert [q["page"] for q in listing_queries(booru)] == ["4", "5"]
        assert sorted(r["id"] for r in records) == [21, 22, 23, 31, 32, 33]
        stats, records, _ = run(tmp_path, source="konachan", base_url=booru.url, first_page=3,
                                max_posts=4)
        assert stats["listed"] == 4 and stats["pages"] == 2
        assert stats["downloaded"] == 3 and stats["skipped"] == 1  # 41-43, then 33 from before
        assert [q["page"] for q in listing_queries(booru)] == ["4", "5", "3", "4"]


def test_danbooru_pages_by_number_up_to_1000_then_by_id(tmp_path):
    pages = [[FakePost(30, jpeg_bytes((1, 1, 1))), FakePost(29, jpeg_bytes((90, 1, 1)))],
             [FakePost(28, jpeg_bytes((1, 90, 1))), FakePost(27, jpeg_bytes((1, 1, 90)))],
             [FakePost(26, jpeg_bytes((90, 90, 1)))]]
    with served(FakeBooru(site="danbooru", pages=pages, first_page=999)) as booru:
        stats, records, _ = run(tmp_path, source="danbooru", base_url=booru.url, first_page=999)
        assert [q["page"] for q in listing_queries(booru)] == ["999", "1000", "b27", "b26"]
    assert sorted(r["id"] for r in records) == [26, 27, 28, 29, 30] and stats["pages"] == 4


def test_danbooru_cannot_start_past_page_1000(tmp_path, capsys):
    with served(FakeBooru(site="danbooru", pages=[])) as booru:
        code, errors = run_failing(tmp_path, capsys, source="danbooru", base_url=booru.url,
                                   first_page=1001)
    assert code == 2 and len(errors) == 1 and "scrape.first_page" in errors[0]


def test_gelbooru_pid_counts_pages_from_0(tmp_path):
    pages = [[FakePost(2, jpeg_bytes((1, 1, 1)))], [FakePost(1, jpeg_bytes((90, 1, 1)))]]
    with served(FakeBooru(site="gelbooru", pages=pages)) as booru:
        stats, _, _ = run(tmp_path, source="gelbooru", base_url=booru.url)
        assert [q["pid"] for q in listing_queries(booru)] == ["0", "1", "2"]
    assert stats["downloaded"] == 2 and stats["pages"] == 3  # the last answered with an empty body


def test_danbooru_style_robots_allow_what_the_scrape_needs(tmp_path):
    robots = ("User-agent: *\nDisallow: /\nAllow: /posts\nAllow: /original/*.jpg$\n"
              "Allow: /sample/\nAllow: /180x180/\n")
    with served(FakeBooru(site="danbooru", robots=robots,
                          pages=[[FakePost(1, jpeg_bytes((1, 1, 1)))]])) as booru:
        stats, _, _ = run(tmp_path, source="danbooru", base_url=booru.url, file="original")
    assert stats["downloaded"] == 1 and stats["robots_refused"] == 0


# local: a folder, a zip or a tar of images already on disk

def face_files(faces, count):
    return sorted(faces.iterdir())[:count]


def test_local_folder(tmp_path, demo_faces):
    stats, records, out = run(tmp_path, source="local", local_path=str(demo_faces), max_posts=6)
    assert stats["downloaded"] == 6 and stats["requests"] == 0
    names = [p.name for p in face_files(demo_faces, 6)]
    assert sorted(r["url"] for r in records) == names
    for record in records:
        assert record["file"] == f"local_{record['id']}.jpg" and len(record["id"]) == 16
        assert (record["width"], record["height"]) == (96, 96) and record["source"] == "local"
    again, _, _ = run(tmp_path, source="local", local_path=str(demo_faces), max_posts=6)
    assert again["skipped"] == 6 and again["downloaded"] == 0


def test_local_zip_refuses_unsafe_and_unreadable_members(tmp_path, demo_faces):
    faces = face_files(demo_faces, 3)
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for face in faces:
            zipped.write(face, f"faces/{face.name}")
        zipped.writestr("faces/copy.jpg", faces[0].read_bytes())  # the same picture again
        zipped.writestr("../evil.jpg", faces[1].read_bytes())
        zipped.writestr("/etc/evil.jpg", faces[1].read_bytes())
        zipped.writestr("faces/broken.jpg", faces[2].read_bytes()[:300])
        zipped.writestr("faces/labels.csv", "file,label\n")  # not an image: not counted
    stats, records, out = run(tmp_path, source="local", local_path=str(archive))
    assert sorted(r["url"] for r in records) == [f"faces/{face.name}" for face in faces]
    assert stats["downloaded"] == 3 and stats["skipped"] == 1 and stats["failed"] == 3
    assert sum("unsafe name" in f for f in stats["failures"]) == 2
    assert len(list((out / "images").iterdir())) == 3


def test_local_tar_refuses_links_and_oversize_members(tmp_path, demo_faces):
    faces = face_files(demo_faces, 2)
    archive = tmp_path / "faces.tar.gz"
    with tarfile.open(archive, "w:gz") as tarred:
        for face in faces:
            tarred.add(face, f"set/{face.name}")
        link = tarfile.TarInfo("set/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tarred.addfile(link)
        big = jpeg_bytes((1, 2, 3), (400, 400)) + bytes(60_000)
        info = tarfile.TarInfo("set/big.jpg")
        info.size = len(big)
        tarred.addfile(info, io.BytesIO(big))
        climbing = tarfile.TarInfo("set/../../up.jpg")
        climbing.size = len(faces[0].read_bytes())
        tarred.addfile(climbing, io.BytesIO(faces[0].read_bytes()))
    stats, records, _ = run(tmp_path, source="local", local_path=str(archive), max_bytes=50_000)
    assert sorted(r["url"] for r in records) == [f"set/{face.name}" for face in faces]
    failures = "\n".join(stats["failures"])
    assert stats["failed"] == 3
    assert "not a file" in failures and "scrape.max_bytes" in failures and "unsafe name" in failures


def zip_link(name: str, target: str) -> tuple[zipfile.ZipInfo, str]:
    """A zip member stored as a symbolic link (as `zip --symlinks` stores one): its data is the
    target's path."""
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def test_local_zip_refuses_links_as_a_tar_does(tmp_path, demo_faces):
    """A zip's links, images and sidecars, are refused and counted as a tar's are: their data is
    a path on the machine that made the zip, neither a picture nor its tags."""
    faces = face_files(demo_faces, 2)
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(faces[0], "set/a.jpg")
        zipped.writestr(*zip_link("set/a.txt", "/home/someone/.aws/credentials"))
        zipped.writestr(*zip_link("set/b.jpg", str(faces[1])))
    stats, records, _ = run(tmp_path, source="local", local_path=str(archive))
    assert [(r["url"], r["tags"]) for r in records] == [("set/a.jpg", [])]
    assert stats["downloaded"] == 1 and stats["failed"] == 1 and stats["bad_sidecars"] == 1
    assert stats["failures"] == ["set/b.jpg: a link or device, not a file; refused"]


def damaged_zip(faces) -> bytes:
    """A zip whose end record is intact but whose listing (the central directory) is damaged:
    nothing in it can be found. (A tar damaged midway keeps what comes before: test_hostile_files.)"""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for face in face_files(faces, 3):
            zipped.write(face, face.name)
    return buffer.getvalue().replace(b"PK\x01\x02", b"PK\x09\x09")


@pytest.mark.parametrize(("name", "message"), [
    ("missing", "not found"), ("text", "not a folder, zip or tar"), ("damaged", "broken archive")])
def test_local_path_problems_stop_with_one_line(tmp_path, capsys, demo_faces, name, message):
    path = tmp_path / "faces.zip"
    if name == "text":
        path.write_text("just text")
    elif name == "damaged":
        path.write_bytes(damaged_zip(demo_faces))
    code, errors = run_failing(tmp_path, capsys, source="local", local_path=str(path))
    assert code == 2 and len(errors) == 1
    assert "scrape.local_path" in errors[0] and message in errors[0]
