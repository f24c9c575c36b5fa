
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd.function import once_differentiable

import pipeline.core.params as params_module
import pipeline.models.networks as networks
from pipeline.core.params import TrainParams
from pipeline.models.ema import ema_beta, ema_update
from pipeline.models.losses import (
    d_loss_nonsaturating,
    g_loss_nonsaturating,
    mode_seeking_loss,
    paired_labels,
)
from pipeline.models.networks import RAW_STATE, load_generator, snapshot_epoch
from pipeline.models.sampling import from_uint8, to_uint8
from pipeline.training.loop import epoch_summary, train
from pipeline.training.run import new_run
from pipeline.training.step import STAT_NAMES, build_step, resolve_bf16


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


def test_ema_is_defined_by_a_half_life_in_images():
    # after half_life images, whatever the batch, a weight's pull has halved
    for batch in (16, 64):
        assert ema_beta(batch, 10**6, 10.0, None) ** (10_000 / batch) == pytest.approx(0.5)
    # in the ramp-up the half-life is at most 5% of the images seen: 50 images after 1,000
    assert ema_beta(64, 1000, 10.0, 0.05) == pytest.approx(0.5 ** (64 / 50))
    assert ema_beta(64, 10**6, 10.0, 0.05) == ema_beta(64, 10**6, 10.0, None)
    assert ema_beta(64, 1000, 0.0, 0.05) == 0.0  # off: the average follows G


def test_snapshots_carry_the_raw_generator_beside_the_ema_one(tiny_manifest, tmp_path):
    train(tiny(epochs=2, snapshot_every=2), tiny_manifest, tmp_path)
    _, payload = load_generator(tmp_path / "snapshots" / "epoch-00002.pt")
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["generator"]
    assert payload[RAW_STATE].keys() == raw.keys()
    assert all(torch.equal(payload[RAW_STATE][key], raw[key]) for key in raw)


def test_a_tag_group_without_labelled_faces_is_dropped_and_said(tiny_manifest, tmp_path, caplog):
    # the faces are tagged with hair colours only: the default eyes group has no labelled face
    with caplog.at_level(logging.WARNING):
        train(tiny(epochs=1), tiny_manifest, tmp_path)
    generator, _ = load_generator(tmp_path / "snapshots" / "epoch-00001.pt")
    assert [group for group, _ in generator.config.conditions] == ["hair"]
    assert "train.conditions.eyes: no train face is labelled" in caplog.text


@pytest.mark.parametrize("size", [48, 64])
def test_train_is_deterministic_on_cpu(tiny_manifest, tmp_path, size):
    params = TrainParams(image_size=size, epochs=2, batch_size=8, ngf=8, ndf=8, device="cpu",
                         precision="fp32", threads=1, sample_every=1)
    first = train(params, tiny_manifest, tmp_path / "a")
    second = train(params, tiny_manifest, tmp_path / "b")
    assert first["loss_d"] == second["loss_d"]
    g_a, payload = load_generator(tmp_path / "a" / "snapshots" / "epoch-00002.pt")
    g_b, _ = load_generator(tmp_path / "b" / "snapshots" / "epoch-00002.pt")
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


def test_a_run_killed_while_logging_continues(tiny_manifest, tmp_path):
    """A kill can tear DVCLive's files mid-write: a row cut short, a header, the JSON summary. The
    continued run drops the torn parts, logs on, and ends as a run that was never killed."""
    import json

    train(tiny(), tiny_manifest, tmp_path / "straight")
    train(tiny(epochs=2), tiny_manifest, tmp_path / "torn")
    curves = tmp_path / "torn/dvclive/plots/metrics/train"
    with (curves / "loss_d.tsv").open("a") as tsv:
        tsv.write("2")  # the next epoch's row, cut before its value
    (curves / "augment_p.tsv").write_text("times")  # cut inside the header
    summary = tmp_path / "torn/dvclive/metrics.json"
    summary.write_text(summary.read_text()[:25])
    train(tiny(epochs=4), tiny_manifest, tmp_path / "torn")
    g1, d1, _ = weights(tmp_path / "straight" / "checkpoint.pt")
    g2, d2, epoch = weights(tmp_path / "torn" / "checkpoint.pt")
    assert epoch == 4 and same_weights(g1, g2) and same_weights(d1, d2)
    steps = [line.split("\t")[0] for line in (curves / "loss_d.tsv").read_text().splitlines()[1:]]
    assert steps == ["0", "1", "2", "3"]
    assert json.loads(summary.read_text())["step"] == 3


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
              "precision": "fp32", "threads": 1, "checkpoint_every": 1, "sample_every": 50}
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
    generator, payload = load_generator(tmp_path / "snapshots" / "epoch-00001.pt")
    assert generator(torch.randn(2, 100)).shape == (2, 3, size, size)
    assert payload["config"]["arch"] == arch


def test_semi_supervised_gan_reports_both_accuracies(tiny_manifest, tmp_path):
    summary = train(tiny(epochs=2, objective="sgan", labelled_fraction=0.5, conditions={},
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
    expected = torch.nn.functional.cross_entropy(logits[:1, :-1], labels[:1])  # y < K + 1
    assert torch.allclose(sgan_class_loss(logits, labels), expected)


def snapshot_epochs(folder):
    return sorted(epoch for p in (folder / "snapshots").iterdir() if (epoch := snapshot_epoch(p)) is not None)


def test_snapshots_every_n_epochs_and_the_last(tiny_manifest, tmp_path):
    train(tiny(epochs=5, snapshot_every=2), tiny_manifest, tmp_path)
    assert snapshot_epochs(tmp_path) == [2, 4, 5]
    generator, payload = load_generator(tmp_path / "snapshots" / "epoch-00004.pt")
    assert payload["epoch"] == 4 and payload["ema"] is True and not generator.training


def test_continued_run_keeps_its_snapshots_and_a_fresh_run_drops_them(tiny_manifest, tmp_path):
    train(tiny(epochs=4, snapshot_every=2), tiny_manifest, tmp_path)
    first = (tmp_path / "snapshots" / "epoch-00002.pt").read_bytes()
    (tmp_path / "snapshots" / "epoch-00009.pt").write_bytes(b"from a run killed after its checkpoint")
    train(tiny(epochs=6, snapshot_every=2), tiny_manifest, tmp_path)  # continues from epoch 4
    assert snapshot_epochs(tmp_path) == [2, 4, 6]
    assert (tmp_path / "snapshots" / "epoch-00002.pt").read_bytes() == first
    train(tiny(epochs=3, snapshot_every=2, ngf=16), tiny_manifest, tmp_path)  # another network
    assert snapshot_epochs(tmp_path) == [2, 3]
    assert (tmp_path / "snapshots" / "epoch-00002.pt").read_bytes() != first


def test_a_run_continues_beside_files_that_are_not_its_own(tiny_manifest, tmp_path):
    """A copy of a sample grid made by hand, a folder, notes: a continued run leaves them alone and
    still drops the grids a killed run wrote after its checkpoint."""
    train(tiny(epochs=2), tiny_manifest, tmp_path)
    samples = tmp_path / "dvclive" / "plots" / "images" / "samples"
    foreign = [samples / "0002 (copy).png", samples / "best.png", samples / "notes.txt"]
    for path in foreign:
        path.write_bytes(b"kept by hand")
    (samples / "0009.png").mkdir()  # a folder with a grid's name
    (samples / "0003.png").write_bytes((samples / "0002.png").read_bytes())  # after the checkpoint
    train(tiny(epochs=4), tiny_manifest, tmp_path)
    assert all(path.read_bytes() == b"kept by hand" for path in foreign)
    assert sorted(path.name for path in samples.iterdir()) == [
        "0001.png", "0002 (copy).png", "0002.png", "0003.png", "0004.png", "0009.png", "best.png",
        "notes.txt"]
    assert (samples / "0003.png").read_bytes() != (samples / "0002.png").read_bytes()  # drawn again


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


class FirstOrderOnly(torch.autograd.Function):
    """Passes its input on, with a backward that cannot itself be differentiated: the limit of a
    compiled network's backward (aot_autograd)."""

    @staticmethod
    def forward(ctx, images):
        return images.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return grad


class FirstOrderView(torch.nn.Module):
    """A view of D that, like its compiled view, gives gradients but no gradients of gradients."""

    def __init__(self, discriminator):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, images, *labels):
        return self.discriminator(FirstOrderOnly.apply(images), *labels)


@pytest.mark.parametrize("conditions", [{}, None])
def test_the_gradient_penalty_goes_through_the_eager_discriminator(conditions):
    """train.compile runs D compiled, and wgan-gp's penalty is a gradient of a gradient, which a
    compiled D cannot give (compiling takes minutes on the CPU, so a D view with the same limit
    stands in for it; the slow test below compiles): the step penalises through the eager D and
    computes what the eager step does."""
    params = tiny(loss="wgan-gp", flip=False, **({} if conditions is None else {"conditions": conditions}))
    batch = torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8)
    results = []
    for view in (None, FirstOrderView):
        torch.manual_seed(0)
        run = new_run(params, torch.device("cpu"))
        step = build_step(run, params, torch.device("cpu"))
        if view is not None:
            step.discriminator = view(run.discriminator)
        results.append(step(batch, None))
    assert results[0].keys() == results[1].keys()
    assert all(torch.equal(results[0][name], results[1][name]) for name in results[0])


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "tolerance", "stats_atol"), [
    ({"conditions": {}}, 1e-3, 1e-6), ({}, 1e-2, 1e-6),
    ({"conditions": {}, "loss": "wgan-gp"}, 1e-2, 1e-4)], ids=["unconditional", "conditional", "wgan-gp"])
def test_compiled_step_matches_eager(overrides, tolerance, stats_atol):
    """train.compile changes speed, not results: from the same weights, batch and noise, the
    compiled step computes the same losses and gradients as the eager one, up to float rounding
    (which the fused kernels of conditional batch norm, in a batch of 8, round to within 1%). And
    wgan-gp runs compiled, its penalty through the eager D; its critic's loss is a difference of
    two near-equal means at the start, so rounding shows more there (0.1% of the last layer's
    gradient, 1e-5 in G's loss after the first Adam step, with no penalty at all too)."""
    params = tiny(compile="off", flip=False, **overrides)
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
    for name in STAT_NAMES:
        assert torch.allclose(eager_stats[name], compiled_stats[name], rtol=1e-4, atol=stats_atol), name
    for eager, compiled in zip(eager_grads, compiled_grads, strict=True):
        assert (eager - compiled).norm() <= tolerance * eager.norm() + 1e-8  # relative to the layer


def test_snapshots_do_not_change_the_training(tiny_manifest, tmp_path):
    """Snapshots recalibrate batch norm with their own noise: the training stream never notices."""
    train(tiny(epochs=3, snapshot_every=1), tiny_manifest, tmp_path / "every")
    train(tiny(epochs=3, snapshot_every=50), tiny_manifest, tmp_path / "last")
    for a, b in zip(weights(tmp_path / "every" / "checkpoint.pt")[:2],
                    weights(tmp_path / "last" / "checkpoint.pt")[:2], strict=True):
        assert same_weights(a, b)


@pytest.mark.parametrize("n_critic", [1, 2])
def test_a_step_reports_its_statistics_by_name(n_critic):
    """Each statistic a 0-d tensor under its name, left on the device to be summed; G's loss and
    update count only where G was updated."""
    params = tiny(n_critic=n_critic)
    torch.manual_seed(0)
    run = new_run(params, torch.device("cpu"))
    stats = build_step(run, params, torch.device("cpu"))(
        torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8), None)
    assert tuple(stats) == STAT_NAMES
    assert all(isinstance(value, torch.Tensor) and value.dim() == 0 for value in stats.values())
    updated = n_critic == 1
    assert stats["g_updates"].item() == float(updated) and (stats["loss_g"].item() != 0) == updated
    assert 0 < stats["d_real"].item() < 1 and 0 < stats["d_fake"].item() < 1
    assert stats["augment_p"].item() == run.augment_p.item()


def test_an_epoch_summary_averages_g_loss_over_g_updates_alone():
    totals = {"loss_d": torch.tensor(8.0), "loss_g": torch.tensor(3.0), "d_real": torch.tensor(2.0),
              "d_fake": torch.tensor(1.0), "g_updates": torch.tensor(2.0), "augment_p": torch.tensor(0.4)}
    assert epoch_summary(totals, steps=4) == pytest.approx(
        {"loss_d": 2.0, "loss_g": 1.5, "d_real": 0.5, "d_fake": 0.25, "augment_p": 0.1})


def test_the_uint8_scale_is_converted_in_one_place():
    """from_uint8 is to_uint8's inverse, and the only place the project writes the scale down."""
    faces = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    images = from_uint8(faces)
    assert images.min() == -1.0 and images.max() == 1.0 and torch.equal(to_uint8(images), faces)
    package = Path(__file__).resolve().parents[1] / "pipeline"
    writers = sorted(path.relative_to(package).as_posix() for path in package.rglob("*.py")
                     if "127.5" in path.read_text() and path.name != "sampling.py")
    assert writers == []


def test_the_arch_choices_are_defined_once():
    assert networks.ARCHS is params_module.ARCHS


def test_mode_seeking_punishes_one_face_per_label_and_ignores_speckle():
    """MSGAN's term is large for pairs that are one face, small for different faces, and speckle
    added to one face does not pass for a different one (the pairs are compared as thumbnails)."""
    torch.manual_seed(0)
    z = torch.randn(8, 100)
    face = torch.rand(1, 3, 48, 48) * 2 - 1
    one_face = face.repeat(8, 1, 1, 1)
    speckled = (one_face + 0.5 * torch.randn(8, 3, 48, 48)).clamp(-1, 1)
    varied = torch.full((8, 3, 48, 48), -0.5)
    varied[4:] = 0.5  # each pair two flat faces of other colours
    assert 3 * mode_seeking_loss(varied, z) < mode_seeking_loss(speckled, z) < mode_seeking_loss(one_face, z)


def test_mode_seeking_pairs_fakes_asked_for_the_same_labels():
    labels = torch.arange(7).view(7, 1)
    assert paired_labels(labels).view(-1).tolist() == [0, 1, 2, 3, 0, 1, 2]


@pytest.mark.parametrize("conditions", [{}, {"hair": ("black_hair", "blonde_hair")}])
def test_the_mode_seeking_term_drives_the_generator_apart(conditions):
    """A few steps with the term: the generator's faces for one label move apart, and the steps stay
    finite with an odd batch."""
    params = tiny(mode_seeking=5.0, conditions=conditions, lr=0.002)
    torch.manual_seed(0)
    run = new_run(params, torch.device("cpu"))
    step = build_step(run, params, torch.device("cpu"))
    z = torch.randn(16, params.nz)
    labels = torch.zeros(16, len(conditions), dtype=torch.long)

    def spread() -> float:
        run.generator.eval()
        with torch.no_grad():
            faces = run.generator(z, labels) if conditions else run.generator(z)
        run.generator.train()
        return float(torch.nn.functional.avg_pool2d(faces, 4).std(0).mean())

    before = spread()
    for batch in (16, 16, 15, 16, 16):
        stats = step(torch.randint(0, 256, (batch, 3, 48, 48), dtype=torch.uint8),
                     labels[:batch] if conditions else None)
        assert all(bool(torch.isfinite(value)) for value in stats.values())
    assert spread() > before


def test_each_pair_pays_for_itself_so_far_pairs_cannot_hide_a_collapsed_one():
    """Half the pairs one face and half far apart pay more than every pair moderately apart at the
    same mean distance: a label drawn as one face shows even beside varied "any" pairs."""
    z = torch.ones(8, 4)
    z[4:] = -1  # every pair's noise equally far apart
    base = torch.zeros(8, 3, 48, 48)
    even = base.clone()
    even[4:] = 0.5  # every pair 0.5 apart
    mixed = base.clone()
    mixed[6:] = 1.0  # pairs 2 and 3 one apart, pairs 0 and 1 one face
    assert mode_seeking_loss(mixed, z) > 2 * mode_seeking_loss(even, z)
