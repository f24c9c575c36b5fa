import csv
import json

import pytest
from PIL import Image

from pipeline.dataset import load_faces
from pipeline.manifest import main, split_of
from pipeline.params import PipelineError


def make_faces(folder, colours):
    """Crop-stage output: one PNG per face and boxes.jsonl; equal colours are exact duplicates."""
    folder.mkdir(parents=True)
    lines = []
    for i, colour in enumerate(colours):
        name = f"demo_{i}_0.png"
        Image.new("RGB", (96, 96), colour).save(folder / name)
        lines.append(json.dumps({"face": name, "source_image": f"demo_{i}.jpg",
                                 "box": [10, 20, 96, 96], "size": 96,
                                 "image_width": 640, "image_height": 480}))
    (folder / "boxes.jsonl").write_text("\n".join(lines) + "\n")


def test_manifest_rows_duplicates_and_stats(tmp_path):
    faces = tmp_path / "data" / "faces"
    colours = [(i * 7 % 256, i * 13 % 256, i * 29 % 256) for i in range(40)]
    colours.append(colours[1])
    make_faces(faces, colours)  # the last face duplicates face 1
    posts = tmp_path / "data" / "posts.jsonl"
    posts.write_text("\n".join(
        json.dumps({"file": f"demo_{i}.jpg", "id": i, "tags": ["blue_hair", f"t{i % 2}"]})
        for i in range(41)) + "\n{torn line")
    (tmp_path / "params.yaml").write_text("manifest:\n  val_fraction: 0.25\n")
    output = tmp_path / "data" / "manifest.csv"
    main(["--params", str(tmp_path / "params.yaml"), "--input", str(faces), "--posts", str(posts),
          "--output", str(output), "--stats", str(tmp_path / "data" / "stats.json")])

    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 40
    assert rows[1] == {
        "path": "faces/demo_1_0.png", "sha256": rows[1]["sha256"], "post_id": "1",
        "source_image": "demo_1.jpg", "tags": "blue_hair t1", "box": "10 20 96 96",
        "width": "96", "height": "96", "split": split_of(rows[1]["sha256"], 0.25),
    }
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["faces"] == 40 and stats["duplicates_dropped"] == 1
    assert stats["split"]["train"] + stats["split"]["val"] == 40
    assert 2 <= stats["split"]["val"] <= 20
    assert stats["tags"]["blue_hair"] == 40

    train = load_faces(output, "train", 48)
    assert train.shape == (stats["split"]["train"], 3, 48, 48)


def test_split_is_stable_and_proportional():
    import hashlib

    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    assert [split_of(d, 0.1) for d in digests] == [split_of(d, 0.1) for d in digests]
    assert 150 < sum(split_of(d, 0.1) == "val" for d in digests) < 250


def test_missing_crops(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    with pytest.raises(PipelineError, match="run the crop_faces stage first"):
        main(["--params", str(tmp_path / "params.yaml"), "--input", str(tmp_path / "faces")])
