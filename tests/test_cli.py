"""What people expect of the commands: each names itself as it was run, takes `-S section.param=value`
overrides as `dvc exp run -S` does, has a console command where it is run outside DVC, and keeps
its log lines clear of the progress bars."""

from __future__ import annotations

import gc
import importlib
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.cli import run_stage, stage_parser
from pipeline.core.params import read_params, read_section

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("scrape", "crop_faces", "manifest", "train", "evaluate", "render", "generate", "serve")
CONSOLE_COMMANDS = {"anime-face-generate": "pipeline.generate", "anime-face-serve": "pipeline.serve"}


def usage_of(capsys: pytest.CaptureFixture[str], module: str, *argv: str) -> str:
    """The first line `--help` prints."""
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out.splitlines()[0]


# --- the name in the usage line ---------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_every_command_names_itself_as_it_is_run(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_of(capsys, f"pipeline.{stage}").startswith(f"usage: python -m pipeline.{stage} ")


def test_a_stage_run_with_python_m_says_so() -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "--help"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m pipeline.train ")


# --- console commands ----------------------------------------------------------------------------------


def test_console_commands_are_declared_for_the_commands_run_outside_dvc() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"{module}:command" for name, module in CONSOLE_COMMANDS.items()}


@pytest.mark.parametrize(("name", "module"), sorted(CONSOLE_COMMANDS.items()))
def test_console_command_is_installed_and_runs_the_module(name: str, module: str) -> None:
    """After `pip install -e .` the command exists beside the interpreter, resolves to the module's
    `command`, and names itself in its usage line."""
    (entry,) = entry_points(group="console_scripts", name=name)
    assert entry.load() is importlib.import_module(module).command
    script = Path(sys.executable).parent / name
    assert script.is_file(), f"{script} missing: run pip install -e ."
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name} ")


def test_console_command_gives_the_one_line_error(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "anime-face-generate"
    result = subprocess.run([str(script), "--generator", str(tmp_path / "nothing.pt"),
                             "--out", str(tmp_path / "faces.png")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


# --- -S overrides --------------------------------------------------------------------------------------


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("# the experiment's params\ntrain:\n  epochs: 3\n  lr: 0.0002\nrender:\n  seed: 7\n")
    return path


def stage_args(params: Path, *overrides: str):
    parser = stage_parser("a stage", "pipeline.train")
    return parser.parse_args(["--params", str(params), *[a for o in overrides for a in ("-S", o)]])


def test_overrides_change_the_params_the_stage_reads_and_never_the_file(params_file: Path) -> None:
    before, stamp = params_file.read_bytes(), params_file.stat().st_mtime_ns
    args = stage_args(params_file, "train.epochs=5", "train.lr=1e-4", "train.conditions={}",
                      "render.seed=9", "train.epochs=6")
    train = read_section("train", args.params)
    assert (train.epochs, train.lr, train.conditions) == (6, 1e-4, {})  # repeatable: the last wins
    assert read_section("render", args.params).seed == 9
    assert params_file.read_bytes() == before and params_file.stat().st_mtime_ns == stamp
    assert read_section("train", params_file).epochs == 3


def test_values_are_yaml(params_file: Path) -> None:
    args = stage_args(params_file, "scrape.ratings=[safe, questionable]", "scrape.rate=null",
                      "train.conditions.hair=[black_hair, red_hair]", "crop.margin=0.5", "train.flip=false")
    sections = read_params(args.params)
    assert sections["scrape"].ratings == ("safe", "questionable") and sections["scrape"].rate is None
    assert sections["train"].conditions == {"hair": ("black_hair", "red_hair")}
    assert sections["crop"].margin == 0.5 and sections["train"].flip is False


def test_without_overrides_the_params_file_is_read_as_it_is(params_file: Path) -> None:
    assert stage_args(params_file).params == str(params_file)


def test_the_overridden_copy_goes_when_the_run_does(params_file: Path) -> None:
    args = stage_args(params_file, "train.epochs=5")
    copy = Path(args.params)
    assert copy.is_file() and copy != params_file
    del args
    gc.collect()
    assert not copy.exists()


def run_train(capsys: pytest.CaptureFixture[str], params: Path, *overrides: str) -> tuple[int, str]:
    """The train stage as the command line runs it (exit status, stderr); these overrides fail
    before any training."""
    argv = ["--params", str(params), "--input", str(params.parent / "no-manifest.csv"),
            "--output", str(params.parent / "models"), *[a for o in overrides for a in ("-S", o)]]
    with pytest.raises(SystemExit) as exit_info:
        run_stage(importlib.import_module("pipeline.train").main, argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(("override", "error"), [
    ("train.epoch=5", "error: train.epoch: unknown param; did you mean epochs?"),
    ("trian.epochs=5", "error: trian: unknown section; did you mean train?"),
    ("epochs=5", "error: epochs: name its section too, as in train.epochs=5"),
    ("train.epochs=five", "error: train.epochs: must be an int, got 'five'"),
    ("train.epochs.more=5", "error: train.epochs.more: train.epochs is 3, not a mapping of params"),
])
def test_a_bad_override_is_one_line_naming_it(capsys: pytest.CaptureFixture[str], params_file: Path,
                                              override: str, error: str) -> None:
    before = params_file.read_bytes()
    status, stderr = run_train(capsys, params_file, override)
    assert (status, stderr.strip()) == (2, error)
    assert params_file.read_bytes() == before


def test_a_misspelt_override_from_the_real_command(params_file: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "--params", str(params_file),
                             "-S", "train.epoch=5"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: train.epoch: unknown param; did you mean epochs?"


@pytest.mark.parametrize("override", ["train.epochs", "=5", "train.epochs=[5"])
def test_a_malformed_override_is_a_usage_error(capsys: pytest.CaptureFixture[str], params_file: Path,
                                               override: str) -> None:
    status, stderr = run_train(capsys, params_file, override)
    assert status == 2
    assert "usage: python -m pipeline.train " in stderr
    assert f"argument -S/--set-param: {override}: " in stderr


def write_pictures(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")


def test_a_stage_runs_with_its_overrides(tmp_path: Path, params_file: Path) -> None:
    """The scrape stage takes the local folder and the post limit from the command line."""
    write_pictures(tmp_path / "pictures", 3)
    out = tmp_path / "raw"
    before = params_file.read_bytes()
    run_stage(importlib.import_module("pipeline.scrape").main, [
        "--params", str(params_file), "--output", str(out), "--stats", str(out / "stats.json"),
        "-S", "scrape.source=local", "-S", f"scrape.local_path={tmp_path / 'pictures'}",
        "--set-param", "scrape.max_posts=2"])
    assert json.loads((out / "stats.json").read_text())["listed"] == 2
    assert len((out / "posts.jsonl").read_text().splitlines()) == 2
    assert params_file.read_bytes() == before


# --- log lines and progress bars -------------------------------------------------------------------


def terminal_lines(text: str) -> list[str]:
    """What a terminal shows of `text`: a carriage return starts the line again, overwriting it."""
    shown = []
    for line in text.split("\n"):
        screen = ""
        for part in line.split("\r"):
            screen = part + screen[len(part):]
        shown.append(screen.rstrip())
    return shown


BAR_AND_LOG = """
import logging, sys
from tqdm import tqdm
from pipeline.core.cli import run_stage

def main(argv):
    with tqdm(total=3, desc="working", mininterval=0) as bar:
        bar.update(1)
        logging.getLogger("pipeline.work").warning("a line while the bar is live")
        bar.update(2)

run_stage(main, [])
"""


def test_a_log_line_does_not_break_a_live_bar() -> None:
    result = subprocess.run([sys.executable, "-c", BAR_AND_LOG], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    shown = terminal_lines(result.stderr)
    logged = [line for line in shown if "a line while the bar is live" in line]
    assert len(logged) == 1 and re.fullmatch(r"\d\d:\d\d:\d\d pipeline.work: a line while the bar is live",
                                             logged[0]), shown
    assert any(line.startswith("working: 100%") for line in shown), shown


def test_a_stage_logs_above_its_bar(tmp_path: Path) -> None:
    """The scrape stage's warning about a file it cannot read, logged while its bar is live."""
    write_pictures(tmp_path / "pictures", 2)
    (tmp_path / "pictures" / "broken.png").write_bytes(b"not a picture")
    params = tmp_path / "params.yaml"
    params.write_text(f"scrape:\n  source: local\n  local_path: {tmp_path / 'pictures'}\n")
    result = subprocess.run([sys.executable, "-m", "pipeline.scrape", "--params", str(params),
                             "--output", str(tmp_path / "raw"), "--stats", str(tmp_path / "stats.json")],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    shown = terminal_lines(result.stderr)
    warned = [line for line in shown if "broken.png" in line]
    assert warned and all(re.match(r"\d\d:\d\d:\d\d pipeline\.", line) for line in warned), shown
