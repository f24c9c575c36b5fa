"""Deterministic anime-style illustrations for the embedded demo booru.

The demo booru lets the whole pipeline (scrape -> crop faces -> train -> render) run offline and
in CI, but no image data may live in the repository, so its posts are drawn here from a seed.
The faces are drawn the way lbpcascade_animeface expects anime faces to look (dark outlines,
large eyes with catchlights, bangs over the forehead), so the crop stage really finds them, and
every artwork carries booru-style tags and the ground-truth face boxes, so tests can check the
crop stage against what was drawn.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Colour = tuple[int, int, int]
Point = tuple[float, float]
Box = tuple[int, int, int, int]

SUPERSAMPLE = 2  # drawn at 2x and smoothed down: the detector finds soft outlines best
MIN_FACE = 70  # px; well above the 48-px minimum size the crop stage's detector looks for
MAX_FACE_SHARE = 0.45  # of the image height
COLUMN = 1.6  # widths of its face a character's hair, arms and twintails take up
HEAD_HEIGHT = 1.35  # face sizes from the top of a character's hair down to her shoulders
MAX_TILT_DEG = 10.0  # the cascade was trained on upright faces
LABELLED_FACE_LARGEST = 1.6  # labelled faces: MIN_FACE up to this many times it, as most posts
# lbpcascade_animeface frames a drawn head this much larger than the head's unit and this far
# (in units) below its middle; the reported box is that frame, which is what the crop stage cuts.
DETECTOR_FRAME_SCALE = 1.2
DETECTOR_FRAME_SHIFT = 0.21

# Six hair and four eye colours, far apart in hue and lightness, and most posts of one character
# (whose faces are the ones labelled with their colours): enough labelled faces per colour in a
# default run to learn and to measure tag-conditional generation.
HAIR_COLOURS: dict[str, Colour] = {
    "black": (38, 34, 44),
    "brown": (112, 70, 42),
    "blonde": (242, 212, 120),
    "red": (196, 40, 44),
    "pink": (246, 150, 186),
    "blue": (58, 94, 196),
}
EYE_COLOURS: dict[str, Colour] = {
    "blue": (40, 90, 210),
    "green": (36, 150, 70),
    "red": (200, 30, 40),
    "yellow": (226, 180, 30),
}
SKIN_TONES: tuple[Colour, ...] = (
    (255, 232, 216), (252, 224, 204), (250, 218, 196), (244, 206, 180), (236, 194, 164),
)
CLOTHES: tuple[Colour, ...] = (
    (40, 50, 90), (250, 250, 250), (180, 40, 60), (60, 110, 80), (230, 200, 90),
    (120, 90, 160), (70, 70, 76), (240, 170, 190),
)
BOW_COLOURS: tuple[Colour, ...] = ((214, 40, 60), (250, 250, 250), (70, 100, 210), (250, 170, 200))
OUTLINE: Colour = (60, 34, 34)
LASH: Colour = (30, 20, 24)
SAILOR_WHITE: Colour = (248, 248, 250)
SAILOR_NAVY: Colour = (40, 50, 96)
HAIRSTYLES: dict[str, tuple[str, ...]] = {
    "long": ("long_hair",), "short": ("short_hair",), "twintails": ("twintails", "long_hair"),
}
MOUTHS: dict[str, tuple[str, ...]] = {"smile": ("smile",), "open": ("open_mouth",), "small": ()}
COUNT_TAGS: dict[int, tuple[str, ...]] = {
    1: ("1girl", "solo"), 2: ("2girls", "multiple_girls"), 3: ("3girls", "multiple_girls"),
    4: ("4girls", "multiple_girls"), 5: ("5girls", "multiple_girls"),
}


@dataclass(frozen=True)
class Artwork:
    """One demo post: the picture, its tags, and where the drawn faces are."""

    image: Image.Image
    tags: tuple[str, ...]
    faces: tuple[Box, ...]


@dataclass(frozen=True)
class _Character:
    """Everything random about one character, chosen before any drawing."""

    box: Box
    tilt: float
    hair: str
    eyes: str
    skin: Colour
    clothes: Colour
    hairstyle: str  # one of HAIRSTYLES
    fringe: tuple[float, ...]  # how far down each strand of the bangs hangs
    fringe_sweep: float  # how far the strands' tips are swept to one side, in strand widths
    face_width: float
    eye_size: float
    mouth: str  # one of MOUTHS
    blush: bool
    bow: Colour | None
    sailor_uniform: bool
    catchlight_side: int  # -1 or 1: where the light comes from


@dataclass(frozen=True)
class _Pen:
    """Draws shapes given in a head's local coordinates onto the supersampled canvas.

    Local coordinates make one head drawing serve every size, place and tilt: the unit is the
    head's size, (0, 0) the middle of the face, v grows downwards.
    """

    draw: ImageDraw.ImageDraw
    cx: float
    cy: float
    unit: float
    angle: float

    @property
    def stroke(self) -> int:
        return max(1, round(0.012 * self.unit))

    def place(self, points: Sequence[Point]) -> list[Point]:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return [(self.cx + self.unit * (u * cos - v * sin),
                 self.cy + self.unit * (u * sin + v * cos)) for u, v in points]

    def fill(self, points: Sequence[Point], colour: Colour, outline: Colour | None = None) -> None:
        self.draw.polygon(self.place(points), fill=colour, outline=outline,
                          width=self.stroke if outline else 0)

    def line(self, points: Sequence[Point], colour: Colour, weight: float = 1.0) -> None:
        self.draw.line(self.place(points), fill=colour, width=max(1, round(weight * self.stroke)),
                       joint="curve")


def draw_artwork(seed: int, post_id: int, width: int = 640, height: int = 480) -> Artwork:
    """Draw post `post_id` of the demo booru seeded with `seed`; same arguments, same pixels."""
    rng = random.Random(f"{seed}:{post_id}")
    characters = _place_characters(rng, width, height)
    canvas, scene_tags = _draw_scene(rng, width, height, characters)
    draw = ImageDraw.Draw(canvas)
    for character in characters:
        _draw_character(_pen_for(draw, character), character)
    image = canvas.resize((width, height), Image.Resampling.BILINEAR)
    tags = _character_tags(characters) | scene_tags
    return Artwork(image, tuple(sorted(tags)), tuple(c.box for c in characters))


def draw_labelled_faces(seed: int, count: int, size: int,
                        margin: float) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """`count` face crops (count, size, size, 3) uint8 RGB, one demo character each, and each
    face's colour tags, e.g. ("blonde_hair", "blue_eyes"); same arguments, same pixels.

    A judge of hair and eye colour needs many faces whose colours are known exactly: these are
    drawn by the posts' own code (characters, scenes, supersampling) and framed as the crop stage
    frames a detected face (its box grown by `margin` on each side, resized to `size`), so they
    look like the crops the pipeline trains on. Each face is drawn on a small canvas around its
    crop box only, not in a whole post, which keeps thousands of faces to seconds.
    """
    faces = np.empty((count, size, size, 3), np.uint8)
    tags: list[tuple[str, ...]] = []
    for i in range(count):
        faces[i], character = _labelled_face(random.Random(f"{seed}:face:{i}"), size, margin)
        tags.append(_colour_tags(character))
    return faces, tags


def _labelled_face(rng: random.Random, size: int, margin: float) -> tuple[np.ndarray, _Character]:
    """One random character on a scene background, cut out as the crop stage cuts a face."""
    import cv2  # only here: the demo booru itself draws with Pillow alone

    side = int(rng.uniform(MIN_FACE, LABELLED_FACE_LARGEST * MIN_FACE))
    # The crop stage's grow_box: margin * side more on every side, the same round() half-way rule.
    grow = round(margin * side)
    crop = side + 2 * grow
    # One spare pixel around the crop box, so the downscale smooths its edge pixels from real
    # neighbours, as in a whole post, and the crop needs no padding.
    spare = 1
    canvas_side = crop + 2 * spare
    character = _random_character(rng, (spare + grow, spare + grow, side, side))
    canvas, _ = _draw_scene(rng, canvas_side, canvas_side, [character])
    _draw_character(_pen_for(ImageDraw.Draw(canvas), character), character)
    image = np.asarray(canvas.resize((canvas_side, canvas_side), Image.Resampling.BILINEAR))
    face = image[spare:spare + crop, spare:spare + crop]
    # The crop stage's resize: area averaging down, bicubic up.
    interpolation = cv2.INTER_AREA if crop >= size else cv2.INTER_CUBIC
    return cv2.resize(face, (size, size), interpolation=interpolation), character


# --- characters: who stands where -------------------------------------------------------------


def _character_count(rng: random.Random) -> int:
    return rng.choices([0, 1, 2, 3, 4, 5], weights=[6, 62, 16, 9, 5, 2])[0]


def _place_characters(rng: random.Random, width: int, height: int) -> list[_Character]:
    """Line characters up side by side, at random sizes and spacing, so none hides a face."""
    count = _character_count(rng) if height >= HEAD_HEIGHT * MIN_FACE else 0
    count = min(count, int(width // (COLUMN * MIN_FACE)))
    largest = max(MIN_FACE, min(MAX_FACE_SHARE * height, width / max(1, count * COLUMN)))
    sizes = [int(rng.uniform(MIN_FACE, largest)) for _ in range(count)]
    gaps = sorted(rng.uniform(0, width - COLUMN * sum(sizes)) for _ in range(count))
    characters, used = [], 0.0
    for size, gap in zip(sizes, gaps, strict=True):
        x = round(gap + used + (COLUMN - 1) / 2 * size)
        characters.append(_random_character(rng, (x, _face_top(rng, size, height), size, size)))
        used += COLUMN * size
    return characters


def _face_top(rng: random.Random, size: int, height: int) -> int:
    """Random top edge for a face box of `size`.

    The whole head stays inside the image (hair and bows reach a quarter of a face above the
    box), and the feet (about 4.6 face sizes below the box top) stand below the horizon, so
    small, far-away characters do not float in the sky.
    """
    lowest = round(height - 1.1 * size)
    highest = min(lowest, max(round(0.25 * size), round(0.92 * height - 4.6 * size)))
    return rng.randint(highest, lowest)


def _random_character(rng: random.Random, box: Box) -> _Character:
    strands = rng.randint(5, 8)
    return _Character(
        box=box,
        tilt=math.radians(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG)),
        hair=rng.choice(list(HAIR_COLOURS)),
        eyes=rng.choice(list(EYE_COLOURS)),
        skin=rng.choice(SKIN_TONES),
        clothes=rng.choice(CLOTHES),
        hairstyle=rng.choice(list(HAIRSTYLES)),
        fringe=tuple(rng.uniform(-0.07, 0.03) for _ in range(strands)),
        fringe_sweep=rng.choice((0.0, rng.uniform(-0.6, 0.6))),
        face_width=rng.uniform(0.94, 1.04),
        eye_size=rng.uniform(0.92, 1.12),
        mouth=rng.choices(list(MOUTHS), weights=[2, 1, 1])[0],
        blush=rng.random() < 0.4,
        bow=rng.choice(BOW_COLOURS) if rng.random() < 0.3 else None,
        sailor_uniform=rng.random() < 0.3,
        catchlight_side=rng.choice((-1, 1)),
    )


def _character_tags(characters: Sequence[_Character]) -> set[str]:
    count = len(characters)
    if count == 0:
        return {"no_humans", "scenery"}
    tags = set(COUNT_TAGS[count])
    for c in characters:
        tags |= {*_colour_tags(c), *HAIRSTYLES[c.hairstyle], *MOUTHS[c.mouth]}
        if c.blush:
            tags.add("blush")
        if c.bow is not None:
            tags.add("hair_bow")
        if c.sailor_uniform:
            tags |= {"school_uniform", "serafuku"}
    return tags


def _colour_tags(c: _Character) -> tuple[str, str]:
    """The hair and eye colour tags of one character, as its posts are tagged."""
    return f"{c.hair}_hair", f"{c.eyes}_eyes"


# --- drawing a character ----------------------------------------------------------------------


def _pen_for(draw: ImageDraw.ImageDraw, c: _Character) -> _Pen:
    """A pen whose head drawing lands where lbpcascade_animeface frames the face: `c.box`."""
    x, y, size, _ = c.box
    unit = size / DETECTOR_FRAME_SCALE
    shift = DETECTOR_FRAME_SHIFT * unit
    cx = x + size / 2 + shift * math.sin(c.tilt)
    cy = y + size / 2 - shift * math.cos(c.tilt)
    return _Pen(draw, cx * SUPERSAMPLE, cy * SUPERSAMPLE, unit * SUPERSAMPLE, c.tilt)


def _draw_character(pen: _Pen, c: _Character) -> None:
    hair = HAIR_COLOURS[c.hair]
    _draw_back_hair(pen, c.hairstyle, hair, c.bow)
    _draw_body(pen, c.skin, c.clothes, c.sailor_uniform)
    _draw_face(pen, c.skin, c.face_width)
    fringe = _fringe_edge(c.fringe, c.fringe_sweep)
    _draw_hair_shadow(pen, c.skin, fringe)
    if c.blush:
        _draw_blush(pen, c.skin)
    for side in (-1, 1):
        _draw_eye(pen, side * 0.2 * c.face_width, c.eye_size, EYE_COLOURS[c.eyes],
                  c.catchlight_side)
    _draw_nose_and_mouth(pen, c.mouth)
    _draw_side_locks(pen, hair, c.face_width)
    _draw_bangs(pen, hair, fringe)
    if c.bow is not None and c.hairstyle != "twintails":
        _draw_bow(pen, (0.36, -0.5), c.bow)


def _ellipse(cu: float, cv: float, ru: float, rv: float, start: float = 0.0,
             end: float = 360.0, steps: int = 28) -> list[Point]:
    """Points on an ellipse arc in local coordinates (degrees, clockwise from +u)."""
    angles = np.radians(np.linspace(start, end, steps))
    return [(cu + ru * math.cos(a), cv + rv * math.sin(a)) for a in angles]


def _mirror(points: Sequence[Point]) -> list[Point]:
    return [(-u, v) for u, v in points]


def _shade(colour: Colour, factor: float) -> Colour:
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of a colour."""
    if factor <= 1:
        return (round(colour[0] * factor), round(colour[1] * factor), round(colour[2] * factor))
    return _mix(colour, (255, 255, 255), factor - 1)


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t),
            round(a[2] + (b[2] - a[2]) * t))


def _draw_back_hair(pen: _Pen, hairstyle: str, hair: Colour, bow: Colour | None) -> None:
    """Hair behind the head and shoulders; twintails hang on both sides."""
    back, outline = _shade(hair, 0.8), _shade(hair, 0.35)
    if hairstyle == "twintails":
        for side in (-1, 1):
            tail = [(0.46, -0.34), (0.72, -0.22), (0.88, 0.3), (0.84, 1.0), (0.66, 1.6),
                    (0.7, 1.0), (0.6, 0.4), (0.5, 0.0)]
            pen.fill([(side * u, v) for u, v in tail], back, outline)
            if bow is not None:
                _draw_bow(pen, (side * 0.5, -0.3), bow)
    bottom = 1.6 if hairstyle == "long" else 0.5
    crown = _ellipse(0, -0.1, 0.6, 0.56, 180, 360)
    ends = [(0.64, 0.3), (0.62, bottom), (0.5, bottom - 0.08), (0.38, bottom)]
    pen.fill(crown + ends + _mirror(ends[::-1]), back, outline)


def _draw_body(pen: _Pen, skin: Colour, clothes: Colour, sailor_uniform: bool) -> None:
    """A standing figure below the head, upright whatever the head's tilt."""
    pen = dataclasses.replace(pen, angle=0.0)
    shirt, skirt = (SAILOR_WHITE, SAILOR_NAVY) if sailor_uniform else (clothes, _shade(clothes, 0.6))
    for side in (-1, 1):
        pen.fill([(side * 0.13, 3.3), (side * 0.3, 3.3), (side * 0.27, 5.0), (side * 0.15, 5.0)],
                 skin, OUTLINE)
        pen.fill(_ellipse(side * 0.22, 5.04, 0.1, 0.06, steps=12), (90, 50, 40), OUTLINE)
    hem = [(0.42, 2.2), (0.8, 3.5), (0.4, 3.6), (0, 3.62)]
    pen.fill(hem + _mirror(hem[::-1]), skirt, OUTLINE)
    for side in (-1, 1):
        arm = [(0.5, 0.9), (0.68, 1.05), (0.72, 2.2), (0.56, 2.24), (0.5, 1.3)]
        pen.fill([(side * u, v) for u, v in arm], shirt, OUTLINE)
        pen.fill(_ellipse(side * 0.64, 2.32, 0.08, 0.09, steps=12), skin, OUTLINE)
    pen.fill([(-0.1, 0.3), (0.1, 0.3), (0.11, 0.85), (-0.11, 0.85)], _shade(skin, 0.92),
             OUTLINE)
    pen.fill([(-0.1, 0.5), (0.1, 0.5), (0.1, 0.6), (0, 0.66), (-0.1, 0.6)], _shade(skin, 0.82))
    torso = [(0.15, 0.78), (0.45, 0.86), (0.56, 1.0), (0.54, 1.5), (0.44, 2.3), (0, 2.32)]
    pen.fill(torso + _mirror(torso[::-1]), shirt, OUTLINE)
    if sailor_uniform:
        collar = [(0.15, 0.78), (0.5, 0.9), (0.58, 1.05), (0.2, 1.18), (0, 1.28)]
        pen.fill(collar + _mirror(collar[::-1]), SAILOR_NAVY, OUTLINE)
    pen.fill([(-0.15, 0.78), (0.15, 0.78), (0, 1.0)], _shade(skin, 0.92), OUTLINE)
    if sailor_uniform:
        pen.fill([(0, 1.0), (0.14, 1.3), (0, 1.22), (-0.14, 1.3)], (200, 40, 50), OUTLINE)


def _draw_face(pen: _Pen, skin: Colour, width: float) -> None:
    """Skin from the forehead down to a small pointed chin."""
    side = _ellipse(0, -0.05, 0.44 * width, 0.5, 270, 360, 10)
    jaw = [(0.43 * width, 0.14), (0.37 * width, 0.32), (0.23 * width, 0.48), (0.07, 0.56),
           (0, 0.57)]
    half = side + jaw
    pen.fill(half + _mirror(half[::-1])[1:], skin, OUTLINE)


def _draw_blush(pen: _Pen, skin: Colour) -> None:
    pink = _mix(skin, (240, 120, 130), 0.35)
    for side in (-1, 1):
        pen.fill(_ellipse(side * 0.27, 0.3, 0.08, 0.035, steps=16), pink)
        for k in range(3):
            u = side * 0.27 + (k - 1) * 0.035
            pen.line([(u + 0.012, 0.28), (u - 0.012, 0.32)], _mix(pink, (200, 60, 80), 0.5), 0.7)


def _draw_eye(pen: _Pen, cu: float, size: float, iris: Colour, catchlight_side: int) -> None:
    """A large anime eye at u = cu: white, iris, pupil, catchlights, a thick lid and lashes."""
    side = 1 if cu > 0 else -1
    cv, ru, rv = 0.1, 0.11 * size, 0.13 * size
    pen.fill(_ellipse(cu, cv, ru, rv), (255, 255, 255))
    pen.fill(_ellipse(cu, cv + 0.01, 0.8 * ru, 0.95 * rv), iris, _shade(iris, 0.4))
    pen.fill(_ellipse(cu, cv - 0.04, 0.7 * ru, 0.55 * rv), _shade(iris, 0.6))
    pen.fill(_ellipse(cu, cv + 0.55 * rv, 0.5 * ru, 0.25 * rv, steps=12), _shade(iris, 1.35))
    pen.fill(_ellipse(cu, cv + 0.02, 0.34 * ru, 0.45 * rv), _shade(iris, 0.2))
    light = catchlight_side
    pen.fill(_ellipse(cu + light * 0.3 * ru, cv - 0.35 * rv, 0.26 * ru, 0.24 * rv, steps=16),
             (255, 255, 255))
    pen.fill(_ellipse(cu - light * 0.3 * ru, cv + 0.4 * rv, 0.12 * ru, 0.1 * rv, steps=12),
             (255, 255, 255))
    lid = [(cu + side * (u - cu), v) for u, v in _ellipse(cu, cv + 0.02, 1.12 * ru, 1.05 * rv,
                                                          200, 340, 12)]
    pen.line(lid, LASH, 3)
    outer = lid[-1]
    for du, dv in ((0.05, -0.01), (0.04, 0.03)):
        pen.line([outer, (outer[0] + side * du, outer[1] + dv)], LASH, 1.6)
    pen.line(_ellipse(cu, cv + 0.02, 1.1 * ru, 1.9 * rv, 235, 300, 8), OUTLINE)
    pen.line(_ellipse(cu, cv - 0.02, 0.75 * ru, 1.05 * rv, 65, 115, 6), OUTLINE)


def _draw_nose_and_mouth(pen: _Pen, mouth: str) -> None:
    pen.line([(0.01, 0.28), (0.025, 0.3)], OUTLINE)
    if mouth == "open":
        lips = _ellipse(0, 0.39, 0.065, 0.05, 0, 180, 12) + [(-0.065, 0.39), (0.065, 0.39)]
        pen.fill(lips, (150, 40, 50), OUTLINE)
        pen.fill(_ellipse(0, 0.425, 0.035, 0.015, steps=10), (230, 110, 120))
    elif mouth == "smile":
        pen.line(_ellipse(0, 0.37, 0.055, 0.03, 30, 150, 8), OUTLINE)
    else:
        pen.line([(-0.03, 0.4), (0.03, 0.4)], OUTLINE)


def _draw_side_locks(pen: _Pen, hair: Colour, width: float) -> None:
    lock = [(0.36, -0.25), (0.5, -0.2), (0.48, 0.3), (0.42, 0.66), (0.37, 0.3), (0.33, 0.05)]
    for side in (-1, 1):
        pen.fill([(side * u * width, v) for u, v in lock], hair, _shade(hair, 0.35))


def _fringe_edge(fringe: Sequence[float], sweep: float) -> list[Point]:
    """Lower edge of the bangs, right to left: strand tips alternating with the gaps between."""
    strands = len(fringe)
    edge: list[Point] = [(0.52, 0.12)]
    for i in range(strands - 1, -1, -1):
        middle = -0.5 + (i + 0.5) / strands
        lean = (sweep - 0.3 * middle) / strands  # tips point towards the middle, or swept aside
        edge.append((middle + lean, fringe[i]))
        edge.append((middle - 0.5 / strands, -0.18 - 0.04 * abs(middle)))
    edge.append((-0.52, 0.12))
    return edge


def _draw_hair_shadow(pen: _Pen, skin: Colour, edge: Sequence[Point]) -> None:
    """The bangs' shadow on the forehead, just below the fringe."""
    shadow = [(u, v + 0.035) for u, v in edge] + [(-0.5, -0.3), (0.5, -0.3)]
    pen.fill(shadow, _shade(skin, 0.88))


def _draw_bangs(pen: _Pen, hair: Colour, edge: Sequence[Point]) -> None:
    """Front hair: the crown, and a fringe of pointed strands hanging over the forehead."""
    crown = _ellipse(0, -0.08, 0.55, 0.52, 180, 360)
    outline = _shade(hair, 0.35)
    pen.fill(crown + edge, hair, outline)
    for u, v in edge[2:-1:2]:
        pen.line([(u, v), (u * 0.8, v - 0.14)], outline, 0.7)
    shine = _ellipse(0, -0.1, 0.4, 0.38, 210, 330, 9)
    zigzag = [(u, v + (0.04 if i % 2 else 0)) for i, (u, v) in enumerate(shine)]
    pen.line(zigzag, _shade(hair, 1.5), 2)


def _draw_bow(pen: _Pen, at: Point, colour: Colour) -> None:
    cu, cv = at
    outline = _shade(colour, 0.4)
    for side in (-1, 1):
        pen.fill([(cu, cv), (cu + side * 0.16, cv - 0.09), (cu + side * 0.16, cv + 0.09)], colour,
                 outline)
    pen.fill(_ellipse(cu, cv, 0.035, 0.035, steps=10), colour, outline)


# --- the scene behind the characters ----------------------------------------------------------


@dataclass(frozen=True)
class _Stage:
    """The supersampled canvas behind the characters, and the areas the characters will cover.

    Props (sun, moon, clouds, trees, a window) are only drawn, and tagged, where no character
    hides them, so the tags stay true to what can be seen.
    """

    rng: random.Random
    canvas: Image.Image
    covered: tuple[tuple[float, float, float, float], ...]

    @property
    def width(self) -> int:
        return self.canvas.width

    @property
    def height(self) -> int:
        return self.canvas.height

    @property
    def draw(self) -> ImageDraw.ImageDraw:
        return ImageDraw.Draw(self.canvas)

    def spot(self, w: float, h: float, top: float, bottom: float) -> Point | None:
        """Centre for a w x h prop, between top and bottom (shares of the height), in view."""
        for _ in range(12):
            x = self.rng.uniform(0, self.width)
            y = self.rng.uniform(top, bottom) * self.height
            if all(x + w / 2 <= left or x - w / 2 >= right or y + h / 2 <= upper
                   or y - h / 2 >= lower for left, upper, right, lower in self.covered):
                return x, y
        return None


def _draw_scene(rng: random.Random, width: int, height: int,
                characters: Sequence[_Character]) -> tuple[Image.Image, set[str]]:
    """Pick and draw a background; return the canvas and the tags that truly describe it."""
    covered = tuple(_covered_area(c) for c in characters)
    stage = _Stage(rng, Image.new("RGB", (width * SUPERSAMPLE, height * SUPERSAMPLE)), covered)
    scenes: list[Callable[[_Stage], set[str]]] = [_day_sky, _sunset, _night]
    if characters:
        scenes += [_indoors, _simple_background]
    return stage.canvas, rng.choice(scenes)(stage)


def _covered_area(c: _Character) -> tuple[float, float, float, float]:
    """Canvas area a character's head, hair and body can reach: down to the image bottom."""
    x, y, size, _ = c.box
    return ((x - 0.35 * size) * SUPERSAMPLE, (y - 0.35 * size) * SUPERSAMPLE,
            (x + 1.35 * size) * SUPERSAMPLE, math.inf)


def _paint_gradient(stage: _Stage, top: Colour, bottom: Colour) -> None:
    t = np.linspace(0.0, 1.0, stage.height, dtype=np.float32)[:, None, None]
    column = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    gradient = Image.fromarray(column.round().astype(np.uint8), "RGB")
    stage.canvas.paste(gradient.resize(stage.canvas.size, Image.Resampling.NEAREST))


def _disc(stage: _Stage, centre: Point, radius: float, colour: Colour) -> None:
    x, y = centre
    stage.draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def _day_sky(stage: _Stage) -> set[str]:
    rng = stage.rng
    _paint_gradient(stage, (rng.randint(40, 90), rng.randint(110, 150), 230), (200, 226, 250))
    tags = {"outdoors", "sky", "blue_sky", "day"}
    if rng.random() < 0.7 and _draw_clouds(stage):
        tags.add("cloud")
    return tags | _draw_land(stage, (96, 170, 80))


def _sunset(stage: _Stage) -> set[str]:
    _paint_gradient(stage, (120, 70, 150), (250, 170, 90))
    tags = {"outdoors", "sky", "sunset", "orange_sky"}
    radius = stage.rng.uniform(0.05, 0.09) * stage.height
    sun = stage.spot(2 * radius, 2 * radius, 0.15, 0.35)
    if sun is not None:
        _disc(stage, sun, radius, (255, 220, 140))
        tags.add("sun")
    return tags | _draw_land(stage, (70, 60, 80))


def _night(stage: _Stage) -> set[str]:
    _paint_gradient(stage, (10, 14, 40), (50, 50, 100))
    tags = {"outdoors", "sky", "night", "night_sky"}
    stars = [stage.spot(6, 6, 0, 0.7) for _ in range(stage.rng.randint(30, 70))]
    for star in stars:
        if star is not None:
            _disc(stage, star, stage.rng.uniform(1, 3), (250, 250, 220))
            tags.add("starry_sky")
    radius = stage.rng.uniform(0.04, 0.07) * stage.height
    moon = stage.spot(2 * radius, 2 * radius, 0.1, 0.3)
    if moon is not None:
        _disc(stage, moon, radius, (250, 246, 210))
        tags |= {"moon", "full_moon"}
    return tags | _draw_land(stage, (30, 40, 50))


def _indoors(stage: _Stage) -> set[str]:
    rng = stage.rng
    wall = rng.choice([(236, 226, 206), (206, 222, 236), (236, 210, 214), (220, 230, 210)])
    floor_y = rng.uniform(0.7, 0.85) * stage.height
    draw = stage.draw
    draw.rectangle((0, 0, stage.width, floor_y), fill=wall)
    draw.rectangle((0, floor_y, stage.width, stage.height), fill=(150, 110, 80))
    draw.line((0, floor_y, stage.width, floor_y), fill=(90, 60, 40), width=4)
    w, h = rng.uniform(0.2, 0.3) * stage.width, rng.uniform(0.3, 0.4) * stage.height
    half = 0.5 * h / stage.height
    window = stage.spot(w, h, 0.08 + half, 0.2 + half)
    if window is None:
        return {"indoors"}
    x, y = window[0] - w / 2, window[1] - h / 2
    frame = (240, 240, 240)
    draw.rectangle((x, y, x + w, y + h), fill=(170, 210, 245), outline=frame, width=10)
    draw.line((x + w / 2, y, x + w / 2, y + h), fill=frame, width=8)
    draw.line((x, y + h / 2, x + w, y + h / 2), fill=frame, width=8)
    return {"indoors", "window"}


def _simple_background(stage: _Stage) -> set[str]:
    rng = stage.rng
    if rng.random() < 0.4:
        _paint_gradient(stage, (255, 255, 255), (255, 255, 255))
        return {"simple_background", "white_background"}
    top = (rng.randint(150, 255), rng.randint(150, 255), rng.randint(150, 255))
    bottom = (rng.randint(150, 255), rng.randint(150, 255), rng.randint(150, 255))
    _paint_gradient(stage, top, bottom)
    return {"simple_background", "gradient_background"}


def _draw_clouds(stage: _Stage) -> bool:
    """Draw a few puffy clouds where they stay in view; False if none fit."""
    drawn = False
    for _ in range(stage.rng.randint(2, 5)):
        r = stage.rng.uniform(0.04, 0.08) * stage.height
        centre = stage.spot(5 * r, 2.6 * r, 0.08, 0.45)
        if centre is None:
            continue
        for du, dv, k in ((-1.2, 0.3, 0.8), (0, 0, 1.0), (1.2, 0.3, 0.8), (0.5, 0.4, 0.9)):
            cx, cy, rr = centre[0] + du * r, centre[1] + dv * r, k * r
            stage.draw.ellipse((cx - 1.4 * rr, cy - rr, cx + 1.4 * rr, cy + rr),
                               fill=(252, 252, 255))
        drawn = True
    return drawn


def _draw_land(stage: _Stage, green: Colour) -> set[str]:
    """Ground along the bottom, and mountains and trees; always some when nobody is drawn."""
    lush = not stage.covered
    tags = set()
    if (lush or stage.rng.random() < 0.5) and _draw_mountains(stage, _shade(green, 0.7)):
        tags.add("mountain")
    horizon = stage.rng.uniform(0.65, 0.8) * stage.height
    stage.draw.ellipse((-0.3 * stage.width, horizon, 1.3 * stage.width, horizon + stage.height),
                       fill=green)
    if (lush or stage.rng.random() < 0.5) and _draw_trees(stage, horizon, _shade(green, 0.75)):
        tags.add("tree")
    return tags


def _draw_mountains(stage: _Stage, colour: Colour) -> bool:
    drawn = False
    for _ in range(stage.rng.randint(1, 3)):
        peak = stage.spot(0.1 * stage.width, 0.1 * stage.height, 0.3, 0.5)
        if peak is None:
            continue
        half = stage.rng.uniform(0.2, 0.4) * stage.width
        foot = 0.8 * stage.height
        stage.draw.polygon([peak, (peak[0] + half, foot), (peak[0] - half, foot)], fill=colour)
        drawn = True
    return drawn


def _draw_trees(stage: _Stage, horizon: float, leaves: Colour) -> bool:
    drawn = False
    for _ in range(stage.rng.randint(1, 4)):
        r = stage.rng.uniform(0.05, 0.09) * stage.height
        share = (horizon - 1.5 * r) / stage.height
        spot = stage.spot(2 * r, 3 * r, share, share + 0.08)
        if spot is None:
            continue
        x, base = spot[0], spot[1] + 1.5 * r
        stage.draw.rectangle((x - 0.2 * r, base - 1.5 * r, x + 0.2 * r, base), fill=(100, 70, 40))
        stage.draw.ellipse((x - r, base - 3 * r, x + r, base - 1.2 * r), fill=leaves)
        drawn = True
    return drawn
