"""End to end: every stage under DVC on tiny params, in a throwaway copy of the project."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "scrape": {"max_posts": 16, "pages": 1, "rate": 100.0, "timeout": 10.0},
    "crop": {"workers": 2},
    "manifest": {"val_fraction": 0.3},  # a few val faces even from 16 pictures
    "train": {"epochs": 2, "batch_size": 8, "ngf": 8, "ndf": 8, "snapshot_every": 1},
    "evaluate": {"samples": 16, "snapshot_samples": 8, "nearest": 4, "batch_size": 16},
    "render": {"grid": 3, "interpolation_rows": 2, "interpolation_steps": 3},
}


def sh(*command, cwd, env):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory, cascade_path):
    """A git + DVC copy of the project with tiny params, and an environment whose `python` and
    `dvc` are this interpreter's."""
    root = tmp_path_factory.mktemp("project")
    for name in ("pipeline", ".dvc", ".dvcignore", ".gitignore", "dvc.yaml", "pyproject.toml"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        else:
            shutil.copy(source, root / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "LBPCASCADE_ANIMEFACE": str(cascade_path), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    sh("git", "init", "-q", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "tiny project", cwd=root, env=env)
    return root, env


@pytest.mark.slow
def test_dvc_repro_end_to_end(project):
    root, env = project
    sh("dvc", "repro", cwd=root, env=env)

    scraped = json.loads((root / "data/raw/scrape_stats.json").read_text())
    assert scraped["downloaded"] == 16 and scraped["failed"] == 0
    cropped = json.loads((root / "data/crop_stats.json").read_text())
    assert cropped["faces"] >= 10
    manifest = json.loads((root / "data/manifest_stats.json").read_text())
    dropped = manifest["duplicates_dropped"] + manifest["near_duplicates_dropped"]
    assert manifest["faces"] == cropped["faces"] - dropped
    assert sorted(p.name for p in (root / "models/snapshots").iterdir()) == ["epoch-00001.pt",
                                                                             "epoch-00002.pt"]
    assert (root / "models/checkpoint.pt").is_file()
    metrics = json.loads((root / "models/dvclive/metrics.json").read_text())
    assert metrics["step"] == 1
    assert set(metrics["train"]) == {"loss_d", "loss_g", "d_real", "d_fake", "augment_p"}
    with Image.open(root / "reports/samples.png") as grid:
        assert grid.size == (3 * 98 + 2, 3 * 98 + 2)  # 48 px faces upscaled to 96, padding 2
    for name in ("interpolation.png", "interpolation.gif", "timelapse.gif", "losses.png", "index.html"):
        assert (root / "reports" / name).stat().st_size > 1000
    assert (root / "models/best.pt").is_file()
    scores = json.loads((root / "metrics/eval.json").read_text())
    reference = json.loads((root / "metrics/eval_details.json").read_text())["reference"]
    assert reference["snapshots_scored"] == 2 and reference["samples"] == 16 and "face_rate" in scores
    with (root / "metrics/snapshots.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]

    # nothing changed: nothing runs
    assert "Data and pipelines are up to date" in sh("dvc", "repro", cwd=root, env=env)

    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "first run", cwd=root, env=env)
    # how runs are scored: evaluate and render run again, training does not
    out = sh("dvc", "exp", "run", "-S", "evaluate.samples=12", cwd=root, env=env)
    assert "Running stage 'evaluate'" in out and "Running stage 'render'" in out
    for stage in ("scrape", "crop_faces", "manifest", "train"):
        assert f"Running stage '{stage}'" not in out
    assert json.loads((root / "metrics/eval_details.json").read_text())["reference"]["samples"] == 12

    # more epochs: the finished run continues, and what follows it runs again
    out = sh("dvc", "exp", "run", "-S", "train.epochs=3", cwd=root, env=env)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert "continuing from models/checkpoint.pt at epoch 2" in out
    for stage in ("scrape", "crop_faces", "manifest"):
        assert f"Running stage '{stage}'" not in out
    assert len(list((root / "models/snapshots").glob("epoch-*.pt"))) == 3
    shown = sh("dvc", "exp", "show", "--csv", cwd=root, env=env)
    epochs = [row["train.epochs"] for row in csv.DictReader(io.StringIO(shown))]
    assert "3" in epochs and "2" in epochs  # the experiment beside the workspace's baseline
    assert json.loads((root / "models/dvclive/metrics.json").read_text())["step"] == 2


def test_bad_param_fails_fast_with_one_line(project):
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["image_size"] = 50
    (root / "bad.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "--params", "bad.yaml"],
                            cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: train.image_size: must be one of (48, 64), got 50"


@pytest.mark.parametrize("stage", ["scrape", "crop_faces", "manifest", "train", "evaluate", "render"])
def test_every_stage_documents_its_paths(project, stage):
    root, env = project
    result = subprocess.run([sys.executable, "-m", f"pipeline.{stage}", "--help"], cwd=root,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "--params" in result.stdout and "--output" in result.stdout
