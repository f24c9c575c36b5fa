"""Shared fixtures: the test data beside the project (../shared), found or skipped with a reason."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIME_FACE_SHARED", ROOT.parent / "shared"))


def shared_path(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{path} is missing; CI always has ../shared")
        pytest.skip(f"{path} not found (test data lives in ../shared beside the project)")
    return path


@pytest.fixture(scope="session")
def cascade_path() -> Path:
    configured = os.environ.get("LBPCASCADE_ANIMEFACE")
    return Path(configured) if configured else shared_path("lbpcascade_animeface.xml")


@pytest.fixture(scope="session")
def illustrations() -> Path:
    return shared_path("testdata/illustrations")


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    return shared_path("testdata/faces96")


@pytest.fixture
def tiny_manifest(tmp_path):
    """20 random 96 px faces (16 train, 4 val) with hair-colour tags, and their manifest."""
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
            writer.writerow([f"faces/{i}.png", f"{i * 0x0C000000:08x}" + "0" * 56, i, "", f"1girl {hair}", "",
                             96, 96, "val" if i >= 16 else "train"])
    return tmp_path / "manifest.csv"
