"""train(): epochs of steps over the resident train faces, logged with DVCLive, checkpointed, with
EMA generator snapshots that the evaluate stage scores (training itself never scores)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from dvclive import Live
from tqdm import tqdm

from pipeline.core.params import PipelineError, TrainParams
from pipeline.data.faces import Faces, condition_labels, free_device_memory, load_faces, place_faces
from pipeline.data.formats import split_rows
from pipeline.models.ema import recalibrate_batchnorm
from pipeline.models.networks import RAW_STATE, SNAPSHOT_NAME, NetConfig, save_generator
from pipeline.models.sampling import sample_grid
from pipeline.training.distributed import NoLive, mean_over_ranks, setup_distributed
from pipeline.training.run import (
    Run,
    net_config,
    new_run,
    prune_snapshots,
    save_checkpoint,
    truncate_live_logs,
    try_resume,
)
from pipeline.training.sgan import labelled_subset, sgan_accuracies
from pipeline.training.step import STAT_NAMES, Step, StepStats, add_stats, build_step, use_compile, zero_stats

log = logging.getLogger("pipeline.train")

SAMPLE_GRID = 64


@dataclass(frozen=True)
class Shard:
    """This rank's share of the train faces, their labels (None when the objective needs none)
    and how the epoch cuts them into batches."""

    faces: Faces
    labels: torch.Tensor | None
    batch_size: int
    steps_per_epoch: int


def train(params: TrainParams, manifest: Path, output: Path) -> dict[str, float]:
    """Train to params.epochs, continuing output/checkpoint.pt where its params allow."""
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads or os.cpu_count() or 1)
    rank, world, device = setup_distributed(params.device)
    params = labelled_groups_only(params, manifest)
    config = net_config(params)
    shard = load_shard(params, manifest, config, rank, world, device)
    run = new_run(params, device)
    checkpoint_path = output / "checkpoint.pt"
    resumed = try_resume(checkpoint_path, run, params)
    if rank == 0:
        prune_snapshots(output / "snapshots", run.epoch)
    if world > 1:
        torch.manual_seed(params.seed + 1000 * rank + run.epoch)  # each rank its own noise and flips
    step = build_step(run, params, device, world)
    log_start(step, shard, rank, world)
    fixed_z = torch.randn(SAMPLE_GRID, params.nz, device=device,
                          generator=torch.Generator(device=device).manual_seed(params.seed))
    live = open_live(output / "dvclive", rank, resumed, run.epoch)
    live.log_metric("train_faces", len(shard.faces) * world, plot=False)
    condition_rows = shard.labels if params.objective == "gan" else None  # what BN recalibration asks for
    started, first_step = time.perf_counter(), run.step
    summary: dict[str, float] = {}
    for epoch in tqdm(range(run.epoch + 1, params.epochs + 1), desc="train", unit="epoch",
                      initial=run.epoch, total=params.epochs, disable=rank != 0):
        summary = epoch_summary(mean_over_ranks(run_epoch(step, shard)), shard.steps_per_epoch)
        stop_unless_finite(summary, epoch, checkpoint_path, run.epoch)
        run.epoch = epoch
        log_epoch(live, summary, run.step * shard.batch_size * world)
        if rank == 0:
            write_epoch_outputs(output, run, params, config, device, condition_rows, fixed_z, live)
        live.next_step()

    elapsed = time.perf_counter() - started
    summary["images_per_second"] = (run.step - first_step) * shard.batch_size * world / max(elapsed, 1e-9)
    live.log_metric("images_per_second", summary["images_per_second"], plot=False)
    if rank == 0:
        finish(run, params, config, manifest, output, device, step.bf16, summary, live)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def load_shard(params: TrainParams, manifest: Path, config: NetConfig, rank: int, world: int,
               device: torch.device) -> Shard:
    """Every world-th train face from the rank-th, on the device where they fit, with the labels
    the objective trains on; train.batch_size is the global batch, split over the ranks."""
    faces = place_faces(load_faces(manifest, "train", params.image_size)[rank::world], device,
                        free_device_memory(device))
    labels = None
    if params.objective == "sgan":
        labels = labelled_subset(split_rows(manifest, "train"), params.sgan_classes,
                                 params.labelled_fraction)[rank::world].to(faces.images.device)
    elif params.conditions:
        labels = condition_labels(split_rows(manifest, "train"),
                                  params.conditions)[rank::world].to(faces.images.device)
        log_labelled(labels, config)
    batch_size = max(1, min(params.batch_size // world, len(faces)))
    return Shard(faces, labels, batch_size, max(1, len(faces) // batch_size))


def log_start(step: Step, shard: Shard, rank: int, world: int) -> None:
    """What the run trains on and how, in one line (and why colour augmentation is off, where it is)."""
    params, run, device = step.params, step.run, step.device
    if params.augment != "off" and "color" in params.augment_policy and "color" not in step.policy:
        log.info("augmentation without color: the class terms of a conditional D judge colour tags")
    log.info("%d train faces at %d px on %s (%s%s), %d steps per epoch, epochs %d..%d%s", len(shard.faces),
             params.image_size, device, "bf16 autocast" if step.bf16 else "fp32",
             ", compiled" if use_compile(params.compile, device) else "", shard.steps_per_epoch,
             run.epoch + 1, params.epochs, f", rank {rank} of {world}" if world > 1 else "")


def open_live(folder: Path, rank: int, resumed: bool, epoch: int) -> Live | NoLive:
    """Rank 0's DVCLive log, continued at `epoch` (its later records dropped) when the run resumed;
    the other ranks log nowhere."""
    if rank != 0:
        return NoLive()
    if resumed:
        truncate_live_logs(folder, epoch)
    live = Live(str(folder), resume=resumed, dvcyaml=False, save_dvc_exp=False)
    live.step = epoch
    return live


def run_epoch(step: Step, shard: Shard) -> StepStats:
    """One pass over the shard in a fresh random order; the steps' statistics summed on the device."""
    totals = zero_stats(step.device)
    order = shard.faces.permutation()
    for i in range(shard.steps_per_epoch):
        index = order[i * shard.batch_size:(i + 1) * shard.batch_size]
        labels = None if shard.labels is None else shard.labels[index].to(step.device, non_blocking=True)
        add_stats(totals, step(shard.faces.batch(index), labels))
    return totals


def epoch_summary(totals: StepStats, steps: int) -> dict[str, float]:
    """The epoch's means, read from the device in one copy: G's loss per G update, the rest per step."""
    values = dict(zip(STAT_NAMES, torch.stack([totals[name] for name in STAT_NAMES]).tolist(), strict=True))
    return {"loss_d": values["loss_d"] / steps, "loss_g": values["loss_g"] / max(values["g_updates"], 1),
            "d_real": values["d_real"] / steps, "d_fake": values["d_fake"] / steps,
            "augment_p": values["augment_p"] / steps}


def stop_unless_finite(summary: dict[str, float], epoch: int, checkpoint_path: Path, last_good: int) -> None:
    """A diverged run stops with the way out, before its numbers reach a log or a checkpoint."""
    if not all(math.isfinite(v) for v in summary.values()):
        raise PipelineError(
            f"train: the losses became {summary['loss_d']}/{summary['loss_g']} in epoch {epoch}; "
            f"stopped, keeping the last good checkpoint {checkpoint_path} (epoch {last_good}). "
            "Lower train.lr or try train.loss: hinge")


def log_epoch(live: Live | NoLive, summary: dict[str, float], images_seen: int) -> None:
    for name, value in summary.items():
        live.log_metric(f"train/{name}", value)
    live.log_metric("images_seen", images_seen, plot=False)


def write_epoch_outputs(output: Path, run: Run, params: TrainParams, config: NetConfig, device: torch.device,
                        condition_rows: torch.Tensor | None, fixed_z: torch.Tensor, live: Live) -> None:
    """Rank 0's files of the epoch just ended, each at its interval and at the last epoch: the EMA
    generator's sample grid, its snapshot, and the checkpoint (the last is written by finish)."""
    epoch = run.epoch
    if epoch % params.sample_every == 0 or epoch == params.epochs:
        recalibrate_batchnorm(run.generator_ema, params.nz, device, seed=params.seed, batches=2,
                              labels=condition_rows)
        live.log_image(f"samples/{epoch:04d}.png", sample_grid(run.generator_ema, fixed_z, 8).numpy())
    if epoch % params.snapshot_every == 0 or epoch == params.epochs:
        save_snapshot(output / "snapshots", run, params, config, device, condition_rows)
    if epoch % params.checkpoint_every == 0 and epoch < params.epochs:
        save_checkpoint(output / "checkpoint.pt", run, params, config)


def finish(run: Run, params: TrainParams, config: NetConfig, manifest: Path, output: Path,
           device: torch.device, bf16: bool, summary: dict[str, float], live: Live) -> None:
    """Rank 0's last words: SGAN accuracies and the final checkpoint (the last snapshot is written)."""
    if params.objective == "sgan":
        summary.update(sgan_accuracies(params, manifest, run, device, bf16))
        for name in ("sgan_val_accuracy", "supervised_val_accuracy"):
            live.log_metric(f"sgan/{name}", summary[name], plot=False)
    save_checkpoint(output / "checkpoint.pt", run, params, config)
    live.end()
    log.info("epoch %d reached (%d steps), %.0f images/s", run.epoch, run.step,
             summary["images_per_second"])


def labelled_groups_only(params: TrainParams, manifest: Path) -> TrainParams:
    """params without the tag groups that no train face is labelled in (own folders without tags):
    such a group teaches G nothing, and a G conditioned on "any" alone trains worse than an
    unconditional one. Said in the log, and the generator file's config shows it."""
    if params.objective != "gan" or not params.conditions:
        return params
    labels = condition_labels(split_rows(manifest, "train"), params.conditions)
    kept = {group: tags for g, (group, tags) in enumerate(params.conditions.items())
            if bool((labels[:, g] < len(tags)).any())}
    for group in params.conditions.keys() - kept.keys():
        log.warning("train.conditions.%s: no train face is labelled in this group; training without it",
                    group)
    return replace(params, conditions=kept)


def log_labelled(labels: torch.Tensor, config: NetConfig) -> None:
    """How many train faces carry each group's labels: a group with few says so before training."""
    for g, (group, tags) in enumerate(config.conditions):
        known = int((labels[:, g] < len(tags)).sum())
        log.info("%s: %d of %d train faces labelled (%s)", group, known, labels.shape[0],
                 ", ".join(f"{tag} {int((labels[:, g] == i).sum())}" for i, tag in enumerate(tags)))


def save_snapshot(folder: Path, run: Run, params: TrainParams, config: NetConfig,
                  device: torch.device, labels: torch.Tensor | None) -> None:
    """The EMA generator of this epoch, with batch-norm statistics recomputed for its weights (asked
    for the train faces' `labels`), and beside it the raw generator, which evaluate scores too."""
    recalibrate_batchnorm(run.generator_ema, params.nz, device, seed=params.seed,  # own noise stream
                          labels=labels)
    raw = {key: value.detach().cpu() for key, value in run.generator.state_dict().items()}
    save_generator(folder / SNAPSHOT_NAME.format(epoch=run.epoch), run.generator_ema, config,
                   ema=params.ema_kimg > 0, epoch=run.epoch, extra={RAW_STATE: raw})
