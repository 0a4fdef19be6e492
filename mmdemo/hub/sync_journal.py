"""The sync's saved history: its layout and manifest, the journal and snapshot files (encoded
and decoded), the store's rows read for a save, and restore (the rows validated and replayed).

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

Re-exported by :mod:`mmdemo.hub.sync`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmdemo.data.images import (
    IMAGE_EXTENSIONS,
    ImageLimits,
    image_path,
    ingest_image_bytes,
    thumb_path,
    train_path,
)
from mmdemo.data.store import SCHEMA_VERSION, Store, StoreError
from mmdemo.hub.sync_backends import (
    Backend,
    SyncError,
    SyncRefused,
    SyncState,
    Target,
    save_state,
)
from mmdemo.settings import Settings
from mmdemo.text import CaptionRejected, clean_name, shorten

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


def _typed_key(table: str, key: str) -> Any:
    return key if KEYS.get(table) else int(key)
