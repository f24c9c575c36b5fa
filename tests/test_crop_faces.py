import json
import shutil

import pytest
from PIL import Image

from pipeline.crop_faces import main


@pytest.fixture
def crop_params(tmp_path, cascade_path):
    path = tmp_path / "params.yaml"
    path.write_text(f"crop:\n  cascade: {cascade_path}\n  workers: 2\n")
    return path


def test_finds_faces_in_real_wallpapers(tmp_path, crop_params, illustrations):
    """The seed recipe finds 22 faces in the 40 shared wallpapers (../shared/README.md)."""
    output, stats_file = tmp_path / "faces", tmp_path / "stats.json"
    main(["--params", str(crop_params), "--input", str(illustrations), "--output", str(output),
          "--stats", str(stats_file)])
    stats = json.loads(stats_file.read_text())
    assert stats["images"] == 40 and stats["unreadable"] == 0
    assert stats["faces"] == 22
    boxes = [json.loads(line) for line in (output / "boxes.jsonl").read_text().splitlines()]
    assert len(boxes) == 22
    for box in boxes:
        x, y, w, h = box["box"]
        assert w >= 48 and h >= 48 and x + w <= box["image_width"] and y + h <= box["image_height"]
        with Image.open(output / box["face"]) as face:
            assert face.size == (96, 96)


def test_corrupt_images_are_counted_and_skipped(tmp_path, crop_params, illustrations):
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(illustrations / "wallpaper_002.jpg", source / "good.jpg")
    data = (illustrations / "wallpaper_003.jpg").read_bytes()
    (source / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (source / "garbage.png").write_bytes(b"\x89PNG not really")
    (source / "notes.txt").write_text("not an image, not even listed")
    output = tmp_path / "faces"
    output.mkdir()
    (output / "stale_0.png").write_bytes(b"from an earlier run")
    main(["--params", str(crop_params), "--input", str(source), "--output", str(output),
          "--stats", str(tmp_path / "stats.json")])
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["images"] == 3 and stats["unreadable"] == 2 and stats["faces"] == 2
    assert not (output / "stale_0.png").exists()  # the output is replaced, not mixed
    assert not list(tmp_path.glob(".*.partial"))


def test_missing_input_is_one_line(tmp_path, crop_params, capsys):
    from pipeline.cli import run_stage

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ["--params", str(crop_params), "--input", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_killed_run_keeps_the_previous_output(tmp_path, crop_params, illustrations):
    import os
    import signal
    import subprocess
    import sys
    import time

    output = tmp_path / "faces"
    args = ["--params", str(crop_params), "--input", str(illustrations), "--output", str(output),
            "--stats", str(tmp_path / "stats.json")]
    main(args)
    before = (output / "boxes.jsonl").read_text()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-m", "pipeline.crop_faces", *args], cwd=root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / ".faces.partial"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list(staging.glob("*.png")):
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (output / "boxes.jsonl").read_text() == before
    assert len(list(output.glob("*.png"))) == 22
    main(args)  # and the rerun completes
    assert (output / "boxes.jsonl").read_text() == before and not staging.exists()
