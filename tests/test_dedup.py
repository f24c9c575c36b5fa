import random

import pytest
from PIL import Image

from pipeline.data.curation import hash_faces, near_duplicates


def reference(phashes, distance):
    """The definition, pair by pair: near if within `distance` bits of any hash kept before it."""
    kept, near = [], []
    for value in phashes:
        is_near = any((value ^ other).bit_count() <= distance for other in kept)
        if not is_near:
            kept.append(value)
        near.append(is_near)
    return near


def clustered_hashes(count, seed=0):
    """64-bit hashes in clusters, as real faces give: a few bits from one of 50 centres."""
    rng = random.Random(seed)
    centres = [rng.getrandbits(64) for _ in range(50)]
    hashes = []
    for _ in range(count):
        value = rng.choice(centres)
        for bit in rng.sample(range(64), rng.randint(0, 12)):
            value ^= 1 << bit
        hashes.append(value)
    return hashes


def test_matches_the_definition_at_every_distance():
    hashes = clustered_hashes(1500)
    assert any(value >= 1 << 63 for value in hashes)  # the top bit survives numpy's uint64
    for distance in (0, 1, 4, 8, 20, 64):
        assert near_duplicates(hashes, distance) == reference(hashes, distance), distance


def test_edge_cases():
    assert near_duplicates([], 4) == []
    assert near_duplicates([5, 5, 4], 0) == [False, True, False]
    assert near_duplicates([0, (1 << 64) - 1], 63) == [False, False]
    assert near_duplicates([0, (1 << 64) - 1], 64) == [False, True]


def test_drawn_faces_and_their_recompressed_copies(tmp_path, demo_faces):
    """A JPEG re-encoding (quality 60) of a face cut from the demo art is within 4 bits of it."""
    originals = sorted(demo_faces.glob("*.jpg"))
    copies = []
    for path in originals[::4]:
        with Image.open(path) as image:
            image.save(tmp_path / path.name, quality=60)
        copies.append(tmp_path / path.name)
    hashes = [phash for _, phash in hash_faces([*originals, *copies])]
    assert len(hashes) == len(originals) + len(copies)
    near = near_duplicates(hashes, 4)
    assert all(near[len(originals):])
    assert near == reference(hashes, 4)


@pytest.mark.realdata
def test_real_faces_and_their_recompressed_copies(tmp_path, real_faces):
    """Of the 2,000 real faces in faces96/, 00491 and 01548 are near copies (2 bits) of 00363 and
    00880; a JPEG re-encoding (quality 60) of any face is within 4 bits of it."""
    originals = sorted(real_faces.glob("*.jpg"))
    copies = []
    for path in originals[::20]:
        with Image.open(path) as image:
            image.save(tmp_path / path.name, quality=60)
        copies.append(tmp_path / path.name)
    hashes = [phash for _, phash in hash_faces([*originals, *copies])]
    near = near_duplicates(hashes, 4)
    flagged = [path.name for path, is_near in zip(originals, near[:len(originals)], strict=True) if is_near]
    assert flagged == ["00491.jpg", "01548.jpg"]
    assert all(near[len(originals):])
