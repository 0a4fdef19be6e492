"""Continuous sync of the state to a folder or a private Hub dataset repo, and restore at start.

A Space's disk is wiped when it restarts; ``MMDEMO_SYNC_TO`` names where the state is saved every
``MMDEMO_SYNC_EVERY_S`` seconds and restored from on an empty home. Modelled on
``huggingface_hub.CommitScheduler``: a background thread, a lock around each snapshot, a failed
push retried (sooner at first, then every interval) with nothing marked as saved until it worked.

**Layout** (a folder target holds the same files the Hub repo would; nothing is ever rewritten
except ``manifest.json``)::

    manifest.json                               format, sync schema, store schema, lineage id
    images/<sha[:2]>/<sha>.<ext>                each image's original, uploaded once (by content)
    journal/<seq>-<utc time>-<id>.jsonl.gz      one file per sync: the rows changed since the last
    snapshots/<seq>-<utc time>-<id>.jsonl.gz    every COMPACT_EVERY syncs: the whole state at <seq>

Each journal or snapshot file is gzip'd JSON lines: a ``{"header": {...}}`` line (sync schema,
store schema, seq, lineage), then ``{"put": TABLE, "row": {...}}`` and ``{"del": TABLE, "key": K}``
lines. Rows keep their ids, authors and times (labels, pairs, collections, images, finished runs'
metrics), so replaying is idempotent: restore folds the latest snapshot and the journals after it
into one final state and upserts it by id. What was saved is remembered in a state file under
``MMDEMO_HOME/sync/`` (row hashes per table), never in the SQLite schema.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mmdemo.data.images import (
    IMAGE_EXTENSIONS,
    ImageLimits,
    image_path,
    ingest_image_bytes,
    thumb_path,
    train_path,
)
from mmdemo.data.store import SCHEMA_VERSION, Store, StoreError
from mmdemo.hub.client import HubPublisher, PublishError, check_repo_id, redact, resolve_token
from mmdemo.settings import Settings
from mmdemo.text import CaptionRejected, clean_name, shorten

log = logging.getLogger(__name__)

SYNC_FORMAT = "mmdemo-sync"
SYNC_SCHEMA = 1
"""Version of the layout above; a target written by a newer one is refused."""
TABLES = ("collections", "images", "pairs", "negatives", "runs")
"""What is saved, parents first (a pair needs its collection and image). Not ``label_claims``
(store schema 3): a claim is a 15-minute hold on a pair for one annotator, meaningless after a
restart, and saving it would make every pair shown a save."""
KEYS = {"images": "sha256"}
"""Primary key per table (``id`` where not named)."""
SAVED_RUN_STATUSES = ("finished", "cancelled", "failed", "interrupted")
"""Runs are saved once they ended (their metrics); the model files are not synced."""
COMPACT_EVERY = 500
"""Every this many journal files a snapshot is written, so a restore reads few files."""
HUB_PREFIX = "hf://datasets/"
MAX_OPERATIONS_PER_COMMIT = 1000


class SyncError(Exception):
    """The state cannot be saved to or restored from the target; ``str(exc)`` says why."""


class SyncRefused(SyncError):
    """The target is reachable but refused (its rows, or another writer ahead): not retried."""


# -- targets ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the state goes: a Hub dataset repo (``repo_id``) or a local folder."""

    repo_id: str | None = None
    folder: Path | None = None

    @property
    def label(self) -> str:
        """``OWNER/NAME`` or the folder, as the header shows it."""
        return self.repo_id if self.repo_id else str(self.folder)


def parse_target(value: str) -> Target:
    """``hf://datasets/OWNER/NAME`` or a folder path; anything else hub-like is refused."""
    text = (value or "").strip()
    if text.startswith("hf://"):
        if not text.startswith(HUB_PREFIX):
            raise SyncError(
                f"MMDEMO_SYNC_TO={text!r}: only dataset repos are supported; write it as"
                " hf://datasets/OWNER/NAME."
            )
        try:
            repo_id = check_repo_id(text[len(HUB_PREFIX) :].strip("/"), "dataset")
        except PublishError as exc:
            raise SyncError(f"MMDEMO_SYNC_TO={text!r}: {exc}") from None
        return Target(repo_id=repo_id)
    if not text:
        raise SyncError("MMDEMO_SYNC_TO is empty: name hf://datasets/OWNER/NAME or a folder.")
    return Target(folder=Path(text).expanduser().resolve())


class Backend(Protocol):
    """The files of a target. Implementations raise :class:`SyncError` only."""

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or ``None`` when it does not exist."""

    def list(self) -> list[str]:
        """Every file of the target (empty when there is no target yet)."""

    def push(self, files: list[tuple[str, bytes | Path]], message: str) -> None:
        """Write the files in order; the last one is written only when all others are."""


class FolderBackend:
    """A local folder: each file written atomically (temp + rename), in the order given."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, path: str) -> Path:
        """``root/path``, refused when the name would leave the root (``..``, absolute, a link)."""
        parts = path.split("/")
        full = self.root / path
        if (
            not path
            or "\\" in path
            or "\0" in path
            or any(part in ("", ".", "..") for part in parts)
            or not full.resolve().is_relative_to(self.root.resolve())
        ):
            raise SyncError(f"Refusing the sync file name {path!r}: it leaves {self.root}.")
        return full

    def read(self, path: str) -> bytes | None:
        full = self._path(path)
        try:
            return full.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SyncError(f"Could not read {full}: {exc}") from None

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def push(self, files: list[tuple[str, bytes | Path]], message: str) -> None:
        try:
            for path, content in files:
                dest = self._path(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as out:
                        if isinstance(content, Path):
                            with content.open("rb") as src:
                                shutil.copyfileobj(src, out)
                        else:
                            out.write(content)
                    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the files from others
                    os.replace(tmp, dest)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as exc:
            raise SyncError(f"Could not write to {self.root}: {exc}") from None


class HubBackend(HubPublisher):
    """A private Hub dataset repo, written with ``HfApi.create_commit`` (created when missing).

    The token is the process's own (``HF_TOKEN``: on a Space, the owner's secret), never a
    visitor's login. Errors come out as :class:`SyncError` with the client's token-free messages.
    """

    def __init__(self, repo_id: str, token: object = None, api: Any = None):
        super().__init__(token if token is not None else resolve_token(), api=api)
        self.repo_id = repo_id
        self._exists: bool | None = None

    def _sync_call(self, action: str, fn: Callable, /, **kwargs: Any) -> Any:
        try:
            return self._call(action, self.repo_id, "dataset", fn, **kwargs)
        except PublishError as exc:
            raise SyncError(str(exc)) from None

    def list(self) -> list[str]:
        try:
            files = self.repo_files(self.repo_id, "dataset")
        except PublishError as exc:
            raise SyncError(str(exc)) from None
        self._exists = files is not None
        return list(files or [])

    def read(self, path: str) -> bytes | None:
        # Only the Hub saying "no such file/repo" means missing; LocalEntryNotFoundError (also an
        # EntryNotFoundError) is a network failure and must not read as "nothing saved".
        from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

        token = self._token.reveal() if self._token else False
        with tempfile.TemporaryDirectory(prefix="mmdemo-sync-") as folder:
            try:
                local = self._api.hf_hub_download(
                    self.repo_id, path, repo_type="dataset", token=token, local_dir=folder
                )
            except (RemoteEntryNotFoundError, RepositoryNotFoundError):
                return None
            except Exception as exc:  # noqa: BLE001 - one clear, token-free message
                message = redact(f"{type(exc).__name__}: {exc}", token)[:300]
                raise SyncError(f"Could not read {path} from {self.repo_id}: {message}") from None
            return Path(local).read_bytes()

    def push(self, files: list[tuple[str, bytes | Path]], message: str) -> None:
        from huggingface_hub import CommitOperationAdd

        if not self._token:
            raise SyncError(
                f"No token to save to {self.repo_id}: set the HF_TOKEN secret (a write token of"
                " the Space's owner)."
            )
        token = self._token.reveal()
        if self._exists is not True:
            self.list()
            if not self._exists:
                self.create_repo_private()
        batches = [
            files[start : start + MAX_OPERATIONS_PER_COMMIT]
            for start in range(0, len(files), MAX_OPERATIONS_PER_COMMIT)
        ]
        for index, batch in enumerate(batches):
            operations = [
                CommitOperationAdd(path_in_repo=path, path_or_fileobj=content)
                for path, content in batch
            ]
            part = f" ({index + 1}/{len(batches)})" if len(batches) > 1 else ""
            self._sync_call(
                "saving the state",
                self._api.create_commit,
                repo_id=self.repo_id,
                operations=operations,
                commit_message=message + part,
                repo_type="dataset",
                token=token,
            )

    def create_repo_private(self) -> None:
        try:
            self.create_repo(self.repo_id, "dataset", private=True)
        except PublishError as exc:
            raise SyncError(str(exc)) from None
        self._exists = True


def open_backend(target: Target, api: Any = None, token: object = None) -> Backend:
    """The backend for a target (``api`` stands in for ``HfApi`` in tests)."""
    if target.repo_id:
        return HubBackend(target.repo_id, token=token, api=api)
    return FolderBackend(target.folder)  # type: ignore[arg-type]


# -- rows, hashes and files ------------------------------------------------------------------------
def _key(table: str, row: dict) -> Any:
    return row[KEYS.get(table, "id")]


def _hash(row: dict) -> str:
    text = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class TableReader:
    """The sync's own connection to the store's database, which never writes: one consistent
    read of the saved tables, and a counter that changes when anyone else committed.

    Reading through it never takes the :class:`Store`'s lock. In WAL mode one read transaction
    over all tables blocks no writer. Under a rollback journal (a network/FUSE home) a reader's
    transaction blocks every writer's commit, so there each table is read in its own short
    statement, and the read counts only when ``PRAGMA data_version`` did not change from before
    the first table to after the last (nobody committed in between: the tables are one state);
    otherwise it is read again, and after :attr:`ATTEMPTS` busy tries once in one transaction.
    ``PRAGMA data_version`` also makes a save with nothing changed one query.
    """

    ATTEMPTS = 5

    def __init__(self, db_path: Path):
        self._conn = sqlite3.connect(
            db_path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute("PRAGMA query_only=ON")
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        self.wal = str(mode).lower() == "wal"

    def data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def is_empty(self) -> bool:
        """Nothing worth keeping: no collection, image, pair or run."""
        return not any(
            self._conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]
            for table in ("collections", "images", "pairs", "runs")
        )

    def read(self) -> dict[str, tuple[list[str], dict[str, tuple]]]:
        """``{table: (column names, {str(key): row values})}``, all of one committed state."""
        if not self.wal:
            for _ in range(self.ATTEMPTS):
                before = self.data_version()
                found = {table: self._read_table(table) for table in TABLES}
                if self.data_version() == before:
                    return found
        self._conn.execute("BEGIN")
        try:
            return {table: self._read_table(table) for table in TABLES}
        finally:
            self._conn.execute("COMMIT")

    def _read_table(self, table: str) -> tuple[list[str], dict[str, tuple]]:
        cursor = self._conn.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        key = names.index(KEYS.get(table, "id"))
        rows = {str(values[key]): values for values in cursor.fetchall()}
        if table == "runs":
            status = names.index("status")
            rows = {k: v for k, v in rows.items() if v[status] in SAVED_RUN_STATUSES}
        return names, rows

    def close(self) -> None:
        self._conn.close()


def current_rows(store: Store) -> dict[str, dict[str, dict]]:
    """What is saved of a store, read in one transaction: ``{table: {str(key): row}}``."""
    reader = TableReader(store.db_path)
    try:
        tables = reader.read()
    finally:
        reader.close()
    return {
        table: {k: dict(zip(names, values, strict=True)) for k, values in rows.items()}
        for table, (names, rows) in tables.items()
    }


def _hashes(rows: dict[str, dict[str, dict]]) -> dict[str, dict[str, str]]:
    return {table: {k: _hash(r) for k, r in found.items()} for table, found in rows.items()}


def _utc_stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _file_name(folder: str, seq: int, when: float) -> str:
    return f"{folder}/{seq:08d}-{_utc_stamp(when)}-{uuid.uuid4().hex[:8]}.jsonl.gz"


_SEQ_FILE = re.compile(r"^(journal|snapshots)/(\d{8,})-[^/]+\.jsonl\.gz$")


def _encode(header: dict, lines: Iterable[dict]) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
        out.write((json.dumps({"header": header}, ensure_ascii=False) + "\n").encode())
        for line in lines:
            out.write((json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
    return buffer.getvalue()


def _decode(name: str, data: bytes) -> tuple[dict, list[dict]]:
    try:
        text = gzip.decompress(data).decode()
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, EOFError, ValueError) as exc:
        raise SyncError(f"The sync file {name} is damaged ({exc}); nothing was restored.") from None
    if not lines or "header" not in lines[0]:
        raise SyncError(f"The sync file {name} has no header; nothing was restored.")
    header = lines[0]["header"]
    _check_schema(header, name)
    return header, lines[1:]


def _check_schema(meta: dict, where: str) -> None:
    """Refuse what a newer mmdemo wrote (its rows may mean something this one cannot keep)."""
    if meta.get("format") != SYNC_FORMAT:
        raise SyncError(f"{where} is not an mmdemo sync file (format {meta.get('format')!r}).")
    schema = int(meta.get("schema", 0))
    store_schema = int(meta.get("store_schema", 0))
    if schema > SYNC_SCHEMA or store_schema > SCHEMA_VERSION:
        raise SyncError(
            f"{where} was written by a newer mmdemo (sync schema {schema}, store schema"
            f" {store_schema}; this one reads up to {SYNC_SCHEMA} and {SCHEMA_VERSION})."
            " Upgrade mmdemo to use this sync target; nothing was restored or saved."
        )


# -- the local record of what was saved -----------------------------------------------------------
@dataclass
class SyncState:
    """What this home saved to one target (a file under ``MMDEMO_HOME/sync/``)."""

    target: str
    lineage: str
    seq: int = 0
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    since_snapshot: int = 0
    saved_at: float | None = None


def state_path(settings: Settings, target: Target) -> Path:
    digest = hashlib.sha1(target.label.encode()).hexdigest()[:12]
    return settings.home / "sync" / f"state-{digest}.json.gz"


def load_state(settings: Settings, target: Target) -> SyncState | None:
    path = state_path(settings, target)
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError) as exc:
        log.warning("Ignoring a damaged sync state %s: %s", path, exc)
        return None
    if data.get("target") != target.label:
        return None
    return SyncState(**data)


def save_state(settings: Settings, target: Target, state: SyncState) -> None:
    path = state_path(settings, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(json.dumps(state.__dict__, separators=(",", ":")).encode(), mtime=0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _manifest(lineage: str, created_at: float, last_seq: int) -> dict:
    return {
        "format": SYNC_FORMAT,
        "schema": SYNC_SCHEMA,
        "store_schema": SCHEMA_VERSION,
        "lineage": lineage,
        "created_at": created_at,
        "last_seq": last_seq,
        "layout": {
            "images": "images/<sha256[:2]>/<sha256>.<ext>: originals, content-addressed",
            "journal": "journal/<seq>-<utc>-<id>.jsonl.gz: rows changed by one sync",
            "snapshots": "snapshots/<seq>-<utc>-<id>.jsonl.gz: the whole state at <seq>",
        },
        "tables": list(TABLES),
    }


def read_manifest(backend: Backend, where: str) -> dict | None:
    """The target's manifest (schema checked), or ``None`` for a target nothing was saved to."""
    data = backend.read("manifest.json")
    if data is None:
        return None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise SyncError(f"The manifest of {where} is not JSON ({exc}).") from None
    _check_schema(manifest, f"The sync target {where}")
    return manifest


def target_seq(backend: Backend, manifest: dict) -> int:
    """The newest save on the target: the manifest's ``last_seq`` (written last by each save),
    else (a target written before it was kept) the newest journal or snapshot file's seq."""
    last = manifest.get("last_seq")
    if isinstance(last, int) and not isinstance(last, bool):
        return last
    numbers = [int(m.group(2)) for name in backend.list() if (m := _SEQ_FILE.match(name))]
    return max(numbers, default=0)


# -- restore ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreReport:
    target: str
    files: int
    """Journal and snapshot files read."""
    rows: dict[str, int]
    images: int
    """Image files fetched (the ones already in the folder are kept)."""
    seq: int
    seconds: float


def is_empty(store: Store) -> bool:
    """Nothing worth keeping: no collection, image, pair or run."""
    reader = TableReader(store.db_path)
    try:
        return reader.is_empty()
    finally:
        reader.close()


def _replay(backend: Backend, files: list[str]) -> tuple[dict[str, dict[str, dict]], int, int]:
    """The state after the latest snapshot and every journal after it: (rows, seq, files read)."""
    numbered = sorted(
        (int(match.group(2)), match.group(1) == "journal", name)
        for name in files
        if (match := _SEQ_FILE.match(name))
    )
    snapshots = [(seq, name) for seq, is_journal, name in numbered if not is_journal]
    start = snapshots[-1][0] if snapshots else 0
    chosen = ([snapshots[-1][1]] if snapshots else []) + [
        name for seq, is_journal, name in numbered if is_journal and seq > start
    ]
    state: dict[str, dict[str, dict]] = {table: {} for table in TABLES}
    seq = start
    for name in chosen:
        data = backend.read(name)
        if data is None:
            raise SyncError(f"{name} is listed but cannot be read; nothing was restored.")
        header, lines = _decode(name, data)
        seq = max(seq, int(header.get("seq", 0)))
        for line in lines:
            table = line.get("put") or line.get("del")
            if table not in state:
                continue  # a table this mmdemo does not save
            if "put" in line:
                row = line["row"]
                if not isinstance(row, dict) or row.get(KEYS.get(table, "id")) is None:
                    raise SyncError(
                        f"{name} holds a {table} row without its key; nothing was restored."
                    )
                state[table][str(_key(table, row))] = row
            else:
                state[table].pop(str(line["key"]), None)
    return state, seq, len(chosen)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_rows(store: Store, state: dict[str, dict[str, dict]]) -> None:
    """Hold the target's rows to the rules the store writes by, cleaning them in place.

    A target is outside data: an image's hash and extension make file paths, and captions and
    names are user text, so each goes through the store's own validation. Raises
    :class:`SyncError` naming the first row that does not pass; nothing is restored then.
    """

    def refuse(table: str, row: dict, why: str) -> None:
        key = shorten(repr(row.get(KEYS.get(table, "id"))), 80)
        raise SyncRefused(
            f"The sync target's {table} row {key} {why}; nothing was restored (the target was"
            " not written by this mmdemo, or was changed by hand)."
        )

    def sha(table: str, row: dict, column: str, optional: bool = False) -> None:
        value = row.get(column)
        if optional and value is None:
            return
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            refuse(table, row, f"has a {column} that is not a SHA-256 (64 hex digits)")

    def text(table: str, row: dict, column: str, clean: Callable[[object], str]) -> None:
        try:
            row[column] = clean(row.get(column))
        except (CaptionRejected, StoreError) as exc:
            refuse(table, row, f"has a {column} the store refuses ({exc})")

    for table in TABLES:
        for row in state[table].values():
            if table == "images":
                sha(table, row, "sha256")
                if row.get("ext") not in IMAGE_EXTENSIONS:
                    allowed = ", ".join(sorted(IMAGE_EXTENSIONS))
                    refuse(table, row, f"has an extension that is not one of {allowed}")
                continue
            if not isinstance(row["id"], int) or isinstance(row["id"], bool):
                refuse(table, row, "has an id that is not a whole number")
            for column in ("author", "owner"):
                if row.get(column) is not None and not isinstance(row[column], str):
                    refuse(table, row, f"has an {column} that is not text")
            if table == "collections":
                text(table, row, "name", clean_name)
            elif table == "runs":
                text(table, row, "name", lambda value: clean_name(value, "run"))
            elif table == "pairs":
                sha(table, row, "image_sha256")
                text(table, row, "caption", store.check_caption)
            elif table == "negatives":
                sha(table, row, "negative_sha256", optional=True)
                if row.get("negative_caption") is not None:
                    text(table, row, "negative_caption", store.check_caption)


def _upsert_sql(table: str, names: list[str], key: str) -> str:
    """``INSERT … ON CONFLICT`` of one row by its key (``DO NOTHING`` when it holds only it)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c != key)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        f" ON CONFLICT({key}) {action}"
    )


def _restore_image(backend: Backend, settings: Settings, row: dict) -> bool:
    """Fetch one image's original and rebuild its copies; False when it was already here."""
    sha, ext = row["sha256"], row["ext"]
    original = image_path(settings.images_dir, sha, ext)
    if original.exists():
        return False
    name = f"images/{sha[:2]}/{sha}.{ext}"
    data = backend.read(name)
    if data is None:
        raise SyncError(f"The image {name} is missing from the sync target; nothing was restored.")
    if hashlib.sha256(data).hexdigest() != sha:
        raise SyncError(f"The image {name} does not match its hash; nothing was restored.")
    stored = ingest_image_bytes(data, settings.images_dir, ImageLimits.from_settings(settings))
    if stored.sha256 != sha:  # stored as is before, so this does not happen; keep it exact anyway
        for make in (train_path, thumb_path):
            shutil.copyfile(
                make(settings.images_dir, stored.sha256), make(settings.images_dir, sha)
            )
        original.write_bytes(data)
    return True


def restore(
    store: Store, settings: Settings, target: Target, backend: Backend
) -> RestoreReport | None:
    """Bring the target's state into the store (idempotent: upserts by id; twice = once).

    Image files first (each checked against its hash), then every row in one transaction, and
    the record of what is saved, so the next sync writes only what changes after this.
    ``None`` when nothing was ever saved to the target.
    """
    started = time.monotonic()
    manifest = read_manifest(backend, target.label)
    if manifest is None:
        return None
    state, seq, read = _replay(backend, backend.list())
    if target_seq(backend, manifest) > seq:
        raise SyncError(
            f"The sync target {target.label} says it holds saves up to"
            f" #{target_seq(backend, manifest)}, but its files end at #{seq}; nothing was restored."
        )
    _check_rows(store, state)
    images = list(state["images"].values())
    with ThreadPoolExecutor(max_workers=8) as pool:
        fetched = sum(pool.map(lambda row: _restore_image(backend, settings, row), images))
    with store.transaction() as conn:
        try:
            for table in TABLES:
                columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
                key = KEYS.get(table, "id")
                for row in sorted(state[table].values(), key=lambda r: str(_key(table, r))):
                    names = [c for c in columns if c in row]
                    conn.execute(_upsert_sql(table, names, key), [row[c] for c in names])
        except sqlite3.IntegrityError as exc:  # rolled back: the store is left as it was
            raise SyncRefused(
                f"The sync target's rows do not fit the store ({exc}); nothing was restored."
            ) from None
        # What is saved now is what the store holds: read back in this transaction, recorded
        # before the commit (a kill in between leaves an empty store, restored again next start).
        saved = {
            table: {
                str(_key(table, dict(r))): dict(r) for r in conn.execute(f"SELECT * FROM {table}")
            }
            for table in TABLES
        }
        saved["runs"] = {
            k: r for k, r in saved["runs"].items() if r.get("status") in SAVED_RUN_STATUSES
        }
        save_state(
            settings,
            target,
            SyncState(
                target=target.label,
                lineage=str(manifest["lineage"]),
                seq=seq,
                hashes=_hashes(saved),
                saved_at=time.time(),
            ),
        )
    return RestoreReport(
        target=target.label,
        files=read,
        rows={table: len(state[table]) for table in TABLES},
        images=int(fetched),
        seq=seq,
        seconds=time.monotonic() - started,
    )


# -- saving ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncReport:
    """One sync: what it wrote."""

    rows: int
    deletes: int
    images: int
    bytes: int
    files: list[str]
    seconds: float


@dataclass(frozen=True)
class SyncStatus:
    """What the header shows: the target, the last success and the last error."""

    target: str
    every_s: float
    hub: bool
    last_ok_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0
    """Failed syncs since the last success."""
    last: SyncReport | None = None
    restored: RestoreReport | None = None


class Syncer:
    """Saves the store's changes to a target: :meth:`sync_once` (under :attr:`lock`), and a
    background thread that calls it every ``every_s`` seconds (:meth:`start`, :meth:`stop`)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        target: Target,
        backend: Backend,
        *,
        every_s: float | None = None,
        compact_every: int = COMPACT_EVERY,
    ):
        self.store = store
        self.settings = settings
        self.target = target
        self.backend = backend
        self.every_s = float(every_s if every_s is not None else settings.sync_every_s)
        self.compact_every = compact_every
        self.lock = threading.Lock()
        """Held for one whole sync (snapshot, push, state update): syncs never overlap."""
        self._status = SyncStatus(target.label, self.every_s, bool(target.repo_id))
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._manifest_checked = False
        self._manifest_written = False
        self._remote_manifest: dict | None = None
        self._reader: TableReader | None = None
        self._stopped = False
        """Set by :meth:`stop`: a later save (a second stop) closes its connection again."""
        self._state: SyncState | None = None
        """What is saved (as in the state file), kept in memory after the first save."""
        self._last: dict[str, dict[str, tuple]] | None = None
        """The rows as saved last (values), so a save hashes only the rows that changed."""
        self._version: int | None = None
        """The database's data_version when the rows were read for the last save."""

    # -- status ------------------------------------------------------------------------------
    def status(self) -> SyncStatus:
        with self._status_lock:
            return self._status

    def _set_status(self, **changes: Any) -> None:
        with self._status_lock:
            self._status = replace(self._status, **changes)

    # -- one sync ----------------------------------------------------------------------------
    def check_target(self) -> None:
        """Refuse a target that holds another home's history or a newer schema.

        A home that was restored from the target (or saved to it first) shares its lineage id;
        any other non-empty target would mix two histories, so nothing is saved there.
        """
        manifest = read_manifest(self.backend, self.target.label)
        state = load_state(self.settings, self.target)
        if manifest is None and state is not None:
            # The target was emptied (or is a new one at the same name): save everything again.
            state_path(self.settings, self.target).unlink(missing_ok=True)
        if manifest is not None and (state is None or state.lineage != manifest.get("lineage")):
            raise SyncError(
                f"The sync target {self.target.label} already holds the state of another mmdemo"
                f" home, which this home ({self.settings.home}) was not restored from. Start with"
                " an empty MMDEMO_HOME to restore it, or set MMDEMO_SYNC_TO to a new repo or"
                " folder."
            )
        if manifest is not None and state is not None:
            self._check_not_ahead(manifest, state)
        self._manifest_checked = True
        self._remote_manifest = manifest

    def _check_not_ahead(self, manifest: dict, state: SyncState) -> None:
        """Refuse a target another process saved to after this home last saved or restored.

        Two writers from one seq (an old container still saving after a new one restored, two
        hosts on one target) would both write seq N+1 and the last replayed would drop the
        other's rows; so a home only appends to the history it holds.
        """
        if manifest.get("lineage") != state.lineage:
            raise SyncError(
                f"The sync target {self.target.label} now holds the state of another mmdemo"
                f" home; nothing was saved there. Set MMDEMO_SYNC_TO to a new repo or folder."
            )
        newest = target_seq(self.backend, manifest)
        if newest > state.seq:
            raise SyncRefused(
                f"The sync target {self.target.label} holds saves up to #{newest}, ahead of this"
                f" home's #{state.seq}: another mmdemo (an overlapping Space restart, or a second"
                " host on the same target) saved there since this home last saved or restored."
                " Nothing was saved, so its rows are kept; restart this app on an empty"
                " MMDEMO_HOME to restore them, or set MMDEMO_SYNC_TO to a new repo or folder."
            )

    def sync_once(self) -> SyncReport:
        """Save what changed since the last sync (nothing is written when nothing changed).

        Raises :class:`SyncError`; the record of what is saved advances only after the push.
        """
        with self.lock:
            try:
                return self._sync_once()
            finally:
                if self._stopped:  # a save after stop() keeps no connection open
                    self._close_reader()

    def _sync_once(self) -> SyncReport:
        started = time.monotonic()
        try:
            report = self._sync()
        except SyncError as exc:
            self._failed(str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - a sync bug must not kill the thread
            # The text (and the traceback) may hold the token: masked before it is logged,
            # shown in the header or kept as the last error.
            token = getattr(self.backend, "_token", None)
            trace = "".join(traceback.format_exception(exc))
            log.error("Sync to %s failed:\n%s", self.target.label, redact(trace, token))
            message = redact(f"{type(exc).__name__}: {exc}", token)
            self._failed(message)
            raise SyncError(message) from None
        report = replace(report, seconds=time.monotonic() - started)
        self._set_status(last_ok_at=time.time(), failures=0, last=report)
        if report.files:
            log.info(
                "Saved to %s: %d rows, %d deletes, %d images, %d bytes in %.2f s",
                self.target.label,
                report.rows,
                report.deletes,
                report.images,
                report.bytes,
                report.seconds,
            )
        return report

    def _failed(self, message: str) -> None:
        status = self.status()
        self._set_status(
            last_error=message, last_error_at=time.time(), failures=status.failures + 1
        )
        log.warning("Saving to %s failed (retrying): %s", self.target.label, message)

    def _sync(self) -> SyncReport:
        if not self._manifest_checked:
            self.check_target()
        state = (
            self._state
            or load_state(self.settings, self.target)
            or SyncState(target=self.target.label, lineage=uuid.uuid4().hex)
        )
        remote = self._remote_manifest
        if not self._manifest_written and remote and remote.get("lineage") == state.lineage:
            # Already there, for this store schema: no need to write it again.
            self._manifest_written = remote.get("store_schema") == SCHEMA_VERSION
        if self._reader is None:
            self._reader = TableReader(self.store.db_path)
            self._version = None  # data_version counts per connection: a new one compares none
        version = self._reader.data_version()  # before the read: a later write is seen next time
        if version == self._version and self._manifest_written:
            return SyncReport(0, 0, 0, 0, [], 0.0)
        tables = self._reader.read()
        hashes = {table: dict(state.hashes.get(table, {})) for table in TABLES}
        puts: list[dict] = []
        deletes: dict[str, list[dict]] = {}
        images: list[tuple[str, bytes | Path]] = []
        for table in TABLES:
            names, rows = tables[table]
            old = state.hashes.get(table, {})
            last = self._last.get(table, {}) if self._last is not None else None
            for key, values in rows.items():
                if last is not None and last.get(key) == values:
                    continue  # unchanged since the last save: not even hashed
                row = dict(zip(names, values, strict=True))
                digest = _hash(row)
                if old.get(key) == digest:
                    continue
                hashes[table][key] = digest
                puts.append({"put": table, "row": row})
                if table == "images" and key not in old:
                    images.append(self._image_file(row))
            gone = [key for key in old if key not in rows]
            for key in gone:
                del hashes[table][key]
            deletes[table] = [{"del": table, "key": _typed_key(table, key)} for key in gone]
        dels = [line for table in reversed(TABLES) for line in deletes[table]]
        if not puts and not dels and self._manifest_written:
            self._last = {table: rows for table, (_, rows) in tables.items()}
            self._version = version
            self._state = state
            return SyncReport(0, 0, 0, 0, [], 0.0)
        now = time.time()
        seq = state.seq + 1
        header = {
            "format": SYNC_FORMAT,
            "schema": SYNC_SCHEMA,
            "store_schema": SCHEMA_VERSION,
            "seq": seq,
            "lineage": state.lineage,
            "written_at": now,
        }
        journal = _file_name("journal", seq, now)
        files: list[tuple[str, bytes | Path]] = list(images)
        files.append((journal, _encode(header, dels + puts)))
        since_snapshot = state.since_snapshot + 1
        if since_snapshot >= self.compact_every:
            everything = [
                {"put": table, "row": dict(zip(names, values, strict=True))}
                for table, (names, rows) in tables.items()
                for values in rows.values()
            ]
            files.append((_file_name("snapshots", seq, now), _encode(header, everything)))
            since_snapshot = 0
        # Is the target still where this home left it? (read again right before each push)
        current = read_manifest(self.backend, self.target.label)
        if current is not None:
            self._check_not_ahead(current, state)
        # The manifest goes last, with the seq of this save: a save is complete once it is in.
        manifest = _manifest(state.lineage, (current or remote or {}).get("created_at", now), seq)
        files.append(("manifest.json", json.dumps(manifest, indent=1).encode()))
        message = f"mmdemo sync {seq}: {len(puts)} rows, {len(dels)} deletes, {len(images)} images"
        self.backend.push(files, message)
        saved = replace(state, seq=seq, hashes=hashes, since_snapshot=since_snapshot, saved_at=now)
        save_state(self.settings, self.target, saved)
        self._state = saved
        self._last = {table: rows for table, (_, rows) in tables.items()}
        self._version = version
        self._manifest_written = True
        size = sum(c.stat().st_size if isinstance(c, Path) else len(c) for _, c in files)
        return SyncReport(len(puts), len(dels), len(images), size, [p for p, _ in files], 0.0)

    def _image_file(self, row: dict) -> tuple[str, Path]:
        sha, ext = row["sha256"], row["ext"]
        return f"images/{sha[:2]}/{sha}.{ext}", image_path(self.settings.images_dir, sha, ext)

    # -- the background thread ---------------------------------------------------------------
    def start(self) -> None:
        """Sync every ``every_s`` seconds in a daemon thread (the first one right away)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="mmdemo-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.sync_once()
                delay = self.every_s
            except SyncError:
                # Retry sooner after a failure (2, 4, 8 … s), never later than the interval.
                delay = min(self.every_s, 2.0 ** self.status().failures)

    def stop(self, final: bool = True) -> None:
        """Stop the thread, then save once more (``final``) so a clean stop loses nothing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self._stopped = True
        if final:
            with contextlib.suppress(SyncError):
                self.sync_once()
        with self.lock:
            self._close_reader()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _typed_key(table: str, key: str) -> Any:
    return key if KEYS.get(table) else int(key)


# -- start of the app ------------------------------------------------------------------------------
def prepare_sync(
    store: Store, settings: Settings, *, api: Any = None, token: object = None
) -> Syncer | None:
    """At start: restore an empty home from ``MMDEMO_SYNC_TO``, else check the target is this
    home's; returns the (not yet started) :class:`Syncer`, or ``None`` without a target.

    Raises :class:`SyncError` (a newer schema, another home's target, an unreadable target):
    serving without the saved state would hide every label made before the restart.
    """
    if not settings.sync_to:
        return None
    target = parse_target(settings.sync_to)
    backend = open_backend(target, api=api, token=token)
    syncer = Syncer(store, settings, target, backend)
    if is_empty(store):
        report = _with_retries(lambda: restore(store, settings, target, backend))
        if report is not None:
            log.warning(
                "Restored from %s: %s, %d image files, %d sync files in %.1f s",
                target.label,
                ", ".join(f"{n} {table}" for table, n in report.rows.items()),
                report.images,
                report.files,
                report.seconds,
            )
            syncer._set_status(restored=report, last_ok_at=time.time())
    _with_retries(syncer.check_target)
    return syncer


def _with_retries(fn: Callable[[], Any], attempts: int = 3) -> Any:
    """Call ``fn``; a failure other than a refusal (newer schema, another home) is retried."""
    for attempt in range(attempts):
        try:
            return fn()
        except SyncError as exc:
            refused = isinstance(exc, SyncRefused) or any(
                words in str(exc) for words in ("newer mmdemo", "another mmdemo", "ahead of this")
            )
            if refused or attempt == attempts - 1:
                raise
            log.warning("Sync target not reachable (%s); retrying", exc)
            time.sleep(2.0 * (attempt + 1))
    return None


def describe(status: SyncStatus | None, now: float | None = None) -> str:
    """One line for the header: "Saved to OWNER/NAME 12 s ago", or the last error (plain text)."""
    if status is None:
        return ""
    now = time.time() if now is None else now
    where = status.target
    failed_at = status.last_error_at or 0.0
    if status.last_error and (status.last_ok_at is None or failed_at > status.last_ok_at):
        ok = f" Last saved {_ago(now - status.last_ok_at)} ago." if status.last_ok_at else ""
        return (
            f"Saving to {where} failed {_ago(now - failed_at)} ago: "
            f"{status.last_error} Retrying.{ok}"
        )
    if status.last_ok_at is None:
        return f"Saving to {where} every {_ago(status.every_s)} (not saved yet)."
    return f"Saved to {where} {_ago(now - status.last_ok_at)} ago."


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
