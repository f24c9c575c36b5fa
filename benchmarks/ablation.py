"""Train and score variants of the train params over several seeds, and print the table they make.

    python benchmarks/ablation.py --variants defaults no-mbstd --seeds 0 1 2 --jobs 2 --out runs/ablation

Each run is the train stage and then the evaluate stage on its last snapshot, as `dvc repro` runs
them, in its own folder under --out with its own params file (params.yaml's sections, the
variant's train overrides, the seed). GAN runs of one config differ a lot, so a variant is a row
of mean and range over seeds, never one run. The last sample grid of each run (fixed noise, every
tag group "any") is copied to --out/grids/ to be looked at beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

# name -> (what it changes, train overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("the defaults", {}),
    "batch-64": ("batch 64, as before: half the steps for the same images", {"batch_size": 64}),
    "batch-16": ("batch 16: twice the steps for the same images", {"batch_size": 16}),
    "adaptive": ("adaptive augmentation (ADA, ada_kimg 100), as before", {"augment": "adaptive"}),
    "no-mbstd": ("no minibatch stddev in D", {"mbstd_group": 0}),
    "acgan-0.5": ("G's class term weighted 0.5", {"acgan_weight": 0.5}),
    "unconditional": ("no tag conditions", {"conditions": {}}),
    "tac": ("TAC-GAN: a twin classifier of the fakes' labels", {"conditioning": "tac"}),
    "resize": ("G upsamples by resizing and a 3x3 convolution", {"upsample": "resize"}),
    "tac-resize": ("both", {"conditioning": "tac", "upsample": "resize"}),
    # the search that chose the defaults' mode seeking and length; each names both, so it stays the
    # same run whatever the defaults become
    "previous": ("the defaults before: no mode seeking, 120 epochs", {"mode_seeking": 0.0, "epochs": 120}),
    "mode-seeking-120": ("mode seeking (weight 1), 120 epochs", {"mode_seeking": 1.0, "epochs": 120}),
    "mode-seeking-x2-120": ("mode seeking (weight 2), 120 epochs", {"mode_seeking": 2.0, "epochs": 120}),
    "mode-seeking-batch-16-120": ("mode seeking (weight 1), batch 16, 120 epochs",
                                  {"mode_seeking": 1.0, "batch_size": 16, "epochs": 120}),
    "mode-seeking-180": ("mode seeking (weight 1), 180 epochs", {"mode_seeking": 1.0, "epochs": 180}),
    "mode-seeking-x1.5-180": ("mode seeking (weight 1.5), 180 epochs", {"mode_seeking": 1.5, "epochs": 180}),
    "mode-seeking-x2-180": ("mode seeking (weight 2), 180 epochs", {"mode_seeking": 2.0, "epochs": 180}),
    "mode-seeking-200": ("mode seeking (weight 1), 200 epochs: the defaults",
                         {"mode_seeking": 1.0, "epochs": 200}),
}
# the scores of the table: eval.json's names
COLUMNS = ("variety", "near_identical", "high_frequency", "coverage", "precision", "face_rate",
           "raw_coverage", "raw_high_frequency", "cond_hair_of_ceiling", "cond_eyes_of_ceiling",
           "cond_hair_min_variety", "cond_eyes_min_variety")
# evaluate settings for a quicker score of the last snapshot alone
EVALUATE = {"samples": 1000, "snapshots": 0, "snapshot_samples": 256, "condition_samples": 64}


def run_one(variant: str, seed: int, base: dict[str, Any], manifest: Path, out: Path,
            threads: int, epochs: int | None) -> dict[str, Any]:
    """One run, or the scores of a run already done (an interrupted ablation continues)."""
    folder = out / f"{variant}-{seed}"
    if (folder / "metrics/eval.json").is_file():
        return json.loads((folder / "metrics/eval.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    params = {section: dict(values or {}) for section, values in base.items()}
    params["train"] |= VARIANTS[variant][1] | {"seed": seed, "threads": threads}
    if epochs is not None:
        params["train"]["epochs"] = epochs
    params["evaluate"] = params.get("evaluate", {}) | EVALUATE
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    for command in (["-m", "pipeline.train", "--input", str(manifest), "--output", str(folder / "models")],
                    ["-m", "pipeline.evaluate", "--manifest", str(manifest),
                     "--snapshots", str(folder / "models/snapshots"), "--best", str(folder / "best.pt"),
                     "--output", str(folder / "metrics")]):
        with (folder / "log.txt").open("a") as log:
            subprocess.run([sys.executable, *command, "--params", str(params_file)], cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT, check=True)
    scores = json.loads((folder / "metrics/eval.json").read_text())
    grids = sorted((folder / "models/dvclive/plots/images/samples").glob("*.png"))
    if grids:
        (out / "grids").mkdir(exist_ok=True)
        shutil.copy(grids[-1], out / "grids" / f"{variant}-{seed}.png")
    scores["minutes"] = (time.perf_counter() - started) / 60
    print(f"{variant} seed {seed}: " + ", ".join(f"{name} {_cell([scores.get(name)])}" for name in COLUMNS),
          flush=True)
    return scores


def _cell(values: list[Any]) -> str:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    if not numbers:
        return "-"
    if len(numbers) == 1:
        return f"{numbers[0]:.2f}"
    return f"{statistics.mean(numbers):.2f} ({min(numbers):.2f}-{max(numbers):.2f})"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: one row per variant, mean (range) over its seeds."""
    lines = ["| variant | seeds | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for variant, runs in results.items():
        cells = [_cell([run.get(name) for run in runs]) for name in COLUMNS]
        lines.append(f"| {VARIANTS[variant][0]} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/ablation.py", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data/manifest.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/ablation")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each on --threads cores)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs of every run")
    args = parser.parse_args()
    base = yaml.safe_load(args.params.read_text())
    jobs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda job: run_one(*job, base, args.manifest.resolve(), args.out.resolve(),
                                                 args.threads, args.epochs), jobs))
    results: dict[str, list[dict[str, Any]]] = {}
    for (variant, _), scores in zip(jobs, done, strict=True):
        results.setdefault(variant, []).append(scores)
    print(table(results))
    (args.out / "table.md").write_text(table(results) + "\n")


if __name__ == "__main__":
    main()
