"""Labelled demo faces: reproducible, truly of the colours they are labelled with, and framed as the
crop stage frames a detected face, so a colour judge trained on them judges real crops fairly."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.demo import art as demo_art
from pipeline.demo.art import EYE_COLOURS, HAIR_COLOURS, Colour, draw_labelled_faces
from pipeline.vision.cropping import cut, grow_box

SIZE, MARGIN = 96, 0.25


@pytest.fixture(scope="module")
def labelled() -> tuple[np.ndarray, list[tuple[str, ...]]]:
    return draw_labelled_faces(0, 300, SIZE, MARGIN)


def test_shape_and_dtype() -> None:
    for size, margin in ((96, 0.25), (48, 0.1), (128, 0.4)):
        faces, tags = draw_labelled_faces(1, 5, size, margin)
        assert (faces.shape, faces.dtype) == ((5, size, size, 3), np.uint8)
        assert len(tags) == 5
    faces, tags = draw_labelled_faces(1, 0, 96, 0.25)
    assert faces.shape == (0, 96, 96, 3) and tags == []


def test_same_arguments_draw_the_same_faces_and_tags() -> None:
    first, second = draw_labelled_faces(7, 6, SIZE, MARGIN), draw_labelled_faces(7, 6, SIZE, MARGIN)
    assert first[0].tobytes() == second[0].tobytes()
    assert first[1] == second[1]
    # each face has its own generator: asking for fewer faces gives the first ones unchanged
    fewer = draw_labelled_faces(7, 3, SIZE, MARGIN)
    assert fewer[0].tobytes() == first[0][:3].tobytes() and fewer[1] == first[1][:3]


def test_other_seeds_and_faces_differ() -> None:
    faces, _ = draw_labelled_faces(7, 6, SIZE, MARGIN)
    others, _ = draw_labelled_faces(8, 6, SIZE, MARGIN)
    assert all(not np.array_equal(a, b) for a, b in zip(faces, others, strict=True))
    assert len({face.tobytes() for face in faces}) == len(faces)


def test_tags_name_one_hair_and_one_eye_colour_and_cover_every_colour(labelled) -> None:
    _, tags = labelled
    for face_tags in tags:
        hair, eyes = face_tags
        assert hair.removesuffix("_hair") in HAIR_COLOURS and hair.endswith("_hair")
        assert eyes.removesuffix("_eyes") in EYE_COLOURS and eyes.endswith("_eyes")
    counts = Counter(tag for face_tags in tags for tag in face_tags)
    assert {f"{hair}_hair" for hair in HAIR_COLOURS} <= set(counts)
    assert {f"{eyes}_eyes" for eyes in EYE_COLOURS} <= set(counts)
    assert min(counts.values()) >= 20  # no colour is rare: 300 faces, 6 hair and 4 eye colours


def nearest(colour: np.ndarray, palette: dict[str, Colour]) -> str:
    return min(palette, key=lambda name: float(np.sum((colour - np.array(palette[name])) ** 2)))


def hair_guess(face: np.ndarray) -> str:
    """The palette hair colour nearest the median of the bangs: at margin 0.25 the fringe fills
    the middle of the crop's upper quarter, whatever the tilt."""
    h, w = face.shape[:2]
    band = face[round(0.12 * h):round(0.26 * h), round(0.38 * w):round(0.62 * w)]
    return nearest(np.median(band.reshape(-1, 3), axis=0), HAIR_COLOURS)


def eye_guess(face: np.ndarray) -> str:
    """The eye colour most pixels of both irises are nearest to: each eye sits 0.11 of the crop
    left and right of the middle and 0.44 down, at margin 0.25."""
    h, w = face.shape[:2]
    votes: Counter[str] = Counter()
    palette = np.array(list(EYE_COLOURS.values()), np.float32)
    for x in (0.5 - 0.11, 0.5 + 0.11):
        cx, cy = round(x * w), round(0.45 * h)
        patch = face[cy - 3:cy + 4, cx - 2:cx + 3].reshape(-1, 1, 3).astype(np.float32)
        distance = np.sqrt(((patch - palette) ** 2).sum(axis=2))
        close = distance.min(axis=1) < 90  # iris pixels, not white, pupil or skin
        votes.update(np.array(list(EYE_COLOURS))[distance.argmin(axis=1)[close]].tolist())
    return votes.most_common(1)[0][0] if votes else ""


def test_the_labelled_colours_are_the_drawn_ones(labelled) -> None:
    faces, tags = labelled
    hairs = [hair_guess(face) for face in faces]
    eyes = [eye_guess(face) for face in faces]
    hair_right = np.mean([f"{guess}_hair" == t[0] for guess, t in zip(hairs, tags, strict=True)])
    eyes_right = np.mean([f"{guess}_eyes" == t[1] for guess, t in zip(eyes, tags, strict=True)])
    assert hair_right >= 0.95, hair_right
    assert eyes_right >= 0.95, eyes_right
    # the same guesses against labels of other faces are mostly wrong: the check can fail
    shuffled = tags[1:] + tags[:1]
    assert np.mean([f"{g}_hair" == t[0] for g, t in zip(hairs, shuffled, strict=True)]) < 0.5
    assert np.mean([f"{g}_eyes" == t[1] for g, t in zip(eyes, shuffled, strict=True)]) < 0.5


def white_scene(rng: random.Random, width: int, height: int,
                characters: object) -> tuple[Image.Image, set[str]]:
    size = (width * demo_art.SUPERSAMPLE, height * demo_art.SUPERSAMPLE)
    return Image.new("RGB", size, (255, 255, 255)), set()


def cropped_by_the_crop_stage(character: demo_art._Character, at: tuple[int, int], size: int,
                              margin: float, nudge: tuple[int, int] = (0, 0)) -> np.ndarray:
    """`character` drawn at `at` in a white 640x480 picture, as draw_artwork draws it, then cut out
    by the crop stage's own functions (grow_box, cut, crop_image's area-down, bicubic-up resize);
    `nudge` moves the crop box by whole pixels."""
    _, _, side, _ = character.box
    placed = dataclasses.replace(character, box=(*at, side, side))
    width, height = 640, 480
    canvas = Image.new("RGB", (width * demo_art.SUPERSAMPLE, height * demo_art.SUPERSAMPLE),
                       (255, 255, 255))
    demo_art._draw_character(demo_art._pen_for(ImageDraw.Draw(canvas), placed), placed)
    picture = np.asarray(canvas.resize((width, height), Image.Resampling.BILINEAR))
    x, y, w, h = grow_box(placed.box, margin)
    interpolation = cv2.INTER_AREA if w >= size else cv2.INTER_CUBIC
    return cv2.resize(cut(picture, (x + nudge[0], y + nudge[1], w, h)), (size, size),
                      interpolation=interpolation)


def same_crop(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal but for rare rounding at polygon edges: a frame one pixel off differs by several
    levels on average, with a fifth of its pixels off by more than 8."""
    difference = np.abs(a.astype(int) - b.astype(int))
    return bool(difference.mean() < 0.1 and np.mean(difference > 8) < 0.002)


@pytest.mark.parametrize(("size", "margin"), [(96, 0.25), (200, 0.25), (64, 0.4)])
def test_faces_are_framed_as_the_crop_stage_frames_them(monkeypatch, size, margin) -> None:
    """The same character, drawn in a whole picture and cut out by the crop stage, gives the same
    crop: same box growth, same cut, same resize (downscaling at 96 px, upscaling at 200 px)."""
    monkeypatch.setattr(demo_art, "_draw_scene", white_scene)
    for k in range(4):
        face, character = demo_art._labelled_face(random.Random(f"framing:{k}"), size, margin)
        at = (200 + 7 * k, 120 + 3 * k)
        assert same_crop(face, cropped_by_the_crop_stage(character, at, size, margin)), k


@pytest.mark.parametrize("nudge", [(1, 0), (0, 1), (-1, 0)])
def test_a_frame_one_pixel_off_fails_the_framing_check(monkeypatch, nudge) -> None:
    monkeypatch.setattr(demo_art, "_draw_scene", white_scene)
    face, character = demo_art._labelled_face(random.Random("framing:0"), SIZE, MARGIN)
    nudged = cropped_by_the_crop_stage(character, (200, 120), SIZE, MARGIN, nudge)
    assert not same_crop(face, nudged)
