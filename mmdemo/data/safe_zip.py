"""Read a zip archive from people we do not trust, in memory, never extracting it to disk.

Defences, each with a reason a person can read:

- zip bombs: the number of entries and the total uncompressed size are capped, first from the
  end-of-central-directory record (before Python parses the directory), then from the parsed
  central directory, and again while reading, because headers can lie;
- every member is read into memory through a per-member byte cap, in chunks, so a member that
  inflates past its cap is stopped without ever holding more than the cap;
- path traversal: absolute names, drive letters and ``..`` components are refused (nothing is
  written to disk anyway, but such names can never match a file in the archive's layout);
- symbolic-link entries, encrypted entries and duplicate names are refused.
"""

from __future__ import annotations

import posixpath
import stat
import struct
import zipfile
import zlib
from pathlib import Path

_CHUNK = 1 << 20
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


class ZipRejected(Exception):
    """The archive as a whole cannot be imported; ``str(exc)`` is the reason."""


class MemberRejected(Exception):
    """One member cannot be read; ``str(exc)`` is the reason."""


def declared_entry_count(path: Path) -> int | None:
    """Entry count from the end-of-central-directory record (zip64 aware), or None if unclear.

    Read before :class:`zipfile.ZipFile` parses the whole directory, so a zip declaring millions
    of entries is refused without building millions of objects.
    """
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        tail_len = min(size, 22 + 65535)
        handle.seek(size - tail_len)
        tail = handle.read(tail_len)
        at = tail.rfind(_EOCD)
        if at < 0 or at + 22 > len(tail):
            return None
        count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
        if count != 0xFFFF or at < 20 or tail[at - 20 : at - 16] != _ZIP64_LOCATOR:
            return count
        offset = struct.unpack("<Q", tail[at - 12 : at - 4])[0]
        if offset + 56 > size:
            return None
        handle.seek(offset)
        record = handle.read(56)
        if record[:4] != _ZIP64_EOCD:
            return None
        return struct.unpack("<Q", record[32:40])[0]


def unsafe_name_reason(name: str) -> str | None:
    """Why a member name is unsafe (absolute, drive letter, ``..``, NUL), or None if it is fine."""
    if "\x00" in name:
        return "entry name contains a NUL byte"
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        return "absolute path inside the zip (refused, nothing is extracted)"
    if ".." in unified.split("/"):
        return "'..' in the path inside the zip (refused, nothing is extracted)"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


class SafeZip:
    """A zip archive opened for in-memory, capped reads of its regular members.

    ``members`` lists the safe regular files (normalised posix names); ``problems`` lists
    ``(name, reason)`` for the entries refused while reading the directory.
    """

    def __init__(self, path: Path, max_entries: int, max_total_bytes: int, max_member_bytes: int):
        self.path = Path(path)
        self.max_total_bytes = max_total_bytes
        self.max_member_bytes = max_member_bytes
        self.problems: list[tuple[str, str]] = []
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._read_total = 0
        try:
            declared = declared_entry_count(self.path)
        except OSError as exc:
            raise ZipRejected(f"cannot read the zip: {exc}") from exc
        if declared is not None and declared > max_entries:
            raise ZipRejected(
                f"the zip declares {declared:,} entries, over the cap of {max_entries:,}"
                " (zip bomb?)"
            )
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise ZipRejected(f"not a readable zip file: {exc}") from exc
        try:
            self._scan(max_entries)
        except BaseException:
            self._zip.close()
            raise

    def _scan(self, max_entries: int) -> None:
        infos = self._zip.infolist()
        if len(infos) > max_entries:
            raise ZipRejected(
                f"the zip has {len(infos):,} entries, over the cap of {max_entries:,} (zip bomb?)"
            )
        total = sum(info.file_size for info in infos)
        if total > self.max_total_bytes:
            raise ZipRejected(
                f"the zip would unpack to {total:,} bytes, over the cap of"
                f" {self.max_total_bytes:,} (zip bomb?)"
            )
        seen: set[str] = set()
        for info in infos:
            name = info.filename
            if name.endswith("/") and not _is_symlink(info):
                continue
            reason = unsafe_name_reason(name)
            if reason is None and _is_symlink(info):
                reason = "symbolic link inside the zip (not followed)"
            if reason is None and info.flag_bits & 0x1:
                reason = "encrypted zip entry (not supported)"
            if reason is None and info.file_size > self.max_member_bytes:
                reason = (
                    f"entry unpacks to {info.file_size:,} bytes, over the per-file cap of"
                    f" {self.max_member_bytes:,}"
                )
            clean = posixpath.normpath(name.replace("\\", "/")) if reason is None else name
            if reason is None and clean in seen:
                reason = "the zip holds two entries with this name"
                self._infos.pop(clean, None)
            seen.add(clean)
            if reason is not None:
                self.problems.append((name, reason))
            else:
                self._infos[clean] = info

    @property
    def members(self) -> list[str]:
        return list(self._infos)

    def size_of(self, name: str) -> int:
        return self._infos[name].file_size

    def read(self, name: str, cap: int | None = None) -> bytes:
        """Read one member into memory; raise :class:`MemberRejected` past any cap or on damage."""
        info = self._infos.get(name)
        if info is None:
            raise MemberRejected("not found in the zip")
        limit = min(self.max_member_bytes, cap if cap is not None else self.max_member_bytes)
        if info.file_size > limit:
            raise MemberRejected(f"entry unpacks to {info.file_size:,} bytes, over the cap")
        chunks: list[bytes] = []
        got = 0
        try:
            with self._zip.open(info) as member:
                while chunk := member.read(min(_CHUNK, limit + 1 - got)):
                    got += len(chunk)
                    self._read_total += len(chunk)
                    if got > limit or got > info.file_size:
                        raise MemberRejected(
                            "entry inflates past the size its header declares (zip bomb?)"
                        )
                    if self._read_total > self.max_total_bytes:
                        raise MemberRejected(
                            "the zip's total uncompressed size cap was reached (zip bomb?)"
                        )
                    chunks.append(chunk)
        except MemberRejected:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise MemberRejected(f"damaged zip entry: {exc}") from exc
        except (NotImplementedError, RuntimeError) as exc:
            raise MemberRejected(f"unsupported zip entry: {exc}") from exc
        return b"".join(chunks)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
