"""Continuous sync of the state to a folder or a private Hub dataset repo, and restore at start.

A Space's disk is wiped when it restarts; ``MMDEMO_SYNC_TO`` names where the state is saved every
``MMDEMO_SYNC_EVERY_S`` seconds and restored from on an empty home. Modelled on
``huggingface_hub.CommitScheduler``: a background thread, a lock around each snapshot, a failed
push retried (sooner at first, then every interval) with nothing marked as saved until it worked.

The code is in three modules: :mod:`mmdemo.hub.sync_backends` (the targets: folder and Hub
backends, the state file of what was saved), :mod:`mmdemo.hub.sync_journal` (the layout, manifest,
journal and snapshot files, restore's row checks and replay) and this one (the :class:`Syncer`
thread, :func:`prepare_sync` at start, the header's status line), which re-exports the others'
names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmdemo.data.images import image_path
from mmdemo.data.store import SCHEMA_VERSION, Store
from mmdemo.hub.client import redact
from mmdemo.hub.sync_backends import (
    HUB_PREFIX,  # noqa: F401 - re-exported
    MAX_OPERATIONS_PER_COMMIT,  # noqa: F401 - re-exported
    Backend,
    FolderBackend,  # noqa: F401 - re-exported
    HubBackend,  # noqa: F401 - re-exported
    SyncError,
    SyncRefused,
    SyncState,
    Target,
    load_state,
    open_backend,
    parse_target,
    save_state,
    state_path,
)
from mmdemo.hub.sync_journal import (
    COMPACT_EVERY,
    KEYS,  # noqa: F401 - re-exported
    SAVED_RUN_STATUSES,  # noqa: F401 - re-exported
    SYNC_FORMAT,
    SYNC_SCHEMA,
    TABLES,
    RestoreReport,
    TableReader,
    _encode,
    _file_name,
    _hash,
    _hashes,  # noqa: F401 - re-exported
    _manifest,
    _typed_key,
    _upsert_sql,  # noqa: F401 - re-exported
    current_rows,  # noqa: F401 - re-exported
    is_empty,
    read_manifest,
    restore,
    target_seq,
)
from mmdemo.settings import Settings

log = logging.getLogger(__name__)


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
