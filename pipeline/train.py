"""Stage train: a GAN (DCGAN by default) on the manifest's train faces, logged with DVCLive.

python -m pipeline.train [--input data/manifest.csv] [--output models]

A run continues from models/checkpoint.pt when that checkpoint was made with the same params
(only the number of epochs, the device and the logging cadence may differ), so a killed run, or
`dvc exp run -S train.epochs=300` after a 100-epoch run, picks up where the last one stopped.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import make_grid
from tqdm import tqdm

from pipeline.cli import run_stage, stage_parser
from pipeline.dataset import class_labels, load_faces, split_rows
from pipeline.devices import resolve_device
from pipeline.files import atomic_path
from pipeline.losses import LOSSES, gradient_penalty, sgan_class_loss, sgan_real_fake_logit
from pipeline.models import Discriminator, Generator, NetConfig, save_generator
from pipeline.params import PipelineError, TrainParams, read_section

if TYPE_CHECKING:
    from pipeline.evaluate import Evaluator

log = logging.getLogger("pipeline.train")

CHECKPOINT_FORMAT = "anime-face-dcgan/checkpoint/2"
SAMPLE_GRID = 64
EVAL_SAMPLES_DURING_TRAINING = 200  # enough to rank checkpoints, cheap enough to repeat
# Params that may change between a checkpoint and the run that continues it.
RESUMABLE_CHANGES = {"epochs", "device", "precision", "compile", "threads", "sample_every",
                     "checkpoint_every", "eval_every"}


def cpu_has_fast_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware runs it natively (about 2x on AVX512-BF16 CPUs)."""
    if precision == "fp32":
        return False
    supported = {
        "cuda": lambda: torch.cuda.is_bf16_supported(),
        "cpu": cpu_has_fast_bf16,
    }.get(device.type, lambda: False)()
    if precision == "bf16" and not supported:
        raise PipelineError(f"train.precision: bf16 is not supported on this {device.type} device")
    return supported


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    if not bf16:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def net_config(params: TrainParams) -> NetConfig:
    return NetConfig(
        image_size=params.image_size, nz=params.nz, ngf=params.ngf, ndf=params.ndf, arch=params.arch,
        # batch norm couples the samples of a batch: wrong under a per-sample gradient penalty,
        # and redundant with spectral normalisation
        d_norm=not (params.spectral_norm or params.loss == "wgan-gp"),
        spectral_norm=params.spectral_norm,
        num_classes=len(params.sgan_classes) if params.objective == "sgan" else 0,
    )


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    # one fused call over all tensors instead of a kernel launch per parameter
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


@torch.no_grad()
def recalibrate_batchnorm(generator: nn.Module, nz: int, device: torch.device, seed: int,
                          batches: int = 8, batch_size: int = 128) -> None:
    """Recompute BN running statistics for these weights: EMA weights never produced the ones G
    tracked during training, and eval-mode samples use them."""
    noise = torch.Generator(device=device).manual_seed(seed)
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    generator.train()
    for _ in range(batches):
        generator(torch.randn(batch_size, nz, device=device, generator=noise))
    for norm in norms:
        norm.momentum = 0.1
    generator.eval()


@torch.no_grad()
def sample_grid(generator: nn.Module, z: torch.Tensor, nrow: int) -> torch.Tensor:
    """uint8 (H, W, 3) grid of G(z), for DVCLive and PNGs."""
    images = generator(z).float().clamp(-1, 1)
    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu()


def to_model_input(batch: torch.Tensor, flip: bool, channels_last: bool) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], with random horizontal flips (faces are near symmetric)."""
    images = batch.float().div_(127.5).sub_(1.0)
    if flip:
        mirrored = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
        images = torch.where(mirrored, images.flip(3), images)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


DEVICE_MEMORY_FOR_FACES = 0.5  # share of the free accelerator memory the resident faces may take


@dataclass
class Faces:
    """The train faces as uint8, resident on the training device when they fit there, else in
    (pinned) host memory from which each batch is gathered and copied asynchronously."""

    images: torch.Tensor
    device: torch.device

    @property
    def resident(self) -> bool:
        return self.images.device == self.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def permutation(self) -> torch.Tensor:
        """A random order, made where the images are, so indexing never waits on a copy."""
        return torch.randperm(len(self), device=self.images.device)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        batch = self.images[index]
        if self.resident:
            return batch
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # the caching host allocator keeps it alive until copied
        return batch.to(self.device, non_blocking=True)


def free_device_memory(device: torch.device) -> int | None:
    """Bytes free on an accelerator; None where memory is the host's (CPU) or unknown (MPS)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None


def place_faces(images: torch.Tensor, device: torch.device, free_bytes: int | None) -> Faces:
    """Put the faces on the device unless they would crowd out training there."""
    if free_bytes is None or images.nbytes <= DEVICE_MEMORY_FOR_FACES * free_bytes:
        return Faces(images.to(device), device)
    log.warning("%d faces take %.2f GiB, more than %.0f%% of the %.2f GiB free on %s: keeping them in "
                "pinned host memory and copying each batch asynchronously (slower)", images.shape[0],
                images.nbytes / 2**30, 100 * DEVICE_MEMORY_FOR_FACES, free_bytes / 2**30, device)
    if device.type == "cuda":
        images = images.pin_memory()
    return Faces(images, device)


@dataclass
class Run:
    """What the training loop changes, and so what a checkpoint must hold."""

    generator: Generator
    discriminator: Discriminator
    generator_ema: Generator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    epoch: int = 0
    step: int = 0
    # {"epoch", "metric", "value", "generator_ema"} of models/best.pt: kept in the checkpoint because
    # DVC deletes best.pt before a continued run, which must still be able to write it
    best: dict[str, Any] | None = None

    def state(self, params: TrainParams, config: NetConfig) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "config": asdict(config), "params": asdict(params),
            "epoch": self.epoch, "step": self.step, "best": self.best,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.epoch, self.step, self.best = state["epoch"], state["step"], state["best"]
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])


def new_run(params: TrainParams, config: NetConfig, device: torch.device,
            memory_format: torch.memory_format) -> Run:
    generator = Generator(config).to(device, memory_format=memory_format)
    discriminator = Discriminator(config).to(device, memory_format=memory_format)
    # fused: one kernel for the whole update instead of several per parameter
    adam = {"lr": params.lr, "betas": (params.beta1, 0.999), "fused": device.type in ("cuda", "cpu")}
    return Run(generator, discriminator, copy.deepcopy(generator).requires_grad_(False),
               torch.optim.Adam(generator.parameters(), **adam),
               torch.optim.Adam(discriminator.parameters(), **adam))


def resume_blocker(state: dict[str, Any], params: TrainParams) -> str | None:
    """Why this checkpoint cannot be continued with these params, or None if it can."""
    if state.get("format") != CHECKPOINT_FORMAT:
        return "it was written by another version of this project"
    saved = state["params"]
    for name, value in asdict(params).items():
        old = saved.get(name)
        old = tuple(old) if isinstance(old, list) else old
        if name not in RESUMABLE_CHANGES and old != value:
            return f"train.{name} changed ({old!r} -> {value!r})"
    if state["epoch"] >= params.epochs:
        return f"it already has {state['epoch']} epochs and train.epochs is {params.epochs}"
    return None


def try_resume(path: Path, run: Run, params: TrainParams) -> bool:
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: start over, never crash on it
        log.warning("starting fresh: %s is unreadable (%s)", path, exc.__class__.__name__)
        return False
    blocker = resume_blocker(state, params)
    if blocker:
        log.info("starting fresh, not continuing %s: %s", path, blocker)
        return False
    run.load(state)
    log.info("continuing from %s at epoch %d", path, run.epoch)
    return True


def save_checkpoint(path: Path, run: Run, params: TrainParams, config: NetConfig) -> None:
    with atomic_path(path) as tmp:
        torch.save(run.state(params, config), tmp)


def truncate_live_logs(live_dir: Path, epochs_kept: int) -> None:
    """Drop what a killed run logged after its last checkpoint, so the curves have no doubles."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with tsv.open(newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        step = rows[0].index("step")
        kept = [rows[0]] + [row for row in rows[1:] if int(row[step]) < epochs_kept]
        with atomic_path(tsv) as tmp, tmp.open("w", newline="") as handle:
            csv.writer(handle, delimiter="\t").writerows(kept)
    for grid in (live_dir / "plots" / "images" / "samples").glob("*.png"):
        if int(grid.stem) > epochs_kept:
            grid.unlink()


def checkpoint_score(scores: dict[str, Any]) -> tuple[str, float]:
    """(metric, value to minimise): FID where it can be measured, else the face rate."""
    if scores.get("fid") is not None:
        return "fid", float(scores["fid"])
    return "face_rate", -float(scores["face_rate"])


def keep_if_best(run: Run, evaluator: Evaluator, live: Live, output: Path, config: NetConfig,
                 params: TrainParams) -> None:
    scores = evaluator.score(run.generator_ema)
    for name in ("fid", "kid_mean", "face_rate"):
        if scores.get(name) is not None:
            live.log_metric(f"eval/{name}", float(scores[name]))
    metric, value = checkpoint_score(scores)
    # on a tie the later epoch wins: offline, early face rates are often all 0
    if run.best is None or run.best["metric"] != metric or value <= run.best["value"]:
        run.best = {"epoch": run.epoch, "metric": metric, "value": value,
                    "generator_ema": {k: v.detach().cpu().clone()
                                      for k, v in run.generator_ema.state_dict().items()}}
        save_best(output, run, config, params)
        log.info("epoch %d is the best so far by %s (%.4g): models/best.pt", run.epoch, metric,
                 abs(value))


def save_best(output: Path, run: Run, config: NetConfig, params: TrainParams) -> None:
    """models/best.pt from the best scored weights, or from the last epoch when none was scored."""
    ema = params.ema_decay > 0
    if run.best is None:
        save_generator(output / "best.pt", run.generator_ema, config, ema=ema, epoch=run.epoch,
                       extra={"selected_by": "last epoch (no epoch was scored)"})
        return
    best = copy.deepcopy(run.generator_ema)  # a copy, not a new network: no random initialisation
    best.load_state_dict(run.best["generator_ema"])
    save_generator(output / "best.pt", best, config, ema=ema, epoch=run.best["epoch"],
                   extra={"selected_by": run.best["metric"], "score": abs(run.best["value"])})


def labelled_subset(rows: list[dict[str, str]], classes: tuple[str, ...], fraction: float) -> torch.Tensor:
    """Class labels for the semi-supervised GAN, kept for a fixed share of faces (chosen by hash)."""
    labels = class_labels(rows, classes)
    keep = torch.tensor([int(row["sha256"][:8], 16) / 0x1_0000_0000 < fraction for row in rows])
    return torch.where(keep, labels, torch.full_like(labels, -1))


@torch.no_grad()
def class_accuracy(discriminator: nn.Module, faces: torch.Tensor, labels: torch.Tensor,
                   bf16: bool) -> float:
    """Share of faces whose most likely real class (the fake output aside) is their label."""
    discriminator.eval()
    correct = 0
    for start in range(0, faces.shape[0], 256):
        images = to_model_input(faces[start:start + 256], flip=False, channels_last=False)
        with autocast(faces.device, bf16):
            logits = discriminator(images)
        correct += int((logits[:, :-1].argmax(1) == labels[start:start + 256]).sum())
    discriminator.train()
    return correct / faces.shape[0]


def train_supervised_baseline(params: TrainParams, config: NetConfig, faces: torch.Tensor,
                              labels: torch.Tensor, steps: int, bf16: bool) -> Discriminator:
    """A classifier of D's shape trained on the labelled faces alone, for as many steps as D had:
    what the semi-supervised GAN's accuracy must beat for the unlabelled faces to have helped."""
    device = faces.device
    classifier = Discriminator(config).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=params.lr, betas=(params.beta1, 0.999))
    for _ in range(steps):
        index = torch.randint(0, faces.shape[0], (min(params.batch_size, faces.shape[0]),), device=device)
        with autocast(device, bf16):
            logits = classifier(to_model_input(faces[index], params.flip, channels_last=False))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return classifier


def sgan_accuracies(params: TrainParams, manifest: Path, run: Run, device: torch.device,
                    bf16: bool) -> dict[str, float]:
    val_labels = class_labels(split_rows(manifest, "val"), params.sgan_classes)
    train_labels = labelled_subset(split_rows(manifest, "train"), params.sgan_classes,
                                   params.labelled_fraction)
    if not bool((val_labels >= 0).any()) or not bool((train_labels >= 0).any()):
        raise PipelineError("train.sgan_classes: no labelled face in the train or val split has "
                            "exactly one of these tags")
    val_faces = load_faces(manifest, "val", params.image_size)[val_labels >= 0].to(device)
    val_labels = val_labels[val_labels >= 0].to(device)
    train_faces = load_faces(manifest, "train", params.image_size)[train_labels >= 0].to(device)
    train_labels = train_labels[train_labels >= 0].to(device)
    baseline = train_supervised_baseline(params, net_config(params), train_faces, train_labels,
                                         run.step, bf16)
    return {"sgan_val_accuracy": class_accuracy(run.discriminator, val_faces, val_labels, bf16),
            "supervised_val_accuracy": class_accuracy(baseline, val_faces, val_labels, bf16),
            "labelled_train_faces": float(train_labels.shape[0])}


class _NoLive:
    """What ranks other than 0 log to: nothing (rank 0 alone logs and writes outputs)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun, one process per device joins the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name, "train.device")
    if world == 1:
        return 0, 1, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def use_compile(setting: str, device: torch.device) -> bool:
    """auto: on CUDA, where CUDA graphs remove the launch overhead of these small networks."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


@dataclass
class Step:
    """One D update and (every n_critic) one G update: the hot loop, free of host syncs."""

    run: Run
    params: TrainParams
    generator: nn.Module  # what the step calls: compiled and/or DDP-wrapped views of run's networks
    discriminator: nn.Module
    device: torch.device
    bf16: bool
    channels_last: bool

    def __call__(self, batch: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Returns (loss_d, loss_g, D(x), D(G(z)), G updated) as a device tensor, to be summed."""
        params, run = self.params, self.run
        d_loss_fn, g_loss_fn = LOSSES[params.loss]
        score = sgan_real_fake_logit if labels is not None else (lambda out: out)
        real = to_model_input(batch, params.flip, self.channels_last)
        z = torch.randn(real.shape[0], params.nz, device=self.device)
        with autocast(self.device, self.bf16):
            fake = self.generator(z)
            real_out = self.discriminator(real)
            fake_out = self.discriminator(fake.detach())
            loss_d = d_loss_fn(score(real_out), score(fake_out), params.label_smoothing)
            if labels is not None:
                loss_d = loss_d + sgan_class_loss(real_out, labels)
        if params.loss == "wgan-gp":
            loss_d = loss_d + params.gp_weight * gradient_penalty(self.discriminator, real, fake)
        run.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        run.opt_d.step()
        run.step += 1
        stats = torch.stack([loss_d.detach(), torch.zeros((), device=self.device),
                             torch.sigmoid(score(real_out).detach().float()).mean(),
                             torch.sigmoid(score(fake_out).detach().float()).mean(),
                             torch.zeros((), device=self.device)])
        if run.step % params.n_critic:
            return stats
        with autocast(self.device, self.bf16):
            loss_g = g_loss_fn(score(self.discriminator(fake)))
        run.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        run.opt_g.step()
        # EMA warm-up: early on, the average would be dominated by the random initialisation.
        g_steps = run.step // params.n_critic
        ema_update(run.generator_ema, run.generator, min(params.ema_decay, (1 + g_steps) / (10 + g_steps)))
        stats[1], stats[4] = loss_g.detach(), 1.0
        return stats


def prepare_step(run: Run, params: TrainParams, device: torch.device, bf16: bool,
                 channels_last: bool, world: int) -> Step:
    generator, discriminator = run.generator, run.discriminator
    if world > 1:
        if device.type == "cuda":  # batch statistics over the global batch, not each rank's slice
            generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
            discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
        ids = [device.index] if device.type == "cuda" else None
        generator = DistributedDataParallel(generator, device_ids=ids)
        discriminator = DistributedDataParallel(discriminator, device_ids=ids)
    if use_compile(params.compile, device):
        mode = "reduce-overhead" if device.type == "cuda" else "default"  # CUDA graphs on CUDA
        generator, discriminator = (torch.compile(generator, mode=mode),
                                    torch.compile(discriminator, mode=mode))
    return Step(run, params, generator, discriminator, device, bf16, channels_last)


def train(params: TrainParams, manifest: Path, output: Path,
          evaluator: Evaluator | None = None) -> dict[str, float]:
    """Train to params.epochs; with an evaluator and train.eval_every, keep models/best.pt."""
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads or os.cpu_count() or 1)
    rank, world, device = setup_distributed(params.device)
    bf16 = resolve_bf16(params.precision, device)
    channels_last = device.type != "mps" and params.arch == "dcgan"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    config = net_config(params)

    faces = place_faces(load_faces(manifest, "train", params.image_size)[rank::world], device,
                        free_device_memory(device))
    n_faces = len(faces)
    labels = None
    if params.objective == "sgan":
        labels = labelled_subset(split_rows(manifest, "train"), params.sgan_classes,
                                 params.labelled_fraction)[rank::world].to(faces.images.device)
    batch_size = max(1, min(params.batch_size // world, n_faces))  # train.batch_size is global
    steps_per_epoch = max(1, n_faces // batch_size)

    run = new_run(params, config, device, memory_format)
    checkpoint_path = output / "checkpoint.pt"
    resumed = try_resume(checkpoint_path, run, params)
    if world > 1:
        torch.manual_seed(params.seed + 1000 * rank + run.epoch)  # each rank its own noise and flips
    step = prepare_step(run, params, device, bf16, channels_last, world)
    log.info("%d train faces at %d px on %s (%s%s), %d steps per epoch, epochs %d..%d%s", n_faces,
             params.image_size, device, "bf16 autocast" if bf16 else "fp32",
             ", compiled" if use_compile(params.compile, device) else "", steps_per_epoch,
             run.epoch + 1, params.epochs, f", rank {rank} of {world}" if world > 1 else "")
    fixed_z = torch.randn(SAMPLE_GRID, params.nz, device=device,
                          generator=torch.Generator(device=device).manual_seed(params.seed))

    live_dir = output / "dvclive"
    live: Live | _NoLive = _NoLive()
    if rank == 0:
        if resumed:
            truncate_live_logs(live_dir, run.epoch)
        live = Live(str(live_dir), resume=resumed, dvcyaml=False, save_dvc_exp=False)
        live.step = run.epoch
    live.log_metric("train_faces", n_faces * world, plot=False)
    generator_ema = run.generator_ema
    started, first_step = time.perf_counter(), run.step
    summary: dict[str, float] = {}
    for epoch in tqdm(range(run.epoch + 1, params.epochs + 1), desc="train", unit="epoch",
                      initial=run.epoch, total=params.epochs, disable=rank != 0):
        totals = torch.zeros(5, device=device)  # summed on the device, synced once per epoch
        order = faces.permutation()
        for i in range(steps_per_epoch):
            index = order[i * batch_size:(i + 1) * batch_size]
            batch_labels = None if labels is None else labels[index].to(device, non_blocking=True)
            totals += step(faces.batch(index), batch_labels)
        if world > 1:
            dist.all_reduce(totals)
            totals[:4] /= world
        loss_d_sum, loss_g_sum, d_real, d_fake, g_updates = totals.tolist()
        g_updates /= world
        summary = {"loss_d": loss_d_sum / steps_per_epoch, "loss_g": loss_g_sum / max(g_updates, 1),
                   "d_real": d_real / steps_per_epoch, "d_fake": d_fake / steps_per_epoch}
        if not all(math.isfinite(v) for v in summary.values()):
            raise PipelineError(
                f"train: the losses became {summary['loss_d']}/{summary['loss_g']} in epoch {epoch}; "
                f"stopped, keeping the last good checkpoint {checkpoint_path} (epoch {run.epoch}). "
                "Lower train.lr or try train.loss: hinge")
        run.epoch = epoch
        for name, value in summary.items():
            live.log_metric(f"train/{name}", value)
        live.log_metric("images_seen", run.step * batch_size * world, plot=False)
        if rank == 0 and (epoch % params.sample_every == 0 or epoch == params.epochs):
            recalibrate_batchnorm(generator_ema, params.nz, device, seed=params.seed, batches=2)
            live.log_image(f"samples/{epoch:04d}.png", sample_grid(generator_ema, fixed_z, 8).numpy())
        if rank == 0 and evaluator is not None and params.eval_every and epoch % params.eval_every == 0:
            recalibrate_batchnorm(generator_ema, params.nz, device, seed=params.seed)
            # scoring draws noise and builds networks; the training stream must not notice
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                keep_if_best(run, evaluator, live, output, config, params)
        if rank == 0 and epoch % params.checkpoint_every == 0 and epoch < params.epochs:
            save_checkpoint(checkpoint_path, run, params, config)
        live.next_step()

    elapsed = time.perf_counter() - started
    summary["images_per_second"] = (run.step - first_step) * batch_size * world / max(elapsed, 1e-9)
    live.log_metric("images_per_second", summary["images_per_second"], plot=False)
    if rank == 0:
        finish(run, params, config, manifest, output, device, bf16, summary, live)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def finish(run: Run, params: TrainParams, config: NetConfig, manifest: Path, output: Path,
           device: torch.device, bf16: bool, summary: dict[str, float], live: Live) -> None:
    """Rank 0's last words: SGAN accuracies, generator.pt, best.pt, the final checkpoint."""
    if params.objective == "sgan":
        summary.update(sgan_accuracies(params, manifest, run, device, bf16))
        for name in ("sgan_val_accuracy", "supervised_val_accuracy"):
            live.log_metric(f"sgan/{name}", summary[name], plot=False)
    recalibrate_batchnorm(run.generator_ema, params.nz, device, seed=params.seed)
    save_generator(output / "generator.pt", run.generator_ema, config, ema=params.ema_decay > 0,
                   epoch=run.epoch)
    save_best(output, run, config, params)
    save_checkpoint(output / "checkpoint.pt", run, params, config)
    live.end()
    log.info("epoch %d reached (%d steps), %.0f images/s", run.epoch, run.step,
             summary["images_per_second"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("data/manifest.csv"),
                        help="face manifest (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("models"),
                        help="folder for generator.pt, checkpoint.pt and dvclive/ "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    params = read_section("train", args.params)
    evaluator = None
    if params.eval_every:
        from pipeline.evaluate import Evaluator  # imports Inception and the cascade: only when used

        evaluation = read_section("evaluate", args.params)
        evaluation = replace(
            evaluation, samples=min(evaluation.samples, EVAL_SAMPLES_DURING_TRAINING))
        device = resolve_device(params.device, "train.device")
        evaluator = Evaluator.prepare(load_faces(args.input, "val", params.image_size), evaluation,
                                      read_section("crop", args.params), device)
    train(params, args.input, args.output, evaluator)


if __name__ == "__main__":
    run_stage(main)
