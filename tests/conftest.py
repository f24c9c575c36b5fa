"""Fixtures: faces cut from the demo art's drawings, the face cascade, and the opt-in real images.

The default run needs nothing beside the project: the faces are drawn by pipeline/demo/art.py
and the cascade comes through the project's own download-and-verify (or $LBPCASCADE_ANIMEFACE).
Tests marked `realdata` run on real photographs, only when ANIME_FACE_TESTDATA names a folder
with illustrations/ (40 real 1920x1080 wallpapers) and faces96/ (2,000 real 96 px face crops).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.params import PipelineError
from pipeline.demo.art import draw_artwork
from pipeline.vision.cascade import CASCADE_ENV, resolve_cascade

TESTDATA_ENV = "ANIME_FACE_TESTDATA"
REALDATA_REASON = f"set {TESTDATA_ENV} to a folder with illustrations/ and faces96/"
DEMO_FACES = 48  # enough for every test that takes faces (evaluate's manifest takes 42)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ANIME_FACE_TESTDATA the real-image tests are opt-in: left out of the run (counted as
    deselected, the header says why), not skipped, so a skip always means something went missing."""
    if os.environ.get(TESTDATA_ENV):
        return
    real = [item for item in items if item.get_closest_marker("realdata")]
    if real:
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if not item.get_closest_marker("realdata")]


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get(TESTDATA_ENV):
        return f"real-image tests (realdata): on, {TESTDATA_ENV}={os.environ[TESTDATA_ENV]}"
    return f"real-image tests (realdata): left out; {REALDATA_REASON}"


def testdata(request: pytest.FixtureRequest, name: str) -> Path:
    """A folder of the real test data; only a test marked realdata may ask for one."""
    if request.node.get_closest_marker("realdata") is None:
        pytest.fail(f"{request.node.nodeid} uses the real test images: mark it realdata", pytrace=False)
    root = Path(os.environ[TESTDATA_ENV]).expanduser()  # set: unmarked and unset tests never get here
    folder = root / name
    if not folder.is_dir():
        pytest.fail(f"{TESTDATA_ENV} is {root}, which has no {name}/ folder", pytrace=False)
    return folder


@pytest.fixture
def illustrations(request: pytest.FixtureRequest) -> Path:
    """40 real 1920x1080 wallpapers (opt-in: realdata)."""
    return testdata(request, "illustrations")


@pytest.fixture
def real_faces(request: pytest.FixtureRequest) -> Path:
    """2,000 real 96 px face crops, 00000.jpg to 01999.jpg (opt-in: realdata)."""
    return testdata(request, "faces96")


@pytest.fixture(scope="session")
def cascade_path() -> Path:
    """lbpcascade_animeface.xml: $LBPCASCADE_ANIMEFACE, else the project's download, verified and
    cached. Never skipped: offline without the variable, the tests fail with the project's error."""
    configured = os.environ.get(CASCADE_ENV)
    if configured:
        return Path(configured)
    try:
        return resolve_cascade(None)
    except PipelineError as error:
        message = str(error)
    pytest.fail(message, pytrace=False)  # outside the except: the one line, without a traceback


@pytest.fixture(scope="session")
def demo_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 face crops, 96x96 JPEGs 00000.jpg to 00047.jpg, cut from the demo art's drawings (seed 0,
    posts 0 on) at the face boxes the drawings report. Every test gets this one folder: read, never write."""
    folder = tmp_path_factory.mktemp("demo_faces")
    count, post_id = 0, 0
    while count < DEMO_FACES:
        art = draw_artwork(0, post_id)
        for x, y, w, h in art.faces[:DEMO_FACES - count]:
            face = art.image.crop((x, y, x + w, y + h)).resize((96, 96), Image.Resampling.BOX)
            face.save(folder / f"{count:05d}.jpg", quality=95)
            count += 1
        post_id += 1
    return folder


@pytest.fixture
def tiny_manifest(tmp_path):
    """20 random 96 px faces (16 train, 4 val) of single-character posts with hair-colour tags (a
    label for the default tag groups where the colour is one of theirs), and their manifest."""
    rng = np.random.default_rng(0)
    (tmp_path / "faces").mkdir()
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sha256", "post_id", "source_image", "tags", "box", "width",
                         "height", "split"])
        for i in range(20):
            pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "faces" / f"{i}.png")
            hair = ("blue_hair", "red_hair", "green_hair")[i % 3]
            writer.writerow([f"faces/{i}.png", f"{i * 0x0C000000:08x}" + "0" * 56, i, "",
                             f"1girl solo {hair}", "", 96, 96, "val" if i >= 16 else "train"])
    return tmp_path / "manifest.csv"
