"""File trees an import reads from: a folder on disk or a zip in memory.

Both answer ``walk()`` (relative posix names of regular files), ``problems`` (entries refused
while listing, with reasons) and ``read(rel, cap)``. Neither follows a symbolic link or reads
outside its root, and every read is capped.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path

from mmdemo.data.importers.errors import ItemSkipped
from mmdemo.data.safe_zip import MemberRejected, SafeZip
from mmdemo.settings import Settings

IMAGE_EXTENSIONS = frozenset(
    (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".bmp", ".dib")
    + (".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".avif")
)


def max_image_file_bytes(settings: Settings) -> int:
    """Largest file that can hold an image within the pixel cap (8 bytes/pixel + headers)."""
    return settings.max_image_pixels * 8 + (16 << 20)


def is_hidden(rel: str) -> bool:
    """Dot-files and macOS resource forks, which are never part of a dataset."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))


def read_file_capped(path: Path, cap: int) -> bytes:
    """Read a regular file of at most ``cap`` bytes, never through a final symlink or a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        if Path(path).is_symlink():
            raise ItemSkipped("symbolic link (not followed)")
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise ItemSkipped("image file not found") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ItemSkipped("symbolic link (not followed)") from exc
        raise ItemSkipped(f"cannot read the file: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ItemSkipped("not a regular file")
        if info.st_size > cap:
            raise ItemSkipped(f"file too large ({info.st_size:,} bytes; the cap is {cap:,})")
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise ItemSkipped(f"file too large (over the cap of {cap:,} bytes)")
    return data


def safe_relative_path(base: str, raw: object) -> str:
    """Join a path named in a table to the table's folder (posix, normalised).

    Refuses what could leave the imported folder or is not a path: absolute paths, drive
    letters, ``..`` escapes, URLs, undecodable bytes.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ItemSkipped("missing image path" if raw in (None, "") else "image path is not text")
    text = raw.strip()
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text):
        raise ItemSkipped("image path is not valid UTF-8 text")
    if "://" in text:
        raise ItemSkipped("URLs are not fetched; give a path relative to the table")
    unified = text.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise ItemSkipped("absolute path refused: paths must be relative to the imported folder")
    joined = posixpath.normpath(posixpath.join(base, unified))
    if joined == ".." or joined.startswith("../") or "\x00" in joined:
        raise ItemSkipped("path points outside the imported folder")
    return joined


class FolderTree:
    """Files under a root folder, read without following symbolic links."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.label = self.root.name
        self.problems: list[tuple[str, str]] = []

    def walk(self) -> list[str]:
        names: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            rel_dir = here.relative_to(self.root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            kept = []
            for name in sorted(dirnames):
                if is_hidden(name):
                    continue
                if (here / name).is_symlink():
                    self.problems.append(
                        (prefix + name, "symbolic link to a folder (not followed)")
                    )
                else:
                    kept.append(name)
            dirnames[:] = kept
            for name in sorted(filenames):
                path = here / name
                if is_hidden(name):
                    continue
                if path.is_symlink():
                    self.problems.append((prefix + name, "symbolic link (not followed)"))
                elif path.is_file():
                    names.append(prefix + name)
        return names

    def read(self, rel: str, cap: int) -> bytes:
        current = self.root
        for part in rel.split("/")[:-1]:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except OSError as exc:
                raise ItemSkipped("image file not found") from exc
            if stat.S_ISLNK(mode):
                raise ItemSkipped("path goes through a symbolic link (not followed)")
        return read_file_capped(self.root / rel, cap)


class ZipTree:
    """Members of a :class:`~mmdemo.data.safe_zip.SafeZip`, read in memory."""

    def __init__(self, archive: SafeZip):
        self.archive = archive
        self.label = archive.path.name
        self.problems = list(archive.problems)

    def walk(self) -> list[str]:
        return [name for name in self.archive.members if not is_hidden(name)]

    def read(self, rel: str, cap: int) -> bytes:
        try:
            return self.archive.read(rel, cap)
        except MemberRejected as exc:
            missing = str(exc) == "not found in the zip"
            raise ItemSkipped("image file not found in the zip" if missing else str(exc)) from exc
