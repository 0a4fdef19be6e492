"""All configuration in one dataclass, read from the environment in one place.

Command-line flags override the environment by calling :meth:`Settings.with_overrides`.
Nothing else in the package reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CLIP_MODEL = "sentence-transformers/clip-ViT-B-32"

MOUNTS_FILE = Path("/proc/mounts")
"""The kernel's mount table: which filesystem holds a path (see :func:`detect_storage`)."""
SPACE_DATA_DIR = Path("/data")
"""Where a Hugging Face Space mounts its storage bucket (persistent storage)."""
NETWORK_FILESYSTEMS = (
    "fuse", "fuseblk", "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs",
    "lustre", "afs", "gcsfuse", "s3fs", "davfs",
)  # fmt: skip
"""Filesystem types (``fuse.*`` included) where SQLite's WAL mode is unsafe: WAL needs shared
memory and POSIX locks that network and FUSE filesystems do not give reliably."""


def _env_float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Every field has a documented environment variable."""

    home: Path
    """MMDEMO_HOME: all runtime state (database, images, runs, caches)."""
    base_model: str = "auto"
    """MMDEMO_BASE_MODEL: ``auto``, ``tiny`` (= ``tiny-clip``), ``tiny-siglip``, ``tiny-siglip2``
    (built-in tiny models, built offline on first use), a Hub id or a local path."""
    host: str = "127.0.0.1"
    """MMDEMO_HOST: interface the web app binds to."""
    port: int = 7860
    """MMDEMO_PORT: port of the web app."""
    max_upload_mb: int = 2048
    """MMDEMO_MAX_UPLOAD_MB: largest single file the browser may upload."""
    max_image_pixels: int = 64_000_000
    """MMDEMO_MAX_IMAGE_PIXELS: decompression-bomb cap on width × height."""
    min_image_side: int = 16
    """MMDEMO_MIN_IMAGE_SIDE: images with a smaller side are rejected as unusable."""
    max_caption_chars: int = 2000
    """MMDEMO_MAX_CAPTION_CHARS: longer captions are rejected."""
    max_zip_entries: int = 200_000
    """MMDEMO_MAX_ZIP_ENTRIES: zip-bomb cap on the number of archive members."""
    max_zip_total_mb: int = 20_480
    """MMDEMO_MAX_ZIP_TOTAL_MB: zip-bomb cap on the total uncompressed size."""
    train_image_size: int = 224
    """MMDEMO_TRAIN_IMAGE_SIZE: shorter side of the pre-resized copy used for training."""
    thumbnail_size: int = 160
    """MMDEMO_THUMBNAIL_SIZE: longer side of gallery thumbnails."""
    hub_timeout_s: float = 2.0
    """MMDEMO_HUB_TIMEOUT_S: how long ``auto`` waits for the Hub before using the tiny model."""
    demo_pairs: int = 540
    """MMDEMO_DEMO_PAIRS: size of the built-in demo collection (540: every configuration once)."""
    train_niceness: int = 10
    """MMDEMO_TRAIN_NICENESS: nice value (0–19) of the app's training threads, so page requests
    run first on a busy CPU; 0 trains at normal priority."""
    space_id: str | None = None
    """SPACE_ID: set by Hugging Face Spaces (``owner/name``); its presence means "on a Space"."""
    label_overlap: float = 0.0
    """MMDEMO_LABEL_OVERLAP: share (0–1) of pairs every annotator labels, for agreement; the
    rest is split between annotators (each pair labeled once)."""
    sync_to: str | None = None
    """MMDEMO_SYNC_TO: where the state is continuously saved and restored from at start:
    ``hf://datasets/OWNER/NAME`` (a private dataset repo, pushed with ``HF_TOKEN``) or a folder."""
    sync_every_s: float = 60.0
    """MMDEMO_SYNC_EVERY_S: seconds between two saves to ``MMDEMO_SYNC_TO``."""

    # Derived locations -------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "mmdemo.sqlite3"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def downloads_dir(self) -> Path:
        """Files the browser may download (dry-run zips); served, so nothing else goes here."""
        return self.home / "downloads"

    @property
    def max_zip_total_bytes(self) -> int:
        return self.max_zip_total_mb * 1024 * 1024

    @classmethod
    def from_env(
        cls,
        environ: dict[str, str] | None = None,
        *,
        mounts: str | None = None,
        data_dir: Path = SPACE_DATA_DIR,
    ) -> Settings:
        """Read settings from the environment (or the given mapping).

        On a Space with a storage bucket mounted at ``data_dir`` (a mount point in the mount
        table ``mounts``, default ``/proc/mounts``), ``MMDEMO_HOME`` defaults to
        ``data_dir/mmdemo`` so the state survives restarts.
        """
        env = dict(os.environ if environ is None else environ)
        home = Path(
            env.get("MMDEMO_HOME")
            or (bucket_home(data_dir, mounts) if env.get("SPACE_ID") else None)
            or PROJECT_ROOT / ".mmdemo-home"
        )
        every = _env_float(env, "MMDEMO_SYNC_EVERY_S", 60.0)
        if not every > 0:
            raise ValueError(f"MMDEMO_SYNC_EVERY_S must be more than 0, got {every!r}")
        return cls(
            home=home.expanduser().resolve(),
            base_model=env.get("MMDEMO_BASE_MODEL", "auto") or "auto",
            # A Space serves the app from its container, so listen on every interface there.
            host=env.get("MMDEMO_HOST") or ("0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1"),
            port=_env_int(env, "MMDEMO_PORT", 7860),
            max_upload_mb=_env_int(env, "MMDEMO_MAX_UPLOAD_MB", 2048),
            max_image_pixels=_env_int(env, "MMDEMO_MAX_IMAGE_PIXELS", 64_000_000),
            min_image_side=_env_int(env, "MMDEMO_MIN_IMAGE_SIDE", 16),
            max_caption_chars=_env_int(env, "MMDEMO_MAX_CAPTION_CHARS", 2000),
            max_zip_entries=_env_int(env, "MMDEMO_MAX_ZIP_ENTRIES", 200_000),
            max_zip_total_mb=_env_int(env, "MMDEMO_MAX_ZIP_TOTAL_MB", 20_480),
            train_image_size=_env_int(env, "MMDEMO_TRAIN_IMAGE_SIZE", 224),
            thumbnail_size=_env_int(env, "MMDEMO_THUMBNAIL_SIZE", 160),
            hub_timeout_s=float(env.get("MMDEMO_HUB_TIMEOUT_S", "2.0") or 2.0),
            demo_pairs=_env_int(env, "MMDEMO_DEMO_PAIRS", 540),
            train_niceness=_env_int(env, "MMDEMO_TRAIN_NICENESS", 10),
            space_id=env.get("SPACE_ID") or None,
            label_overlap=min(1.0, max(0.0, _env_float(env, "MMDEMO_LABEL_OVERLAP", 0.0))),
            sync_to=(env.get("MMDEMO_SYNC_TO") or "").strip() or None,
            sync_every_s=every,
        )

    def with_overrides(self, **overrides: object) -> Settings:
        """Return a copy with the non-``None`` overrides applied (command-line flags)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "home" in changes:
            changes["home"] = Path(str(changes["home"])).expanduser().resolve()
        return dataclasses.replace(self, **changes)

    def ensure_dirs(self) -> None:
        """Create the runtime folders (idempotent)."""
        for folder in (
            self.home,
            self.images_dir,
            self.runs_dir,
            self.models_dir,
            self.cache_dir,
            self.tmp_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)


ENV_VARS = {
    "MMDEMO_HOME": "home",
    "MMDEMO_BASE_MODEL": "base_model",
    "MMDEMO_HOST": "host",
    "MMDEMO_PORT": "port",
    "MMDEMO_MAX_UPLOAD_MB": "max_upload_mb",
    "MMDEMO_MAX_IMAGE_PIXELS": "max_image_pixels",
    "MMDEMO_MIN_IMAGE_SIDE": "min_image_side",
    "MMDEMO_MAX_CAPTION_CHARS": "max_caption_chars",
    "MMDEMO_MAX_ZIP_ENTRIES": "max_zip_entries",
    "MMDEMO_MAX_ZIP_TOTAL_MB": "max_zip_total_mb",
    "MMDEMO_TRAIN_IMAGE_SIZE": "train_image_size",
    "MMDEMO_THUMBNAIL_SIZE": "thumbnail_size",
    "MMDEMO_HUB_TIMEOUT_S": "hub_timeout_s",
    "MMDEMO_DEMO_PAIRS": "demo_pairs",
    "MMDEMO_TRAIN_NICENESS": "train_niceness",
    "SPACE_ID": "space_id",
    "MMDEMO_LABEL_OVERLAP": "label_overlap",
    "MMDEMO_SYNC_TO": "sync_to",
    "MMDEMO_SYNC_EVERY_S": "sync_every_s",
}
"""Every environment variable and the field it sets (a test checks the README covers them)."""


# -- which filesystem holds the state --------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    point: Path
    fs_type: str


def read_mounts(mounts: str | None = None) -> list[Mount]:
    """The mount table: ``mounts`` (the text of ``/proc/mounts``) or the kernel's own."""
    if mounts is None:
        try:
            mounts = MOUNTS_FILE.read_text()
        except OSError:
            return []
    found = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            # The kernel escapes blanks in mount points as octal (\040 for a space).
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            found.append(Mount(Path(point), fields[2]))
    return found


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path``: the longest mount point that contains it."""
    path = Path(os.path.abspath(path))
    best: Mount | None = None
    for mount in mounts:
        if (path == mount.point or mount.point in path.parents) and (
            best is None or len(mount.point.parts) >= len(best.point.parts)
        ):
            best = mount
    return best


def is_network_filesystem(fs_type: str) -> bool:
    """Whether SQLite must avoid WAL on this filesystem type (network or FUSE)."""
    base = fs_type.lower().split(".", 1)[0]
    return base in NETWORK_FILESYSTEMS or fs_type.lower() in NETWORK_FILESYSTEMS


def bucket_home(data_dir: Path = SPACE_DATA_DIR, mounts: str | None = None) -> Path | None:
    """``data_dir/mmdemo`` when ``data_dir`` is a mount point (a Space's storage bucket)."""
    data_dir = Path(os.path.abspath(data_dir))
    if any(mount.point == data_dir for mount in read_mounts(mounts)):
        return data_dir / "mmdemo"
    return None


@dataclass(frozen=True)
class Storage:
    """Where ``MMDEMO_HOME`` lives, and what that means for SQLite."""

    home: Path
    fs_type: str
    """The filesystem type of the mount holding the home (``ext4``, ``fuse.hf-mount`` …)."""
    network: bool
    """A network or FUSE filesystem: SQLite uses a rollback journal, not WAL."""
    bucket: bool
    """The home is on a Space's mounted storage bucket (state survives restarts)."""

    @property
    def journal_mode(self) -> str:
        return "DELETE" if self.network else "WAL"


def detect_storage(
    home: Path, mounts: str | None = None, data_dir: Path = SPACE_DATA_DIR
) -> Storage:
    """Which filesystem holds ``home`` (from the mount table ``mounts``, default the kernel's)."""
    table = read_mounts(mounts)
    mount = mount_of(home, table)
    fs_type = mount.fs_type if mount is not None else ""
    data_dir = Path(os.path.abspath(data_dir))
    where = Path(os.path.abspath(home))
    mounted = any(m.point == data_dir for m in table)
    on_data = mounted and (where == data_dir or data_dir in where.parents)
    return Storage(Path(home), fs_type, is_network_filesystem(fs_type), on_data)


def sqlite_journal_mode(path: Path, mounts: str | None = None) -> str:
    """``DELETE`` (rollback journal) on a network/FUSE filesystem, else ``WAL``."""
    mount = mount_of(Path(path), read_mounts(mounts))
    return "DELETE" if mount is not None and is_network_filesystem(mount.fs_type) else "WAL"
