
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.core.params import TrainParams
from pipeline.models.ema import ema_update
from pipeline.models.losses import d_loss_nonsaturating, g_loss_nonsaturating
from pipeline.models.networks import load_generator
from pipeline.training.loop import train
from pipeline.training.step import resolve_bf16


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


@pytest.mark.parametrize("size", [48, 64])
def test_train_is_deterministic_on_cpu(tiny_manifest, tmp_path, size):
    params = TrainParams(image_size=size, epochs=2, batch_size=8, ngf=8, ndf=8, device="cpu",
                         precision="fp32", threads=1, sample_every=1)
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


def tiny(**overrides):
    values = {"epochs": 4, "batch_size": 8, "ngf": 8, "ndf": 8, "device": "cpu", "precision": "fp32",
              "threads": 1, "checkpoint_every": 1, "sample_every": 1}
    return TrainParams(**{**values, **overrides})


def weights(path):
    state = torch.load(path, weights_only=True)
    return state["generator"], state["discriminator"], state["epoch"]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_resumed_run_ends_with_the_same_weights(tiny_manifest, tmp_path):
    train(tiny(), tiny_manifest, tmp_path / "straight")
    train(tiny(epochs=2), tiny_manifest, tmp_path / "resumed")
    summary = train(tiny(epochs=4), tiny_manifest, tmp_path / "resumed")
    g1, d1, e1 = weights(tmp_path / "straight" / "checkpoint.pt")
    g2, d2, e2 = weights(tmp_path / "resumed" / "checkpoint.pt")
    assert e1 == e2 == 4 and same_weights(g1, g2) and same_weights(d1, d2)
    steps = [line.split("\t")[0] for line in
             (tmp_path / "resumed/dvclive/plots/metrics/train/loss_d.tsv").read_text().splitlines()[1:]]
    assert steps == ["0", "1", "2", "3"]  # the curves continue, without doubles
    assert summary["loss_d"] > 0


def test_changed_network_param_starts_fresh(tiny_manifest, tmp_path, caplog):
    train(tiny(epochs=2), tiny_manifest, tmp_path)
    with caplog.at_level("INFO", logger="pipeline.train"):
        train(tiny(epochs=3, ngf=16), tiny_manifest, tmp_path)
    assert "starting fresh" in caplog.text and "train.ngf changed (8 -> 16)" in caplog.text
    assert weights(tmp_path / "checkpoint.pt")[2] == 3


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tiny_manifest, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    values = {"epochs": 150, "batch_size": 8, "ngf": 8, "ndf": 8, "device": "cpu",
              "precision": "fp32", "threads": 1, "checkpoint_every": 1, "sample_every": 50,
              "eval_every": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": values}))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "pipeline.train", "--params", str(tmp_path / "params.yaml"),
               "--input", str(tiny_manifest), "--output", str(tmp_path / "killed")]
    child = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not checkpoint.exists():
        time.sleep(0.01)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 1 <= weights(checkpoint)[2] < 150, "the run was not killed mid-way"
    subprocess.run(command, cwd=root, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train(TrainParams(**values), tiny_manifest, tmp_path / "straight")
    g1, d1, _ = weights(tmp_path / "straight" / "checkpoint.pt")
    g2, d2, epoch = weights(checkpoint)
    assert epoch == 150 and same_weights(g1, g2) and same_weights(d1, d2)


def test_nan_losses_stop_and_keep_the_last_good_checkpoint(tiny_manifest, tmp_path):
    from pipeline.core.params import PipelineError

    train(tiny(epochs=1), tiny_manifest, tmp_path)
    good = weights(tmp_path / "checkpoint.pt")
    with pytest.raises(PipelineError, match="keeping the last good checkpoint"):
        train(tiny(epochs=1000, lr=1e30, checkpoint_every=1000), tiny_manifest, tmp_path / "nan")
    assert same_weights(weights(tmp_path / "checkpoint.pt")[0], good[0])


@pytest.mark.parametrize("size", [48, 64])
@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
@pytest.mark.parametrize("loss", ["nonsaturating", "hinge", "lsgan", "wgan-gp"])
def test_model_family(tiny_manifest, tmp_path, size, arch, loss):
    summary = train(tiny(epochs=1, image_size=size, arch=arch, loss=loss, n_critic=2,
                         spectral_norm=loss == "hinge"), tiny_manifest, tmp_path)
    assert all(np.isfinite(v) for v in summary.values())
    generator, payload = load_generator(tmp_path / "generator.pt")
    assert generator(torch.randn(2, 100)).shape == (2, 3, size, size)
    assert payload["config"]["arch"] == arch


def test_semi_supervised_gan_reports_both_accuracies(tiny_manifest, tmp_path):
    summary = train(tiny(epochs=2, objective="sgan", labelled_fraction=0.5,
                         sgan_classes=("blue_hair", "red_hair", "green_hair")), tiny_manifest, tmp_path)
    assert 0.0 <= summary["sgan_val_accuracy"] <= 1.0
    assert 0.0 <= summary["supervised_val_accuracy"] <= 1.0
    assert 0 < summary["labelled_train_faces"] < 16


def test_sgan_losses():
    from pipeline.models.losses import sgan_class_loss, sgan_real_fake_logit

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 5.0]])  # two classes and "fake"
    rf = sgan_real_fake_logit(logits)
    p_real = 1 - torch.softmax(logits, 1)[:, -1]
    assert torch.allclose(torch.sigmoid(rf), p_real, atol=1e-6)
    labels = torch.tensor([0, -1])
    expected = torch.nn.functional.cross_entropy(logits[:1], labels[:1])
    assert torch.allclose(sgan_class_loss(logits, labels), expected)


class ScriptedEvaluator:
    """Stands in for pipeline.evaluate.Evaluator (tested on its own): scores in a given order."""

    def __init__(self, scores):
        self.scores = list(scores)

    def score(self, generator):
        return self.scores.pop(0)


def test_best_checkpoint_by_face_rate_then_fid(tiny_manifest, tmp_path):
    offline = [{"fid": None, "face_rate": r} for r in (0.1, 0.5, 0.3)]
    train(tiny(epochs=3, eval_every=1), tiny_manifest, tmp_path / "a", ScriptedEvaluator(offline))
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert (best["epoch"], best["selected_by"], best["score"]) == (2, "face_rate", 0.5)

    online = [{"fid": f, "face_rate": 0.0} for f in (90.0, 70.0, 80.0)]
    train(tiny(epochs=3, eval_every=1), tiny_manifest, tmp_path / "b", ScriptedEvaluator(online))
    best = torch.load(tmp_path / "b" / "best.pt", weights_only=True)
    assert (best["epoch"], best["selected_by"], best["score"]) == (2, "fid", 70.0)
    load_generator(tmp_path / "b" / "best.pt")  # sampling code reads it like generator.pt


def test_continued_run_rewrites_best_deleted_by_dvc(tiny_manifest, tmp_path):
    """DVC removes best.pt before `dvc exp run -S train.epochs=...` continues a run; the continued
    run must write it again from the checkpoint, even when its own epochs are not scored."""
    scores = [{"fid": None, "face_rate": r} for r in (0.2, 0.6)]
    train(tiny(epochs=2, eval_every=1), tiny_manifest, tmp_path, ScriptedEvaluator(scores))
    first_best = torch.load(tmp_path / "best.pt", weights_only=True)
    (tmp_path / "best.pt").unlink()
    (tmp_path / "generator.pt").unlink()
    train(tiny(epochs=3, eval_every=4), tiny_manifest, tmp_path, ScriptedEvaluator([]))
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (best["epoch"], best["selected_by"], best["score"]) == (2, "face_rate", 0.6)
    for name, tensor in first_best["state_dict"].items():
        assert torch.equal(best["state_dict"][name], tensor), name


def test_faces_that_do_not_fit_stay_in_host_memory(caplog):
    """The "meta" device stands in for a small accelerator: the fallback keeps the faces on the
    host, says so, and still hands out batches on the training device."""
    from pipeline.data.faces import place_faces

    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    device = torch.device("meta")
    roomy = place_faces(images, device, free_bytes=10 * images.nbytes)
    assert roomy.resident and roomy.images.device == device
    with caplog.at_level("WARNING", logger="pipeline.train"):
        tight = place_faces(images, device, free_bytes=images.nbytes)
    assert not tight.resident and tight.images.device.type == "cpu"
    assert "host memory" in caplog.text
    index = tight.permutation()[:4]
    assert index.device.type == "cpu"
    batch = tight.batch(index)
    assert batch.device == device and batch.shape == (4, 3, 8, 8)
    assert place_faces(images, torch.device("cpu"), None).resident  # the CPU's memory is the host's


@pytest.mark.slow
def test_compiled_step_matches_eager():
    """train.compile changes speed, not results: from the same weights, batch and noise, the
    compiled step computes the same losses and gradients as the eager one, up to float rounding."""
    from pipeline.training.run import new_run
    from pipeline.training.step import build_step

    params = tiny(compile="off", flip=False)
    batch = torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8)
    results = []
    for setting in ("off", "on"):
        params = replace(params, compile=setting)
        torch.manual_seed(0)
        run = new_run(params, torch.device("cpu"))
        step = build_step(run, params, torch.device("cpu"))
        stats = step(batch, None)
        grads = [p.grad.clone() for net in (run.generator, run.discriminator) for p in net.parameters()]
        results.append((stats, grads))
    (eager_stats, eager_grads), (compiled_stats, compiled_grads) = results
    assert torch.allclose(eager_stats, compiled_stats, rtol=1e-4, atol=1e-6)
    for eager, compiled in zip(eager_grads, compiled_grads, strict=True):
        assert (eager - compiled).norm() <= 1e-3 * eager.norm() + 1e-8  # relative to the whole layer


class RandomEvaluator(ScriptedEvaluator):
    """Draws from the global RNG as Inception's lazy construction or KID's subsets may."""

    def score(self, generator):
        torch.rand(1000)
        return super().score(generator)


def test_scoring_does_not_change_the_training(tiny_manifest, tmp_path):
    train(tiny(epochs=3, eval_every=1), tiny_manifest, tmp_path / "scored",
          RandomEvaluator([{"fid": None, "face_rate": 0.5}] * 3))
    train(tiny(epochs=3, eval_every=1), tiny_manifest, tmp_path / "plain")
    for a, b in zip(weights(tmp_path / "scored" / "checkpoint.pt")[:2],
                    weights(tmp_path / "plain" / "checkpoint.pt")[:2], strict=True):
        assert same_weights(a, b)
