"""Shared fixtures: the test data beside the project (../shared), found or skipped with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
