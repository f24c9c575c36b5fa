"""benchmarks/scale.py: its drawn faces are what the crop stage would write, and it runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from helpers import load_benchmark as load_script
from PIL import Image

from pipeline.core.params import CropParams, read_section
from pipeline.data.formats import BOXES_FILE
from pipeline.demo.booru import render_post
from pipeline.vision import cropping

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "benchmarks" / "scale.py"
DROPS = ("too_small", "tag_filtered", "duplicates_dropped", "near_duplicates_dropped")


def load_benchmark() -> ModuleType:
    return load_script(BENCHMARK)


def test_drawn_faces_are_what_the_crop_stage_writes(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The crop stage, told the drawn boxes instead of detecting, writes the same records and pixels
    from the file the demo booru serves: so the benchmark's manifest input is the pipeline's."""
    bench = load_benchmark()
    crop = read_section("crop", ROOT / "params.yaml")
    settings = bench.DrawSettings(seed=0, margin=crop.margin, size=crop.size)
    post_id = next(i for i in range(1, 100) if len(bench.stored_post(settings, i)[0].faces) >= 2)
    artwork, data = bench.stored_post(settings, post_id)
    assert data == render_post(0, post_id)[0]  # the bytes the scrape stage downloads

    images, ours, theirs = tmp_path / "images", tmp_path / "ours", tmp_path / "theirs"
    for folder in (images, ours, theirs):
        folder.mkdir()
    source = images / f"demo_{post_id}.jpg"
    source.write_bytes(data)
    post, records = bench.draw_post((settings, post_id, ours))
    monkeypatch.setattr(cropping, "face_boxes", lambda bgr, params: [
        (box, cropping.grow_box(box, params.margin)) for box in sorted(artwork.faces)])
    expected = cropping.crop_image((source, theirs, CropParams(margin=crop.margin, size=crop.size)))

    assert records == expected.records
    for record in records:
        ours_pixels = np.asarray(Image.open(ours / record["face"]))
        assert ours_pixels.shape == (crop.size, crop.size, 3)
        assert np.array_equal(ours_pixels, np.asarray(Image.open(theirs / record["face"])))
    assert post["file"] == source.name and post["id"] == post_id
    assert post["tags"] == list(artwork.tags)


def test_cache_is_reused_and_extended(tmp_path: Path) -> None:
    bench = load_benchmark()
    settings = bench.DrawSettings(seed=0, margin=0.25, size=96)
    first = bench.draw_faces(tmp_path, 4, settings, workers=1)
    assert len(first.faces) >= 4 and first.reused == 0
    again = bench.draw_faces(tmp_path, 4, settings, workers=1)
    assert again.faces == first.faces and again.reused == len(first.faces)
    more = bench.draw_faces(tmp_path, len(first.faces) + 5, settings, workers=1)
    assert more.faces[:len(first.faces)] == first.faces and more.reused == len(first.faces)
    other = bench.draw_faces(tmp_path, 4, bench.DrawSettings(seed=1, margin=0.25, size=96), workers=1)
    assert other.reused == 0 and other.faces != first.faces[:len(other.faces)]

    faces, posts = bench.prepare_size(tmp_path, more, 3, tmp_path / "size-3")
    boxes = [json.loads(line) for line in (faces / BOXES_FILE).read_text().splitlines()]
    assert sorted(r["face"] for r in boxes) == sorted(r["face"] for r in more.faces[:3])
    assert sorted(p.name for p in faces.glob("*.png")) == sorted(r["face"] for r in boxes)
    post_files = {json.loads(line)["file"] for line in posts.read_text().splitlines()}
    assert {r["source_image"] for r in boxes} <= post_files


def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    """Two tiny sizes in fp32 on one thread, so a neighbour on the CPUs slows it little."""
    cache, report_path = tmp_path / "cache", tmp_path / "out" / "scale.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--sizes", "120", "240", "--steps", "3", "--warmup", "1",
         "--threads", "1", "--precision", "fp32", "--cache", str(cache), "--json", str(report_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    image_size = read_section("train", ROOT / "params.yaml").image_size

    assert [entry["faces"] for entry in report["sizes"]] == [120, 240]
    for entry in report["sizes"]:
        stats = entry["manifest"]
        assert stats["faces"] == entry["faces"] - sum(stats[key] for key in DROPS)
        assert entry["train_faces"] == stats["split"]["train"] > 0
        assert entry["resident_bytes"] == entry["train_faces"] * 3 * image_size * image_size
        for key in ("manifest_seconds", "load_seconds", "resident_mb", "steps_per_second",
                    "images_per_second", "peak_rss_mb"):
            assert entry[key] > 0, key
        assert entry["images_per_second"] == pytest.approx(entry["steps_per_second"] * entry["batch_size"])
        assert entry["steps"] == 3 and entry["finite_losses"] and not entry["bf16"]
    assert report["draw"]["faces"] >= 240
    assert len(report["growth"]) == 1 and report["growth"][0]["faces"] == 2.0

    assert json.loads((cache / "cache.json").read_text())["faces"] == report["draw"]["faces"]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".work")] == []  # work folders gone
    assert "peak RSS MB" in completed.stdout and "Growth 120 -> 240 faces" in completed.stdout
