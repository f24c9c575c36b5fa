"""train(): epochs of steps over the resident train faces, logged with DVCLive, checkpointed, and
(with an Evaluator) scored to keep models/best.pt."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from dvclive import Live
from tqdm import tqdm

from pipeline.core.params import PipelineError, TrainParams
from pipeline.data.faces import free_device_memory, load_faces, place_faces
from pipeline.data.formats import split_rows
from pipeline.models.ema import recalibrate_batchnorm
from pipeline.models.networks import NetConfig, save_generator
from pipeline.models.sampling import sample_grid
from pipeline.training.distributed import NoLive, setup_distributed
from pipeline.training.run import Run, net_config, new_run, save_checkpoint, truncate_live_logs, try_resume
from pipeline.training.sgan import labelled_subset, sgan_accuracies
from pipeline.training.step import build_step, use_compile

if TYPE_CHECKING:
    from pipeline.evaluation.scoring import Evaluator

log = logging.getLogger("pipeline.train")

SAMPLE_GRID = 64



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



def train(params: TrainParams, manifest: Path, output: Path,
          evaluator: Evaluator | None = None) -> dict[str, float]:
    """Train to params.epochs; with an evaluator and train.eval_every, keep models/best.pt."""
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads or os.cpu_count() or 1)
    rank, world, device = setup_distributed(params.device)
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

    run = new_run(params, device)
    checkpoint_path = output / "checkpoint.pt"
    resumed = try_resume(checkpoint_path, run, params)
    if world > 1:
        torch.manual_seed(params.seed + 1000 * rank + run.epoch)  # each rank its own noise and flips
    step = build_step(run, params, device, world)
    bf16 = step.bf16
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

