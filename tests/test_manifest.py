import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, children, running
from PIL import Image, ImageEnhance

from pipeline.core.params import PipelineError
from pipeline.data.curation import split_of
from pipeline.data.faces import load_faces
from pipeline.manifest import main


def noise_face(seed):
    """A stand-in face: seeded noise, so faces of different seeds are far apart in pHash too."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))


def make_faces(folder, images, sides=None):
    """Crop-stage output: face i of source image demo_i.jpg, its box `sides[i]` px (default 96)."""
    folder.mkdir(parents=True)
    lines = []
    for i, image in enumerate(images):
        name = f"demo_{i}_0.png"
        image.save(folder / name)
        side = sides[i] if sides else 96
        lines.append(json.dumps({"face": name, "source_image": f"demo_{i}.jpg",
                                 "box": [10, 20, side, side], "crop_box": [10, 20, side, side],
                                 "size": 96, "image_width": 640, "image_height": 480}))
    (folder / "boxes.jsonl").write_text("\n".join(lines) + "\n")


def run_manifest(root, params, posts=None):
    """Run the stage on root/data/faces; return the manifest rows and the stats."""
    (root / "params.yaml").write_text(params)
    posts_file = root / "data" / "posts.jsonl"
    if posts is not None:
        posts_file.write_text("\n".join(json.dumps(post) for post in posts) + "\n{torn line")
    output = root / "data" / "manifest.csv"
    main(["--params", str(root / "params.yaml"), "--input", str(root / "data" / "faces"),
          "--posts", str(posts_file), "--output", str(output),
          "--stats", str(root / "data" / "stats.json"), "--tags", str(root / "data" / "tag_counts.json")])
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((root / "data" / "stats.json").read_text())


def test_manifest_rows_duplicates_and_stats(tmp_path):
    images = [noise_face(i) for i in range(40)]
    make_faces(tmp_path / "data" / "faces", [*images, images[1]])  # the last face duplicates face 1
    posts = [{"file": f"demo_{i}.jpg", "id": i, "tags": ["blue_hair", f"t{i % 2}"]} for i in range(41)]
    rows, stats = run_manifest(tmp_path, "manifest:\n  val_fraction: 0.25\n", posts)

    assert len(rows) == 40
    assert rows[1] == {
        "path": "faces/demo_1_0.png", "sha256": rows[1]["sha256"], "post_id": "1",
        "source_image": "demo_1.jpg", "tags": "blue_hair t1", "box": "10 20 96 96",
        "width": "96", "height": "96", "split": split_of("demo_1.jpg", 0.25), "faces_in_image": "1",
    }
    assert stats["faces"] == 40 and stats["duplicates_dropped"] == 1
    assert stats["near_duplicates_dropped"] == stats["too_small"] == stats["tag_filtered"] == 0
    assert stats["split"]["train"] + stats["split"]["val"] == 40
    assert 2 <= stats["split"]["val"] <= 20
    assert json.loads((tmp_path / "data" / "tag_counts.json").read_text())["blue_hair"] == 40

    train = load_faces(tmp_path / "data" / "manifest.csv", "train", 48)
    assert train.shape == (stats["split"]["train"], 3, 48, 48)


@pytest.fixture
def near_copies(demo_faces):
    """A face cut from the demo art, the same face brightened 10% and saved as JPEG again, and
    another drawn face."""
    with Image.open(demo_faces / "00010.jpg") as image:
        face = image.convert("RGB")
    data = io.BytesIO()
    ImageEnhance.Brightness(face).enhance(1.1).save(data, "JPEG", quality=80)
    with Image.open(demo_faces / "00011.jpg") as image:
        other = image.convert("RGB")
    return face, Image.open(data).convert("RGB"), other


@pytest.mark.parametrize(("distance", "kept", "near"), [(4, [0, 2], 1), (0, [0, 1, 2], 0),
                                                         (-1, [0, 1, 2], 0)])
def test_near_duplicates_are_dropped_after_exact_ones(tmp_path, near_copies, distance, kept, near):
    face, brighter, other = near_copies
    make_faces(tmp_path / "data" / "faces", [face, brighter, other, face])
    rows, stats = run_manifest(tmp_path, f"manifest:\n  dedup_distance: {distance}\n")
    assert [row["path"] for row in rows] == [f"faces/demo_{i}_0.png" for i in kept]
    assert stats["duplicates_dropped"] == 1 and stats["near_duplicates_dropped"] == near
    assert stats["faces"] == len(kept)


def test_the_first_of_near_duplicates_is_kept(tmp_path, near_copies):
    face, brighter, other = near_copies
    make_faces(tmp_path / "data" / "faces", [brighter, other, face])
    rows, stats = run_manifest(tmp_path, "manifest:\n  dedup_distance: 4\n")
    assert [row["path"] for row in rows] == ["faces/demo_0_0.png", "faces/demo_1_0.png"]
    assert stats["near_duplicates_dropped"] == 1


def test_filters_by_source_face_size_and_tags(tmp_path):
    sides = [48, 63, 64, 200, 100, 100, 100]
    make_faces(tmp_path / "data" / "faces", [noise_face(i) for i in range(7)], sides)
    tags = [["solo"], ["solo"], ["solo"], ["solo", "blue_hair"], ["solo", "monochrome"],
            ["2girls"]]  # face 6 has no post at all
    posts = [{"file": f"demo_{i}.jpg", "id": i, "tags": t} for i, t in enumerate(tags)]
    params = ("manifest:\n  min_face_size: 64\n  include_tags: [solo]\n"
              "  exclude_tags: [monochrome, sketch]\n")
    rows, stats = run_manifest(tmp_path, params, posts)
    assert [row["post_id"] for row in rows] == ["2", "3"]
    assert stats["too_small"] == 2 and stats["tag_filtered"] == 3 and stats["faces"] == 2


def test_split_is_stable_and_proportional():
    names = [f"demo_{i}.jpg" for i in range(2000)]
    assert [split_of(n, 0.1) for n in names] == [split_of(n, 0.1) for n in names]
    assert 150 < sum(split_of(n, 0.1) == "val" for n in names) < 250


def test_faces_of_one_post_share_their_split(tmp_path):
    """Four characters per picture: no picture may have faces on both sides of the split."""
    faces = tmp_path / "data" / "faces"
    faces.mkdir(parents=True)
    with (faces / "boxes.jsonl").open("w") as boxes:
        for post in range(30):
            for k in range(4):
                name = f"demo_{post}_{k}.png"
                noise_face(post * 4 + k).save(faces / name)
                boxes.write(json.dumps({"face": name, "source_image": f"demo_{post}.jpg",
                                        "box": [0, 0, 96, 96], "size": 96}) + "\n")
    posts = [{"file": f"demo_{i}.jpg", "id": i, "tags": []} for i in range(30)]
    rows, stats = run_manifest(tmp_path, "manifest:\n  val_fraction: 0.3\n", posts)
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row["source_image"], set()).add(row["split"])
    assert len(splits) == 30 and all(len(sides) == 1 for sides in splits.values())
    assert stats["posts"]["train"] + stats["posts"]["val"] == 30 and stats["posts"]["val"] >= 3
    assert stats["split"]["val"] == 4 * stats["posts"]["val"]


def test_missing_crops(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    with pytest.raises(PipelineError, match="run the crop_faces stage first"):
        main(["--params", str(tmp_path / "params.yaml"), "--input", str(tmp_path / "faces")])


def test_unreadable_face_names_the_file(tmp_path):
    make_faces(tmp_path / "data" / "faces", [noise_face(0), noise_face(1)])
    (tmp_path / "data" / "faces" / "demo_1_0.png").write_bytes(b"\x89PNG cut short")
    with pytest.raises(PipelineError, match=r"demo_1_0\.png: face listed in boxes.jsonl is unreadable"):
        run_manifest(tmp_path, "")


def test_faces_in_image_and_labels_per_tag_group(tmp_path):
    """A picture of two faces labels neither (whose hair is blue?), unless its post says solo; the
    stats count the labelled faces per value of each train.conditions group."""
    make_faces(tmp_path / "data" / "faces", [noise_face(i) for i in range(4)])
    boxes = tmp_path / "data" / "faces" / "boxes.jsonl"
    records = [json.loads(line) for line in boxes.read_text().splitlines()]
    records[1]["source_image"] = records[2]["source_image"] = "demo_1.jpg"  # two faces, one picture
    boxes.write_text("".join(json.dumps(record) + "\n" for record in records))
    posts = [{"file": "demo_0.jpg", "id": 0, "tags": ["blue_hair", "red_eyes"]},
             {"file": "demo_1.jpg", "id": 1, "tags": ["blue_hair"]},
             {"file": "demo_3.jpg", "id": 3, "tags": ["solo", "blue_hair", "pink_hair"]}]
    params = ("manifest:\n  val_fraction: 0\ntrain:\n  conditions:\n"
              "    hair: [blue_hair, pink_hair]\n    eyes: [red_eyes, blue_eyes]\n")
    rows, stats = run_manifest(tmp_path, params, posts)
    assert [row["faces_in_image"] for row in rows] == ["1", "2", "2", "1"]
    assert stats["labels"]["hair"] == {"blue_hair": {"train": 1, "val": 0},
                                       "pink_hair": {"train": 0, "val": 0},
                                       "any": {"train": 3, "val": 0}}  # two faces; two hair tags
    assert stats["labels"]["eyes"]["red_eyes"] == {"train": 1, "val": 0}


def reader_of(pipe: Path, pids: list[int]) -> int | None:
    """The process among `pids` that has `pipe` open, if any."""
    for pid in pids:
        try:
            if any(fd.resolve() == pipe.resolve() for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:  # ended, or its descriptors changed meanwhile
            continue
    return None


def test_a_killed_hashing_worker_stops_the_stage_with_one_line(tmp_path):
    """The kernel's OOM killer ends a hashing worker: the stage stops within seconds with one line
    naming the face it was reading, the manifest is left as it was, and a rerun completes. Each
    face is a named pipe held open with nothing in it, so a worker stays inside its face until the
    test kills it."""
    faces = tmp_path / "data" / "faces"
    images = [noise_face(i) for i in range(2 * (os.cpu_count() or 1))]
    make_faces(faces, images)
    run_manifest(tmp_path, "")
    manifest = tmp_path / "data" / "manifest.csv"
    before = manifest.read_bytes()
    pipes = sorted(faces.glob("*.png"))
    for pipe in pipes:
        pipe.unlink()
        os.mkfifo(pipe)
    command = [sys.executable, "-m", "pipeline.manifest", "--params", str(tmp_path / "params.yaml"),
               "--input", str(faces), "--posts", str(tmp_path / "data" / "posts.jsonl"),
               "--output", str(manifest), "--stats", str(tmp_path / "data" / "stats.json"),
               "--tags", str(tmp_path / "data" / "tag_counts.json")]
    stage = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    writers: list[int] = []  # write ends: a worker that opened its pipe now waits in read()
    try:
        victim, read = None, None
        deadline = time.monotonic() + 300  # only against a hang
        while read is None and time.monotonic() < deadline:
            for pipe in pipes:
                try:
                    writers.append(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # nobody reads it yet
                    continue
                read = pipe
                break
            time.sleep(0.02)
        while read is not None and victim is None and time.monotonic() < deadline:
            victim = reader_of(read, children(stage.pid))
        assert victim is not None and stage.poll() is None, "no worker started reading a face"
        workers = children(stage.pid)
        os.kill(victim, signal.SIGKILL)
        _, err = stage.communicate(timeout=300)
    finally:
        for pid in children(stage.pid):  # never leave a worker waiting, whatever happened
            os.kill(pid, signal.SIGKILL)
        stage.kill()
        for fd in writers:
            os.close(fd)
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert stage.returncode == 2 and len(errors) == 1, err
    assert f"manifest worker process died while reading {read.name} " in errors[0], errors[0]
    assert manifest.read_bytes() == before
    deadline = time.monotonic() + 300  # the other workers are ended too
    while time.monotonic() < deadline and any(running(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers)
    for pipe, image in zip(pipes, images, strict=True):
        pipe.unlink()
        image.save(pipe)
    _, stats = run_manifest(tmp_path, "")
    assert stats["faces"] == len(images) and manifest.read_bytes() == before
