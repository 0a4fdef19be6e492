"""The on-disk embedding cache: encode an image or a text once per model, ever.

Embeddings are keyed by (model fingerprint, image content SHA-256) and (model fingerprint, text),
so switching queries, reopening the Compare tab or restarting the app encodes nothing again; only
new or changed items are encoded. A replaced image has a new SHA (content-addressed), so it gets
a new row; a deleted pair's image is simply not asked for.

Layout, per model and kind (``image`` / ``text``) under ``settings.cache_dir/embeddings/<fp>/``::

    <kind>.f32       normalised float32 rows, appended only, read through a memory map
    <kind>.sqlite3   key → row index, and the dimension

A write appends the vectors (fsync) *before* committing their index rows in one SQLite
transaction, so a killed process leaves at most an unreferenced tail, cut off by the next write.
A file shorter than its index claims, an unreadable index or a dimension mismatch is corruption:
that model's cache is deleted and rebuilt on demand. Appends across processes (the CLI beside the
app) are serialised with an advisory file lock; within a process one lock guards the bookkeeping,
and encoding runs outside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmdemo.data.images import load_rgb, train_path
from mmdemo.settings import Settings, sqlite_journal_mode

try:  # POSIX advisory locks; elsewhere only the in-process lock applies.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

KINDS = ("image", "text")
ProgressFn = Callable[[int, int], None]
"""``progress(done, total)`` called after each encoded chunk."""


class Encoder(Protocol):
    """Anything that embeds a list of strings or of PIL images (one modality per call)."""

    def encode(self, inputs: list[Any], **kwargs: Any) -> np.ndarray: ...


class CacheCorrupt(RuntimeError):
    """The files of one model's cache disagree; the cache rebuilds it."""


def text_key(text: str) -> str:
    """The cache key of a text: SHA-256 of its UTF-8 bytes (texts can be long)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pil_key(image: Any) -> str:
    """The cache key of an in-memory PIL image (an uploaded query): hash of its pixels."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"pil:{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return "pil-" + digest.hexdigest()


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32 rows scaled to unit length (zero rows stay zero), so cosine is a dot product."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def _fingerprint_dirname(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:32]


class _Table:
    """One (model, kind) pair of files. Callers hold the cache lock."""

    def __init__(self, folder: Path, kind: str, fingerprint: str):
        self.folder = folder
        self.kind = kind
        self.fingerprint = fingerprint
        self.vectors_path = folder / f"{kind}.f32"
        self.index_path = folder / f"{kind}.sqlite3"
        self.lock_path = folder / f".{kind}.lock"
        self._conn: sqlite3.Connection | None = None
        self._index: dict[str, int] = {}
        self._n = 0
        self._dim: int | None = None
        self._map: np.ndarray | None = None
        self._loaded = False

    # -- files ----------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.index_path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            # WAL, but a rollback journal on a network/FUSE filesystem (a storage bucket).
            conn.execute(f"PRAGMA journal_mode={sqlite_journal_mode(self.folder)}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, row INTEGER NOT NULL)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('fingerprint', ?)",
                (self.fingerprint,),
            )
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._map = None

    def _read_meta_dim(self, conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        return int(row[0]) if row else None

    def _check_file(self, n: int, dim: int | None) -> None:
        if n == 0:
            return
        if dim is None:
            raise CacheCorrupt(f"{self.index_path} has rows but no dimension")
        size = self.vectors_path.stat().st_size if self.vectors_path.exists() else 0
        if size < n * dim * 4:
            raise CacheCorrupt(f"{self.vectors_path} holds {size} bytes, its index needs more")

    def load(self) -> None:
        """Read the whole index once (later misses re-check SQLite for other processes)."""
        if self._loaded:
            return
        conn = self._connection()
        rows = conn.execute("SELECT key, row FROM rows").fetchall()
        self._index = dict(rows)
        self._n = len(self._index)
        self._dim = self._read_meta_dim(conn)
        if self._index and max(self._index.values()) != self._n - 1:
            raise CacheCorrupt(f"{self.index_path} rows are not 0..n-1")
        self._check_file(self._n, self._dim)
        self._map = None
        self._loaded = True

    def refresh(self, keys: Sequence[str]) -> None:
        """Pick up rows another process committed for ``keys``."""
        conn = self._connection()
        found: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT key, row FROM rows WHERE key IN ({marks})", chunk))
        if found:
            self._index.update(found)
            self._n = max(self._n, max(found.values()) + 1)
            self._dim = self._read_meta_dim(conn)
            self._check_file(self._n, self._dim)
            self._map = None

    def rows_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row index per key, ``-1`` where missing."""
        get = self._index.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def __len__(self) -> int:
        return self._n

    def matrix(self) -> np.ndarray:
        """All committed rows as a read-only memory map (empty when nothing is cached)."""
        if self._n == 0 or self._dim is None:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        if self._map is None or self._map.shape[0] != self._n:
            self._map = np.asarray(
                np.memmap(self.vectors_path, dtype=np.float32, mode="r", shape=(self._n, self._dim))
            )
        return self._map

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def append(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add rows for keys not yet present: vectors first (fsync), then the index commit."""
        vectors = normalise_rows(vectors)
        if len(keys) != vectors.shape[0]:
            raise ValueError(f"{len(keys)} keys but {vectors.shape[0]} vectors")
        dim = int(vectors.shape[1])
        with self._file_lock():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored_dim = self._read_meta_dim(conn)
                if stored_dim is not None and stored_dim != dim:
                    raise CacheCorrupt(
                        f"{self.index_path} holds {stored_dim}-dim rows, the model gave {dim}"
                    )
                present: set[str] = set()
                unique = list(dict.fromkeys(keys))
                for start in range(0, len(unique), 500):
                    chunk = unique[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    present.update(
                        r[0]
                        for r in conn.execute(f"SELECT key FROM rows WHERE key IN ({marks})", chunk)
                    )
                chosen: dict[str, int] = {}
                for i, key in enumerate(keys):
                    if key not in present and key not in chosen:
                        chosen[key] = i
                if chosen:
                    n = int(conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
                    self._write_vectors(n, dim, vectors[list(chosen.values())])
                    conn.executemany(
                        "INSERT INTO rows(key, row) VALUES (?, ?)",
                        [(key, n + j) for j, key in enumerate(chosen)],
                    )
                    if stored_dim is None:
                        conn.execute("INSERT INTO meta(key, value) VALUES ('dim', ?)", (str(dim),))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        if chosen:
            # Rows other processes added before ours are picked up by ``refresh`` on a miss.
            self._index.update((key, n + j) for j, key in enumerate(chosen))
            self._n = max(self._n, n + len(chosen))
            self._dim = dim
            self._map = None

    def _write_vectors(self, n: int, dim: int, block: np.ndarray) -> None:
        row_bytes = dim * 4
        fd = os.open(self.vectors_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size < n * row_bytes:
                raise CacheCorrupt(f"{self.vectors_path} is shorter than its index")
            if size > n * row_bytes:
                os.ftruncate(fd, n * row_bytes)  # the unreferenced tail of a killed write
            os.pwrite(fd, np.ascontiguousarray(block, dtype=np.float32).tobytes(), n * row_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)


class EmbeddingCache:
    """Process-wide, thread-safe embedding cache on disk (see the module docstring).

    ``encode_calls`` counts calls to a model's ``encode`` and ``encoded_items`` the items they
    carried, so a test can assert that a repeated request encodes nothing.
    """

    def __init__(
        self,
        settings: Settings,
        chunk_size: int = 64,
        batch_size: int = 32,
        max_derived: int = 6,
    ):
        self.root = Path(settings.cache_dir) / "embeddings"
        self.images_dir = Path(settings.images_dir)
        self.chunk_size = max(1, int(chunk_size))
        self.batch_size = max(1, int(batch_size))
        self._lock = threading.RLock()
        self._tables: dict[tuple[str, str], _Table] = {}
        self._derived: OrderedDict[tuple, Any] = OrderedDict()
        self.max_derived = max(1, int(max_derived))
        self.encode_calls = 0
        self.encoded_items = 0

    # -- bookkeeping ------------------------------------------------------------------------
    def _table(self, fingerprint: str, kind: str) -> _Table:
        if kind not in KINDS:
            raise ValueError(f"Unknown embedding kind {kind!r}")
        key = (fingerprint, kind)
        table = self._tables.get(key)
        if table is None:
            folder = self.root / _fingerprint_dirname(fingerprint)
            table = _Table(folder, kind, fingerprint)
            self._tables[key] = table
        return table

    def _reset(self, table: _Table, reason: Exception) -> None:
        log.warning(
            "Embedding cache for %s (%s) is corrupt, rebuilding: %s",
            table.fingerprint,
            table.kind,
            reason,
        )
        table.close()
        for path in (table.vectors_path, table.index_path):
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        self._tables.pop((table.fingerprint, table.kind), None)
        for key in [k for k in self._derived if k[0] == table.fingerprint]:
            del self._derived[key]

    def _guarded(self, fingerprint: str, kind: str, action: Callable[[_Table], Any]) -> Any:
        """Run ``action(table)`` under the lock; on corruption rebuild once and retry."""
        with self._lock:
            for attempt in (0, 1):
                table = self._table(fingerprint, kind)
                try:
                    table.load()
                    return action(table)
                except (CacheCorrupt, sqlite3.DatabaseError) as exc:
                    # A busy or unwritable database is not corruption: never delete for it.
                    if attempt or isinstance(exc, sqlite3.OperationalError):
                        raise
                    self._reset(table, exc)
        raise AssertionError("unreachable")

    def count(self, fingerprint: str, kind: str = "image") -> int:
        """How many embeddings of this kind are cached for the model."""
        return int(self._guarded(fingerprint, kind, len))

    def clear(self, fingerprint: str | None = None) -> None:
        """Forget one model's cached embeddings, or all of them."""
        with self._lock:
            for key in list(self._tables):
                if fingerprint is None or key[0] == fingerprint:
                    self._tables.pop(key).close()
            for key in list(self._derived):
                if fingerprint is None or key[0] == fingerprint:
                    del self._derived[key]
            target = (
                self.root if fingerprint is None else self.root / _fingerprint_dirname(fingerprint)
            )
            shutil.rmtree(target, ignore_errors=True)

    def derived(self, key: tuple, build: Callable[[], Any]) -> Any:
        """Memoise data derived from cached embeddings (e.g. a collection's search matrix).

        ``key`` must start with the model fingerprint and identify the inputs completely (the
        caller puts a version of its data in it). The least recently used entries beyond
        ``max_derived`` are dropped; :meth:`clear` drops a model's entries too.
        """
        with self._lock:
            if key in self._derived:
                self._derived.move_to_end(key)
                return self._derived[key]
        value = build()  # outside the lock: building may encode
        with self._lock:
            self._derived[key] = value
            self._derived.move_to_end(key)
            while len(self._derived) > self.max_derived:
                self._derived.popitem(last=False)
        return value

    def close(self) -> None:
        with self._lock:
            self._derived.clear()
            for table in self._tables.values():
                table.close()
            self._tables.clear()

    # -- lookups ------------------------------------------------------------------------------
    def lookup(self, fingerprint: str, kind: str, keys: Sequence[str]) -> np.ndarray:
        """Cached rows for ``keys`` in order; raises ``KeyError`` if any is missing."""

        def read(table: _Table) -> np.ndarray:
            rows = table.rows_for(keys)
            if (rows < 0).any():
                table.refresh([k for k, r in zip(keys, rows, strict=True) if r < 0])
                rows = table.rows_for(keys)
            if (rows < 0).any():
                missing = [k for k, r in zip(keys, rows, strict=True) if r < 0]
                raise KeyError(f"{len(missing)} {kind} embeddings not cached, e.g. {missing[0]}")
            return _gather(table.matrix(), rows)

        return self._guarded(fingerprint, kind, read)

    def missing(self, fingerprint: str, kind: str, keys: Sequence[str]) -> list[str]:
        """The distinct keys among ``keys`` that have no cached embedding yet."""

        def find(table: _Table) -> list[str]:
            rows = table.rows_for(keys)
            absent = list(dict.fromkeys(k for k, r in zip(keys, rows, strict=True) if r < 0))
            if absent:
                table.refresh(absent)
                rows = table.rows_for(absent)
                absent = [k for k, r in zip(absent, rows, strict=True) if r < 0]
            return absent

        return self._guarded(fingerprint, kind, find)

    def add_vectors(
        self, fingerprint: str, kind: str, keys: Sequence[str], vectors: np.ndarray
    ) -> None:
        """Store embeddings computed elsewhere (e.g. by a GPU job); existing keys are kept."""
        keys = list(keys)
        if not keys:
            return
        self._guarded(fingerprint, kind, lambda table: table.append(keys, vectors))

    # -- encoding ----------------------------------------------------------------------------
    def _encode(self, model: Encoder, items: list[Any]) -> np.ndarray:
        vectors = model.encode(
            items,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        with self._lock:
            self.encode_calls += 1
            self.encoded_items += len(items)
        return normalise_rows(np.asarray(vectors))

    def image_embeddings(
        self,
        model: Encoder,
        fingerprint: str,
        shas: Sequence[str],
        paths: Sequence[Path | str] | None = None,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Embeddings of stored images, one row per SHA in the order asked.

        Only images without a cached embedding are encoded, in chunks that are saved as they
        finish (a killed run keeps its progress). They are read from ``paths`` when given, else
        from the pre-resized training copies (:func:`mmdemo.data.images.train_path`). Rows of a
        collection encoded in one go are contiguous, and then the result is a view of the
        memory map (no copy).
        """
        shas = list(shas)
        if paths is not None and len(paths) != len(shas):
            raise ValueError(f"{len(shas)} SHAs but {len(paths)} paths")
        absent = self.missing(fingerprint, "image", shas)
        if absent:
            where = dict(zip(shas, paths, strict=True)) if paths is not None else {}
            done = 0
            for start in range(0, len(absent), self.chunk_size):
                chunk = absent[start : start + self.chunk_size]
                images = [
                    load_rgb(where.get(sha) or train_path(self.images_dir, sha)) for sha in chunk
                ]
                vectors = self._encode(model, images)
                self.add_vectors(fingerprint, "image", chunk, vectors)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(absent))
        return self.lookup(fingerprint, "image", shas)

    def text_embeddings(
        self,
        model: Encoder,
        fingerprint: str,
        texts: Sequence[str],
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Embeddings of texts, one row per text in the order asked; encodes only new texts."""
        texts = list(texts)
        keys = [text_key(t) for t in texts]
        absent = set(self.missing(fingerprint, "text", keys))
        if absent:
            todo = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k in absent))
            done = 0
            chunk_size = max(self.chunk_size, 256)
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                # Wrapped so a text that names an existing image file is still read as text.
                vectors = self._encode(model, [{"text": t} for t in chunk])
                self.add_vectors(fingerprint, "text", [text_key(t) for t in chunk], vectors)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(todo))
        return self.lookup(fingerprint, "text", keys)

    def pil_embedding(self, model: Encoder, fingerprint: str, image: Any) -> np.ndarray:
        """Embedding of an in-memory image (an uploaded query), cached by its pixels."""
        key = pil_key(image)
        if self.missing(fingerprint, "image", [key]):
            vectors = self._encode(model, [image.convert("RGB")])
            self.add_vectors(fingerprint, "image", [key], vectors)
        return self.lookup(fingerprint, "image", [key])[0]


def _gather(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of ``matrix``: a zero-copy slice when they are consecutive, else a copy."""
    if len(rows) == 0:
        return np.zeros((0, matrix.shape[1] if matrix.ndim == 2 else 0), dtype=np.float32)
    first = int(rows[0])
    if int(rows[-1]) - first == len(rows) - 1 and (
        len(rows) == 1 or bool((np.diff(rows) == 1).all())
    ):
        return matrix[first : first + len(rows)]
    return matrix[rows]
