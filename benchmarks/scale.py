"""Scale: the manifest and training on face sets the size of a real scrape, drawn offline.

python benchmarks/scale.py [--sizes 5000 10000 20000] [--steps 300] [--cache DIR] [--json PATH]

The faces come from the demo booru's art (pipeline.demo.art), so no network and no test data
are needed: each post is drawn, stored as the demo booru serves it (JPEG), and its known face boxes
are cut out as the crop stage cuts detected ones (grown by crop.margin, resized to crop.size). The
result is a folder laid out exactly as crop_faces writes its output (face PNGs and boxes.jsonl)
plus a posts.jsonl as the scrape stage writes it. Drawing is the slow part, so the largest size is
drawn once, on all cores, into a cache folder, and each smaller size takes its first N faces.

Each size is then measured in a fresh Python process, so that its peak memory is its own: the
manifest stage's build_manifest, the train split decoded by load_faces and placed by place_faces as
train() does, and --steps training steps built by new_run and build_step, as train() builds them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import cv2
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

from pipeline.core.cli import run_stage
from pipeline.core.devices import resolve_device
from pipeline.core.params import CropParams, TrainParams, read_section
from pipeline.data.curation import build_manifest
from pipeline.data.faces import free_device_memory, load_faces, place_faces
from pipeline.data.formats import BOXES_FILE, split_rows
from pipeline.demo.art import Artwork, draw_artwork
from pipeline.training.run import new_run
from pipeline.training.sgan import labelled_subset
from pipeline.training.step import add_stats, build_step, zero_stats
from pipeline.vision.cropping import cut, grow_box

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (5000, 10000, 20000)
# --quick: a smoke run. fp32 skips the bf16 kernels' first-call compilation (seconds per process),
# one thread keeps its pace when another process shares the cores; --threads, --precision still win.
QUICK = {"sizes": [200, 400], "steps": 5, "warmup": 1, "threads": 1, "precision": "fp32"}
SOURCE = "demo"  # the scrape stage names a post's image <source>_<id>.<ext>
JPEG_QUALITY = 92  # the demo booru serves its drawings as JPEG at this quality
FACES_PER_POST = 1.78  # the demo art's mean number of characters per post, to size the drawing
CACHE_FORMAT = 1
MB = 1_000_000  # decimal megabytes, as docs/scale.md counts
# Growth counts as about linear while a figure's ratio between two sizes stays within this factor
# of the ratio of their face counts (time on a shared machine drifts by 20% or more).
LINEAR_TOLERANCE = 1.3


# --- drawing the faces, once, into the cache ------------------------------------------------------


@dataclass(frozen=True)
class DrawSettings:
    """Everything the drawn faces depend on: a cache drawn with other settings is drawn again."""

    seed: int
    margin: float
    size: int
    jpeg_quality: int = JPEG_QUALITY
    format: int = CACHE_FORMAT


def _init_drawer() -> None:
    cv2.setNumThreads(1)  # one post per process already uses every core


def stored_post(settings: DrawSettings, post_id: int) -> tuple[Artwork, bytes]:
    """The drawing and the file the scrape stage keeps of it: the demo booru's JPEG."""
    artwork = draw_artwork(settings.seed, post_id)
    buffer = io.BytesIO()
    artwork.image.save(buffer, "JPEG", quality=settings.jpeg_quality)
    return artwork, buffer.getvalue()


def draw_post(job: tuple[DrawSettings, int, Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One demo post, as the scrape stage stores it and the crop stage cuts it: the posts.jsonl
    record and one boxes.jsonl record per face (its PNG written to `faces`)."""
    settings, post_id, faces = job
    artwork, data = stored_post(settings, post_id)
    with Image.open(io.BytesIO(data)) as image:  # the crop stage reads the stored JPEG, not the drawing
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    height, width = bgr.shape[:2]
    name = f"{SOURCE}_{post_id}.jpg"
    md5 = hashlib.md5(data).hexdigest()
    post = {"source": SOURCE, "id": post_id, "tags": list(artwork.tags), "rating": "safe",
            "url": None, "page": None,  # drawn here, never served
            "post_md5": md5, "file": name, "md5": md5, "width": width, "height": height}
    records = []
    for k, box in enumerate(sorted(artwork.faces)):  # the crop stage's reading order
        crop_box = grow_box(box, settings.margin)
        side = crop_box[2]
        face = cv2.resize(cut(bgr, crop_box), (settings.size, settings.size),
                          interpolation=cv2.INTER_AREA if side >= settings.size else cv2.INTER_CUBIC)
        face_name = f"{Path(name).stem}_{k}.png"
        cv2.imwrite(str(faces / face_name), face)
        records.append({"face": face_name, "source_image": name, "box": list(box),
                        "crop_box": list(crop_box), "size": settings.size,
                        "image_width": width, "image_height": height})
    return post, records


@dataclass
class Drawn:
    """The cache's contents: posts in id order, faces in drawing order (post by post)."""

    posts: list[dict[str, Any]]
    faces: list[dict[str, Any]]
    seconds: float = 0.0
    reused: int = 0  # faces taken from an earlier run's cache


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in records))
    tmp.rename(path)


def cached(cache: Path, settings: DrawSettings) -> Drawn:
    """What an earlier run drew with the same settings; nothing if the settings differ or that run
    was killed before it wrote cache.json (written last)."""
    meta_path = cache / "cache.json"
    if not meta_path.is_file():
        return Drawn([], [])
    meta = json.loads(meta_path.read_text())
    if meta.get("settings") != asdict(settings):
        return Drawn([], [])
    posts = read_jsonl(cache / "posts.jsonl")[:meta["posts"]]
    faces = read_jsonl(cache / "faces" / BOXES_FILE)[:meta["faces"]]
    return Drawn(posts, faces, reused=len(faces))


def drawn_posts(jobs: list[tuple[DrawSettings, int, Path]],
                workers: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """draw_post of each job, in order. Several workers are forked processes, so the caller must
    not have started OpenCV's or torch's threads (a forked child can inherit one of their locks
    held, and wait on it forever): this script's main process starts none before drawing. One
    worker draws in this process."""
    if workers == 1:
        yield from map(draw_post, jobs)
        return
    with multiprocessing.Pool(workers, _init_drawer) as pool:
        yield from pool.imap(draw_post, jobs, chunksize=16)


def draw_faces(cache: Path, wanted: int, settings: DrawSettings, workers: int) -> Drawn:
    """At least `wanted` faces in cache/faces, drawing only the posts an earlier run did not."""
    drawn = cached(cache, settings)
    if not drawn.faces:
        shutil.rmtree(cache / "faces", ignore_errors=True)
        (cache / "cache.json").unlink(missing_ok=True)
    (cache / "faces").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    next_id = drawn.posts[-1]["id"] + 1 if drawn.posts else 1
    while len(drawn.faces) < wanted:
        # posts for the faces still wanted, with a little to spare: a short batch costs a second one
        count = math.ceil((wanted - len(drawn.faces)) / FACES_PER_POST * 1.03) + 2 * workers
        jobs = [(settings, post_id, cache / "faces") for post_id in range(next_id, next_id + count)]
        print(f"drawing posts {next_id}..{next_id + count - 1} on {workers} cores "
              f"({len(drawn.faces)} of {wanted} faces so far)", file=sys.stderr, flush=True)
        for post, records in drawn_posts(jobs, workers):
            drawn.posts.append(post)
            drawn.faces.extend(records)
        next_id += count
    drawn.seconds = time.perf_counter() - started
    if len(drawn.faces) > drawn.reused:
        write_jsonl(cache / "posts.jsonl", drawn.posts)
        write_jsonl(cache / "faces" / BOXES_FILE, drawn.faces)
        meta = {"settings": asdict(settings), "posts": len(drawn.posts), "faces": len(drawn.faces)}
        (cache / "cache.json").write_text(json.dumps(meta, indent=2) + "\n")
    return drawn


def crop_order(record: dict[str, Any]) -> tuple[str, list[int]]:
    """Where the crop stage puts a face in boxes.jsonl: images in file-name order, faces in box order."""
    return record["source_image"], record["box"]


def link(source: Path, target: Path) -> None:
    """A hard link (a plain file, as the crop stage writes), or a symlink across file systems."""
    try:
        os.link(source, target)
    except OSError:
        target.symlink_to(source.resolve())


def prepare_size(cache: Path, drawn: Drawn, n: int, work: Path) -> tuple[Path, Path]:
    """The first `n` drawn faces as a crop_faces output folder of their own (boxes.jsonl lists only
    them), and the posts.jsonl of the posts scraped up to the last of them."""
    faces = work / "faces"
    faces.mkdir(parents=True)
    chosen = drawn.faces[:n]
    for record in chosen:
        link(cache / "faces" / record["face"], faces / record["face"])
    write_jsonl(faces / BOXES_FILE, sorted(chosen, key=crop_order))
    last_post = int(Path(chosen[-1]["source_image"]).stem.rsplit("_", 1)[1])
    posts = work / "posts.jsonl"
    write_jsonl(posts, [post for post in drawn.posts if post["id"] <= last_post])
    return faces, posts


# --- one size, in its own process ------------------------------------------------------------------


def train_params(args: argparse.Namespace, device: torch.device) -> TrainParams:
    """params.yaml's train section, as dvc repro trains, on the benchmark's device and threads."""
    params = replace(read_section("train", args.params), device=device.type,
                     threads=args.threads or available_cores())
    if args.precision:
        params = replace(params, precision=args.precision)
    params.validate()
    return params


def peak_rss() -> dict[str, int]:
    """This process's peak RSS (it holds the faces), and the largest of its reaped children's: the
    manifest's hashing pool."""
    return {"peak_rss_bytes": peak_rss_bytes(), "workers_peak_rss_bytes": peak_rss_bytes(children=True)}


def measure_size(args: argparse.Namespace) -> dict[str, Any]:
    """The child's work: manifest, faces, training steps, each timed, then the peak memory."""
    device = resolve_device(args.device, "--device")
    params = train_params(args, device)
    torch.manual_seed(params.seed)
    torch.set_num_threads(params.threads)
    manifest = args.work / "manifest.csv"
    drawn = len(read_jsonl(args.faces_dir / BOXES_FILE))

    with Phase() as manifest_phase:
        stats, _tags = build_manifest(read_section("manifest", args.params), args.faces_dir,
                                      args.posts, manifest, params.conditions)
    with Phase() as load_phase:
        images = load_faces(manifest, "train", params.image_size)
    resident_bytes = images.nbytes
    faces = place_faces(images, device, free_device_memory(device))
    del images
    labels = None
    if params.objective == "sgan":
        labels = labelled_subset(split_rows(manifest, "train"), params.sgan_classes,
                                 params.labelled_fraction).to(faces.images.device)

    step = build_step(new_run(params, device), params, device)
    batch_size = max(1, min(params.batch_size, len(faces)))
    steps_per_epoch = max(1, len(faces) // batch_size)
    totals = zero_stats(device)
    order, position = faces.permutation(), 0

    def one_step() -> None:
        """train()'s sampling: a fresh permutation each epoch, cut into whole batches."""
        nonlocal order, position
        if position == steps_per_epoch:
            order, position = faces.permutation(), 0
        index = order[position * batch_size:(position + 1) * batch_size]
        position += 1
        batch_labels = None if labels is None else labels[index].to(device, non_blocking=True)
        add_stats(totals, step(faces.batch(index), batch_labels))

    for _ in range(args.warmup):
        one_step()
    torch.stack(list(totals.values())).tolist()
    synchronize(device)
    with Phase() as steps_phase:
        for _ in range(args.steps):
            one_step()
        sums = torch.stack(list(totals.values())).tolist()  # the only host sync: waits for every queued step
        synchronize(device)
    phases = (manifest_phase, load_phase, steps_phase)

    return {"faces": drawn, "manifest": stats, "manifest_seconds": manifest_phase.seconds,
            "train_faces": len(faces), "load_seconds": load_phase.seconds,
            "resident_bytes": resident_bytes, "resident_mb": resident_bytes / MB,
            "resident_bytes_expected": len(faces) * 3 * params.image_size ** 2,
            "faces_on_device": faces.resident, "steps": args.steps, "warmup": args.warmup,
            "batch_size": batch_size, "step_seconds": steps_phase.seconds,
            "steps_per_second": args.steps / steps_phase.seconds,
            "images_per_second": args.steps * batch_size / steps_phase.seconds,
            "other_processes_cores": {
                "manifest": manifest_phase.others_cores, "load": load_phase.others_cores,
                "steps": steps_phase.others_cores,
                "all": mean_others_cores([(phase.others_cores, phase.seconds) for phase in phases])},
            "bf16": step.bf16, "channels_last": step.channels_last,
            "finite_losses": all(math.isfinite(v) for v in sums), **peak_rss()}


def run_size(args: argparse.Namespace, faces: Path, posts: Path, work: Path) -> dict[str, Any]:
    """Measure one size in a fresh Python process; its result is the one answer it sends."""
    arguments = ["--child", "--faces-dir", str(faces), "--posts", str(posts), "--work", str(work),
                 "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
                 "--threads", str(args.threads), "--params", str(args.params)]
    if args.precision:
        arguments += ["--precision", args.precision]
    with MeasuringProcess(Path(__file__).resolve(), arguments, f"measurement of {faces}") as child:
        result = child.receive()
        child.close()
    result["peak_rss_mb"] = result["peak_rss_bytes"] / MB
    return result


# --- the report ------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return b / a if a else math.inf


def pace(value: float, wanted: float) -> str:
    """How a figure grew against how the faces grew: linear within LINEAR_TOLERANCE."""
    if value > wanted * LINEAR_TOLERANCE:
        return "faster than linear"
    if value < wanted / LINEAR_TOLERANCE:
        return "slower than linear"
    return "linear"


def growth(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """How each figure grew from one size to another, beside how the faces grew. Time should grow
    as the faces do, steps/s not at all, and peak RSS by a fixed part (torch, the networks) plus a
    part per face, whose size this gives; only growth faster than linear is a scaling problem."""
    faces = ratio(first["faces"], last["faces"])
    train = ratio(first["train_faces"], last["train_faces"])
    figures = {"manifest_seconds": faces, "load_seconds": train, "resident_bytes": train,
               "peak_rss_bytes": train}
    ratios = {name: ratio(first[name], last[name]) for name in figures}
    paces = {name: pace(ratios[name], wanted) for name, wanted in figures.items()}
    return {"from": first["faces"], "to": last["faces"], "faces": faces, "train_faces": train,
            **ratios, "steps_per_second": ratio(first["steps_per_second"], last["steps_per_second"]),
            "pace": paces,
            "peak_rss_bytes_per_train_face": ((last["peak_rss_bytes"] - first["peak_rss_bytes"])
                                              / max(1, last["train_faces"] - first["train_faces"])),
            "resident_bytes_per_train_face": last["resident_bytes"] / last["train_faces"],
            "time_linear": all(paces[name] != "faster than linear"
                               for name in ("manifest_seconds", "load_seconds")),
            "memory_linear": all(paces[name] != "faster than linear"
                                 for name in ("resident_bytes", "peak_rss_bytes"))}


def build_report(args: argparse.Namespace, drawn: Drawn, settings: DrawSettings,
                 results: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = [growth(a, b) for a, b in zip(results, results[1:], strict=False)]
    overall = growth(results[0], results[-1]) if len(results) > 1 else None
    return {"date": date.today().isoformat(),
            "machine": {"cpu": cpu_description(), "cores": available_cores(), "torch": torch.__version__,
                        "device": args.device, "threads": args.threads or available_cores(),
                        "python": platform.python_version()},
            "settings": {"sizes": args.sizes, "steps": args.steps, "warmup": args.warmup,
                         "params": str(args.params), "draw": asdict(settings)},
            "draw": {"posts": len(drawn.posts), "faces": len(drawn.faces), "seconds": drawn.seconds,
                     "reused_faces": drawn.reused},
            "sizes": results, "growth": pairs, "overall": overall}


def describe_growth(g: dict[str, Any]) -> str:
    def verdict(linear: bool, names: tuple[str, ...]) -> str:
        slower = [name for name in names if g["pace"][name] == "slower than linear"]
        return ("about linearly" + (" or less" if slower else "")) if linear else "FASTER than linearly"

    return (f"{g['from']:,} -> {g['to']:,} faces ({g['faces']:.2f}x, train {g['train_faces']:.2f}x): "
            f"manifest {g['manifest_seconds']:.2f}x, load {g['load_seconds']:.2f}x, "
            f"resident faces {g['resident_bytes']:.2f}x, steps/s {g['steps_per_second']:.2f}x, "
            f"peak RSS {g['peak_rss_bytes']:.2f}x "
            f"({g['peak_rss_bytes_per_train_face']:+,.0f} bytes per train face; the faces themselves: "
            f"{g['resident_bytes_per_train_face']:,.0f}). "
            f"Time grew {verdict(g['time_linear'], ('manifest_seconds', 'load_seconds'))}, "
            f"memory {verdict(g['memory_linear'], ('resident_bytes', 'peak_rss_bytes'))}")


def format_report(report: dict[str, Any]) -> str:
    machine, draw = report["machine"], report["draw"]
    first = report["sizes"][0]
    lines = [f"Scale: demo faces, manifest + train faces + {first['steps']} training steps per size, "
             f"each size in its own process",
             f"Machine: CPU {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}, "
             f"{machine['threads']} threads; device {machine['device']} "
             f"({'bf16' if first['bf16'] else 'fp32'}, batch {first['batch_size']})",
             f"Drawn: {draw['faces']:,} faces from {draw['posts']:,} posts in {draw['seconds']:.1f} s "
             f"({draw['reused_faces']:,} taken from the cache)", ""]
    header = (f"{'faces':>8}{'kept':>8}{'train':>8}{'manifest s':>12}{'load s':>9}{'resident MB':>13}"
              f"{'steps/s':>9}{'images/s':>10}{'peak RSS MB':>13}{'others used':>13}")
    lines += [header, "-" * len(header)]
    for r in report["sizes"]:
        lines.append(f"{r['faces']:>8,}{r['manifest']['faces']:>8,}{r['train_faces']:>8,}"
                     f"{r['manifest_seconds']:>12.1f}{r['load_seconds']:>9.1f}{r['resident_mb']:>13.1f}"
                     f"{r['steps_per_second']:>9.2f}{r['images_per_second']:>10.1f}{r['peak_rss_mb']:>13.0f}"
                     f"{format_others(r['other_processes_cores']['all']):>13}")
    lines += ["", "MB: 10^6 bytes. resident: the train faces' uint8 tensor (train x 3 x S x S bytes); "
              "peak RSS: the measuring process's, torch included (the manifest's hashing workers apart)",
              "others used: CPU cores other processes kept busy, on average, while the size was measured"]
    for g in report["growth"]:
        lines.append("Growth " + describe_growth(g))
    if report["overall"] is not None and len(report["growth"]) > 1:
        lines.append("Overall " + describe_growth(report["overall"]))
    for r in report["sizes"]:
        if (r["other_processes_cores"]["all"] or 0.0) > BUSY_CORES:
            lines.append(f"WARNING: other processes kept the CPUs busy while {r['faces']:,} faces were "
                         "measured (see 'others used'): its times are skewed; rerun on a quiet machine")
        if not r["finite_losses"]:
            lines.append(f"WARNING: the losses at {r['faces']:,} faces were not finite")
        if r["resident_bytes"] != r["resident_bytes_expected"]:
            lines.append(f"WARNING: at {r['faces']:,} faces the resident tensor is {r['resident_bytes']:,} "
                         f"bytes, not train x 3 x S x S = {r['resident_bytes_expected']:,}")
    return "\n".join(lines)


# --- the command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="face counts to measure (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: --sizes {' '.join(map(str, QUICK['sizes']))} "
                             f"--steps {QUICK['steps']} --warmup {QUICK['warmup']}, "
                             f"--threads {QUICK['threads']} --precision {QUICK['precision']} unless given")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the drawn faces here, for the next run (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="what the demo art draws")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help="override train.precision (default: params.yaml)")
    parser.add_argument("--workers", type=int, default=0, help="drawing processes (default: all cores)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--faces-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--posts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.warmup = QUICK["sizes"], QUICK["steps"], QUICK["warmup"]
        args.threads = args.threads or QUICK["threads"]
        args.precision = args.precision or QUICK["precision"]
    args.sizes = sorted(set(args.sizes))
    if min(args.sizes) < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 0 or args.workers < 0:
        parser.error("--sizes and --steps must be at least 1; --warmup, --threads, --workers 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        send(measure_size(args))
        return
    train_params(args, resolve_device(args.device, "--device"))  # bad params fail before the drawing
    crop: CropParams = read_section("crop", args.params)
    settings = DrawSettings(seed=args.seed, margin=crop.margin, size=crop.size)
    temporary = args.cache is None
    cache = Path(tempfile.mkdtemp(prefix="scale-faces-")) if temporary else args.cache
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=cache))  # beside the faces: hard links work
    try:
        drawn = draw_faces(cache, max(args.sizes), settings, args.workers or available_cores())
        results = []
        for n in args.sizes:
            print(f"measuring {n:,} faces", file=sys.stderr, flush=True)
            size_work = work / f"size-{n}"
            faces, posts = prepare_size(cache, drawn, n, size_work)
            results.append(run_size(args, faces, posts, size_work))
            shutil.rmtree(size_work)
    finally:
        shutil.rmtree(cache if temporary else work, ignore_errors=True)
    report = build_report(args, drawn, settings, results)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
