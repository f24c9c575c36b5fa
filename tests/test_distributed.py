"""DistributedDataParallel under torchrun, on CPU with the gloo backend and two processes."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

import pipeline.training.loop as loop_module
from pipeline.models.networks import load_generator
from pipeline.training.distributed import NoLive, mean_over_ranks


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


def test_ranks_other_than_0_have_every_live_method_train_calls_and_no_other():
    """NoLive stands in for DVCLive on the other ranks: a misspelt call fails there too."""
    loop = ast.parse(Path(loop_module.__file__).read_text())
    called = {node.attr for node in ast.walk(loop)
              if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "live"}
    assert {"log_metric", "log_image", "next_step"} <= called
    quiet = NoLive()
    for name in called:
        assert hasattr(quiet, name), name
    quiet.log_metric("train/loss_d", 1.0, plot=False)
    quiet.log_image("samples/0001.png", None)
    quiet.next_step()
    quiet.end()
    with pytest.raises(AttributeError):
        quiet.log_metrc("train/loss_d", 1.0)


def test_epoch_statistics_are_averaged_over_the_ranks_in_one_reduction(tmp_path, monkeypatch):
    reductions = []
    all_reduce = dist.all_reduce

    def counted(tensor, *args, **kwargs):
        reductions.append(tuple(tensor.shape))
        return all_reduce(tensor, *args, **kwargs)

    totals = {"loss_d": torch.tensor(4.0), "g_updates": torch.tensor(2.0), "augment_p": torch.tensor(0.5)}
    assert mean_over_ranks(totals) is totals  # outside a process group: as they are
    monkeypatch.setattr(dist, "all_reduce", counted)
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        means = mean_over_ranks(totals)
    finally:
        dist.destroy_process_group()
    assert reductions == [(3,)]
    assert {name: value.item() for name, value in means.items()} == {
        "loss_d": 4.0, "g_updates": 2.0, "augment_p": 0.5}
