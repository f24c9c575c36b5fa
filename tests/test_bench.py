"""benchmarks/train_throughput.py runs end to end, on generated faces so no test data is needed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "benchmarks" / "train_throughput.py"


def load_benchmark(path: Path = BENCHMARK) -> ModuleType:
    """A benchmark is a script, not a package module: load it from its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_faces(folder: Path, count: int, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_flat_folder_gets_a_class_subfolder(tmp_path: Path) -> None:
    bench = load_benchmark()
    write_faces(tmp_path / "flat", 3)
    with bench.image_folder_root(tmp_path / "flat") as root:
        assert len(bench.face_dataset(root).samples) == 3
        assert [p.name for p in root.iterdir()] == ["faces"]
    assert not root.exists()  # the symlink folder is temporary

    write_faces(tmp_path / "classes" / "a", 2)
    with bench.image_folder_root(tmp_path / "classes") as root:
        assert root == tmp_path / "classes"
        assert len(bench.face_dataset(root).samples) == 2


def test_decoded_faces_match_the_baseline_transforms(tmp_path: Path) -> None:
    """Ours decodes once what the baseline decodes every epoch: the same pixels, on the same scale."""
    bench = load_benchmark()
    from torchvision import transforms

    paths = write_faces(tmp_path / "faces", 2, size=96)
    faces = bench.decode_faces([str(p) for p in paths], 48)
    assert faces.shape == (2, 3, 48, 48) and faces.dtype == torch.uint8
    baseline = transforms.Compose([bench.resize_and_crop(48), transforms.ToTensor(),
                                   transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    with Image.open(paths[0]) as image:
        expected = baseline(image.convert("RGB"))
    assert (faces[0].float() / 127.5 - 1.0 - expected).abs().max() < 1e-5


def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    write_faces(tmp_path / "faces", 32)
    report_path = tmp_path / "out" / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARK), "--faces", str(tmp_path / "faces"), "--device", "cpu",
         "--image-size", "48", "--batch-size", "8", "--seconds", "1", "--warmup", "1",
         "--json", str(report_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    for name in ("baseline", "ours"):
        assert report[name]["images_per_second"] > 0
        assert report[name]["images"] == report[name]["steps"] * 8
        assert report[name]["peak_memory_bytes"] > 0
        assert report[name]["faces"] == 32
    assert report["ratio"] == pytest.approx(
        report["ours"]["images_per_second"] / report["baseline"]["images_per_second"])
    assert report["machine"]["device"] == "cpu"
    assert "ours / baseline" in completed.stdout and "img/s" in completed.stdout
