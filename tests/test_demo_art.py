"""The demo booru's drawn illustrations: reproducible, honestly tagged, and really detectable.

The crop stage's tests and the offline demo rely on lbpcascade_animeface finding the drawn
faces, so the detection test runs the reference detector settings on the drawings.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.demo.art import EYE_COLOURS, HAIR_COLOURS, Artwork, Colour, draw_artwork

COUNT_TAGS = {"1girl": 1, "2girls": 2, "3girls": 3, "4girls": 4, "5girls": 5}
POSTS = range(60)


@pytest.fixture(scope="module")
def artworks() -> list[Artwork]:
    return [draw_artwork(0, post_id) for post_id in POSTS]


def colour_tags(tags: tuple[str, ...], suffix: str, palette: dict[str, Colour]) -> set[str]:
    return {tag.removesuffix(suffix) for tag in tags
            if tag.endswith(suffix) and tag.removesuffix(suffix) in palette}


def test_same_arguments_draw_the_same_pixels_and_tags() -> None:
    first, second = draw_artwork(7, 42), draw_artwork(7, 42)
    assert first.image.tobytes() == second.image.tobytes()
    assert (first.tags, first.faces) == (second.tags, second.faces)


def test_other_posts_and_seeds_draw_other_pictures() -> None:
    base = draw_artwork(7, 42).image.tobytes()
    assert draw_artwork(7, 43).image.tobytes() != base
    assert draw_artwork(8, 42).image.tobytes() != base


def test_image_has_the_requested_size_and_faces_fit_inside() -> None:
    for width, height in ((640, 480), (320, 240), (1280, 720)):
        for post_id in range(10):
            art = draw_artwork(1, post_id, width, height)
            assert (art.image.mode, art.image.size) == ("RGB", (width, height))
            for x, y, w, h in art.faces:
                assert w == h >= 70
                assert 0 <= x and x + w <= width and 0 <= y and y + h <= height


def test_too_small_an_image_gets_no_characters() -> None:
    art = draw_artwork(0, 0, 60, 60)
    assert art.faces == ()
    assert "no_humans" in art.tags


def test_count_tags_match_the_faces(artworks: list[Artwork]) -> None:
    for art in artworks:
        counts = [n for tag, n in COUNT_TAGS.items() if tag in art.tags]
        if art.faces:
            assert counts == [len(art.faces)], art.tags
            assert ("solo" in art.tags) == (len(art.faces) == 1)
            assert ("multiple_girls" in art.tags) == (len(art.faces) > 1)
        else:
            assert counts == [] and "solo" not in art.tags and "multiple_girls" not in art.tags
        assert ("no_humans" in art.tags) == (not art.faces)


def test_some_posts_are_scenery_and_most_have_characters() -> None:
    empty = sum(not draw_artwork(3, post_id).faces for post_id in range(200))
    assert 8 <= empty <= 50


def test_most_posts_show_one_character_whose_colours_label_its_face() -> None:
    """Single-character posts are the ones whose colour tags label a face: most posts are, and
    every colour has some."""
    arts = [draw_artwork(3, post_id) for post_id in range(200)]
    solo = [art for art in arts if len(art.faces) == 1]
    assert 0.5 <= len(solo) / len(arts) <= 0.75
    for suffix, palette in (("_hair", HAIR_COLOURS), ("_eyes", EYE_COLOURS)):
        drawn = {tag for art in solo for tag in art.tags if tag.endswith(suffix)} - {"long_hair",
                                                                                     "short_hair"}
        assert drawn == {f"{colour}{suffix}" for colour in palette}


def test_colour_tags_describe_each_character(artworks: list[Artwork]) -> None:
    for art in artworks:
        assert list(art.tags) == sorted(set(art.tags))
        for suffix, palette in (("_hair", HAIR_COLOURS), ("_eyes", EYE_COLOURS)):
            colours = colour_tags(art.tags, suffix, palette)
            assert (1 <= len(colours) <= len(art.faces)) if art.faces else not colours, art.tags


def test_tagged_hair_colours_are_drawn(artworks: list[Artwork]) -> None:
    for art in artworks:
        pixels = np.asarray(art.image)
        for colour in colour_tags(art.tags, "_hair", HAIR_COLOURS):
            assert (pixels == HAIR_COLOURS[colour]).all(axis=-1).any(), (colour, art.tags)


def matches(detection: tuple[int, ...], face: tuple[int, ...]) -> bool:
    """A detection finds a face when its centre lies in the face's box, or they overlap well."""
    dx, dy, dw, dh = detection
    fx, fy, fw, fh = face
    cx, cy = dx + dw / 2, dy + dh / 2
    if fx <= cx < fx + fw and fy <= cy < fy + fh:
        return True
    overlap = (max(0, min(dx + dw, fx + fw) - max(dx, fx))
               * max(0, min(dy + dh, fy + fh) - max(dy, fy)))
    return overlap / (dw * dh + fw * fh - overlap) > 0.3


def test_lbpcascade_animeface_finds_the_drawn_faces(artworks: list[Artwork], cascade_path: Path) -> None:
    cascade = cv2.CascadeClassifier(str(cascade_path))
    assert not cascade.empty()
    faces = found = detections = strays = 0
    for art in artworks:
        bgr = cv2.cvtColor(np.asarray(art.image), cv2.COLOR_RGB2BGR)
        gray = cv2.equalizeHist(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        boxes = [tuple(int(v) for v in box) for box in
                 cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                          minSize=(48, 48))]
        faces += len(art.faces)
        found += sum(any(matches(box, face) for box in boxes) for face in art.faces)
        detections += len(boxes)
        strays += sum(not any(matches(box, face) for face in art.faces) for box in boxes)
    assert faces >= 60
    assert found / faces >= 0.6, f"detected {found} of {faces} drawn faces"
    assert strays <= 0.15 * detections, f"{strays} of {detections} detections hit no drawn face"
