"""Hostile files on disk: damaged archives and members, image bombs, broken or fake images, a
crop worker killed midway. Each is skipped and counted under its reason with one log line while the
rest of the run goes on; what must stop a stage stops it with one line, never a hang."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, children, running
from PIL import Image, ImageFile

from pipeline.crop_faces import main as crop_main
from pipeline.demo.art import draw_artwork
from pipeline.scrape import main as scrape_main
from pipeline.sources.collection import decode_image
from pipeline.sources.local import local_images

BOMB_SIDE = 12_000  # 144 million pixels: over the default scrape.max_pixels of 40 million


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def flat_png(side: int) -> bytes:
    """A black RGB PNG of side x side pixels, compressed a row at a time: a few hundred kilobytes
    on disk, gigabytes once decoded, never whole in this process's memory."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter byte 0, then black pixels
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def picture(seed: int, side: int = 64, kind: str = "PNG") -> bytes:
    """Noise, so no two pictures are the same and their compressed data is not trivial."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind)
    return buffer.getvalue()


def broken_chunk_png() -> bytes:
    """A PNG whose first IDAT chunk claims 7 bytes less than it holds: Pillow then reads the next
    chunk's type out of image data and raises SyntaxError while decoding."""
    data = bytearray(picture(1, side=400))  # 400x400 noise: several 64 KB IDAT chunks
    at = 8 + 12 + 13  # the signature, then IHDR (12 bytes of frame, 13 of data): the first IDAT
    assert data[at + 4:at + 8] == b"IDAT"
    (length,) = struct.unpack(">I", data[at:at + 4])
    data[at:at + 4] = struct.pack(">I", length - 7)
    return bytes(data)


def warnings_logged(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


def scrape_local(tmp_path: Path, local_path: Path, **scrape: object) -> dict:
    values = {"source": "local", "local_path": str(local_path), "max_posts": 0, **scrape}
    params = tmp_path / "params.yaml"
    params.write_text("scrape:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items()))
    out = tmp_path / "raw"
    scrape_main(["--params", str(params), "--output", str(out), "--stats", str(out / "stats.json")])
    return json.loads((out / "stats.json").read_text())


# scrape, source local: archives and folders


def corrupt_member(archive: bytes, name: str, offset: int) -> bytes:
    """`archive` with 8 bytes inside `name`'s compressed data, `offset` bytes into it, set to 0xFF."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        info = zipped.getinfo(name)
    data = bytearray(archive)
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length + offset
    data[start:start + 8] = b"\xff" * 8
    return bytes(data)


def test_zip_members_with_corrupt_compressed_data_are_counted(tmp_path, caplog):
    """A corrupt deflate, LZMA or bzip2 stream raises its decompressor's own error (zlib.error,
    LZMAError, OSError): each such member is one failure with its reason, the rest is imported."""
    methods = {"deflate.png": zipfile.ZIP_DEFLATED, "lzma.png": zipfile.ZIP_LZMA,
               "bzip2.png": zipfile.ZIP_BZIP2}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for seed, (name, method) in enumerate(methods.items()):
            zipped.writestr(name, picture(seed), compress_type=method)
            zipped.writestr(f"good_{name}", picture(10 + seed), compress_type=method)
    archive = buffer.getvalue()
    # deflate: an invalid block type in the first byte; LZMA: its properties after a 4-byte
    # header; bzip2: its first block after the 4-byte stream header
    for name, offset in (("deflate.png", 0), ("lzma.png", 4), ("bzip2.png", 4)):
        archive = corrupt_member(archive, name, offset)
    path = tmp_path / "faces.zip"
    path.write_bytes(archive)
    caplog.set_level(logging.WARNING)
    stats = scrape_local(tmp_path, path)
    assert stats["downloaded"] == 3 and stats["failed"] == 3
    failures = "\n".join(stats["failures"])
    for reason in ("deflate.png: unreadable in the archive (error: Error -3",
                   "lzma.png: unreadable in the archive (LZMAError",
                   "bzip2.png: unreadable in the archive (OSError: Invalid data stream"):
        assert reason in failures
    assert len(warnings_logged(caplog, "pipeline.scrape")) == 3


def tar_of(names: list[str], mode: str = "w:gz") -> bytes:
    """A tar of tiny members (their own names as data), in the order given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tarred:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(name)
            tarred.addfile(info, io.BytesIO(name.encode()))
    return buffer.getvalue()


def read_members(path: Path, give_up_after: float) -> tuple[float, int]:
    """CPU seconds to list every member of `path`, and how many; fails past `give_up_after`."""
    start, count = time.process_time(), 0
    for _ in local_images(path, 1000):
        count += 1
        if time.process_time() - start > give_up_after:
            pytest.fail(f"{path.name}: {count} members read in {give_up_after:.1f} s")
    return time.process_time() - start, count


def test_tar_in_any_order_is_read_in_one_pass(tmp_path):
    """Members out of name order cost no more than members in order: one decompression, not one
    from the start per member (which took minutes for 10,000 members)."""
    names = [f"faces/{i:05d}.png" for i in range(10_000)]
    shuffled = random.Random(0).sample(names, len(names))
    ordered_path, shuffled_path = tmp_path / "ordered.tar.gz", tmp_path / "shuffled.tar.gz"
    ordered_path.write_bytes(tar_of(names))
    shuffled_path.write_bytes(tar_of(shuffled))
    ordered = min(read_members(ordered_path, 60)[0] for _ in range(2))
    took, count = read_members(shuffled_path, 10 * ordered + 5)
    assert count == len(names)
    assert took < 3 * ordered
    assert [m.name for m in local_images(shuffled_path, 1000)][:3] == shuffled[:3]  # archive order


@pytest.mark.parametrize("damage", ["truncated_gz", "damaged_header"])
def test_damaged_tar_keeps_what_was_read(tmp_path, caplog, damage):
    """A .tar.gz cut short (a half-finished download) or a tar with a damaged header midway: the
    members before the damage are imported, the rest is one failure with its reason."""
    names = [f"set/{i:02d}.png" for i in range(20)]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if damage == "truncated_gz" else "w") as tarred:
        for seed, name in enumerate(names):
            data = picture(seed)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    if damage == "truncated_gz":
        data = data[:len(data) // 2]
    else:  # a wrong checksum in the 11th member's header (a header starts with the name)
        header = data.index(names[10].encode())
        data = data[:header + 148] + b"0000000\0" + data[header + 156:]
    path = tmp_path / ("faces.tar.gz" if damage == "truncated_gz" else "faces.tar")
    path.write_bytes(data)
    caplog.set_level(logging.WARNING)
    stats = scrape_local(tmp_path, path)
    assert stats["failed"] == 1 and 0 < stats["downloaded"] < len(names)
    if damage == "damaged_header":
        assert stats["downloaded"] == 10
    [failure] = stats["failures"]  # named by the member it broke in, or the one it followed
    assert failure.startswith((f"{path.name} after set/", "set/"))
    assert "the archive is damaged here" in failure and "the rest of it is not read" in failure
    assert len(warnings_logged(caplog, "pipeline.scrape")) == 1


def test_folder_of_hostile_files(tmp_path, caplog):
    """A FIFO named like an image is never opened (reading it would wait forever); empty files,
    text named .jpg, truncated pictures and a bomb are each one failure with the reason."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(picture(0))
    os.mkfifo(folder / "fifo.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("<html>not a picture</html>")
    jpeg = picture(1, side=200, kind="JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    (folder / "truncated.png").write_bytes(picture(2)[:3000])
    (folder / "broken_chunk.png").write_bytes(broken_chunk_png())
    (folder / "bomb.png").write_bytes(flat_png(BOMB_SIDE))
    caplog.set_level(logging.WARNING)
    stats = scrape_local(tmp_path, folder)
    assert stats["downloaded"] == 1 and stats["failed"] == 6
    failures = "\n".join(stats["failures"])
    for name in ("empty.png", "text.jpg", "truncated.jpg", "truncated.png", "broken_chunk.png"):
        assert f"{name}: not a readable image" in failures
    assert f"bomb.png: {BOMB_SIDE}x{BOMB_SIDE} pixels, over the scrape.max_pixels limit" in failures
    assert len(warnings_logged(caplog, "pipeline.scrape")) == 6


SECRET = "aws_secret_access_key = wJalrXUtnFEMI"


def test_links_out_of_a_folder_are_refused_and_counted(tmp_path, caplog):
    """A link that leads out of the folder, to an image or a sidecar, is refused as a tar's link
    is: its target is never read, so a secret it points at reaches neither the tags nor
    anything else the stage writes. A link that stays inside the folder is followed."""
    outside, folder = tmp_path / "home", tmp_path / "in"
    (outside / "pictures").mkdir(parents=True)
    (outside / "credentials").write_text(SECRET)
    (outside / "tags.json").write_text(json.dumps({"tags": [SECRET]}))
    (outside / "pictures" / "other.png").write_bytes(picture(10))
    (folder / "store").mkdir(parents=True)
    (folder / "store" / "tags.text").write_text("smile")
    (folder / "store" / "inside.bin").write_bytes(picture(11))
    (folder / "a.png").write_bytes(picture(12))
    (folder / "a.txt").symlink_to(outside / "credentials")  # absolute
    (folder / "a.json").symlink_to(Path("..") / "home" / "tags.json")  # relative
    (folder / "b.png").symlink_to(Path("..") / "home" / "pictures" / "other.png")
    (folder / "up").symlink_to(outside / "pictures", target_is_directory=True)  # never searched
    (folder / "c.png").write_bytes(picture(13))
    (folder / "c.txt").symlink_to(Path("store") / "tags.text")  # inside: followed
    (folder / "d.png").symlink_to(folder / "store" / "inside.bin")
    caplog.set_level(logging.WARNING)
    stats = scrape_local(tmp_path, folder)
    records = {json.loads(line)["url"]: json.loads(line)
               for line in (tmp_path / "raw" / "posts.jsonl").read_text().splitlines()}
    assert {url: record["tags"] for url, record in records.items()} == {
        "a.png": [], "c.png": ["smile"], "d.png": []}
    assert stats["downloaded"] == 3 and stats["failed"] == 1 and stats["bad_sidecars"] == 2
    assert stats["failures"] == ["b.png: a link out of the folder; refused"]
    logged = warnings_logged(caplog, "pipeline.scrape")
    assert sorted(line for line in logged if line.startswith("sidecar ")) == [
        "sidecar a.json: a link out of the folder; refused; its tags are not used",
        "sidecar a.txt: a link out of the folder; refused; its tags are not used"]
    written = b"".join(p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file())
    assert b"wJalrXUtnFEMI" not in written and SECRET not in caplog.text


def test_decode_image_refuses_a_bomb_before_decoding_it(monkeypatch):
    """scrape.max_pixels is checked on the header: the picture is never decoded."""
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image))
    with pytest.raises(ValueError, match="1001x1000 pixels, over the scrape.max_pixels limit of 1000000"):
        decode_image(flat_png_sized(1001, 1000), max_pixels=1_000_000)
    assert decoded == []
    assert decode_image(flat_png_sized(1000, 1000), max_pixels=1_000_000) == (".png", (1000, 1000))


def flat_png_sized(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


# crop_faces


@pytest.fixture
def crop_params(tmp_path, cascade_path):
    path = tmp_path / "params.yaml"
    path.write_text(f"crop:\n  cascade: {cascade_path}\n  workers: 2\n")
    return path


def drawing(post_id: int) -> bytes:
    buffer = io.BytesIO()
    draw_artwork(0, post_id, 1280, 720).image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_hostile_images_are_skipped_and_counted(tmp_path, crop_params, caplog):
    source = tmp_path / "in"
    source.mkdir()
    (source / "good.jpg").write_bytes(drawing(0))
    jpeg = drawing(1)
    (source / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 3])
    (source / "truncated.png").write_bytes(picture(2)[:3000])
    (source / "broken_chunk.png").write_bytes(broken_chunk_png())
    (source / "empty.png").write_bytes(b"")
    (source / "text.jpg").write_text("<html>not a picture</html>")
    (source / "bomb.png").write_bytes(flat_png(BOMB_SIDE))
    output, stats_file = tmp_path / "faces", tmp_path / "stats.json"
    caplog.set_level(logging.WARNING)
    crop_main(["--params", str(crop_params), "--input", str(source), "--output", str(output),
               "--stats", str(stats_file)])
    stats = json.loads(stats_file.read_text())
    assert stats["images"] == 7 and stats["images_with_faces"] == 1 and stats["faces"] > 0
    assert stats["skipped"] == {"unreadable": 5, "too_many_pixels": 1} and stats["unreadable"] == 5
    logged = warnings_logged(caplog, "pipeline.crop_faces")
    assert len(logged) == 6
    assert any("broken_chunk.png, unreadable: SyntaxError" in line for line in logged)
    assert any(f"bomb.png, too_many_pixels: {BOMB_SIDE}x{BOMB_SIDE} pixels" in line for line in logged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces", "in", "params.yaml", "stats.json"]


def run_measured(args: list[str]) -> tuple[int, int]:
    """Run a command; its exit status and the peak resident memory of it or any of its processes,
    in bytes (a fresh parent, so no earlier child counts)."""
    probe = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
             "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=300)
    code, peak_kib = done.stdout.split()
    return int(code), int(peak_kib) * 1024


def test_an_image_bomb_is_not_decoded(tmp_path, crop_params):
    """A 12000x12000 PNG of a few hundred kilobytes decodes to gigabytes: the stage reads its
    header, skips it, and stays far under 1 GB."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "bomb.png").write_bytes(flat_png(BOMB_SIDE))
    assert (source / "bomb.png").stat().st_size < 1_000_000
    stats_file = tmp_path / "stats.json"
    code, peak = run_measured([sys.executable, "-m", "pipeline.crop_faces", "--params", str(crop_params),
                               "--input", str(source), "--output", str(tmp_path / "faces"),
                               "--stats", str(stats_file)])
    assert code == 0 and json.loads(stats_file.read_text())["skipped"]["too_many_pixels"] == 1
    assert peak < 1_000_000_000


def test_a_killed_worker_stops_the_stage_with_one_line(tmp_path, crop_params):
    """The kernel's OOM killer ends a worker: the stage stops within seconds with one line naming
    the image it was reading, the output is untouched, and a rerun completes. Enough images that the
    workers are still reading when the first face lands, however late a busy machine lets the test
    see it."""
    source = tmp_path / "in"
    source.mkdir()
    for post_id in range(6):
        data = drawing(post_id)
        for copy in range(40):
            (source / f"{copy}_{post_id}.jpg").write_bytes(data)
    output = tmp_path / "faces"
    args = [sys.executable, "-m", "pipeline.crop_faces", "--params", str(crop_params),
            "--input", str(source), "--output", str(output), "--stats", str(tmp_path / "stats.json")]
    stage = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        staging = tmp_path / ".faces.partial"
        deadline = time.monotonic() + 300  # only against a hang
        while time.monotonic() < deadline and not list(staging.glob("*.png")):
            time.sleep(0.02)
        workers = children(stage.pid)
        assert stage.poll() is None and len(workers) == 2, "the run ended before a worker was killed"
        os.kill(workers[0], signal.SIGKILL)
        _, err = stage.communicate(timeout=300)
    finally:
        stage.kill()
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert stage.returncode == 2 and len(errors) == 1
    assert "worker process died while reading" in errors[0]
    assert any(f"reading {path.name} " in errors[0] for path in source.iterdir()), errors[0]
    assert not output.exists()
    deadline = time.monotonic() + 300  # the other worker is ended too
    while time.monotonic() < deadline and any(running(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers)
    crop_main(["--params", str(crop_params), "--input", str(source), "--output", str(output),
               "--stats", str(tmp_path / "stats.json")])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["images"] == 240 and stats["faces"] > 0 and not staging.exists()
    assert len((output / "boxes.jsonl").read_text().splitlines()) == stats["faces"]
