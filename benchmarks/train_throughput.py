"""Training throughput: the classic pytorch/examples DCGAN loop against this project's training step.

python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--seconds S] [--json PATH]

Both contestants train the same DCGAN (pipeline.models.networks: 64 px, ngf = ndf = 64, nz 100, batch 128) on
the same face files. Each runs in its own Python process, so that its peak memory is its own and
neither inherits the other's thread pools, allocator caches or compiled graphs. Both processes warm
up once, then take turns: the time budget is split into rounds, and each round times one window of
each contestant (in alternating order), so a machine whose speed drifts slows both alike.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import (
    BUSY_CORES,
    MeasuringProcess,
    Phase,
    available_cores,
    cpu_description,
    format_others,
    mean_others_cores,
    peak_rss_bytes,
    send,
    synchronize,
)
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

from pipeline.core.cli import run_stage
from pipeline.core.devices import resolve_device
from pipeline.core.params import PipelineError, TrainParams, read_section
from pipeline.data.faces import Faces, free_device_memory, place_faces
from pipeline.models.networks import Discriminator, Generator, NetConfig
from pipeline.training.run import new_run
from pipeline.training.step import Step, add_stats, build_step, use_compile, zero_stats

ROOT = Path(__file__).resolve().parents[1]
CONTESTANTS = ("baseline", "ours")
# The size both contestants train at: the 64 px DCGAN of the DCGAN paper, batch 128.
IMAGE_SIZE, WIDTH, BATCH_SIZE = 64, 64, 128
# The classic example's defaults: --workers 2, Adam(lr 2e-4, betas (0.5, 0.999)).
BASELINE_WORKERS, BASELINE_LR, BASELINE_BETAS = 2, 2e-4, (0.5, 0.999)
DEFAULT_SECONDS = {"cuda": 20.0, "cpu": 60.0}
# Warm-up absorbs one-off costs: worker start-up, oneDNN primitive creation, and on CUDA
# torch.compile plus the CUDA graph recordings of each call site.
DEFAULT_WARMUP = {"cuda": 50, "cpu": 5}
DEFAULT_ROUNDS = 4
MIB = 2**20


@dataclass(frozen=True)
class Timing:
    steps: int
    images: int
    seconds: float


def default_faces() -> Path:
    """The crop stage's faces, there after `dvc repro`; --faces takes any other folder."""
    return ROOT / "data" / "faces"


def flat_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def missing_faces(faces: Path) -> PipelineError:
    return PipelineError(f"{faces}: face folder not found (run `dvc repro crop_faces` or pass --faces DIR)")


@contextmanager
def image_folder_root(faces: Path) -> Iterator[Path]:
    """A root ImageFolder accepts: ImageFolder wants a subfolder per class, so a flat folder of faces
    is presented through a temporary folder with one subfolder of symlinks to the files."""
    if not faces.is_dir():
        raise missing_faces(faces)
    files = flat_images(faces)
    if not files:
        yield faces  # already one subfolder per class
        return
    with tempfile.TemporaryDirectory(prefix="faces-imagefolder-") as tmp:
        class_dir = Path(tmp) / "faces"
        class_dir.mkdir()
        for path in files:
            (class_dir / path.name).symlink_to(path.resolve())
        yield Path(tmp)


def face_dataset(root: Path, transform: Callable[[Image.Image], Any] | None = None) -> datasets.ImageFolder:
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except FileNotFoundError as exc:
        raise PipelineError(f"{root}: no face images found ({exc})") from None


def resize_and_crop(image_size: int) -> transforms.Compose:
    return transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])


def decode_faces(paths: Sequence[str], image_size: int) -> torch.Tensor:
    """uint8 (N, 3, S, S) with the baseline's PIL Resize + CenterCrop, done once instead of every epoch."""
    shape = resize_and_crop(image_size)
    faces = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            faces[i] = np.asarray(shape(image.convert("RGB")))
    return torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous()


def timed(step: Callable[[], int], seconds: float, wait: Callable[[], None]) -> Timing:
    """Whole steps until `seconds` have passed; `wait` drains queued work, so the clock stops when
    the device is done, not when the host has merely launched the last step."""
    steps = images = 0
    started = time.perf_counter()
    while steps == 0 or time.perf_counter() - started < seconds:
        images += step()
        steps += 1
    wait()
    return Timing(steps, images, time.perf_counter() - started)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Device memory on CUDA; on CPU the process's peak RSS, which cannot be reset (hence one
    process per contestant) and includes torch itself."""
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device),
                "memory_kind": "CUDA max_memory_allocated"}
    return {"peak_memory_bytes": peak_rss_bytes(),
            "memory_kind": "peak RSS of the process"}


# --- the baseline: the classic pytorch/examples DCGAN loop -----------------------------------------


class ClassicDcgan:
    """The example's loop: D on real then fake, each loss backpropagated separately, BCELoss on
    sigmoid(D), default (non-fused) Adam, fp32, contiguous memory, and a host sync per `.item()`."""

    def __init__(self, config: NetConfig, device: torch.device) -> None:
        self.device, self.nz = device, config.nz
        self.generator = Generator(config).to(device)
        self.discriminator = Discriminator(config).to(device)
        self.criterion = nn.BCELoss()
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=BASELINE_LR,
                                      betas=BASELINE_BETAS, fused=False)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=BASELINE_LR,
                                      betas=BASELINE_BETAS, fused=False)
        self.loss_d_sum = self.loss_g_sum = 0.0

    def d_probability(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.discriminator(images))

    def step(self, batch: torch.Tensor) -> int:
        real = batch.to(self.device)
        size = real.shape[0]
        label = torch.full((size,), 1.0, device=self.device)
        self.discriminator.zero_grad()
        output = self.d_probability(real)
        err_d_real = self.criterion(output, label)
        err_d_real.backward()
        output.mean().item()  # D(x), printed by the example
        fake = self.generator(torch.randn(size, self.nz, device=self.device))
        label.fill_(0.0)
        output = self.d_probability(fake.detach())
        err_d_fake = self.criterion(output, label)
        err_d_fake.backward()
        output.mean().item()  # D(G(z)) before D's update
        err_d = err_d_real + err_d_fake
        self.opt_d.step()
        self.generator.zero_grad()
        label.fill_(1.0)
        output = self.d_probability(fake)
        err_g = self.criterion(output, label)
        err_g.backward()
        output.mean().item()  # D(G(z)) after D's update
        self.opt_g.step()
        self.loss_d_sum += err_d.item()
        self.loss_g_sum += err_g.item()
        return size


def endless_batches(loader: DataLoader) -> Iterator[torch.Tensor]:
    """Epoch after epoch, as the example does: the workers start again, and decode again, each epoch."""
    while True:
        for images, _ in loader:
            yield images


class BaselineContestant:
    """ImageFolder + DataLoader(2 workers) feeding the classic loop."""

    def __init__(self, params: TrainParams, device: torch.device, root: Path) -> None:
        config = NetConfig(image_size=params.image_size, nz=params.nz, ngf=params.ngf, ndf=params.ndf)
        transform = transforms.Compose([resize_and_crop(params.image_size), transforms.ToTensor(),
                                        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
        self.dataset = face_dataset(root, transform)
        loader = DataLoader(self.dataset, batch_size=params.batch_size, shuffle=True,
                            num_workers=BASELINE_WORKERS)
        self.batches = endless_batches(loader)
        self.loop = ClassicDcgan(config, device)
        self.device = device

    def step(self) -> int:
        return self.loop.step(next(self.batches))

    def wait(self) -> None:
        synchronize(self.device)

    def close(self) -> dict[str, Any]:
        """Shuts the workers down (their peak RSS is known once they have exited)."""
        self.batches.close()
        losses = (self.loop.loss_d_sum, self.loop.loss_g_sum)
        return {"faces": len(self.dataset), "finite_losses": all(math.isfinite(v) for v in losses),
                "worker_peak_rss_bytes": peak_rss_bytes(children=True),
                "settings": f"ImageFolder + DataLoader({BASELINE_WORKERS} workers), PIL decode + "
                            "transforms every epoch, fp32, contiguous, BCELoss(sigmoid(D)), "
                            "Adam (not fused), .item() every step"}


# --- ours: the project's training step, built by the build_step that train() uses -- ------------------


class EpochIndices:
    """train()'s sampling: a fresh permutation each epoch, made where the faces are, cut into whole
    batches."""

    def __init__(self, faces: Faces, batch_size: int) -> None:
        self.faces, self.batch_size = faces, batch_size
        self.steps_per_epoch = max(1, len(faces) // batch_size)
        self.order = faces.permutation()
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position == self.steps_per_epoch:
            self.order, self.position = self.faces.permutation(), 0
        start = self.position * self.batch_size
        self.position += 1
        return self.order[start:start + self.batch_size]


class OursContestant:
    """The project's Step on uint8 faces placed as train() places them (on the device when they
    fit); its stats are summed on the device and read once per timed window, the only host sync."""

    def __init__(self, params: TrainParams, device: torch.device, root: Path) -> None:
        paths = [path for path, _ in face_dataset(root).samples]
        self.faces = place_faces(decode_faces(paths, params.image_size), device, free_device_memory(device))
        run = new_run(params, device)
        self.step_fn: Step = build_step(run, params, device)
        bf16, channels_last = self.step_fn.bf16, self.step_fn.channels_last
        self.batch_size = max(1, min(params.batch_size, len(self.faces)))
        self.indices = EpochIndices(self.faces, self.batch_size)
        self.totals = zero_stats(device)
        self.device = device
        compiled = use_compile(params.compile, device)
        where = device.type if self.faces.resident else "host memory, copied per batch"
        self.settings = ", ".join([
            f"uint8 faces on {where}, random indices", "no per-step host sync",
            "bf16 autocast" if bf16 else "fp32", "channels_last" if channels_last else "contiguous",
            "fused Adam" if run.opt_d.defaults.get("fused") else "Adam (not fused)",
            ("torch.compile" + (" + CUDA graphs" if device.type == "cuda" else "")) if compiled
            else "not compiled",
            f"loss {params.loss}, EMA half-life {params.ema_kimg} kimg, "
            f"label smoothing {params.label_smoothing}"])
        self.flags = {"bf16": bf16, "channels_last": channels_last, "compiled": compiled,
                      "faces_resident": self.faces.resident}

    def step(self) -> int:
        index = self.indices.next()
        add_stats(self.totals, self.step_fn(self.faces.batch(index), None))
        return self.batch_size

    def wait(self) -> None:
        torch.stack(list(self.totals.values())).tolist()  # the host sync: waits for every queued step
        synchronize(self.device)

    def close(self) -> dict[str, Any]:
        return {"faces": len(self.faces), **self.flags, "settings": self.settings,
                "finite_losses": all(math.isfinite(float(v)) for v in self.totals.values())}


# --- a contestant's process: warm up once, then one timed window per request -----------------------


def serve(args: argparse.Namespace, device: torch.device) -> None:
    """The contestant's side: set up and warm up once, then time a window per "measure" line on
    stdin; any other line ends it with the peak memory and what only the end can tell."""
    params = benchmark_params(args, device)
    torch.manual_seed(params.seed)
    kind = BaselineContestant if args.contestant == "baseline" else OursContestant
    with image_folder_root(args.faces) as root:
        contestant = kind(params, device, root)
        reset_peak_memory(device)
        for _ in range(args.warmup):
            contestant.step()
        contestant.wait()
        send({"ready": True})
        for line in sys.stdin:
            if line.strip() != "measure":
                break
            send(asdict(timed(contestant.step, args.seconds / args.rounds, contestant.wait)))
        memory = peak_memory(device)
        send({**memory, **contestant.close()})


# --- the runner: starts the contestants, alternates their windows, prints the table ----------------


def benchmark_params(args: argparse.Namespace, device: torch.device) -> TrainParams:
    """params.yaml's train section (what dvc repro uses), at the benchmark's size and the DCGAN
    (the comparison is about that architecture), without augmentation or minibatch stddev (the
    classic loop has neither), with the command line's overrides."""
    params = read_section("train", args.params)
    overrides: dict[str, Any] = {"image_size": args.image_size, "ngf": WIDTH, "ndf": WIDTH,
                                 "batch_size": args.batch_size, "arch": "dcgan", "objective": "gan",
                                 "augment": "off", "mbstd_group": 0, "device": device.type,
                                 "threads": args.threads}
    if args.precision:
        overrides["precision"] = args.precision
    if args.compile:
        overrides["compile"] = args.compile
    params = replace(params, **overrides)
    params.validate()
    return params


def child_arguments(args: argparse.Namespace, contestant: str) -> list[str]:
    command = ["--faces", str(args.faces),
               "--device", args.device, "--seconds", str(args.seconds), "--warmup", str(args.warmup),
               "--rounds", str(args.rounds), "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
               "--params", str(args.params), "--contestant", contestant]
    for name in ("precision", "compile"):
        if getattr(args, name):
            command += [f"--{name}", getattr(args, name)]
    return command


def start_contestant(args: argparse.Namespace, name: str) -> MeasuringProcess:
    return MeasuringProcess(Path(__file__).resolve(), child_arguments(args, name), f"{name} measurement")


def timed_window(process: MeasuringProcess) -> dict[str, Any]:
    with Phase() as phase:
        window = process.request("measure")
    return {**window, "other_processes_cores": phase.others_cores}


def finish(process: MeasuringProcess) -> dict[str, Any]:
    """What only the end can tell (peak memory, the losses); the process then exits."""
    summary = process.request("done")
    process.close()
    return summary


def pooled(windows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """One contestant's figures over all its windows: images over seconds, not a mean of rates."""
    seconds = sum(w["seconds"] for w in windows)
    images = sum(w["images"] for w in windows)
    return {"steps": sum(w["steps"] for w in windows), "images": images, "seconds": seconds,
            "images_per_second": images / seconds,
            "window_images_per_second": [w["images"] / w["seconds"] for w in windows],
            "other_processes_cores": mean_others_cores([(w["other_processes_cores"], w["seconds"])
                                                        for w in windows]),
            **summary}


def measure(args: argparse.Namespace, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Start and warm up each contestant in turn (never two at once), then alternate their windows:
    A B, B A, A B, ... so that drift in the machine's speed falls on both alike."""
    processes: dict[str, MeasuringProcess] = {}
    try:
        for name in names:
            print(f"warming up {name}: {args.warmup} steps", file=sys.stderr, flush=True)
            processes[name] = start_contestant(args, name)
            processes[name].receive()  # ready
        windows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else list(reversed(names))
            print(f"round {round_index + 1} of {args.rounds}: {', '.join(order)}, "
                  f"{args.seconds / args.rounds:g} s each", file=sys.stderr, flush=True)
            for name in order:
                windows[name].append(timed_window(processes[name]))
        return {name: pooled(windows[name], finish(processes[name])) for name in names}
    finally:
        for process in processes.values():
            process.stop()


def machine_description(device: torch.device, threads: int) -> dict[str, Any]:
    return {"cpu": cpu_description(), "cores": available_cores(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "device": device.type, "torch": torch.__version__, "threads": threads,
            "python": platform.python_version()}


def targets(machine: dict[str, Any], ours: dict[str, Any] | None,
            ratio: float | None) -> list[dict[str, Any]]:
    """Throughput targets for this kind of machine: printed beside the results, never enforced."""
    gpu = machine["gpu"] or ""
    if machine["device"] == "cuda" and ("H100" in gpu or "H200" in gpu):
        wanted = [("H100/H200: ours >= 40,000 img/s", ours and ours["images_per_second"], 40_000.0),
                  ("H100/H200: ours >= 15x the baseline", ratio, 15.0)]
    elif machine["device"] == "cpu" and machine["cores"] == 2:
        wanted = [("2-core CPU: ours >= 1.5x the baseline", ratio, 1.5)]
    else:
        return []
    return [{"target": name, "value": value, "met": None if value is None else value >= bound}
            for name, value, bound in wanted]


def build_report(args: argparse.Namespace, machine: dict[str, Any],
                 results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ours, baseline = results.get("ours"), results.get("baseline")
    ratio = ours["images_per_second"] / baseline["images_per_second"] if ours and baseline else None
    settings = {"faces_dir": str(args.faces), "image_size": args.image_size, "batch_size": args.batch_size,
                "ngf": WIDTH, "ndf": WIDTH, "seconds": args.seconds, "warmup": args.warmup,
                "rounds": args.rounds, "params": str(args.params)}
    return {"date": date.today().isoformat(), "machine": machine, "settings": settings, **results,
            "ratio": ratio, "targets": targets(machine, ours, ratio)}


def format_memory(result: dict[str, Any]) -> str:
    kind = "device" if result["memory_kind"].startswith("CUDA") else "peak RSS"
    return f"{result['peak_memory_bytes'] / MIB:,.0f} MiB {kind}"


def format_spread(rates: list[float]) -> str:
    return f"{min(rates):,.1f}-{max(rates):,.1f}"


def format_report(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    names = [name for name in CONTESTANTS if name in report]
    lines = [f"Training throughput: DCGAN {settings['image_size']} px, ngf {settings['ngf']}, "
             f"ndf {settings['ndf']}, batch {settings['batch_size']}, "
             f"{report[names[0]]['faces']} faces from {settings['faces_dir']}",
             f"Machine: {machine['gpu'] or 'no GPU'}; CPU {machine['cpu']}, {machine['cores']} cores; "
             f"torch {machine['torch']}, {machine['threads']} threads; device {machine['device']}",
             f"Each contestant, in its own process: {settings['warmup']} warm-up steps, then whole steps "
             f"for {settings['seconds']:g} s in {settings['rounds']} alternating windows", ""]
    header = (f"{'':<10}{'steps':>7}{'images':>9}{'seconds':>9}{'img/s':>10}{'windows img/s':>17}  "
              f"{'peak memory':<20}{'others used':>12}")
    lines += [header, "-" * len(header)]
    for name in names:
        result = report[name]
        lines.append(f"{name:<10}{result['steps']:>7}{result['images']:>9}{result['seconds']:>9.1f}"
                     f"{result['images_per_second']:>10,.1f}"
                     f"{format_spread(result['window_images_per_second']):>17}  "
                     f"{format_memory(result):<20}{format_others(result['other_processes_cores']):>12}")
    lines.append("")
    if report["ratio"] is not None:
        lines.append(f"ours / baseline: {report['ratio']:.2f}x")
    if machine["device"] == "cuda":
        lines.append("Peak memory: torch.cuda.max_memory_allocated over each contestant's run")
    else:
        lines.append("Peak memory: peak RSS of each contestant's own process (torch itself included)")
    if "baseline" in report:
        lines.append(f"  baseline DataLoader workers: largest peak RSS "
                     f"{report['baseline']['worker_peak_rss_bytes'] / MIB:,.0f} MiB each")
    lines.append("Others used: CPU cores that other processes kept busy, on average, during its windows")
    lines += ["", "Settings:"] + [f"  {name}: {report[name]['settings']}" for name in names]
    lines += ["", "Targets (printed, not enforced):"]
    for target in report["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        value = "" if target["value"] is None else f" ({target['value']:,.2f})"
        lines.append(f"  {target['target']}: {verdict}{value}")
    if not report["targets"]:
        lines.append("  none for this machine (they are set for CUDA H100/H200 and a 2-core CPU)")
    busy = [name for name in names if (report[name]["other_processes_cores"] or 0.0) > BUSY_CORES]
    if busy:
        lines.append(f"WARNING: other processes kept the CPUs busy while {' and '.join(busy)} ran "
                     "(see 'others used'): the figures are skewed; rerun on a quiet machine")
    for name in names:
        if not report[name]["finite_losses"]:
            lines.append(f"WARNING: {name}'s losses were not finite; its figures measure a broken run")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=default_faces(),
                        help="a flat folder of face images, or one with a subfolder per class "
                             "(default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed budget per contestant, after warm-up (default: 20 on CUDA, 60 elsewhere)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default: 50 on CUDA, enough for torch.compile; "
                             "5 elsewhere)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="timed windows per contestant, alternating (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="48 or 64")
    parser.add_argument("--which", choices=("baseline", "ours", "both"), default="both")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help="ours: override train.precision (default: params.yaml)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default=None,
                        help="ours: override train.compile (default: params.yaml)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--contestant", choices=CONTESTANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 0 or (args.warmup is not None and args.warmup < 0):
        parser.error("--rounds must be at least 1, --threads and --warmup 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device, "--device")
    args.seconds = DEFAULT_SECONDS.get(device.type, 60.0) if args.seconds is None else args.seconds
    args.warmup = DEFAULT_WARMUP.get(device.type, 5) if args.warmup is None else args.warmup
    args.threads = args.threads or available_cores()
    torch.set_num_threads(args.threads)
    if args.contestant:
        serve(args, device)
        return
    benchmark_params(args, device)  # fail on bad params or faces here, not once per contestant
    if not args.faces.is_dir():
        raise missing_faces(args.faces)
    machine = machine_description(device, args.threads)
    results = measure(args, CONTESTANTS if args.which == "both" else (args.which,))
    report = build_report(args, machine, results)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
