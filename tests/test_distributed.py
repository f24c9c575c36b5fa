"""DistributedDataParallel under torchrun, on CPU with the gloo backend and two processes."""

import json
import subprocess
import sys

import torch
import yaml

from pipeline.models.networks import load_generator


def test_torchrun_two_ranks_train_one_model(tiny_manifest, tmp_path):
    params = {"train": {"epochs": 3, "batch_size": 8, "ngf": 8, "ndf": 8, "device": "cpu",
                        "precision": "fp32", "threads": 1, "sample_every": 1, "checkpoint_every": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "models"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pipeline.train", "--params", str(tmp_path / "params.yaml"),
         "--input", str(tiny_manifest), "--output", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # each rank holds its own shard (16 train faces -> 8 each) and says which rank it is
    assert "8 train faces at 48 px on cpu" in result.stderr
    assert "rank 0 of 2" in result.stderr and "rank 1 of 2" in result.stderr
    # rank 0 alone logs and writes, once per epoch; the counts are the whole group's
    metrics = json.loads((out / "dvclive" / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["train_faces"] == 16
    assert metrics["images_seen"] == 3 * 2 * 8  # 3 epochs of 2 steps, of the global batch 8
    assert len(list((out / "dvclive" / "plots" / "images" / "samples").glob("*.png"))) == 3
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 3
    assert not any(key.startswith("module.") for key in checkpoint["generator"])  # DDP unwrapped
    load_generator(out / "snapshots" / "epoch-00003.pt")
