"""Images already on disk, for `scrape.source: local`: a folder, a zip or a tar (a face set, say).

Members are only read, never extracted, and the collection names them by content, so an archive
cannot write outside data/raw; names that would be unsafe to extract (absolute, with `..`) are
refused all the same, since an archive holding them was not made for this.

A folder's links are followed only where they stay inside it: `0.txt -> ~/.aws/credentials` would
put a secret into the tags, and from there into the manifest and the report. A link that leads out
is refused, as an archive's links all are.

An image's tags come from where dataset tools put them (pipeline/sources/sidecars.py): sidecar files
beside it (`x.txt`, `x.json` for `x.png`, and gallery-dl's `x.png.json`) and, as in an ImageFolder
tree, the name of the folder it lies in. A sidecar is refused where an image would be, and read with a bound.

Hostile files never stop the run: a member whose data cannot be decompressed is reported with its
reason, and an archive damaged midway keeps what was read before the damage; a bad sidecar costs
its image only those tags.
"""

from __future__ import annotations

import logging
import lzma
import stat
import sys
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TypeVar

from pipeline.core.params import PipelineError
from pipeline.sources.sidecars import (
    SIDECAR_MAX_BYTES,
    Sidecar,
    bounded_tags,
    folder_tags,
    image_keys,
    read_sidecar,
    shared_root,
    sidecar_stem,
    top_folder,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")
# What reading a damaged member raises: zipfile and tarfile pass on their decompressors' own
# errors (zlib, lzma, bz2), unsupported methods, truncation (EOFError) and bad CRCs or headers.
READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, RuntimeError, OSError, EOFError,
               NotImplementedError, zlib.error, lzma.LZMAError)
LINK_OUT = "a link out of the folder; refused"
NOT_A_FILE = "a link or device, not a file; refused"
# The tags of a tar's sidecars are held while its images are read (_tar_sidecars): this many bytes
# of memory in all, about 450,000 sidecars of 30 tags each. A tag is held once however many
# sidecars name it; past the limit the rest of the tar's sidecars are refused
TAR_SIDECARS_MAX_BYTES = 256 << 20
SIDECAR_RECORD_BYTES = 200  # a held sidecar's record and its place in the lists, beside its tags
TAG_ENTRY_BYTES = 48  # a held tag's place in the table that shares it

log = logging.getLogger("pipeline.scrape")
Found = TypeVar("Found")  # what a source lists a sidecar as: a path, a zip entry, a read Sidecar


@dataclass(frozen=True)
class Member:
    """One image file of the source: its bytes and tags, or why it was refused."""
    name: str  # its path inside the folder or archive
    data: bytes | None = None
    problem: str | None = None
    tags: tuple[str, ...] = ()  # sorted, from its sidecars and its folder
    bad_sidecars: tuple[str, ...] = ()  # "<sidecar>: <why its tags are not used>"


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def unsafe_name(name: str) -> bool:
    """Absolute, drive-lettered or climbing out with `..`, in either slash style."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or ":" in (path.parts[0] if path.parts else "")


def sidecars_of(name: str, sidecars: Mapping[str, list[Found]]) -> list[Found]:
    """An image's sidecars, listed by the key their names pair them with (sidecars.sidecar_stem):
    those named after its stem (`x.txt`) and those named after it in full (`x.png.json`)."""
    return [sidecar for key in image_keys(name) for sidecar in sidecars.get(key, [])]


def labelled(name: str, data: bytes, sidecars: Iterable[Sidecar], root: str | None = None) -> Member:
    """The image with its folder's and its sidecars' tags (in name order), each once and bounded
    as a face's are (sidecars.bounded_tags); one warning says what was dropped."""
    sidecars = sorted(sidecars, key=lambda sidecar: sidecar.name)
    read = [*folder_tags(name, root), *(tag for sidecar in sidecars for tag in sidecar.tags)]
    tags, dropped = bounded_tags(read)
    _warn_dropped(name, [*dropped, *(pair for sidecar in sidecars for pair in sidecar.dropped)])
    bad = tuple(f"{s.name}: {s.problem}" for s in sidecars if s.problem is not None)
    return Member(name, data, tags=tuple(sorted(tags)), bad_sidecars=bad)


def _warn_dropped(name: str, dropped: Iterable[tuple[str, int]]) -> None:
    totals: Counter[str] = Counter()
    for why, count in dropped:
        totals[why] += count
    for why, count in totals.items():
        log.warning("%s: dropped %d tag(s) %s", name, count, why)


def local_images(source: Path, max_bytes: int) -> Iterator[Member]:
    """Every image file of a folder (recursively) or zip in name order, of a tar in its own order.
    An archive unreadable from its start stops the stage; a member that cannot be read is reported
    and the rest goes on."""
    if source.is_dir():
        yield from _folder_members(source, max_bytes)
        return
    if not source.is_file():
        raise PipelineError(f"scrape.local_path: {source} not found")
    try:
        if zipfile.is_zipfile(source):
            yield from _zip_members(source, max_bytes)
        elif tarfile.is_tarfile(source):
            yield from _tar_members(source, max_bytes)
        else:
            raise PipelineError(f"scrape.local_path: {source} is not a folder, zip or tar of images")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise PipelineError(f"scrape.local_path: {source} is a broken archive ({exc})") from exc


def _too_large(name: str, size: int, max_bytes: int) -> Member | None:
    if size > max_bytes:
        return Member(name, problem=f"{size} bytes, over the scrape.max_bytes limit of {max_bytes}")
    return None


def _folder_members(folder: Path, max_bytes: int) -> Iterator[Member]:
    """Regular files only (is_file): a FIFO or a device named like an image or a sidecar is never
    opened. A link is followed only to a file inside the folder (_link_out); a linked folder is
    not searched."""
    root = folder.resolve()
    files = sorted(p for p in folder.rglob("*")
                   if (is_image_name(p.name) or sidecar_stem(p.name)) and p.is_file())
    sidecars: dict[str, list[Path]] = {}
    for path in files:
        if (stem := sidecar_stem(path.relative_to(folder).as_posix())) is not None:
            sidecars.setdefault(stem, []).append(path)
    for path in files:
        if not is_image_name(path.name):
            continue
        name = path.relative_to(folder).as_posix()
        if (refusal := _link_out(path, root)) is not None:
            yield Member(name, problem=refusal)
            continue
        try:
            with path.open("rb") as handle:  # read with a bound: the file may grow after listing
                data = handle.read(max_bytes + 1)
        except OSError as exc:  # no permission, vanished, an I/O error
            yield Member(name, problem=f"unreadable ({_reason(exc)})")
            continue
        if too_large := _too_large(name, len(data), max_bytes):
            yield too_large
            continue
        found = [_folder_sidecar(p, p.relative_to(folder).as_posix(), root)
                 for p in sidecars_of(name, sidecars)]
        yield labelled(name, data, found)


def _link_out(path: Path, root: Path) -> str | None:
    """Why a file of the folder is refused for where it leads: through a link, to a file outside
    the folder (its resolved root); None for a file inside, linked or not."""
    try:
        inside = path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError) as exc:  # vanished since the listing, a loop of links
        return f"unreadable ({_reason(exc)})"
    return None if inside else LINK_OUT


def _folder_sidecar(path: Path, name: str, root: Path) -> Sidecar:
    if (refusal := _link_out(path, root)) is not None:
        return Sidecar(name, problem=refusal)
    try:
        with path.open("rb") as handle:
            return read_sidecar(name, handle.read(SIDECAR_MAX_BYTES + 1))
    except OSError as exc:
        return Sidecar(name, problem=f"unreadable ({_reason(exc)})")


def _refusal(name: str, regular: bool = True) -> str | None:
    """Why an archive member is not read at all, judged on its header; None if it is read."""
    if unsafe_name(name):
        return "unsafe name in the archive; refused"
    if not regular:
        return NOT_A_FILE
    return None


def _refused(name: str, declared_size: int, max_bytes: int, regular: bool = True) -> Member | None:
    """Why an archive image is not read at all, judged before a byte of it is read; None if it is."""
    if (problem := _refusal(name, regular)) is not None:
        return Member(name, problem=problem)
    return _too_large(name, declared_size, max_bytes)


def _sidecar_refused(name: str, declared_size: int, regular: bool = True) -> Sidecar | None:
    if (problem := _refusal(name, regular)) is not None:
        return Sidecar(name, problem=problem)
    if declared_size > SIDECAR_MAX_BYTES:
        return Sidecar(name, problem=f"{declared_size} bytes, over the {SIDECAR_MAX_BYTES}-byte "
                                     "limit of a sidecar")
    return None


def _zip_regular(info: zipfile.ZipInfo) -> bool:
    """Whether a zip member is a file: a zip made on Unix may store a link (`zip --symlinks`),
    whose data is the path it points at. Zips made elsewhere leave the file type out."""
    return stat.S_IFMT(info.external_attr >> 16) in (0, stat.S_IFREG)


def _zip_members(archive: Path, max_bytes: int) -> Iterator[Member]:
    with zipfile.ZipFile(archive) as zipped:
        infos = sorted((i for i in zipped.infolist() if not i.is_dir()), key=lambda i: i.filename)
        images = [info for info in infos if is_image_name(info.filename)]
        sidecars: dict[str, list[zipfile.ZipInfo]] = {}
        for info in infos:
            if (stem := sidecar_stem(info.filename)) is not None:
                sidecars.setdefault(stem, []).append(info)
        root = shared_root({top_folder(i.filename) for i in images if not unsafe_name(i.filename)})
        for info in images:
            if refused := _refused(info.filename, info.file_size, max_bytes, _zip_regular(info)):
                yield refused
                continue
            try:
                with zipped.open(info) as handle:  # the declared size may lie: read with a bound
                    data = handle.read(max_bytes + 1)
            except READ_ERRORS as exc:  # bad CRC, encrypted, a corrupt compressed stream
                yield Member(info.filename, problem=f"unreadable in the archive ({_reason(exc)})")
                continue
            if too_large := _too_large(info.filename, len(data), max_bytes):
                yield too_large
                continue
            found = [_zip_sidecar(zipped, s) for s in sidecars_of(info.filename, sidecars)]
            yield labelled(info.filename, data, found, root)


def _zip_sidecar(zipped: zipfile.ZipFile, info: zipfile.ZipInfo) -> Sidecar:
    if refused := _sidecar_refused(info.filename, info.file_size, _zip_regular(info)):
        return refused
    try:
        with zipped.open(info) as handle:  # the declared size may lie: read with a bound
            return read_sidecar(info.filename, handle.read(SIDECAR_MAX_BYTES + 1))
    except READ_ERRORS as exc:
        return Sidecar(info.filename, problem=f"unreadable in the archive ({_reason(exc)})")


def _reason(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


class HeldSidecars:
    """A tar's sidecars by image key (sidecar_stem), their tags held up to TAR_SIDECARS_MAX_BYTES
    in all: a tag is held once however many sidecars name it, and past the limit each later
    sidecar is refused (its image is imported without its tags, the sidecar counted)."""

    def __init__(self) -> None:
        self.by_stem: dict[str, list[Sidecar]] = {}
        self.shared: dict[str, str] = {}  # every tag held, to itself
        self.held_bytes = 0
        self.full = False
        self.refusal = (f"over the {TAR_SIDECARS_MAX_BYTES} bytes of tags a tar's sidecars may hold "
                        "together; refused")

    def add(self, stem: str, sidecar: Sidecar) -> None:
        cost = 0 if self.full else self._cost(sidecar)
        self.full = self.full or self.held_bytes + cost > TAR_SIDECARS_MAX_BYTES
        if self.full:
            sidecar = Sidecar(sidecar.name, problem=self.refusal)
        else:
            self.held_bytes += cost
            sidecar = replace(sidecar, tags=tuple(self.shared.setdefault(t, t) for t in sidecar.tags))
        self.by_stem.setdefault(stem, []).append(sidecar)

    def _cost(self, sidecar: Sidecar) -> int:
        """The memory a sidecar's record takes, counting only those of its tags not held yet."""
        new = {tag for tag in sidecar.tags if tag not in self.shared}
        return (SIDECAR_RECORD_BYTES + sys.getsizeof(sidecar.name) + sys.getsizeof(sidecar.tags)
                + sys.getsizeof(sidecar.problem) + sum(sys.getsizeof(tag) + TAG_ENTRY_BYTES for tag in new))


def _tar_sidecars(archive: Path) -> tuple[dict[str, list[Sidecar]], str | None]:
    """The sidecars of a tar by image key (sidecar_stem), and its shared root folder, read in a
    first pass before any image. A sidecar may be stored before or after its image (`x.json`, `x.png`,
    `x.txt` in name order), and one pass in archive order (see _tar_members) could only pair the
    later ones by holding images back, unbounded. This pass reads the headers and only the
    sidecars' bytes, each up to SIDECAR_MAX_BYTES, and keeps their tags alone, bounded
    (HeldSidecars): a second decompression of a compressed tar, instead of its images in memory.
    At damage it stops with what it has: the image pass stops there too and reports it."""
    sidecars = HeldSidecars()
    tops: set[str] = set()
    with tarfile.open(archive) as tarred:
        try:
            while (member := tarred.next()) is not None:
                tarred.members.clear()  # as in _tar_members: not every header of a million
                if member.isdir():
                    continue
                if is_image_name(member.name):
                    if len(tops) < 2 and not unsafe_name(member.name):
                        tops.add(top_folder(member.name))
                elif (stem := sidecar_stem(member.name)) is not None:
                    sidecars.add(stem, _tar_sidecar(tarred, member))
        except READ_ERRORS:
            pass
    return sidecars.by_stem, shared_root(tops)


def _tar_sidecar(tarred: tarfile.TarFile, member: tarfile.TarInfo) -> Sidecar:
    """Raises what reading a damaged archive raises: the pass stops there."""
    if refused := _sidecar_refused(member.name, member.size, regular=member.isfile()):
        return refused
    handle = tarred.extractfile(member)
    return read_sidecar(member.name, handle.read(SIDECAR_MAX_BYTES + 1) if handle else b"")


def _tar_members(archive: Path, max_bytes: int) -> Iterator[Member]:
    """One pass in the archive's own order, so a compressed tar is decompressed once: taking its
    members in name order would restart the decompression for each member that comes earlier in
    the archive than the one before. Holds one member's bytes at a time. At damage the reading
    stops: what was read is kept, and the rest is one Member with the reason. The sidecars' tags
    are read before, in a pass of their own (_tar_sidecars)."""
    sidecars, root = _tar_sidecars(archive)
    with tarfile.open(archive) as tarred:
        last = "its start"
        while True:
            try:
                member = tarred.next()
            except READ_ERRORS as exc:
                yield _broken_rest(f"{archive.name} after {last}", exc)
                return
            if member is None:
                break
            tarred.members.clear()  # tarfile keeps every header it has read: not for a million
            last = member.name
            if member.isdir() or not is_image_name(member.name):
                continue
            if refused := _refused(member.name, member.size, max_bytes, regular=member.isfile()):
                yield refused
                continue
            try:
                handle = tarred.extractfile(member)
                data = handle.read() if handle else b""
            except READ_ERRORS as exc:
                yield _broken_rest(member.name, exc)
                return
            yield labelled(member.name, data, sidecars_of(member.name, sidecars), root)
        if _unread_rest(tarred):
            damage = tarfile.ReadError("a damaged header, or data past the end")
            yield _broken_rest(f"{archive.name} after {last}", damage)


def _broken_rest(where: str, exc: BaseException) -> Member:
    return Member(where, problem=f"the archive is damaged here ({_reason(exc)}); the rest of it "
                                 "is not read")


def _unread_rest(tarred: tarfile.TarFile) -> bool:
    """Whether anything but the zero blocks of a tar's end follows the last header read: tarfile
    ends quietly at a damaged header anywhere past the first."""
    assert tarred.fileobj is not None
    try:
        tarred.fileobj.seek(tarred.offset)
        while chunk := tarred.fileobj.read(1 << 20):
            if chunk.strip(b"\0"):
                return True
    except READ_ERRORS:
        return True
    return False
