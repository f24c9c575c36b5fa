"""pipeline.generate: the render stage's pictures without DVC, and one-line errors for bad files and args."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import as_trained, grid_px, render, write_models, write_params
from PIL import Image

from pipeline.core.cli import run_stage
from pipeline.generate import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generator and what the render stage drew from it (render.seed 3, grid 3, 2 rows of 4)."""
    root = tmp_path_factory.mktemp("rendered")
    render(write_params(root / "params.yaml", grid=3, rows=2, steps=4), write_models(root / "models", 48),
           root / "reports")
    return root


def generate(rendered: Path, out: Path, *args: str) -> bytes:
    main(["--generator", str(rendered / "models/best.pt"), "--out", str(out), *args])
    return out.read_bytes()


def test_grid_is_the_render_stages_samples(rendered: Path, tmp_path: Path) -> None:
    faces = generate(rendered, tmp_path / "faces.png", "--n", "9", "--seed", "3")
    assert faces == (rendered / "reports/samples.png").read_bytes()


def test_interpolations_are_the_render_stages(rendered: Path, tmp_path: Path) -> None:
    """The render stage draws its interpolations from render.seed + 1."""
    args = ("--n", "2", "--interpolate", "4", "--seed", "4")
    for name in ("interpolation.png", "interpolation.gif"):
        out = tmp_path / f"walk{Path(name).suffix}"
        assert generate(rendered, out, *args) == (rendered / "reports" / name).read_bytes()


def test_any_count_fills_rows_of_a_near_square_grid_at_the_asked_size(rendered: Path, tmp_path: Path) -> None:
    generate(rendered, tmp_path / "faces.png", "--n", "5", "--size", "128")
    with Image.open(tmp_path / "faces.png") as faces:
        assert faces.size == (grid_px(3, 144), grid_px(2, 144))  # 48 px faces, 3x: at least 128


def test_seed_and_temperature_change_the_faces_and_nothing_else_does(rendered: Path, tmp_path: Path) -> None:
    base = generate(rendered, tmp_path / "a.png", "--n", "4", "--seed", "1")
    assert generate(rendered, tmp_path / "b.png", "--n", "4", "--seed", "1") == base
    assert generate(rendered, tmp_path / "c.png", "--n", "4", "--seed", "2") != base
    assert generate(rendered, tmp_path / "d.png", "--n", "4", "--seed", "1", "--temperature", "0.5") != base


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """stderr of a run that must exit 2, as the command line would."""
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, list(args))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_missing_generator_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline.generate", "--generator",
                             str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "faces.png")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'nothing.pt'}: generator not found; "
                                     "run the train and evaluate stages first (dvc repro evaluate)")
    assert not (tmp_path / "faces.png").exists()


def test_training_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"format": "anime-face-dcgan/checkpoint/1", "generator": {}, "epoch": 3}, checkpoint)
    err = run_cli(capsys, "--generator", str(checkpoint), "--out", str(tmp_path / "faces.png"))
    assert err.strip() == (f"error: {checkpoint}: not a generator written by this project "
                           "(anime-face-dcgan/generator/1)")


def test_weights_of_another_shape_are_refused(rendered: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    payload = torch.load(rendered / "models/best.pt", weights_only=True)
    payload["config"]["nz"] = 64  # the weights were trained for 100
    torch.save(payload, tmp_path / "generator.pt")
    err = run_cli(capsys, "--generator", str(tmp_path / "generator.pt"), "--out", str(tmp_path / "f.png"))
    assert err.startswith(f"error: {tmp_path / 'generator.pt'}: generator weights do not match its config")


@pytest.mark.parametrize(("args", "message"), [
    (["--n", "0"], "argument --n: must be in [1, 4096], got 0"),
    (["--temperature", "0"], "argument --temperature: must be in (0, 2], got 0"),
    (["--size", "8"], "argument --size: must be in [16, 512], got 8"),
    (["--interpolate", "1"], "argument --interpolate: must be in [2, 1000], got 1"),
    (["--seed", "-1"], "argument --seed: must be in [0, 9223372036854775807], got -1"),
    (["--seed", "9" * 20], "argument --seed: must be in [0, 9223372036854775807], got " + "9" * 20),
    (["--out", "faces.jpg"], "--out must end in .png or .gif, got faces.jpg"),
    (["--out", "faces.gif"], "a .gif animates interpolations: add --interpolate STEPS"),
])
def test_bad_arguments_are_usage_errors(args: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert message in run_cli(capsys, *args)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random generator conditioned on hair and eye colours."""
    from pipeline.models.networks import Generator, NetConfig, save_generator

    config = NetConfig(ngf=8, conditions=(("hair", ("black_hair", "blonde_hair")),
                                          ("eyes", ("blue_eyes", "red_eyes"))))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("conditional") / "best.pt"
    save_generator(path, as_trained(Generator(config)).eval(), config, ema=True, epoch=1)
    return path


def test_tags_ask_a_conditional_generator_for_their_values(conditional: Path, tmp_path: Path) -> None:
    def faces(*tags: str) -> bytes:
        out = tmp_path / f"{'-'.join(tags) or 'any'}.png"
        main(["--generator", str(conditional), "--n", "4", "--out", str(out), "--tags", *tags]
             if tags else ["--generator", str(conditional), "--n", "4", "--out", str(out)])
        return out.read_bytes()

    blonde = faces("blonde_hair")
    assert blonde == faces("blonde_hair")
    assert len({blonde, faces("black_hair"), faces(), faces("blonde_hair", "red_eyes")}) == 4
    walk = tmp_path / "walk.gif"
    main(["--generator", str(conditional), "--n", "2", "--interpolate", "3", "--out", str(walk),
          "--tags", "red_eyes"])
    assert walk.stat().st_size > 0


def test_an_unknown_tag_is_one_line_listing_the_known_ones(conditional: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    err = run_cli(capsys, "--generator", str(conditional), "--out", str(tmp_path / "f.png"),
                  "--tags", "pink_hair")
    assert err.strip() == ("error: unknown tag 'pink_hair'; known tags: hair: black_hair "
                           "blonde_hair; eyes: blue_eyes red_eyes")
    assert not (tmp_path / "f.png").exists()
    err = run_cli(capsys, "--generator", str(conditional), "--out", str(tmp_path / "f.png"),
                  "--tags", "black_hair", "blonde_hair")
    assert err.strip().count("\n") == 0 and "both hair tags" in err


def test_an_unconditional_generator_knows_no_tags(rendered: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    err = run_cli(capsys, "--generator", str(rendered / "models/best.pt"), "--out",
                  str(tmp_path / "f.png"), "--tags", "blonde_hair")
    assert "unconditional" in err and err.strip().count("\n") == 0
