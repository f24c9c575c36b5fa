"""Tags of a local source's images: sidecar files (`x.txt`, `x.json`) and class folders, read from
a folder, a zip or a tar (sidecars stored before or after their images), carried into posts.jsonl
and on to the manifest; bad sidecars cost their images only those tags."""

from __future__ import annotations

import csv
import io
import json
import logging
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline.crop_faces import main as crop_main
from pipeline.data.formats import read_manifest
from pipeline.manifest import main as manifest_main
from pipeline.scrape import main as scrape_main
from pipeline.sources import local as local_source
from pipeline.sources.sidecars import FACE_MAX_TAGS, SIDECAR_MAX_BYTES, TAG_MAX_CHARS, read_sidecar
from pipeline.train import main as train_main

KINDS = ["folder", "zip", "tar_sidecars_first", "tar_images_first", "tar_name_order"]


def png(index: int, side: int = 8) -> bytes:
    """A picture of one colour, a different one for each index: no two are the same file."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (37 * index % 256, 91 * index % 256, 200 - index)).save(buffer, "PNG")
    return buffer.getvalue()


def is_image(name: str) -> bool:
    return name.lower().endswith(".png")


def tar_order(names: list[str], kind: str) -> list[str]:
    if kind == "tar_sidecars_first":
        return sorted(names, key=lambda n: (is_image(n), n))
    if kind == "tar_images_first":
        return sorted(names, key=lambda n: (not is_image(n), n))
    return sorted(names)


def make_source(tmp_path: Path, files: dict[str, bytes], kind: str) -> Path:
    """`files` as a folder, a zip or a .tar.gz, a tar's members stored in the order `kind` says."""
    if kind == "folder":
        root = tmp_path / "source"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root
    if kind == "zip":
        path = tmp_path / "source.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
            for name in reversed(list(files)):  # stored out of name order: read in name order
                zipped.writestr(name, files[name])
        return path
    path = tmp_path / "source.tar.gz"
    order = tar_order(list(files), kind)
    with tarfile.open(path, "w:gz") as tarred:
        for name in order:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tarred.addfile(info, io.BytesIO(files[name]))
    with tarfile.open(path) as tarred:
        assert tarred.getnames() == order
    return path


def scrape(tmp_path: Path, source: Path, **scrape: object) -> tuple[dict, dict[str, dict], Path]:
    """The scrape stage on `source`: its stats, and the records by their name in the source."""
    values = {"source": "local", "local_path": str(source), "max_posts": 0, **scrape}
    params = tmp_path / "params.yaml"
    params.write_text("scrape:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items()))
    out = tmp_path / "raw"
    scrape_main(["--params", str(params), "--output", str(out), "--stats", str(out / "stats.json")])
    records = [json.loads(line) for line in (out / "posts.jsonl").read_text().splitlines()]
    return json.loads((out / "stats.json").read_text()), {r["url"]: r for r in records}, out


def tags_of(records: dict[str, dict]) -> dict[str, list[str]]:
    return {url: record["tags"] for url, record in records.items()}


def scrape_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "pipeline.scrape" and r.levelno == logging.WARNING]


SIDECARS = {
    "a.png": png(1), "a.txt": b"blonde hair, blue eyes",
    "b.png": png(2), "b.txt": b"blonde_hair  blue_eyes\nsmile\n",
    "c.png": png(3), "c.txt": b"smile, 1girl", "c.json": b'{"tags": ["smile", " open  mouth ", ""]}',
    "d.png": png(4), "d.json": b'{"tags": "Red Hair, long hair", "rating": "s"}',
    "e.png": png(5),
    "f.PNG": png(6), "f.txt": b",, ,  x ,\n",
    "g.png": png(7), "g.txt": "\ufeffsmile, \u732b\u8033".encode(),  # a byte-order mark; not ASCII
    "h.png": png(8), "h.txt": b"",
    "orphan.txt": b"\xff not UTF-8, and no image beside it",
}
EXPECTED = {
    "a.png": ["blonde_hair", "blue_eyes"],
    "b.png": ["blonde_hair", "blue_eyes", "smile"],
    "c.png": ["1girl", "open_mouth", "smile"],
    "d.png": ["Red_Hair", "long_hair"],
    "e.png": [],
    "f.PNG": ["x"],
    "g.png": ["smile", "\u732b\u8033"],
    "h.png": [],
}


@pytest.mark.parametrize("kind", KINDS)
def test_sidecar_tags(tmp_path, caplog, kind):
    caplog.set_level(logging.WARNING)
    stats, records, _ = scrape(tmp_path, make_source(tmp_path, SIDECARS, kind))
    assert tags_of(records) == EXPECTED
    assert stats["downloaded"] == len(EXPECTED) and stats["failed"] == 0
    assert stats["bad_sidecars"] == 0 and scrape_warnings(caplog) == []


# gallery-dl's layout: the metadata of `x.png` in `x.png.json`, the image's full name plus .json,
# holding the post as the site's API gave it (the fields of Danbooru's, Moebooru's and Gelbooru's post JSON)
GALLERY_DL = {
    "danbooru_1234.png": png(121),
    "danbooru_1234.png.json": json.dumps({
        "category": "danbooru", "id": 1234, "md5": "4f39" * 8, "rating": "g", "file_ext": "png",
        "tag_string": "1girl solo  touhou\n", "tag_string_general": "1girl solo"}).encode(),
    "konachan_334664.png": png(122),
    "konachan_334664.png.json": json.dumps({
        "category": "konachan", "id": 334664, "tags": "barefoot candy", "rating": "s",
        "md5": "66226821ea227bda9a55c2672a62b06e", "created_at": 1700000000}).encode(),
    "safebooru_6256119.png": png(123),
    "safebooru_6256119.png.json": json.dumps({
        "category": "gelbooru", "id": 6256119, "hash": "370bb4b2", "directory": 546,
        "tags": " 1girl blonde_hair smile ", "rating": "general"}).encode(),
    "listed.png": png(124),
    "listed.png.json": json.dumps({"category": "x", "tags": ["long hair", " open  mouth "]}).encode(),
    "both.png": png(125), "both.txt": b"smile", "both.png.json": b'{"tags": ["blush"]}',
    "cats/c.png": png(126), "cats/c.png.json": b'{"tag_string": "whiskers"}',
    "other.png": png(127), "other.jpg.json": b'{"tags": ["not this picture"]}',
}
GALLERY_DL_TAGS = {
    "danbooru_1234.png": ["1girl", "solo", "touhou"],
    "konachan_334664.png": ["barefoot", "candy"],
    "safebooru_6256119.png": ["1girl", "blonde_hair", "smile"],
    "listed.png": ["long_hair", "open_mouth"],
    "both.png": ["blush", "smile"],
    "cats/c.png": ["cats", "whiskers"],
    "other.png": [],  # other.jpg.json is the metadata of other.jpg, which is not here
}


@pytest.mark.parametrize("kind", KINDS)
def test_gallery_dl_metadata_beside_the_image_gives_its_tags(tmp_path, caplog, kind):
    caplog.set_level(logging.WARNING)
    stats, records, _ = scrape(tmp_path, make_source(tmp_path, GALLERY_DL, kind))
    assert tags_of(records) == GALLERY_DL_TAGS
    assert stats["downloaded"] == len(GALLERY_DL_TAGS) and stats["failed"] == 0
    assert stats["bad_sidecars"] == 0 and scrape_warnings(caplog) == []


def test_booru_metadata_fields():
    """`tags` (a list, or a string as Moebooru and Gelbooru write it) comes first; Danbooru's
    `tag_string` is always split at spaces; a sidecar with neither, or of another type, says so."""
    assert read_sidecar("a.jpg.json", b'{"tag_string": "a b,c"}').tags == ("a", "b,c")
    assert read_sidecar("a.jpg.json", b'{"tags": ["x"], "tag_string": "y z"}').tags == ("x",)
    neither = read_sidecar("a.jpg.json", b'{"id": 1, "tag_string_general": "a"}')
    assert neither.tags == () and "tags or tag_string" in neither.problem
    wrong = read_sidecar("a.jpg.json", b'{"tag_string": ["a"]}')
    assert wrong.tags == () and wrong.problem == "tag_string is list, not a string"


def test_gallery_dl_bad_metadata_is_counted_and_the_image_kept(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    files = {"a.png": png(131), "a.png.json": b"{cut short", "a.txt": b"kept"}
    stats, records, _ = scrape(tmp_path, make_source(tmp_path, files, "tar_images_first"))
    assert tags_of(records) == {"a.png": ["kept"]}
    assert stats["bad_sidecars"] == 1
    [line] = scrape_warnings(caplog)
    assert line.startswith("sidecar a.png.json: not JSON")



CLASSES = {
    "cats/1.png": png(11),
    "cats/2.png": png(12), "cats/2.txt": b"smile",
    "big  dogs/3.png": png(13),
    "cats/kittens/4.png": png(14), "cats/kittens/4.json": b'{"tags": ["cats"]}',
    "top.png": png(15),
}
CLASS_TAGS = {
    "cats/1.png": ["cats"],
    "cats/2.png": ["cats", "smile"],
    "big  dogs/3.png": ["big_dogs"],
    "cats/kittens/4.png": ["cats", "kittens"],
    "top.png": [],
}


@pytest.mark.parametrize("kind", KINDS)
def test_class_folders_are_tags(tmp_path, kind):
    _, records, _ = scrape(tmp_path, make_source(tmp_path, CLASSES, kind))
    assert tags_of(records) == CLASS_TAGS


@pytest.mark.parametrize("kind", ["zip", "tar_name_order"])
def test_the_one_top_folder_of_an_archive_is_its_root(tmp_path, kind):
    """`tar czf data.tar.gz data/` stores every name under data/: its images are tagged as those
    of the folder data/ would be, not all `data`."""
    files = {f"data/{name}": value for name, value in CLASSES.items()}
    _, records, _ = scrape(tmp_path, make_source(tmp_path, files, kind))
    assert tags_of(records) == {f"data/{name}": tags for name, tags in CLASS_TAGS.items()}

    flat = tmp_path / "flat"
    flat.mkdir()
    files = {"faces/1.png": png(21), "faces/1.txt": b"smile", "faces/2.png": png(22)}
    _, records, _ = scrape(flat, make_source(flat, files, kind))
    assert tags_of(records) == {"faces/1.png": ["smile"], "faces/2.png": []}


def lone_surrogate_json() -> bytes:
    return b'{"tags": ["ok", "\\ud800"]}'


BAD = {
    "a.png": png(31), "a.txt": b"\xff\xfe blonde hair",
    "b.png": png(32), "b.json": b"{not json",
    "c.png": png(33), "c.json": b'{"tags": 5}',
    "d.png": png(34), "d.json": b'{"tags": ["ok", 3]}',
    "e.png": png(35), "e.txt": b"x " * (SIDECAR_MAX_BYTES // 2 + 1),
    "f.png": png(36), "f.json": b'["a list"]', "f.txt": b"kept",
    "g.png": png(37), "g.json": lone_surrogate_json(),
    "h.png": png(38), "h.json": b"[" * 100_000,
    "i.png": png(39), "i.json": b'{"rating": "s"}',
    "j.png": png(40), "j.txt": b"fine",
}
BAD_SIDECARS = ["a.txt", "b.json", "c.json", "d.json", "e.txt", "f.json", "g.json", "h.json", "i.json"]


@pytest.mark.parametrize("kind", ["folder", "zip", "tar_images_first"])
def test_bad_sidecars_are_counted_and_their_images_kept(tmp_path, caplog, kind):
    caplog.set_level(logging.WARNING)
    stats, records, out = scrape(tmp_path, make_source(tmp_path, BAD, kind))
    assert sorted(records) == sorted(name for name in BAD if name.endswith(".png"))
    assert tags_of(records) == {name: {"f.png": ["kept"], "j.png": ["fine"]}.get(name, [])
                                for name in records}
    assert stats["downloaded"] == 10 and stats["failed"] == 0 and stats["failures"] == []
    assert stats["bad_sidecars"] == len(BAD_SIDECARS)
    logged = scrape_warnings(caplog)
    assert len(logged) == len(BAD_SIDECARS)
    for name, line in zip(BAD_SIDECARS, sorted(logged), strict=True):
        assert line.startswith(f"sidecar {name}: ") and "its tags are not used" in line
    joined = "\n".join(logged)
    for reason in ("not UTF-8", "not JSON", "tags is int", "tags is list", "over the 1048576-byte",
                   "not UTF-8 text (a lone surrogate)", "RecursionError", "not a JSON object"):
        assert reason in joined
    assert json.loads((out / "stats.json").read_text())["bad_sidecars"] == len(BAD_SIDECARS)


def test_archive_sidecars_are_refused_as_images_would_be(tmp_path, caplog):
    """A tar's link and a sidecar declared over the limit are refused before a byte is read."""
    caplog.set_level(logging.WARNING)
    path = tmp_path / "source.tar"
    with tarfile.open(path, "w") as tarred:
        for name, data in (("x.png", png(41)), ("y.png", png(42)), ("z.png", png(43))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("x.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tarred.addfile(link)
        big = b"tag " * (SIDECAR_MAX_BYTES // 4 + 1)
        info = tarfile.TarInfo("y.txt")
        info.size = len(big)
        tarred.addfile(info, io.BytesIO(big))
        info = tarfile.TarInfo("z.json")
        info.size = 16
        tarred.addfile(info, io.BytesIO(b'{"tags": "ok"}  '))
    stats, records, _ = scrape(tmp_path, path)
    assert tags_of(records) == {"x.png": [], "y.png": [], "z.png": ["ok"]}
    assert stats["bad_sidecars"] == 2 and stats["downloaded"] == 3
    joined = "\n".join(scrape_warnings(caplog))
    assert "x.txt: a link or device" in joined and "y.txt: 1048580 bytes, over the" in joined


def test_tags_follow_the_source_on_a_rerun_and_a_lost_record(tmp_path):
    """A picture held already takes the tags its source has now (sidecars added since), and a
    file whose record a killed run did not write gets its tags with the record adopted."""
    source = make_source(tmp_path, {"a.png": png(51), "cats/b.png": png(52)}, "folder")
    stats, records, out = scrape(tmp_path, source)
    assert tags_of(records) == {"a.png": [], "cats/b.png": ["cats"]}
    (source / "a.txt").write_text("smile, open mouth")
    stats, records, _ = scrape(tmp_path, source)
    assert tags_of(records) == {"a.png": ["open_mouth", "smile"], "cats/b.png": ["cats"]}
    assert stats["skipped"] == 2 and stats["downloaded"] == 0
    assert len(list((out / "images").iterdir())) == 2
    (out / "posts.jsonl").write_text("")  # the images stay, their records are lost
    stats, again, _ = scrape(tmp_path, source)
    assert stats["skipped"] == 2 and again == records


def test_a_picture_stored_twice_keeps_its_first_name_and_tags(tmp_path):
    same = png(61)
    source = make_source(tmp_path, {"a/1.png": same, "a/1.txt": b"first",
                                    "b/2.png": same, "b/2.txt": b"second"}, "folder")
    for _ in range(2):  # and stays so on a rerun
        stats, records, _ = scrape(tmp_path, source)
        assert tags_of(records) == {"a/1.png": ["a", "first"]}
        assert stats["skipped"] >= 1


def test_tags_reach_the_manifest(tmp_path):
    """scrape, crop_faces in passthrough and manifest: each face's row has its picture's tags."""
    files = {**CLASSES, "top.txt": b"smile, blue eyes"}
    source = make_source(tmp_path, {name: png(i + 70, side=24) if is_image(name) else data
                                    for i, (name, data) in enumerate(files.items())}, "folder")
    _, records, raw = scrape(tmp_path, source)
    manifest = crop_and_manifest(tmp_path, raw)
    with manifest.open(newline="") as handle:
        rows = {row["source_image"]: row["tags"] for row in csv.DictReader(handle)}
    expected = {**CLASS_TAGS, "top.png": ["blue_eyes", "smile"]}
    assert rows == {records[name]["file"]: " ".join(tags) for name, tags in expected.items()}
    counts = json.loads((tmp_path / "tag_counts.json").read_text())
    assert counts["cats"] == 3 and counts["big_dogs"] == 1 and counts["smile"] == 2


def test_a_sidecar_keeps_each_tag_once():
    """A tag written again and again is one tag: a 1 MiB sidecar of `ab ab ab ...` holds one
    string, not half a million (which a tar's sidecars, read before its images, all kept)."""
    sidecar = read_sidecar("x.txt", b"ab " * (SIDECAR_MAX_BYTES // 3))
    assert sidecar.tags == ("ab",) and sidecar.problem is None
    assert read_sidecar("x.json", b'{"tags": ["b", "a", "b", " a "]}').tags == ("b", "a")


def test_the_tags_a_tars_sidecars_hold_together_are_bounded(tmp_path, caplog, monkeypatch):
    """Past pipeline.sources.local.TAR_SIDECARS_MAX_BYTES of tags held for a tar, its later sidecars are
    refused and counted; their images are imported without those tags."""
    monkeypatch.setattr(local_source, "TAR_SIDECARS_MAX_BYTES", 20_000)
    files = {}
    for i in range(10):
        files[f"{i}.png"] = png(90 + i)
        files[f"{i}.txt"] = " ".join(f"tag_{i}_{j:03d}_{'x' * 12}" for j in range(50)).encode()
    caplog.set_level(logging.WARNING)
    stats, records, _ = scrape(tmp_path, make_source(tmp_path, files, "tar_sidecars_first"))
    tagged = [i for i in range(10) if records[f"{i}.png"]["tags"]]
    assert tagged == list(range(len(tagged))) and 0 < len(tagged) < 10  # the first ones, in order
    assert all(len(records[f"{i}.png"]["tags"]) == 50 for i in tagged)
    assert stats["downloaded"] == 10 and stats["bad_sidecars"] == 10 - len(tagged)
    refused = [line for line in scrape_warnings(caplog) if line.startswith("sidecar ")]
    assert len(refused) == 10 - len(tagged)
    assert all("over the 20000 bytes of tags a tar's sidecars may hold together" in line
               for line in refused)


def test_a_face_keeps_a_bounded_number_of_tags(tmp_path, caplog):
    """At most FACE_MAX_TAGS tags of at most TAG_MAX_CHARS characters: the first ones read (its
    folder, then its sidecars in name order), with one warning for what was dropped."""
    many = " ".join(f"t{i:05d}" for i in range(2000)).encode()
    long_tag = "x" * (TAG_MAX_CHARS + 1)
    files = {"cats/a.png": png(101), "cats/a.txt": many,
             "b.png": png(102), "b.json": json.dumps({"tags": [long_tag, "x" * TAG_MAX_CHARS]}).encode()}
    caplog.set_level(logging.WARNING)
    _, records, _ = scrape(tmp_path, make_source(tmp_path, files, "folder"))
    first = ["cats", *(f"t{i:05d}" for i in range(FACE_MAX_TAGS - 1))]
    assert records["cats/a.png"]["tags"] == sorted(first)
    assert records["b.png"]["tags"] == ["x" * TAG_MAX_CHARS]
    assert sorted(scrape_warnings(caplog)) == [
        f"b.png: dropped 1 tag(s) over {TAG_MAX_CHARS} characters",
        f"cats/a.png: dropped {2001 - FACE_MAX_TAGS} tag(s) past the first {FACE_MAX_TAGS} of a face"]


def crop_and_manifest(tmp_path: Path, raw: Path) -> Path:
    """crop_faces in passthrough, then the manifest stage: the manifest's path."""
    params = tmp_path / "params.yaml"
    params.write_text("crop:\n  mode: passthrough\n  size: 16\n  workers: 1\n"
                      "manifest:\n  dedup_distance: -1\n  val_fraction: 0.0\n")
    faces = tmp_path / "faces"
    crop_main(["--params", str(params), "--input", str(raw / "images"), "--output", str(faces),
               "--stats", str(tmp_path / "crop_stats.json")])
    manifest = tmp_path / "manifest.csv"
    manifest_main(["--params", str(params), "--input", str(faces), "--posts",
                   str(raw / "posts.jsonl"), "--output", str(manifest),
                   "--stats", str(tmp_path / "manifest_stats.json"),
                   "--tags", str(tmp_path / "tag_counts.json")])
    return manifest


def test_a_sidecar_of_many_tags_makes_a_manifest_that_reads(tmp_path):
    """30,000 tags in a sidecar (210 KB) made a manifest row past csv's 128 KiB field limit,
    which train and evaluate could not read; now the face keeps FACE_MAX_TAGS of them."""
    many = " ".join(f"t{i:05d}" for i in range(30_000)).encode()
    source = make_source(tmp_path, {"a.png": png(111, side=24), "a.txt": many}, "folder")
    _, _, raw = scrape(tmp_path, source)
    [row] = read_manifest(crop_and_manifest(tmp_path, raw))
    assert row["tags"].split() == [f"t{i:05d}" for i in range(FACE_MAX_TAGS)]
    assert len(json.loads((tmp_path / "tag_counts.json").read_text())) == FACE_MAX_TAGS


def manifest_with_long_tags(tiny_manifest: Path, length: int) -> Path:
    """The tiny manifest with its first face's tags `length` characters long, as a manifest made
    before tags were bounded may hold."""
    with tiny_manifest.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][4] += " " + " ".join(f"t{i:07d}" for i in range(length // 9))
    with tiny_manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return tiny_manifest


def test_a_manifest_with_a_long_tags_field_reads(tiny_manifest, tmp_path):
    """A field over csv's default limit of 128 KiB reads, and so the train stage runs on it."""
    manifest = manifest_with_long_tags(tiny_manifest, 300_000)
    rows = read_manifest(manifest)
    assert len(rows) == 20 and len(rows[0]["tags"]) > 300_000
    params = tmp_path / "train_params.yaml"
    params.write_text("train:\n  epochs: 1\n  batch_size: 8\n  ngf: 8\n  ndf: 8\n"
                      "  device: cpu\n  precision: fp32\n  compile: \"off\"\n  threads: 1\n")
    train_main(["--params", str(params), "--input", str(manifest), "--output", str(tmp_path / "models")])
    assert (tmp_path / "models" / "checkpoint.pt").is_file()
