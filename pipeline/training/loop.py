"""train(): epochs of steps over the resident train faces, logged with DVCLive, checkpointed, with
EMA generator snapshots that the evaluate stage scores (training itself never scores)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from dvclive import Live
from tqdm import tqdm

from pipeline.core.params import PipelineError, TrainParams
from pipeline.data.faces import condition_labels, free_device_memory, load_faces, place_faces
from pipeline.data.formats import split_rows
from pipeline.models.ema import recalibrate_batchnorm
from pipeline.models.networks import RAW_STATE, SNAPSHOT_NAME, NetConfig, save_generator
from pipeline.models.sampling import sample_grid
from pipeline.training.distributed import NoLive, setup_distributed
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
from pipeline.training.step import build_step, use_compile

log = logging.getLogger("pipeline.train")

SAMPLE_GRID = 64


def train(params: TrainParams, manifest: Path, output: Path) -> dict[str, float]:
    """Train to params.epochs, continuing output/checkpoint.pt where its params allow."""
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads or os.cpu_count() or 1)
    rank, world, device = setup_distributed(params.device)
    params = labelled_groups_only(params, manifest)
    config = net_config(params)

    faces = place_faces(load_faces(manifest, "train", params.image_size)[rank::world], device,
                        free_device_memory(device))
    n_faces = len(faces)
    labels = None
    if params.objective == "sgan":
        labels = labelled_subset(split_rows(manifest, "train"), params.sgan_classes,
                                 params.labelled_fraction)[rank::world].to(faces.images.device)
    elif params.conditions:
        labels = condition_labels(split_rows(manifest, "train"),
                                  params.conditions)[rank::world].to(faces.images.device)
        log_labelled(labels, config)
    batch_size = max(1, min(params.batch_size // world, n_faces))  # train.batch_size is global
    steps_per_epoch = max(1, n_faces // batch_size)

    run = new_run(params, device)
    checkpoint_path = output / "checkpoint.pt"
    resumed = try_resume(checkpoint_path, run, params)
    snapshots = output / "snapshots"
    if rank == 0:
        prune_snapshots(snapshots, run.epoch)
    if world > 1:
        torch.manual_seed(params.seed + 1000 * rank + run.epoch)  # each rank its own noise and flips
    step = build_step(run, params, device, world)
    bf16 = step.bf16
    if params.augment != "off" and "color" in params.augment_policy and "color" not in step.policy:
        log.info("augmentation without color: the class terms of a conditional D judge colour tags")
    log.info("%d train faces at %d px on %s (%s%s), %d steps per epoch, epochs %d..%d%s", n_faces,
             params.image_size, device, "bf16 autocast" if bf16 else "fp32",
             ", compiled" if use_compile(params.compile, device) else "", steps_per_epoch,
             run.epoch + 1, params.epochs, f", rank {rank} of {world}" if world > 1 else "")
    fixed_z = torch.randn(SAMPLE_GRID, params.nz, device=device,
                          generator=torch.Generator(device=device).manual_seed(params.seed))

    live_dir = output / "dvclive"
    live: Live | NoLive = NoLive()
    if rank == 0:
        if resumed:
            truncate_live_logs(live_dir, run.epoch)
        live = Live(str(live_dir), resume=resumed, dvcyaml=False, save_dvc_exp=False)
        live.step = run.epoch
    live.log_metric("train_faces", n_faces * world, plot=False)
    generator_ema = run.generator_ema
    condition_rows = labels if params.objective == "gan" else None  # what BN recalibration asks for
    started, first_step = time.perf_counter(), run.step
    summary: dict[str, float] = {}
    for epoch in tqdm(range(run.epoch + 1, params.epochs + 1), desc="train", unit="epoch",
                      initial=run.epoch, total=params.epochs, disable=rank != 0):
        totals = torch.zeros(6, device=device)  # summed on the device, synced once per epoch
        order = faces.permutation()
        for i in range(steps_per_epoch):
            index = order[i * batch_size:(i + 1) * batch_size]
            batch_labels = None if labels is None else labels[index].to(device, non_blocking=True)
            totals += step(faces.batch(index), batch_labels)
        if world > 1:
            dist.all_reduce(totals)
            totals[:4] /= world
            totals[5] /= world
        loss_d_sum, loss_g_sum, d_real, d_fake, g_updates, augment_p = totals.tolist()
        g_updates /= world
        summary = {"loss_d": loss_d_sum / steps_per_epoch, "loss_g": loss_g_sum / max(g_updates, 1),
                   "d_real": d_real / steps_per_epoch, "d_fake": d_fake / steps_per_epoch,
                   "augment_p": augment_p / steps_per_epoch}
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
            recalibrate_batchnorm(generator_ema, params.nz, device, seed=params.seed, batches=2,
                                  labels=condition_rows)
            live.log_image(f"samples/{epoch:04d}.png", sample_grid(generator_ema, fixed_z, 8).numpy())
        if rank == 0 and (epoch % params.snapshot_every == 0 or epoch == params.epochs):
            save_snapshot(snapshots, run, params, config, device, condition_rows)
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
