"""The label store: collections, pairs, hard negatives and runs in SQLite.

One :class:`Store` per process owns one connection (WAL, foreign keys on) guarded by a lock,
so the UI's worker threads and request handlers can share it. Other processes (the CLI next
to a running app) use their own ``Store``; WAL plus a busy timeout lets them coexist.

Image bytes live on disk, content-addressed (see :mod:`mmdemo.data.images`); the ``images`` table
records their metadata. Deleting a pair is a soft delete (``deleted_at``) so it can be undone.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmdemo.data.processes import is_other_live_process, process_owner
from mmdemo.locks import file_lock
from mmdemo.settings import sqlite_journal_mode
from mmdemo.text import DEFAULT_MAX_CAPTION_CHARS, CaptionRejected, clean_caption, clean_name

SCHEMA_VERSION = 3
SPLITS = ("train", "eval", "test")
LABEL_KINDS = ("negative", "also-positive")
RUN_STATUSES = ("queued", "running", "finished", "cancelled", "failed", "interrupted")
LOCAL_AUTHOR = "local"
"""Who labels off a Space. A label without an author (from before schema 3, or an import that
named none) counts as theirs: the same annotator, whose newer label of a target replaces it."""


def author_key(author: str | None) -> str:
    """The annotator a label's ``author`` stands for (``None`` is :data:`LOCAL_AUTHOR`)."""
    return author or LOCAL_AUTHOR


_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE collections (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE TABLE images (
        sha256      TEXT PRIMARY KEY,
        width       INTEGER NOT NULL,
        height      INTEGER NOT NULL,
        ext         TEXT NOT NULL,
        bytes       INTEGER NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE pairs (
        id            INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        image_sha256  TEXT NOT NULL REFERENCES images(sha256),
        caption       TEXT NOT NULL,
        split         TEXT NOT NULL CHECK (split IN ('train', 'eval', 'test')),
        author        TEXT,
        source        TEXT,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        deleted_at    REAL,
        UNIQUE (collection_id, image_sha256)
    );
    CREATE INDEX pairs_by_collection ON pairs(collection_id, deleted_at, id);
    CREATE INDEX pairs_by_split ON pairs(collection_id, split, deleted_at, id);
    CREATE TABLE negatives (
        id                INTEGER PRIMARY KEY,
        pair_id           INTEGER NOT NULL REFERENCES pairs(id) ON DELETE CASCADE,
        negative_sha256   TEXT REFERENCES images(sha256),
        negative_caption  TEXT,
        kind              TEXT NOT NULL CHECK (kind IN ('negative', 'also-positive')),
        author            TEXT,
        created_at        REAL NOT NULL,
        CHECK ((negative_sha256 IS NULL) <> (negative_caption IS NULL))
    );
    CREATE UNIQUE INDEX negatives_unique_image ON negatives(pair_id, negative_sha256)
        WHERE negative_sha256 IS NOT NULL;
    CREATE UNIQUE INDEX negatives_unique_caption ON negatives(pair_id, negative_caption)
        WHERE negative_caption IS NOT NULL;
    CREATE TABLE runs (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        collection_id INTEGER REFERENCES collections(id) ON DELETE SET NULL,
        base_model    TEXT NOT NULL,
        status        TEXT NOT NULL,
        path          TEXT NOT NULL,
        config_json   TEXT NOT NULL DEFAULT '{}',
        metrics_json  TEXT,
        message       TEXT,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        finished_at   REAL
    );
    """,
    2: """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    """,
    # Team labeling: a label is one person's decision (two annotators may label the same
    # candidate, for agreement), and a pair shown to an annotator is claimed for a while.
    3: """
    DROP INDEX negatives_unique_image;
    DROP INDEX negatives_unique_caption;
    CREATE UNIQUE INDEX negatives_unique_image
        ON negatives(pair_id, negative_sha256, IFNULL(author, ''))
        WHERE negative_sha256 IS NOT NULL;
    CREATE UNIQUE INDEX negatives_unique_caption
        ON negatives(pair_id, negative_caption, IFNULL(author, ''))
        WHERE negative_caption IS NOT NULL;
    CREATE TABLE label_claims (
        pair_id     INTEGER PRIMARY KEY REFERENCES pairs(id) ON DELETE CASCADE,
        author      TEXT NOT NULL,
        claimed_at  REAL NOT NULL
    );
    CREATE INDEX label_claims_by_author ON label_claims(author);
    """,
}


class StoreError(Exception):
    """A request the store cannot satisfy (unknown collection, duplicate name, ...)."""


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Pair:
    id: int
    collection_id: int
    image_sha256: str
    caption: str
    split: str
    author: str | None
    source: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class NegativeLabel:
    id: int
    pair_id: int
    negative_sha256: str | None
    negative_caption: str | None
    kind: str
    author: str | None
    created_at: float


@dataclass(frozen=True)
class Run:
    id: int
    name: str
    collection_id: int | None
    base_model: str
    status: str
    path: str
    config_json: str
    metrics_json: str | None
    message: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    owner: str | None = None
    """The process that created the run (:func:`process_owner`)."""


@dataclass(frozen=True)
class CollectionStats:
    pairs: int
    splits: dict[str, int]
    negatives: int
    also_positives: int
    caption_negatives: int


def _now() -> float:
    return time.time()


def _check_name(name: str) -> str:
    try:
        return clean_name(name)
    except CaptionRejected as exc:
        raise StoreError(f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from exc


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise StoreError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    return split


_FILTER_TERM = re.compile(r'"([^"]+)"|(\S+)')


def filter_terms(caption_filter: str | None) -> list[tuple[str, re.Pattern]]:
    """The caption filter as ``(text, pattern)`` terms that must all match.

    A word matches at the start of a word ("cat" finds "cats", not "identification"); a
    "quoted phrase" matches exactly, as whole words. Case is ignored.
    """
    terms = []
    for match in _FILTER_TERM.finditer(caption_filter or ""):
        phrase, word = match.group(1), match.group(2)
        text = " ".join((phrase if phrase is not None else word).split())
        if not text:
            continue
        end = r"(?!\w)" if phrase is not None else ""
        terms.append((text, re.compile(rf"(?<!\w){re.escape(text)}{end}", re.IGNORECASE)))
    return terms


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


def _matches(caption: str | None, pattern: str) -> bool:
    """SQLite function ``mm_match(caption, pattern)`` behind the word-boundary filter."""
    return caption is not None and _compiled(pattern).search(caption) is not None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Store:
    """SQLite-backed store. Thread-safe within one process; safe across processes via WAL."""

    def __init__(
        self,
        db_path: Path | str,
        max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
        journal_mode: str | None = None,
    ):
        self.db_path = Path(db_path)
        # WAL, except on a network/FUSE filesystem (a Space's storage bucket), where WAL's shared
        # memory and locks are unsafe: a rollback journal there (one writer process).
        self.journal_mode = journal_mode or (
            "WAL" if str(db_path) == ":memory:" else sqlite_journal_mode(self.db_path.parent)
        )
        self.max_caption_chars = max_caption_chars
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Gallery counts are cached until any connection (this one or another process) writes.
        self._count_cache: dict[tuple, tuple[int, list[int]]] = {}
        self._count_cache_version: tuple[int, int] | None = None
        self._writes = 0
        self._signatures: dict[int, tuple[tuple[int, int], tuple]] = {}
        # Processes opening one fresh database at once (torchrun ranks on a fresh home) take
        # turns: switching a new file to WAL can fail with "database is locked" at once, without
        # waiting for the busy timeout.
        in_memory = str(db_path) == ":memory:"
        opening = (
            contextlib.nullcontext()
            if in_memory
            else file_lock(self.db_path.with_name(self.db_path.name + ".open-lock"))
        )
        with opening:
            self._conn = sqlite3.connect(
                self.db_path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.create_function("mm_match", 2, _matches, deterministic=True)
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()

    # -- plumbing ----------------------------------------------------------------------
    def check_caption(self, caption: object) -> str:
        """The caption cleaned by the one rule every write path uses, or a ``StoreError``."""
        try:
            return clean_caption(caption, self.max_caption_chars)
        except CaptionRejected as exc:
            raise StoreError(f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements atomically (``BEGIN IMMEDIATE`` … ``COMMIT``, rollback on error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
                self._writes += 1

    def _query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def schema_version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        with self._lock:
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"The database at {self.db_path} has schema {current}, newer than this "
                    f"mmdemo understands ({SCHEMA_VERSION}). Upgrade mmdemo."
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                with self.transaction() as conn:
                    if self.schema_version() >= version:  # another process opening a fresh
                        continue  # database (a torchrun rank) applied it while this one waited
                    for statement in _split_sql(_MIGRATIONS[version]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")

    # -- collections ---------------------------------------------------------------------
    def create_collection(self, name: str) -> Collection:
        name = _check_name(name)
        now = _now()
        try:
            with self.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO collections(name, created_at, updated_at) VALUES (?, ?, ?)",
                    (name, now, now),
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"A collection named {name!r} already exists.") from exc
        return Collection(int(cur.lastrowid), name, now, now)

    def get_or_create_collection(self, name: str) -> Collection:
        existing = self.find_collection(name)
        return existing if existing else self.create_collection(name)

    def find_collection(self, name: str) -> Collection | None:
        rows = self._query("SELECT * FROM collections WHERE name = ?", (name.strip(),))
        return Collection(**dict(rows[0])) if rows else None

    def collection(self, name: str) -> Collection:
        found = self.find_collection(name)
        if found is None:
            raise StoreError(f"No collection named {name!r}.")
        return found

    def collection_by_id(self, collection_id: int) -> Collection:
        rows = self._query("SELECT * FROM collections WHERE id = ?", (collection_id,))
        if not rows:
            raise StoreError(f"No collection with id {collection_id}.")
        return Collection(**dict(rows[0]))

    def list_collections(self) -> list[Collection]:
        return [
            Collection(**dict(r)) for r in self._query("SELECT * FROM collections ORDER BY name")
        ]

    def rename_collection(self, old_name: str, new_name: str) -> Collection:
        found = self.collection(old_name)
        new_name = _check_name(new_name)
        try:
            with self.transaction() as conn:
                conn.execute(
                    "UPDATE collections SET name = ?, updated_at = ? WHERE id = ?",
                    (new_name, _now(), found.id),
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"A collection named {new_name!r} already exists.") from exc
        return self.collection_by_id(found.id)

    def delete_collection(self, name: str) -> None:
        """Delete a collection with its pairs and labels. Image files stay (shared, cheap)."""
        found = self.collection(name)
        with self.transaction() as conn:
            conn.execute("DELETE FROM collections WHERE id = ?", (found.id,))

    def collection_stats(self, collection_id: int) -> CollectionStats:
        split_rows = self._query(
            "SELECT split, COUNT(*) AS n FROM pairs WHERE collection_id = ? AND deleted_at IS NULL"
            " GROUP BY split",
            (collection_id,),
        )
        splits = {s: 0 for s in SPLITS}
        splits.update({r["split"]: r["n"] for r in split_rows})
        # One decision per candidate, as training takes it (mmdemo.data.agreement.consensus):
        # each annotator's latest label (no author: the local one's), then also-correct wins.
        row = self._query(
            "WITH latest AS (SELECT n.pair_id, n.negative_sha256, n.negative_caption, n.kind,"
            " ROW_NUMBER() OVER (PARTITION BY n.pair_id, n.negative_sha256, n.negative_caption,"
            " IFNULL(n.author, ?) ORDER BY n.created_at DESC, n.id DESC) AS nth"
            " FROM negatives n JOIN pairs p ON p.id = n.pair_id"
            " WHERE p.collection_id = ? AND p.deleted_at IS NULL),"
            " decided AS (SELECT MAX(kind = 'also-positive') AS also,"
            " MAX(negative_caption IS NOT NULL) AS is_caption FROM latest WHERE nth = 1"
            " GROUP BY pair_id, negative_sha256, negative_caption)"
            " SELECT IFNULL(SUM(also = 0), 0) AS negatives, IFNULL(SUM(also), 0) AS also,"
            " IFNULL(SUM(also = 0 AND is_caption), 0) AS captions FROM decided",
            (LOCAL_AUTHOR, collection_id),
        )[0]
        return CollectionStats(
            sum(splits.values()), splits, row["negatives"], row["also"], row["captions"]
        )

    # -- images ------------------------------------------------------------------------
    def has_image(self, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM images WHERE sha256 = ?", (sha256,)))

    def image_info(self, sha256: str) -> sqlite3.Row | None:
        rows = self._query("SELECT * FROM images WHERE sha256 = ?", (sha256,))
        return rows[0] if rows else None

    def add_image(self, image: dict) -> None:
        """Record an image that is not (yet) part of a pair, e.g. an imported hard negative."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO images(sha256, width, height, ext, bytes, created_at)"
                " VALUES (:sha256, :width, :height, :ext, :bytes, :now)",
                {**image, "now": _now()},
            )

    # -- pairs ---------------------------------------------------------------------------
    def add_pair(
        self,
        collection_id: int,
        image: dict,
        caption: str,
        split: str = "train",
        author: str | None = None,
        source: str | None = None,
    ) -> tuple[Pair | None, bool]:
        """Record an image (metadata dict from :mod:`mmdemo.data.images`) and its pair, atomically.

        Returns ``(pair, True)`` when added and ``(existing_pair, False)`` when the collection
        already holds this image. A soft-deleted pair with the same image is replaced.
        """
        _check_split(split)
        caption = self.check_caption(caption)
        now = _now()
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO images(sha256, width, height, ext, bytes, created_at)"
                " VALUES (:sha256, :width, :height, :ext, :bytes, :now)",
                {**image, "now": now},
            )
            existing = conn.execute(
                "SELECT * FROM pairs WHERE collection_id = ? AND image_sha256 = ?",
                (collection_id, image["sha256"]),
            ).fetchone()
            if existing is not None and existing["deleted_at"] is None:
                return _pair(existing), False
            if existing is not None:
                conn.execute("DELETE FROM pairs WHERE id = ?", (existing["id"],))
            cur = conn.execute(
                "INSERT INTO pairs(collection_id, image_sha256, caption, split, author, source,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (collection_id, image["sha256"], caption, split, author, source, now, now),
            )
            conn.execute("UPDATE collections SET updated_at = ? WHERE id = ?", (now, collection_id))
            row = conn.execute("SELECT * FROM pairs WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _pair(row), True

    def get_pair(self, pair_id: int) -> Pair:
        rows = self._query("SELECT * FROM pairs WHERE id = ? AND deleted_at IS NULL", (pair_id,))
        if not rows:
            raise StoreError(f"Pair {pair_id} does not exist (was it deleted?).")
        return _pair(rows[0])

    def find_pair_by_image(self, collection_id: int, sha256: str) -> Pair | None:
        rows = self._query(
            "SELECT * FROM pairs WHERE collection_id = ? AND image_sha256 = ?"
            " AND deleted_at IS NULL",
            (collection_id, sha256),
        )
        return _pair(rows[0]) if rows else None

    def _filter_sql(
        self, collection_id: int, caption_filter: str | None, split: str | None
    ) -> tuple[str, list]:
        where = ["collection_id = ?", "deleted_at IS NULL"]
        params: list = [collection_id]
        if split:
            where.append("split = ?")
            params.append(_check_split(split))
        for text, pattern in filter_terms(caption_filter):
            # LIKE narrows the rows cheaply; the word-boundary test runs on those only.
            where.append("caption LIKE ? ESCAPE '\\' AND mm_match(caption, ?)")
            params += [f"%{_escape_like(text)}%", pattern.pattern]
        return " AND ".join(where), params

    def _page_index(
        self, collection_id: int, caption_filter: str | None, split: str | None, page_size: int
    ) -> tuple[int, list[int]]:
        """(matching count, first pair id of every page), cached until the next write.

        One index scan per data version lets every later page be a keyset lookup instead of an
        ``OFFSET`` that walks the collection, so deep pages of big collections stay fast.
        """
        key = (collection_id, (caption_filter or "").strip(), split or "", page_size)
        with self._lock:
            # data_version changes when another connection commits; _writes when this one does.
            version = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
            if version != self._count_cache_version:
                self._count_cache = {}
                self._count_cache_version = version
            if key not in self._count_cache:
                where, params = self._filter_sql(collection_id, caption_filter, split)
                ids = [
                    row[0]
                    for row in self._conn.execute(
                        f"SELECT id FROM pairs WHERE {where} ORDER BY id", params
                    )
                ]
                self._count_cache[key] = (len(ids), ids[::page_size])
            return self._count_cache[key]

    def count_pairs(
        self, collection_id: int, caption_filter: str | None = None, split: str | None = None
    ) -> int:
        where, params = self._filter_sql(collection_id, caption_filter, split)
        return int(self._query(f"SELECT COUNT(*) FROM pairs WHERE {where}", params)[0][0])

    def pairs_signature(self, collection_id: int) -> tuple:
        """A value that changes whenever the collection's pairs change (add, delete, restore,
        caption or split edit), so derived data (search matrices) can be reused until then.

        Free while nothing was written (checked like the gallery's page index); after a write
        one aggregate over the collection's rows (a label alone leaves it unchanged).
        """
        with self._lock:
            version = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
            known = self._signatures.get(collection_id)
            if known is not None and known[0] == version:
                return known[1]
            row = self._conn.execute(
                "SELECT COUNT(*), SUM(deleted_at IS NULL), MAX(id), TOTAL(id), MAX(updated_at),"
                " MAX(deleted_at) FROM pairs WHERE collection_id = ?",
                (collection_id,),
            ).fetchone()
            self._signatures[collection_id] = (version, tuple(row))
            return tuple(row)

    def list_pairs(
        self,
        collection_id: int,
        caption_filter: str | None = None,
        split: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Pair]:
        """Pairs in insertion order, filtered by a caption substring and/or a split."""
        where, params = self._filter_sql(collection_id, caption_filter, split)
        sql = f"SELECT * FROM pairs WHERE {where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), max(0, int(offset))]
        return [_pair(r) for r in self._query(sql, params)]

    def matching_pair_ids(
        self, collection_id: int, caption_filter: str | None = None, split: str | None = None
    ) -> list[int]:
        """Ids of every pair the gallery's filter matches (what :meth:`count_pairs` counts)."""
        where, params = self._filter_sql(collection_id, caption_filter, split)
        return [
            r[0] for r in self._query(f"SELECT id FROM pairs WHERE {where} ORDER BY id", params)
        ]

    def get_pairs(self, pair_ids: list[int]) -> list[Pair]:
        """The pairs (not deleted) among ``pair_ids``, in id order; unknown ids are left out."""
        ids = sorted({int(i) for i in pair_ids})
        found: list[Pair] = []
        for start in range(0, len(ids), 500):  # well under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._query(
                f"SELECT * FROM pairs WHERE id IN ({marks}) AND deleted_at IS NULL ORDER BY id",
                chunk,
            )
            found += [_pair(r) for r in rows]
        return found

    def page_pairs(
        self,
        collection_id: int,
        page: int,
        page_size: int = 48,
        caption_filter: str | None = None,
        split: str | None = None,
    ) -> tuple[list[Pair], int]:
        """One gallery page (0-based) and the total number of matching pairs."""
        total, anchors = self._page_index(collection_id, caption_filter, split, page_size)
        if page < 0 or page >= len(anchors):
            return [], total
        where, params = self._filter_sql(collection_id, caption_filter, split)
        rows = self._query(
            f"SELECT * FROM pairs WHERE {where} AND id >= ? ORDER BY id LIMIT ?",
            [*params, anchors[page], page_size],
        )
        return [_pair(r) for r in rows], total

    def update_pair(
        self, pair_id: int, caption: str | None = None, split: str | None = None
    ) -> Pair:
        current = self.get_pair(pair_id)
        new_caption = current.caption if caption is None else self.check_caption(caption)
        new_split = current.split if split is None else _check_split(split)
        with self.transaction() as conn:
            conn.execute(
                "UPDATE pairs SET caption = ?, split = ?, updated_at = ? WHERE id = ?",
                (new_caption, new_split, _now(), pair_id),
            )
        return self.get_pair(pair_id)

    def set_splits(self, assignments: dict[int, str]) -> None:
        with self.transaction() as conn:
            now = _now()
            conn.executemany(
                "UPDATE pairs SET split = ?, updated_at = ? WHERE id = ?",
                [(_check_split(s), now, pid) for pid, s in assignments.items()],
            )

    def delete_pair(self, pair_id: int) -> Pair:
        """Soft-delete a pair (its labels are hidden with it). Undo with :meth:`restore_pair`."""
        pair = self.get_pair(pair_id)
        with self.transaction() as conn:
            conn.execute("UPDATE pairs SET deleted_at = ? WHERE id = ?", (_now(), pair_id))
        return pair

    def restore_pair(self, pair_id: int) -> Pair:
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE pairs SET deleted_at = NULL, updated_at = ? WHERE id = ?"
                " AND deleted_at IS NOT NULL",
                (_now(), pair_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"Pair {pair_id} is not deleted; nothing to undo.")
        return self.get_pair(pair_id)

    # -- hard-negative labels -------------------------------------------------------------
    def add_label(
        self,
        pair_id: int,
        kind: str = "negative",
        negative_sha256: str | None = None,
        negative_caption: str | None = None,
        author: str | None = None,
    ) -> NegativeLabel:
        """Label an image (or a caption) as a hard negative or also-positive for a pair.

        A label is one author's decision: the same author labeling the same target again
        updates its kind; another author's label of it is a row of its own (for agreement).
        No author and :data:`LOCAL_AUTHOR` are the same annotator (:func:`author_key`): their
        label is updated, keeping the name when one is known (a second such row is merged).
        """
        if kind not in LABEL_KINDS:
            raise StoreError(f"Unknown label kind {kind!r}; use one of {', '.join(LABEL_KINDS)}.")
        if (negative_sha256 is None) == (negative_caption is None):
            raise StoreError("A label names either a negative image or a negative caption.")
        if negative_caption is not None:
            negative_caption = self.check_caption(negative_caption)
        pair = self.get_pair(pair_id)
        if negative_sha256 is not None:
            if negative_sha256 == pair.image_sha256:
                raise StoreError("An image cannot be a negative for its own caption.")
            if not self.has_image(negative_sha256):
                raise StoreError(f"Unknown image {negative_sha256[:12]}….")
        if negative_caption is not None and negative_caption == pair.caption:
            raise StoreError("A caption cannot be a negative for itself.")
        target_col = "negative_sha256" if negative_sha256 is not None else "negative_caption"
        target = negative_sha256 if negative_sha256 is not None else negative_caption
        now = _now()
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT id, author FROM negatives WHERE pair_id = ? AND {target_col} = ?"
                " AND IFNULL(author, ?) = ? ORDER BY author IS NULL, id",
                (pair_id, target, LOCAL_AUTHOR, author_key(author)),
            ).fetchall()
            if rows:
                label_id = rows[0]["id"]
                for extra in rows[1:]:  # a no-author row next to a "local" one (schema 3 at first)
                    conn.execute("DELETE FROM negatives WHERE id = ?", (extra["id"],))
                conn.execute(
                    "UPDATE negatives SET kind = ?, author = ?, created_at = ? WHERE id = ?",
                    (kind, author or rows[0]["author"], now, label_id),
                )
            else:
                cur = conn.execute(
                    "INSERT INTO negatives(pair_id, negative_sha256, negative_caption, kind,"
                    " author, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (pair_id, negative_sha256, negative_caption, kind, author, now),
                )
                label_id = cur.lastrowid
        return self.get_label(int(label_id))

    def get_label(self, label_id: int) -> NegativeLabel:
        rows = self._query("SELECT * FROM negatives WHERE id = ?", (label_id,))
        if not rows:
            raise StoreError(f"Label {label_id} does not exist.")
        return NegativeLabel(**dict(rows[0]))

    def remove_label(self, label_id: int) -> NegativeLabel:
        """Delete a label and return it, so the caller can offer to put it back."""
        label = self.get_label(label_id)
        with self.transaction() as conn:
            conn.execute("DELETE FROM negatives WHERE id = ?", (label_id,))
        return label

    def restore_label(self, label: NegativeLabel) -> NegativeLabel:
        """Undo :meth:`remove_label`."""
        return self.add_label(
            label.pair_id, label.kind, label.negative_sha256, label.negative_caption, label.author
        )

    def labels_for_pair(self, pair_id: int) -> list[NegativeLabel]:
        rows = self._query("SELECT * FROM negatives WHERE pair_id = ? ORDER BY id", (pair_id,))
        return [NegativeLabel(**dict(r)) for r in rows]

    def labels_for_collection(self, collection_id: int) -> list[NegativeLabel]:
        rows = self._query(
            "SELECT n.* FROM negatives n JOIN pairs p ON p.id = n.pair_id"
            " WHERE p.collection_id = ? AND p.deleted_at IS NULL ORDER BY n.id",
            (collection_id,),
        )
        return [NegativeLabel(**dict(r)) for r in rows]

    def count_labeled_pairs(self, collection_id: int, split: str | None = None) -> int:
        """Pairs of a collection (or of one split) with at least one label: one query whose
        cost grows with the number of labels, not of pairs."""
        sql = (
            "SELECT COUNT(DISTINCT n.pair_id) FROM negatives n JOIN pairs p ON p.id = n.pair_id"
            " WHERE p.collection_id = ? AND p.deleted_at IS NULL"
        )
        params: list = [collection_id]
        if split:
            sql += " AND p.split = ?"
            params.append(_check_split(split))
        return int(self._query(sql, params)[0][0])

    def next_pair(
        self,
        collection_id: int,
        after_pair_id: int | None = None,
        split: str | None = None,
        unlabeled_only: bool = False,
    ) -> Pair | None:
        """The first pair (of a split; without labels with ``unlabeled_only``) whose id is
        above ``after_pair_id``, wrapping around to the first; ``None`` when there is none.
        An index range scan, so walking a big collection costs the same at every step."""
        where, params = self._filter_sql(collection_id, None, split)
        if unlabeled_only:
            where += " AND NOT EXISTS (SELECT 1 FROM negatives n WHERE n.pair_id = pairs.id)"
        for lower in ([] if after_pair_id is None else [int(after_pair_id)]) + [None]:
            extra, values = ("", []) if lower is None else (" AND id > ?", [lower])
            rows = self._query(
                f"SELECT * FROM pairs WHERE {where}{extra} ORDER BY id LIMIT 1", params + values
            )
            if rows:
                return _pair(rows[0])
        return None

    def label_authors(self, collection_id: int, split: str | None = None) -> dict[int, set]:
        """Who labeled each pair (of a split): ``{pair_id: {author, ...}}``, labeled pairs only."""
        sql = (
            "SELECT DISTINCT n.pair_id, n.author FROM negatives n JOIN pairs p ON p.id = n.pair_id"
            " WHERE p.collection_id = ? AND p.deleted_at IS NULL"
        )
        params: list = [collection_id]
        if split:
            sql += " AND p.split = ?"
            params.append(_check_split(split))
        found: dict[int, set] = {}
        for row in self._query(sql, params):
            found.setdefault(int(row[0]), set()).add(row[1])
        return found

    # -- label claims (team labeling) -------------------------------------------------------
    def claim_pair(self, pair_id: int, author: str, expires_before: float) -> bool:
        """Claim a pair for ``author`` (who then holds no other claim); ``False`` when another
        author's claim made at or after ``expires_before`` holds it. Atomic across sessions."""
        now = _now()
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM label_claims WHERE author = ? AND pair_id <> ?", (author, pair_id)
            )
            conn.execute(
                "INSERT INTO label_claims(pair_id, author, claimed_at) VALUES (?, ?, ?)"
                " ON CONFLICT(pair_id) DO UPDATE SET author = excluded.author,"
                " claimed_at = excluded.claimed_at"
                " WHERE label_claims.author = excluded.author OR label_claims.claimed_at < ?",
                (pair_id, author, now, expires_before),
            )
            row = conn.execute(
                "SELECT author FROM label_claims WHERE pair_id = ?", (pair_id,)
            ).fetchone()
        return row is not None and row[0] == author

    def claims(self, collection_id: int, expires_before: float) -> dict[int, str]:
        """Claims still held (made at or after ``expires_before``): ``{pair_id: author}``."""
        rows = self._query(
            "SELECT c.pair_id, c.author FROM label_claims c JOIN pairs p ON p.id = c.pair_id"
            " WHERE p.collection_id = ? AND c.claimed_at >= ?",
            (collection_id, expires_before),
        )
        return {int(r[0]): r[1] for r in rows}

    def release_claims(self, author: str) -> None:
        """Drop every claim ``author`` holds."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM label_claims WHERE author = ?", (author,))

    # -- runs ----------------------------------------------------------------------------
    def create_run(
        self,
        name: str,
        collection_id: int | None,
        base_model: str,
        path: str,
        config_json: str = "{}",
        status: str = "queued",
    ) -> Run:
        now = _now()
        try:
            with self.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO runs(name, collection_id, base_model, status, path, config_json,"
                    " created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        collection_id,
                        base_model,
                        status,
                        path,
                        config_json,
                        now,
                        now,
                        process_owner(),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"A run named {name!r} already exists.") from exc
        return self.get_run_by_id(int(cur.lastrowid))

    def update_run(
        self,
        name: str,
        status: str | None = None,
        metrics_json: str | None = None,
        message: str | None = None,
        finished: bool = False,
    ) -> Run:
        if status is not None and status not in RUN_STATUSES:
            raise StoreError(f"Unknown run status {status!r}.")
        run = self.get_run(name)
        now = _now()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET status = COALESCE(?, status),"
                " metrics_json = COALESCE(?, metrics_json), message = COALESCE(?, message),"
                " updated_at = ?, finished_at = CASE WHEN ? THEN ? ELSE finished_at END"
                " WHERE id = ?",
                (status, metrics_json, message, now, finished, now, run.id),
            )
        return self.get_run_by_id(run.id)

    def get_run(self, name: str) -> Run:
        rows = self._query("SELECT * FROM runs WHERE name = ?", (name,))
        if not rows:
            raise StoreError(f"No run named {name!r}.")
        return Run(**dict(rows[0]))

    def get_run_by_id(self, run_id: int) -> Run:
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise StoreError(f"No run with id {run_id}.")
        return Run(**dict(rows[0]))

    def list_runs(self, collection_id: int | None = None) -> list[Run]:
        if collection_id is None:
            rows = self._query("SELECT * FROM runs ORDER BY created_at DESC, id DESC")
        else:
            rows = self._query(
                "SELECT * FROM runs WHERE collection_id = ? ORDER BY created_at DESC, id DESC",
                (collection_id,),
            )
        return [Run(**dict(r)) for r in rows]

    def mark_interrupted_runs(self) -> int:
        """Runs left ``queued``/``running`` by a process that died become ``interrupted``.

        Called when the app starts, so the caller runs nothing yet. A run whose owner is another
        live process on this machine (a CLI ``train`` beside the app) is left alone.
        """
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT id, owner FROM runs WHERE status IN ('queued', 'running')"
            ).fetchall()
            stale = [row["id"] for row in rows if not is_other_live_process(row["owner"])]
            conn.executemany(
                "UPDATE runs SET status = 'interrupted', updated_at = ?,"
                " message = COALESCE(message, 'The app stopped while this run was in progress.')"
                " WHERE id = ?",
                [(_now(), run_id) for run_id in stale],
            )
        return len(stale)


def _pair(row: sqlite3.Row) -> Pair:
    data = dict(row)
    data.pop("deleted_at", None)
    return Pair(**data)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]
