"""Images already on disk, for `scrape.source: local`: a folder, a zip or a tar (a face set, say).

Members are only read, never extracted, and the collection names them by content, so an archive
cannot write outside data/raw; names that would be unsafe to extract (absolute, with `..`) are
refused all the same, since an archive holding them was not made for this.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.core.params import PipelineError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")


@dataclass(frozen=True)
class Member:
    """One image file of the source: its bytes, or why it was refused."""
    name: str  # its path inside the folder or archive
    data: bytes | None = None
    problem: str | None = None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def unsafe_name(name: str) -> bool:
    """Absolute, drive-lettered or climbing out with `..`, in either slash style."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or ":" in (path.parts[0] if path.parts else "")


def local_images(source: Path, max_bytes: int) -> Iterator[Member]:
    """Every image file of a folder (recursively), zip or tar, in name order. An archive broken
    as a whole stops the stage; a member that cannot be read is reported and the rest goes on."""
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
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name)):
        name = path.relative_to(folder).as_posix()
        yield _too_large(name, path.stat().st_size, max_bytes) or Member(name, path.read_bytes())


def _refused(name: str, declared_size: int, max_bytes: int, regular: bool = True) -> Member | None:
    """Why an archive member is not read at all, judged before a byte of it is read; None if it is."""
    if unsafe_name(name):
        return Member(name, problem="unsafe name in the archive; refused")
    if not regular:
        return Member(name, problem="a link or device, not a file; refused")
    return _too_large(name, declared_size, max_bytes)


def _zip_members(archive: Path, max_bytes: int) -> Iterator[Member]:
    with zipfile.ZipFile(archive) as zipped:
        for info in sorted(zipped.infolist(), key=lambda info: info.filename):
            if info.is_dir() or not is_image_name(info.filename):
                continue
            if refused := _refused(info.filename, info.file_size, max_bytes):
                yield refused
                continue
            try:
                with zipped.open(info) as handle:  # the declared size may lie: read with a bound
                    data = handle.read(max_bytes + 1)
            except (zipfile.BadZipFile, RuntimeError, OSError) as exc:  # bad CRC, encrypted
                yield Member(info.filename, problem=f"unreadable in the archive ({exc})")
                continue
            yield _too_large(info.filename, len(data), max_bytes) or Member(info.filename, data)


def _tar_members(archive: Path, max_bytes: int) -> Iterator[Member]:
    with tarfile.open(archive) as tarred:
        for member in sorted(tarred.getmembers(), key=lambda member: member.name):
            if member.isdir() or not is_image_name(member.name):
                continue
            if refused := _refused(member.name, member.size, max_bytes, regular=member.isfile()):
                yield refused
            else:
                handle = tarred.extractfile(member)
                yield Member(member.name, handle.read() if handle else b"")
