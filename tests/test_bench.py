"""benchmarks/train_throughput.py runs end to end, on generated faces so no test data is needed; the
benchmarks' harness keeps its protocol, and what only benchmarks use stays out of pipeline/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import BENCHMARK, ROOT, load_benchmark
from PIL import Image

from pipeline.core.params import PipelineError


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


def test_the_pipeline_holds_no_benchmark_helper() -> None:
    """dvc.yaml makes the stages depend on pipeline/core: what only a benchmark uses lives in
    benchmarks/harness.py, so editing it reruns no stage."""
    devices = ROOT / "pipeline" / "core" / "devices.py"
    defined = {node.name for node in ast.parse(devices.read_text()).body
               if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    imported = {alias.name for path in (ROOT / "pipeline").rglob("*.py")
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module == "pipeline.core.devices"
                for alias in node.names}
    assert defined and defined <= imported, f"only benchmarks use {sorted(defined - imported)}"


PROTOCOL_CHILD = """
import sys
sys.path.insert(0, BENCHMARKS)
from harness import send
if sys.argv[1] == "crash":
    sys.exit(5)
print("a line of its own")
send({"ready": True})
for line in sys.stdin:
    if line.strip() != "measure":
        break
    send({"measured": 1})
send({"done": True})
sys.exit(int(sys.argv[1]))
"""


def test_measuring_process_protocol(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Requests one line each, marked answers back, anything else passed on to stderr, and a
    process that fails is one error naming it."""
    harness = load_benchmark(ROOT / "benchmarks" / "harness.py")
    script = tmp_path / "child.py"
    script.write_text(PROTOCOL_CHILD.replace("BENCHMARKS", repr(str(ROOT / "benchmarks"))))
    with harness.MeasuringProcess(script, ["0"], "test measurement") as child:
        assert child.receive() == {"ready": True}
        assert child.request("measure") == {"measured": 1}
        assert child.request("done") == {"done": True}
        child.close()
    assert "a line of its own" in capfd.readouterr().err

    with harness.MeasuringProcess(script, ["3"], "test measurement") as child:
        child.receive()
        child.request("done")
        with pytest.raises(PipelineError, match=r"^the test measurement failed \(exit status 3\)$"):
            child.close()
    with harness.MeasuringProcess(script, ["crash"], "test measurement") as child:
        with pytest.raises(PipelineError, match=r"^the test measurement failed \(exit status 5\)$"):
            child.receive()


def test_others_cores_pool_over_spans() -> None:
    harness = load_benchmark(ROOT / "benchmarks" / "harness.py")
    assert harness.mean_others_cores([(1.0, 1.0), (0.0, 3.0)]) == pytest.approx(0.25)
    assert harness.mean_others_cores([(1.0, 1.0), (None, 3.0)]) is None
    with harness.Phase() as phase:
        sum(range(10_000))
    assert phase.seconds > 0 and (phase.others_cores is None or phase.others_cores >= 0)
