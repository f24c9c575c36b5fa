"""Images already on disk, for `scrape.source: local`: a folder, a zip or a tar (a face set, say).

Members are only read, never extracted, and the collection names them by content, so an archive
cannot write outside data/raw; names that would be unsafe to extract (absolute, with `..`) are
refused all the same, since an archive holding them was not made for this.

Hostile files never stop the run: a member whose data cannot be decompressed is reported with its
reason, and an archive damaged midway keeps what was read before the damage.
"""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.core.params import PipelineError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")
# What reading a damaged member raises: zipfile and tarfile pass on their decompressors' own
# errors (zlib, lzma, bz2), unsupported methods, truncation (EOFError) and bad CRCs or headers.
READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, RuntimeError, OSError, EOFError,
               NotImplementedError, zlib.error, lzma.LZMAError)


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
    """Regular files only (is_file): a FIFO or a device named like an image is never opened."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name)):
        name = path.relative_to(folder).as_posix()
        try:
            with path.open("rb") as handle:  # read with a bound: the file may grow after listing
                data = handle.read(max_bytes + 1)
        except OSError as exc:  # no permission, vanished, an I/O error
            yield Member(name, problem=f"unreadable ({exc.__class__.__name__}: {exc})")
            continue
        yield _too_large(name, len(data), max_bytes) or Member(name, data)


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
            except READ_ERRORS as exc:  # bad CRC, encrypted, a corrupt compressed stream
                yield Member(info.filename, problem=f"unreadable in the archive ({_reason(exc)})")
                continue
            yield _too_large(info.filename, len(data), max_bytes) or Member(info.filename, data)


def _reason(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


def _tar_members(archive: Path, max_bytes: int) -> Iterator[Member]:
    """One pass in the archive's own order, so a compressed tar is decompressed once: taking its
    members in name order would restart the decompression for each member that comes earlier in
    the archive than the one before. Holds one member's bytes at a time. At damage the reading
    stops: what was read is kept, and the rest is one Member with the reason."""
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
            yield Member(member.name, data)
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
