"""The render stage: picture and GIF geometry, byte-for-byte determinism, one-line errors, and slerp."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GRID_EPOCHS, RENDER_OUTPUTS, grid_px, render, write_models, write_params
from PIL import Image

from pipeline.core.params import PipelineError
from pipeline.models.networks import NetConfig
from pipeline.models.sampling import slerp
from pipeline.render import FINAL_FRAME_MS, METRICS_DIR, SAMPLES_DIR
from pipeline.rendering.figures import CAPTION_PX


@pytest.fixture(scope="module")
def pristine_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("pristine") / "models", 48)


@pytest.fixture
def models(pristine_models: Path, tmp_path: Path) -> Path:
    """A copy of the 48 px models for one test to change: copying is faster than building them again."""
    return Path(shutil.copytree(pristine_models, tmp_path / "models"))


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
    return frames


def gif_durations(path: Path) -> list[int]:
    with Image.open(path) as gif:
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    return durations


@pytest.mark.parametrize(("image_size", "face_px_param", "face_px"), [(48, 96, 96), (64, 144, 192)])
def test_pictures_have_the_grid_geometry_and_are_deterministic(
    tmp_path: Path, image_size: int, face_px_param: int, face_px: int
) -> None:
    """Faces are upscaled by a whole factor to at least render.face_px: 144 px from 64 takes 3x."""
    models = write_models(tmp_path / "models", image_size)
    params = write_params(tmp_path / "params.yaml", grid=3, rows=2, steps=4,
                          extra=f"  face_px: {face_px_param}\n")

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
    with Image.open(tmp_path / "first" / "interpolation.gif") as gif:
        assert gif.size == (grid_px(2, face_px), grid_px(1, face_px))  # the rows side by side
        assert gif.n_frames == 2 * 4 - 2  # there and back, the turning points once
    with Image.open(tmp_path / "first" / "timelapse.gif") as gif:
        logged = grid_px(4, image_size)  # the grids as training logged them, under their epoch
        assert gif.size == (logged, logged + CAPTION_PX)
        assert gif.n_frames == len(GRID_EPOCHS)
    assert sorted(path.name for path in (tmp_path / "first").iterdir()) == sorted(RENDER_OUTPUTS)


def test_seed_and_temperature_change_only_the_generated_pictures(tmp_path: Path, models: Path) -> None:
    params = write_params(tmp_path / "params.yaml")
    before = render(params, models, tmp_path / "before")
    params.write_text(params.read_text().replace("seed: 3", "seed: 4"))
    reseeded = render(params, models, tmp_path / "reseeded")
    params.write_text(params.read_text().replace("seed: 4", "seed: 3") + "  temperature: 0.5\n")
    cooler = render(params, models, tmp_path / "cooler")
    for changed in (reseeded, cooler):
        for name in ("samples.png", "interpolation.png", "interpolation.gif"):
            assert changed[name] != before[name]
        for name in ("timelapse.gif", "losses.png"):
            assert changed[name] == before[name]


def test_interpolation_gif_walks_every_row_there_and_back(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render(write_params(tmp_path / "params.yaml", rows=3, steps=5), models, tmp_path / "reports")
    assert "render: 100%" in capsys.readouterr().err  # the progress bar, to its end
    frames = gif_frames(tmp_path / "reports" / "interpolation.gif")
    assert len(frames) == 8
    for step in range(1, 4):  # frame 8 - k shows step k again, on the way back
        assert np.array_equal(frames[step], frames[8 - step])
    assert not np.array_equal(frames[0], frames[1])
    with Image.open(tmp_path / "reports" / "interpolation.png") as strip:
        pixels = np.asarray(strip, dtype=np.int16)

    def face(picture: np.ndarray, row: int, column: int) -> np.ndarray:
        top, left = 2 + row * 98, 2 + column * 98  # 96 px faces, 2 px apart
        return picture[top:top + 96, left:left + 96]

    for row in range(3):  # frame 0 holds the first face of every strip row, side by side
        error = np.abs(face(frames[0], 0, row) - face(pixels, row, 0)).mean()
        other = np.abs(face(frames[0], 0, row) - face(pixels, (row + 1) % 3, 0)).mean()
        assert error < 16 and error < other / 2  # only the GIF's 256-colour palette differs


def test_timelapse_shows_each_logged_grid_in_epoch_order_with_its_epoch(tmp_path: Path, models: Path) -> None:
    grids = models / SAMPLES_DIR
    for old in grids.iterdir():
        old.unlink()
    colours = {600: (200, 30, 30), 9999: (30, 200, 30), 10000: (30, 30, 200)}
    for epoch, colour in colours.items():  # 10000.png sorts before 9999.png as text
        Image.new("RGB", (402, 402), colour).save(grids / f"{epoch:04d}.png")

    render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")

    frames = gif_frames(tmp_path / "reports" / "timelapse.gif")
    assert [tuple(frame[CAPTION_PX + 400, 400]) for frame in frames] == list(colours.values())
    captions = [frame[:CAPTION_PX] for frame in frames]
    assert all(caption.max() > 200 for caption in captions)  # white text on the black strip
    assert not np.array_equal(captions[0], captions[1]) and not np.array_equal(captions[1], captions[2])
    durations = gif_durations(tmp_path / "reports" / "timelapse.gif")
    assert durations == [80, 80, FINAL_FRAME_MS]  # 12 fps in the GIF's centiseconds: 8 cs a frame


def test_missing_sample_grids_name_the_folder_and_write_nothing(tmp_path: Path, models: Path) -> None:
    for grid in (models / SAMPLES_DIR).iterdir():
        grid.unlink()
    with pytest.raises(PipelineError, match=r"samples: no per-epoch sample grids; run the train stage"):
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_damaged_sample_grid_is_one_line_and_writes_nothing(tmp_path: Path, models: Path) -> None:
    (models / SAMPLES_DIR / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.raises(PipelineError, match=r"0003\.png: not a readable sample grid; rerun the train stage"):
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_missing_generator_is_one_line_and_writes_nothing(tmp_path: Path, models: Path) -> None:
    (models / "best.pt").unlink()
    with pytest.raises(PipelineError, match=r"best\.pt: generator not found.*evaluate stages"):
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_foreign_generator_file_is_rejected(tmp_path: Path, models: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, models / "best.pt")
    with pytest.raises(PipelineError, match="not a generator written by this project"):
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")


@pytest.mark.parametrize("metric", ["loss_g", "d_fake"])
def test_missing_metrics_name_the_file_and_write_nothing(tmp_path: Path, models: Path, metric: str) -> None:
    (models / METRICS_DIR / f"{metric}.tsv").unlink()
    with pytest.raises(PipelineError, match=rf"{metric}\.tsv: training metrics not found") as error:
        render(write_params(tmp_path / "params.yaml"), models, tmp_path / "reports")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "reports").exists()


def test_metric_file_without_its_column_is_rejected(tmp_path: Path, models: Path) -> None:
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


def test_conditions_grid_has_a_row_per_tag_value_and_the_report_its_accuracy(tmp_path: Path) -> None:
    config = NetConfig(ngf=8, conditions=(("hair", ("black_hair", "blonde_hair", "blue_hair")),
                                          ("eyes", ("blue_eyes", "red_eyes"))))
    models = write_models(tmp_path / "models", 48, config)
    (tmp_path / "metrics").mkdir()
    measured = {"accuracy": 0.75, "ceiling": 0.9, "of_ceiling": 0.8333, "labelled_val_faces": 7,
                "values": {"black_hair": {"accuracy": 0.5, "face_rate": 0.95, "near_copies": 0.0,
                                          "train_faces": 12}}}
    (tmp_path / "metrics" / "eval_details.json").write_text(json.dumps({"conditions": {"hair": measured}}))
    outputs = render(write_params(tmp_path / "params.yaml", grid=3), models, tmp_path / "reports")
    with Image.open(tmp_path / "reports" / "conditions.png") as grid:
        assert grid.height == grid_px(5, 96)  # 3 hair and 2 eye values, 48 px faces shown at 96
        assert grid.width > grid_px(3, 96)  # 3 columns, and the captions on the left
    page = outputs["index.html"].decode()
    assert 'id="conditions"' in page and "75.0%" in page and "83.3%" in page and "black_hair" in page

    plain = render(write_params(tmp_path / "plain.yaml", grid=3), write_models(tmp_path / "plain", 48),
                   tmp_path / "plain-reports")
    with Image.open(tmp_path / "plain-reports" / "conditions.png") as grid:
        assert grid.height == grid_px(1, 96)  # an unconditional generator: one row
    assert "no tag to ask for" in plain["index.html"].decode()
