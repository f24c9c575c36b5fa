"""The render stage: picture geometry, byte-for-byte determinism, one-line errors, and slerp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.models import Generator, NetConfig, save_generator
from pipeline.params import PipelineError
from pipeline.render import METRICS_DIR, main, slerp
from pipeline.train import recalibrate_batchnorm

OUTPUTS = ("samples.png", "interpolation.png", "losses.png")
METRICS = {
    "loss_d": [1.30, 1.10, 0.95],
    "loss_g": [0.80, 1.40, 1.90],
    "d_real": [0.55, 0.66, 0.71],
    "d_fake": [0.45, 0.38, 0.33],
}


def write_models(folder: Path, image_size: int) -> Path:
    """A tiny untrained generator and the DVCLive TSVs training would have left beside it.

    Fresh DCGAN weights draw flat grey, which would make any two renders equal; calibrated
    batch norm (as training leaves it) and a louder output layer give every face its own texture.
    """
    config = NetConfig(image_size=image_size, ngf=8)
    generator = Generator(config)
    recalibrate_batchnorm(generator, config.nz, torch.device("cpu"), seed=0, batches=1)
    with torch.no_grad():
        generator.net[-2].weight.mul_(10)
    save_generator(folder / "generator.pt", generator, config, ema=True, epoch=1)
    metrics_dir = folder / METRICS_DIR
    metrics_dir.mkdir(parents=True)
    for name, values in METRICS.items():
        rows = [f"timestamp\tstep\t{name}"]
        rows += [f"{1_700_000_000 + step}\t{step}\t{value}" for step, value in enumerate(values)]
        (metrics_dir / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    return folder


def write_params(path: Path, grid: int = 3, rows: int = 2, steps: int = 4) -> Path:
    path.write_text(
        f"train:\n  epochs: 1\nrender:\n  seed: 3\n  grid: {grid}\n"
        f"  interpolation_rows: {rows}\n  interpolation_steps: {steps}\n"
    )
    return path


def render(params: Path, models: Path, reports: Path) -> dict[str, bytes]:
    main(["--params", str(params), "--input", str(models), "--output", str(reports)])
    return {name: (reports / name).read_bytes() for name in OUTPUTS}


def grid_px(cells: int, face_px: int) -> int:
    """make_grid's width for `cells` faces with padding 2 around and between them."""
    return cells * (face_px + 2) + 2


@pytest.mark.parametrize(("image_size", "face_px"), [(48, 96), (64, 128)])
def test_pictures_have_the_grid_geometry_and_are_deterministic(
    tmp_path: Path, image_size: int, face_px: int
) -> None:
    models = write_models(tmp_path / "models", image_size)
    params = write_params(tmp_path / "params.yaml", grid=3, rows=2, steps=4)

    first = render(params, models, tmp_path / "first")
    second = render(params, models, tmp_path / "second")

    assert first == second
    with Image.open(tmp_path / "first" / "samples.png") as samples:
        assert samples.size == (grid_px(3, face_px), grid_px(3, face_px))
        assert samples.mode == "RGB"
        assert np.asarray(samples).std() > 20  # not flat grey: the equality above means something
    with Image.open(tmp_path / "first" / "interpolation.png") as interpolation:
        assert interpolation.size == (grid_px(4, face_px), grid_px(2, face_px))
    with Image.open(tmp_path / "first" / "losses.png") as losses:
        assert losses.size == (1000, 400)
    assert sorted(path.name for path in (tmp_path / "first").iterdir()) == sorted(OUTPUTS)


def test_seed_changes_the_samples(tmp_path: Path) -> None:
    models = write_models(tmp_path / "models", 48)
    params = write_params(tmp_path / "params.yaml")
    before = render(params, models, tmp_path / "before")
    params.write_text(params.read_text().replace("seed: 3", "seed: 4"))
    after = render(params, models, tmp_path / "after")
    assert before["samples.png"] != after["samples.png"]
    assert before["losses.png"] == after["losses.png"]


def test_missing_generator_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    models = write_models(tmp_path / "models", 48)
    (models / "generator.pt").unlink()
    with pytest.raises(PipelineError, match=r"generator\.pt: generator not found.*train stage"):
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_foreign_generator_file_is_rejected(tmp_path: Path) -> None:
    models = write_models(tmp_path / "models", 48)
    torch.save({"weights": torch.zeros(3)}, models / "generator.pt")
    with pytest.raises(PipelineError, match="not a generator written by this project"):
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")


@pytest.mark.parametrize("metric", ["loss_g", "d_fake"])
def test_missing_metrics_name_the_file_and_write_nothing(tmp_path: Path, metric: str) -> None:
    models = write_models(tmp_path / "models", 48)
    (models / METRICS_DIR / f"{metric}.tsv").unlink()
    with pytest.raises(PipelineError, match=rf"{metric}\.tsv: training metrics not found") as error:
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "reports").exists()


def test_metric_file_without_its_column_is_rejected(tmp_path: Path) -> None:
    models = write_models(tmp_path / "models", 48)
    (models / METRICS_DIR / "loss_d.tsv").write_text("timestamp\tstep\tloss\n1\t0\t0.5\n")
    with pytest.raises(PipelineError, match=r"loss_d\.tsv: not a DVCLive metric file"):
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")


def random_pair(nz: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    noise = torch.Generator().manual_seed(seed)
    return torch.randn(nz, generator=noise), torch.randn(nz, generator=noise)


def unit_pair() -> tuple[torch.Tensor, torch.Tensor]:
    start, end = random_pair()
    return start / start.norm(), end / end.norm()


def test_slerp_hits_both_endpoints_exactly() -> None:
    start, end = random_pair()
    path = slerp(start, end, torch.linspace(0, 1, 7))
    assert path.shape == (7, 100)
    assert path.dtype == start.dtype
    assert torch.equal(path[0], start)
    assert torch.equal(path[-1], end)


def test_slerp_keeps_equal_norms_on_the_sphere() -> None:
    start, end = unit_pair()
    radius = 10.0
    norms = slerp(radius * start, radius * end, torch.linspace(0, 1, 11)).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, radius), atol=1e-4)


def test_slerp_midpoint_does_not_sag_like_a_straight_line() -> None:
    start, end = random_pair()
    middle = slerp(start, end, torch.tensor([0.5]))[0]
    shortest = min(start.norm(), end.norm())
    assert middle.norm() > 0.95 * shortest
    assert ((start + end) / 2).norm() < 0.8 * shortest


def test_slerp_moves_at_constant_angular_speed_between_unit_vectors() -> None:
    start, end = unit_pair()
    path = slerp(start, end, torch.linspace(0, 1, 5)).double()
    cosines = torch.nn.functional.cosine_similarity(path[:-1], path[1:], dim=1)
    assert torch.allclose(cosines, cosines[0].expand_as(cosines), atol=1e-6)


def test_slerp_of_parallel_vectors_is_finite_and_linear() -> None:
    start, _ = random_pair()
    weights = torch.linspace(0, 1, 5)
    same = slerp(start, start.clone(), weights)
    assert torch.isfinite(same).all()
    assert torch.allclose(same, start.expand_as(same))
    scaled = slerp(start, 2 * start, weights)
    assert torch.allclose(scaled, (1 + weights).unsqueeze(1) * start)
