import csv

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.losses import d_loss_nonsaturating, g_loss_nonsaturating
from pipeline.models import load_generator
from pipeline.params import TrainParams
from pipeline.train import ema_update, resolve_bf16, train


def test_label_smoothing_moves_ds_optimum():
    """With target 0.9 the real-image loss is lowest where D(x) = 0.9, not at D(x) -> 1."""
    logits = torch.linspace(-1, 6, 701)
    real_only = [d_loss_nonsaturating(t.view(1), torch.full((1,), -50.0), 0.9) for t in logits]
    best = torch.sigmoid(logits[int(torch.stack(real_only).argmin())])
    assert abs(best.item() - 0.9) < 0.01


def test_generator_loss_is_nonsaturating():
    """Gradient of G's loss stays large when D confidently rejects the fakes."""
    fake_logits = torch.full((4,), -8.0, requires_grad=True)
    g_loss_nonsaturating(fake_logits).backward()
    assert fake_logits.grad.abs().mean() > 0.2


def test_ema_update():
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.weight.fill_(0.0)
    ema_update(ema, model, decay=0.9)
    assert torch.allclose(ema.weight, torch.full((2, 2), 0.1))


@pytest.fixture
def tiny_manifest(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "faces").mkdir()
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sha256", "post_id", "source_image", "tags", "box", "width",
                         "height", "split"])
        for i in range(20):
            pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "faces" / f"{i}.png")
            writer.writerow([f"faces/{i}.png", str(i), i, "", "", "", 96, 96,
                             "val" if i >= 16 else "train"])
    return tmp_path / "manifest.csv"


@pytest.mark.parametrize("size", [48, 64])
def test_train_is_deterministic_on_cpu(tiny_manifest, tmp_path, size):
    params = TrainParams(image_size=size, epochs=2, batch_size=8, ngf=8, ndf=8, device="cpu",
                         precision="fp32", threads=1)
    first = train(params, tiny_manifest, tmp_path / "a")
    second = train(params, tiny_manifest, tmp_path / "b")
    assert first["loss_d"] == second["loss_d"]
    g_a, payload = load_generator(tmp_path / "a" / "generator.pt")
    g_b, _ = load_generator(tmp_path / "b" / "generator.pt")
    z = torch.randn(3, 100)
    assert torch.equal(g_a(z), g_b(z))
    assert payload["config"]["image_size"] == size and payload["ema"] is True
    checkpoint = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert {"generator", "generator_ema", "discriminator", "opt_g", "opt_d", "epoch",
            "step"} <= set(checkpoint)
    assert checkpoint["step"] == 2 * (16 // 8)
    samples = sorted((tmp_path / "a" / "dvclive" / "plots" / "images" / "samples").iterdir())
    assert [p.name for p in samples] == ["0001.png", "0002.png"]


def test_bf16_where_supported(tiny_manifest, tmp_path):
    if not resolve_bf16("auto", torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    params = TrainParams(epochs=1, batch_size=8, ngf=8, ndf=8, device="cpu", precision="bf16")
    summary = train(params, tiny_manifest, tmp_path)
    assert all(np.isfinite(v) for v in summary.values())
