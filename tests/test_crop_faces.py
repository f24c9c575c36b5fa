"""The crop stage: faces found in demo-art drawings whose face boxes are known, corrupt input,
a killed run, margins, passthrough; and, opt-in (realdata), the face count on real wallpapers."""

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from helpers import running
from PIL import Image

from pipeline.core.params import CropParams
from pipeline.crop_faces import main
from pipeline.demo.art import Artwork, draw_artwork
from pipeline.vision.cropping import centre_square, crop_image, cut, grow_box


@pytest.fixture
def crop_params(tmp_path, cascade_path):
    """The cascade's reference settings (the defaults) and no margin: crops are the detected boxes."""
    path = tmp_path / "params.yaml"
    path.write_text(f"crop:\n  cascade: {cascade_path}\n  workers: 2\n  margin: 0\n")
    return path


def read_boxes(folder):
    return [json.loads(line) for line in (folder / "boxes.jsonl").read_text().splitlines()]


DRAWING_SIZE = (1280, 720)
DRAWN_POSTS = range(3, 11)  # seed 0: 12 faces in 8 drawings, every one found by the cascade


class Drawings(NamedTuple):
    folder: Path  # the drawings as JPEGs: drawing_003.jpg, ...
    arts: dict[str, Artwork]  # by file name: the picture and the face boxes it was drawn with

    def faces(self) -> int:
        return sum(len(art.faces) for art in self.arts.values())


@pytest.fixture(scope="module")
def drawings(tmp_path_factory) -> Drawings:
    folder = tmp_path_factory.mktemp("drawings")
    arts = {}
    for post_id in DRAWN_POSTS:
        art = draw_artwork(0, post_id, *DRAWING_SIZE)
        art.image.save(folder / f"drawing_{post_id:03d}.jpg", quality=95)
        arts[f"drawing_{post_id:03d}.jpg"] = art
    return Drawings(folder, arts)


def test_finds_the_drawn_faces(tmp_path, crop_params, drawings):
    """Every face drawn in the drawings is found once, where it was drawn, and cut at 96 px."""
    output, stats_file = tmp_path / "faces", tmp_path / "stats.json"
    main(["--params", str(crop_params), "--input", str(drawings.folder), "--output", str(output),
          "--stats", str(stats_file)])
    stats = json.loads(stats_file.read_text())
    assert stats["images"] == len(drawings.arts) and stats["unreadable"] == 0
    assert stats["faces"] == drawings.faces() and stats["faces_padded"] == 0
    records = read_boxes(output)
    assert len(records) == drawings.faces()
    for name, art in drawings.arts.items():
        found = [r["box"] for r in records if r["source_image"] == name]
        assert len(found) == len(art.faces), name
        for fx, fy, fw, fh in art.faces:  # one detection centred in each drawn face box
            assert sum(fx <= x + w / 2 < fx + fw and fy <= y + h / 2 < fy + fh
                       for x, y, w, h in found) == 1, (name, found, art.faces)
    for record in records:
        assert record["crop_box"] == record["box"]  # crop.margin 0
        assert (record["image_width"], record["image_height"]) == DRAWING_SIZE
        with Image.open(output / record["face"]) as face:
            assert face.size == (96, 96)


@pytest.mark.realdata
def test_finds_faces_in_real_wallpapers(tmp_path, crop_params, illustrations):
    """The cascade at its reference settings (scaleFactor 1.1, minNeighbors 5, minSize 48) finds
    22 faces in the 40 real wallpapers of illustrations/."""
    output, stats_file = tmp_path / "faces", tmp_path / "stats.json"
    main(["--params", str(crop_params), "--input", str(illustrations), "--output", str(output),
          "--stats", str(stats_file)])
    stats = json.loads(stats_file.read_text())
    assert stats["images"] == 40 and stats["unreadable"] == 0
    assert stats["faces"] == 22 and stats["faces_padded"] == 0
    boxes = read_boxes(output)
    assert len(boxes) == 22
    for box in boxes:
        x, y, w, h = box["box"]
        assert box["crop_box"] == box["box"]  # crop.margin 0
        assert w >= 48 and h >= 48 and x + w <= box["image_width"] and y + h <= box["image_height"]
        with Image.open(output / box["face"]) as face:
            assert face.size == (96, 96)


def test_corrupt_images_are_counted_and_skipped(tmp_path, crop_params, drawings):
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(drawings.folder / "drawing_003.jpg", source / "good.jpg")
    drawn = len(drawings.arts["drawing_003.jpg"].faces)
    assert drawn > 0
    data = (drawings.folder / "drawing_004.jpg").read_bytes()
    (source / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (source / "garbage.png").write_bytes(b"\x89PNG not really")
    (source / "notes.txt").write_text("not an image, not even listed")
    output = tmp_path / "faces"
    output.mkdir()
    (output / "stale_0.png").write_bytes(b"from an earlier run")
    main(["--params", str(crop_params), "--input", str(source), "--output", str(output),
          "--stats", str(tmp_path / "stats.json")])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["images"] == 3 and stats["unreadable"] == 2 and stats["faces"] == drawn
    assert stats["skipped"] == {"unreadable": 2, "too_many_pixels": 0}
    assert not (output / "stale_0.png").exists()  # the output is replaced, not mixed
    assert not list(tmp_path.glob(".*.partial"))


def test_missing_input_is_one_line(tmp_path, crop_params, capsys):
    from pipeline.core.cli import run_stage

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ["--params", str(crop_params), "--input", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_killed_run_keeps_the_previous_output(tmp_path, crop_params, drawings):
    import os
    import signal
    import subprocess
    import sys
    import time

    source = tmp_path / "in"  # the drawings five times over: a run long enough to kill halfway
    source.mkdir()
    for copy in range(5):
        for name in drawings.arts:
            shutil.copy(drawings.folder / name, source / f"{copy}_{name}")
    output = tmp_path / "faces"
    args = ["--params", str(crop_params), "--input", str(source), "--output", str(output),
            "--stats", str(tmp_path / "stats.json")]
    main(args)
    before = (output / "boxes.jsonl").read_text()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-m", "pipeline.crop_faces", *args], cwd=root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / ".faces.partial"
    deadline = time.monotonic() + 300  # only against a hang
    while time.monotonic() < deadline and not list(staging.glob("*.png")):
        time.sleep(0.02)
    assert child.poll() is None, "the run ended before it could be killed"
    workers = subprocess.run(["pgrep", "-P", str(child.pid)], capture_output=True,
                             text=True).stdout.split()
    assert workers
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 300  # its workers notice and end too: none is left waiting
    while time.monotonic() < deadline and any(map(running, workers)):
        time.sleep(0.1)
    assert not any(map(running, workers))
    assert list(staging.glob("*.png"))  # killed halfway: its partial output is left behind
    assert (output / "boxes.jsonl").read_text() == before
    assert len(list(output.glob("*.png"))) == len(before.splitlines()) == 5 * drawings.faces()
    main(args)  # and the rerun completes
    assert (output / "boxes.jsonl").read_text() == before and not staging.exists()


def test_a_worker_starting_after_the_stage_died_ends_too(tmp_path):
    """A worker still importing when the stage is killed is an orphan by the time it initialises:
    it must watch the stage's pid, not whichever process adopted it."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that has ended: the stage, killed before this worker was ready
    worker = subprocess.Popen([sys.executable, "-c", (
        "import multiprocessing, time\n"
        "from pipeline.core.workers import _init_worker\n"
        "from pipeline.vision.cropping import _crop_in_worker, _setup_worker\n"
        f"_init_worker(_crop_in_worker, multiprocessing.RawArray('i', [-1]), "
        f"multiprocessing.Value('i', 0), {gone.pid}, _setup_worker, (None, 100))\n"
        "time.sleep(60)\n")])
    try:
        assert worker.wait(timeout=300) == 1
    finally:
        worker.kill()


def test_grow_box_keeps_the_centre_and_adds_margin_on_every_side():
    assert grow_box((100, 50, 40, 40), 0.0) == (100, 50, 40, 40)
    assert grow_box((100, 50, 40, 40), 0.5) == (80, 30, 80, 80)
    assert grow_box((10, 10, 48, 48), 0.25) == (-2, -2, 72, 72)  # may leave the picture


def test_centre_square():
    assert centre_square(200, 100) == (50, 0, 100, 100)
    assert centre_square(101, 300) == (0, 99, 101, 101)
    assert centre_square(96, 96) == (0, 0, 96, 96)


def test_cut_pads_with_the_edge_pixels_where_the_box_leaves_the_picture():
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    assert np.array_equal(cut(image, (2, 3, 5, 4)), image[3:7, 2:7])
    corner = cut(image, (-2, -3, 6, 6))  # 3 rows above, 2 columns left of the picture
    assert corner.shape == (6, 6, 3)
    assert np.array_equal(corner, np.pad(image[:3, :4], ((3, 0), (2, 0), (0, 0)), mode="edge"))
    around = cut(image, (-5, -5, 22, 20))  # larger than the picture on every side
    assert np.array_equal(around, np.pad(image, ((5, 5), (5, 5), (0, 0)), mode="edge"))


def run_margins(tmp_path, cascade_path, source):
    """Crop `source` with margin 0 and 0.5 (64 px faces); {margin: (output folder, records)}."""
    runs = {}
    for margin in (0.0, 0.5):
        params = tmp_path / f"params_{margin}.yaml"
        params.write_text(f"crop:\n  cascade: {cascade_path}\n  workers: 2\n  margin: {margin}\n  size: 64\n")
        output = tmp_path / f"faces_{margin}"
        main(["--params", str(params), "--input", str(source), "--output", str(output),
              "--stats", str(tmp_path / f"stats_{margin}.json")])
        runs[margin] = (output, read_boxes(output))
    return runs


def test_margin_grows_the_detected_box_and_pads_at_the_edge_of_a_drawing(tmp_path, cascade_path,
                                                                         drawings):
    """A drawing cut a quarter face past its one face's right side: a 0.5 margin leaves the picture
    there; another drawing's faces keep the margin inside."""
    inner = drawings.arts["drawing_003.jpg"]
    edge_art = drawings.arts["drawing_006.jpg"]
    [(x, y, w, h)] = edge_art.faces
    width = x + w + w // 4
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(drawings.folder / "drawing_003.jpg", source / "inner.jpg")
    edge_art.image.crop((0, 0, width, DRAWING_SIZE[1])).save(source / "edge.jpg", quality=95)

    runs = run_margins(tmp_path, cascade_path, source)
    plain, grown = runs[0.0][1], runs[0.5][1]
    assert [r["source_image"] for r in grown] == ["edge.jpg"] + ["inner.jpg"] * len(inner.faces)
    assert [r["box"] for r in grown] == [r["box"] for r in plain]
    padded = []
    for record in grown:
        x, y, w, h = record["box"]
        cx, cy, cw, ch = record["crop_box"]
        assert cw == ch == w + 2 * round(0.5 * w) and (cx + cw / 2, cy + ch / 2) == (x + w / 2, y + h / 2)
        if cx < 0 or cy < 0 or cx + cw > record["image_width"] or cy + ch > record["image_height"]:
            padded.append(record)
        with Image.open(runs[0.5][0] / record["face"]) as face:
            assert face.size == (64, 64)
    assert [r["source_image"] for r in padded] == ["edge.jpg"]
    assert json.loads((tmp_path / "stats_0.5.json").read_text())["faces_padded"] == 1
    cx, cy, cw, ch = padded[0]["crop_box"]
    assert padded[0]["image_width"] == width and cx >= 0 and cy >= 0 and cy + ch <= DRAWING_SIZE[1]
    assert (cx + cw - width) * 64 / cw > 4  # more than the 3 columns checked below are padding
    with Image.open(runs[0.5][0] / padded[0]["face"]) as face:
        right = np.asarray(face.convert("RGB"), dtype=int)[:, -3:]
    assert np.abs(np.diff(right, axis=1)).max() <= 1  # the edge column, repeated
    assert np.ptp(right[:, -1], axis=0).max() > 0  # which is not a flat colour


@pytest.mark.realdata
def test_margin_grows_the_detected_box_and_pads_at_the_edge(tmp_path, cascade_path, illustrations):
    """wallpaper_025's face is 432 px wide, 164 px from the right edge: a 0.5 margin leaves the picture."""
    source = tmp_path / "in"
    source.mkdir()
    for name in ("wallpaper_002.jpg", "wallpaper_025.jpg"):
        shutil.copy(illustrations / name, source / name)
    runs = run_margins(tmp_path, cascade_path, source)
    plain, grown = runs[0.0][1], runs[0.5][1]
    assert len(grown) == 3 and [r["box"] for r in grown] == [r["box"] for r in plain]
    for record in grown:
        x, y, w, h = record["box"]
        cx, cy, cw, ch = record["crop_box"]
        assert cw == ch == w + 2 * round(0.5 * w) and (cx + cw / 2, cy + ch / 2) == (x + w / 2, y + h / 2)
        with Image.open(runs[0.5][0] / record["face"]) as face:
            assert face.size == (64, 64)
    padded = grown[2]
    assert padded["source_image"] == "wallpaper_025.jpg" and padded["crop_box"] == [1108, 59, 864, 864]
    assert json.loads((tmp_path / "stats_0.5.json").read_text())["faces_padded"] == 1
    with Image.open(runs[0.5][0] / padded["face"]) as face:
        right = np.asarray(face.convert("RGB"), dtype=int)[:, -3:]  # 52 of 864 px are padding
    assert np.abs(np.diff(right, axis=1)).max() <= 1  # the edge column, repeated


def test_passthrough_square_crops_faces_without_a_cascade(tmp_path, demo_faces, monkeypatch):
    monkeypatch.setenv("LBPCASCADE_ANIMEFACE", str(tmp_path / "no_cascade_here.xml"))
    params = tmp_path / "params.yaml"
    params.write_text(f"crop:\n  mode: passthrough\n  cascade: {tmp_path / 'nope.xml'}\n"
                      "  size: 64\n  margin: 0.5\n  workers: 2\n")
    output = tmp_path / "faces"
    main(["--params", str(params), "--input", str(demo_faces), "--output", str(output),
          "--stats", str(tmp_path / "stats.json")])
    stats = json.loads((tmp_path / "stats.json").read_text())
    count = len(list(demo_faces.glob("*.jpg")))
    assert count > 1
    assert stats == {"images": count, "unreadable": 0, "images_with_faces": count, "faces": count,
                     "faces_padded": 0, "skipped": {"unreadable": 0, "too_many_pixels": 0}}
    records = read_boxes(output)
    assert records[0]["face"] == "00000_0.png" and records[0]["source_image"] == "00000.jpg"
    assert all(r["box"] == r["crop_box"] == [0, 0, 96, 96] for r in records)  # margin is ignored
    with Image.open(output / records[0]["face"]) as face:
        assert face.size == (64, 64)


def test_passthrough_takes_the_centre_square(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    wide = np.zeros((100, 200, 3), dtype=np.uint8)
    wide[:, 50:150] = (200, 40, 90)  # the centre square; black bands left and right
    Image.fromarray(wide).save(source / "wide.png")
    params = tmp_path / "params.yaml"
    params.write_text("crop:\n  mode: passthrough\n  size: 32\n  workers: 1\n")
    output = tmp_path / "faces"
    main(["--params", str(params), "--input", str(source), "--output", str(output),
          "--stats", str(tmp_path / "stats.json")])
    [record] = read_boxes(output)
    assert record["box"] == record["crop_box"] == [50, 0, 100, 100]
    with Image.open(output / "wide_0.png") as face:
        assert face.size == (32, 32) and (np.asarray(face) == (200, 40, 90)).all()


def noise_pictures(folder: Path, count: int) -> None:
    """Pictures of noise: their face crops do not compress, each PNG is over 20 KB."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(folder / f"noise_{i}.png")


def test_a_face_that_cannot_be_written_stops_the_stage_with_one_line(tmp_path):
    """A full disk, here a limit on the size of a file that every face exceeds, fails the write of a
    face: the stage stops with one line naming it, and the previous output is left as it was."""
    import resource
    import subprocess
    import sys

    source, output = tmp_path / "in", tmp_path / "faces"
    noise_pictures(source, 3)
    params = tmp_path / "params.yaml"
    params.write_text("crop:\n  mode: passthrough\n  workers: 1\n")
    args = ["--params", str(params), "--input", str(source), "--output", str(output),
            "--stats", str(tmp_path / "stats.json")]
    main(args)
    before = {path.name: path.read_bytes() for path in output.iterdir()}

    def small_files_only() -> None:  # what a full disk does to the next write: EFBIG, as ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pipeline.crop_faces", *args], cwd=root,
                          capture_output=True, text=True, timeout=300, preexec_fn=small_files_only)
    errors = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "could not write" in errors[0] and "_0.png" in errors[0] and "File too large" in errors[0]
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before


def test_faces_and_boxes_are_on_the_disk_before_the_output_is_swapped_in(tmp_path, monkeypatch):
    """A power loss after the stage leaves the whole new output or the old one, never empty faces
    under their names: each face file, boxes.jsonl, and the folders that name them are fsynced."""
    import os

    synced: set[int] = set()
    fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.add(os.fstat(fd).st_ino)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    source = tmp_path / "in"
    noise_pictures(source, 2)
    folder = tmp_path / "crops"
    folder.mkdir()
    result = crop_image((source / "noise_0.png", folder, CropParams(mode="passthrough", size=32)))
    assert [record["face"] for record in result.records] == ["noise_0_0.png"]
    assert {(folder / "noise_0_0.png").stat().st_ino, folder.stat().st_ino} <= synced
    synced.clear()  # the stage itself: its workers sync their faces as above; it syncs the rest
    params = tmp_path / "params.yaml"
    params.write_text("crop:\n  mode: passthrough\n  workers: 1\n")
    output = tmp_path / "faces"
    main(["--params", str(params), "--input", str(source), "--output", str(output),
          "--stats", str(tmp_path / "stats.json")])
    assert {(output / "boxes.jsonl").stat().st_ino, output.stat().st_ino, tmp_path.stat().st_ino} <= synced
