"""What the training loop changes, and so what a checkpoint holds: networks, EMA, optimisers,
counters and RNG state in one dict, so a killed or extended run continues exactly."""

from __future__ import annotations

import copy
import csv
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.core.files import atomic_path
from pipeline.core.params import TrainParams
from pipeline.models.networks import Discriminator, Generator, NetConfig, snapshot_epoch

log = logging.getLogger("pipeline.train")

CHECKPOINT_FORMAT = "anime-face-dcgan/checkpoint/3"


# Params that may change between a checkpoint and the run that continues it.
RESUMABLE_CHANGES = {"epochs", "device", "precision", "compile", "threads", "sample_every",
                     "checkpoint_every", "snapshot_every"}


def net_config(params: TrainParams) -> NetConfig:
    return NetConfig(
        image_size=params.image_size, nz=params.nz, ngf=params.ngf, ndf=params.ndf, arch=params.arch,
        # batch norm couples the samples of a batch: wrong under a per-sample gradient penalty,
        # and redundant with spectral normalisation
        d_norm=not (params.spectral_norm or params.loss == "wgan-gp"),
        spectral_norm=params.spectral_norm,
        num_classes=len(params.sgan_classes) if params.objective == "sgan" else 0,
        conditions=tuple((group, tuple(tags)) for group, tags in params.conditions.items()),
        conditioning=params.conditioning,
        upsample=params.upsample,
        mbstd_group=params.mbstd_group if params.arch == "dcgan" else 0,
    )


@dataclass
class Run:
    """What the training loop changes, and so what a checkpoint must hold."""

    generator: Generator
    discriminator: Discriminator
    generator_ema: Generator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    # probability that D's inputs are augmented, a 0-dim device tensor: adaptive augmentation moves
    # it inside the step without a host sync
    augment_p: torch.Tensor
    # adaptive augmentation's tally since p last moved, (sum of sign(D(real)), real images) on the
    # device: in the checkpoint so that a run continued between two updates moves p as one that was not
    augment_stats: torch.Tensor
    # labels per tag group on the device, each group's "any" label: for hiding labels in the step
    group_sizes: torch.Tensor
    epoch: int = 0
    step: int = 0

    @property
    def config(self) -> NetConfig:
        return self.generator.config

    def state(self, params: TrainParams, config: NetConfig) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "config": asdict(config), "params": asdict(params),
            "epoch": self.epoch, "step": self.step, "augment_p": float(self.augment_p),
            "augment_stats": self.augment_stats.detach().cpu().clone(),
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
        self.epoch, self.step = state["epoch"], state["step"]
        self.augment_p.fill_(state["augment_p"])
        self.augment_stats.copy_(state["augment_stats"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])


def uses_channels_last(params: TrainParams, device: torch.device) -> bool:
    """NHWC for the convolutional nets, where oneDNN and cuDNN run it faster (MPS does not)."""
    return device.type != "mps" and params.arch == "dcgan"


def new_run(params: TrainParams, device: torch.device) -> Run:
    """Freshly initialised networks (drawing from the global RNG) and their optimisers."""
    config = net_config(params)
    memory_format = torch.channels_last if uses_channels_last(params, device) else torch.contiguous_format
    generator = Generator(config).to(device, memory_format=memory_format)
    discriminator = Discriminator(config).to(device, memory_format=memory_format)
    # fused: one kernel for the whole update instead of several per parameter
    adam = {"lr": params.lr, "betas": (params.beta1, 0.999), "fused": device.type in ("cuda", "cpu")}
    # fixed augmentation holds its probability; adaptive starts without and raises it as D overfits
    augment_p = params.augment_p if params.augment == "fixed" else 0.0
    return Run(generator, discriminator, copy.deepcopy(generator).requires_grad_(False),
               torch.optim.Adam(generator.parameters(), **adam),
               torch.optim.Adam(discriminator.parameters(), **adam),
               torch.tensor(augment_p, device=device), torch.zeros(2, device=device),
               torch.tensor(config.group_sizes, dtype=torch.long, device=device))


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


def prune_snapshots(folder: Path, epochs_kept: int) -> None:
    """Keep the snapshots of the run being continued (up to its checkpoint's epoch): a fresh run
    starts with none, a resumed one drops what a killed run wrote after its checkpoint. Files that
    are not snapshots (notes, a copy made by hand) are not the run's to delete: they stay."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        epoch = snapshot_epoch(path)
        if epoch is not None and epoch > epochs_kept and path.is_file():
            path.unlink()


def sample_grid_epoch(path: Path) -> int | None:
    """The epoch of a sample grid DVCLive wrote (0012.png); None for any other file or a folder."""
    return int(path.stem) if re.fullmatch(r"[0-9]+\.png", path.name) and path.is_file() else None


def truncate_live_logs(live_dir: Path, epochs_kept: int) -> None:
    """Drop what a killed run logged after its last checkpoint, so the curves have no doubles, and
    what the kill tore: a TSV row cut short, a summary that is no longer JSON (DVCLive, resuming,
    would fail on it; it writes the summary again at the next epoch)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with tsv.open(newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            tsv.unlink()  # torn in its header: DVCLive starts the file again
            continue
        header, step = rows[0], rows[0].index("step")
        kept = [header] + [row for row in rows[1:]
                           if len(row) == len(header) and row[step].isdigit()
                           and int(row[step]) < epochs_kept]
        with atomic_path(tsv) as tmp, tmp.open("w", newline="") as handle:
            csv.writer(handle, delimiter="\t").writerows(kept)
    summary = live_dir / "metrics.json"
    try:
        json.loads(summary.read_text())
    except FileNotFoundError:
        pass
    except ValueError:  # torn by the kill, or not UTF-8
        summary.unlink()
    for grid in (live_dir / "plots" / "images" / "samples").glob("*.png"):
        epoch = sample_grid_epoch(grid)  # a copy made by hand ("0010 (copy).png") is not DVCLive's
        if epoch is not None and epoch > epochs_kept:
            grid.unlink()

