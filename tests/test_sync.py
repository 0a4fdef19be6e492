"""Continuous sync and restore (issue 12): folder and Hub targets, schema refusal, journal mode.

Only the Hub's network is faked: :class:`FakeSyncHfApi` is the publishing tests' ``HfApi``
stand-in plus ``create_commit`` and ``hf_hub_download``, raising the errors ``huggingface_hub``
raises for the Hub's answers.
"""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import json
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from huggingface_hub import CommitInfo
from huggingface_hub.errors import LocalEntryNotFoundError

from mmdemo.data.images import image_path, thumb_path, train_path
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.data.store import Store
from mmdemo.hub import sync as sync_mod
from mmdemo.hub.client import as_secret
from mmdemo.hub.sync import (
    FolderBackend,
    HubBackend,
    Syncer,
    SyncError,
    current_rows,
    describe,
    parse_target,
    prepare_sync,
    restore,
)
from mmdemo.settings import Settings, detect_storage, sqlite_journal_mode
from tests.conftest import make_image_bytes
from tests.test_hub import TOKEN, FakeHfApi, _http_error

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
WORDS = ["red", "green", "blue", "yellow"]


# -- helpers -------------------------------------------------------------------------------------
def fill(store: Store, settings: Settings, name: str = "shapes") -> list:
    """A collection of four pairs (two authors), three labels, a finished and a running run."""
    collection = store.create_collection(name)
    report = ImportReport(name)
    pairs = [
        ingest_item(
            store,
            settings,
            collection.id,
            report,
            f"{word}.png",
            make_image_bytes(color),
            f"a {word} square",
            "eval" if index == 3 else "train",
            "alice" if index % 2 else "bob",
        )
        for index, (color, word) in enumerate(zip(COLORS, WORDS, strict=True))
    ]
    store.add_label(pairs[0].id, "negative", negative_sha256=pairs[1].image_sha256, author="carol")
    store.add_label(pairs[0].id, "negative", negative_caption="a blue circle", author="dave")
    store.add_label(pairs[2].id, "also-positive", negative_sha256=pairs[3].image_sha256)
    store.create_run("run-1", collection.id, "tiny", str(settings.runs_dir / "run-1"))
    store.update_run("run-1", "finished", metrics_json='{"t2i": {"recall@1": 0.75}}', finished=True)
    store.create_run("run-2", collection.id, "tiny", str(settings.runs_dir / "run-2"))
    store.update_run("run-2", "running")
    return pairs


def new_home(tmp_path: Path, name: str, **env: str) -> Settings:
    settings = Settings.from_env({"MMDEMO_HOME": str(tmp_path / name), **env})
    settings.ensure_dirs()
    return settings


def folder_syncer(store: Store, settings: Settings, folder: Path, **kwargs) -> Syncer:
    target = parse_target(str(folder))
    return Syncer(store, settings, target, FolderBackend(target.folder), **kwargs)


def journal_lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]


def images_back(settings: Settings, store: Store) -> bool:
    rows = current_rows(store)["images"].values()
    return all(
        image_path(settings.images_dir, r["sha256"], r["ext"]).is_file()
        and train_path(settings.images_dir, r["sha256"]).is_file()
        and thumb_path(settings.images_dir, r["sha256"]).is_file()
        for r in rows
    )


class FakeSyncHfApi(FakeHfApi):
    """The publishing tests' fake plus the two calls the sync makes."""

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, token=None):
        self._enter(
            "create_commit",
            {
                "repo_id": repo_id,
                "operations": operations,
                "commit_message": commit_message,
                "repo_type": repo_type,
                "token": token,
            },
        )
        key = (repo_type, repo_id)
        if key not in self.repos:
            raise self._missing(repo_id, repo_type)
        for op in operations:
            with op.as_file() as handle:
                self.repos[key][op.path_in_repo] = handle.read()
        url = f"https://huggingface.co/datasets/{repo_id}"
        return CommitInfo(f"{url}/commit/abc", commit_message, "", "abc")

    def hf_hub_download(self, repo_id, filename, *, repo_type=None, token=None, local_dir=None):
        self._enter(
            "hf_hub_download",
            {
                "repo_id": repo_id,
                "filename": filename,
                "repo_type": repo_type,
                "token": token,
                "local_dir": local_dir,
            },
        )
        files = self.repos.get((repo_type, repo_id))
        if files is None:
            raise self._missing(repo_id, repo_type)
        if filename not in files:
            raise _http_error(
                404,
                f"https://huggingface.co/datasets/{repo_id}/resolve/main/{filename}",
                {"X-Error-Code": "EntryNotFound"},
            )
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[filename])
        return str(path)


@pytest.fixture
def no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))


# -- targets -------------------------------------------------------------------------------------
def test_targets_are_a_dataset_repo_or_a_folder(tmp_path: Path):
    assert parse_target("hf://datasets/alice/state").repo_id == "alice/state"
    assert parse_target(str(tmp_path / "f")).folder == (tmp_path / "f").resolve()
    with pytest.raises(SyncError, match="only dataset repos"):
        parse_target("hf://alice/model")
    with pytest.raises(SyncError, match="owner/name"):
        parse_target("hf://datasets/alice")


# -- folder target: save, restore, idempotence ---------------------------------------------------
def test_folder_sync_restores_everything_on_an_empty_home(store, settings, tmp_path: Path):
    fill(store, settings)
    target = tmp_path / "target"
    report = folder_syncer(store, settings, target).sync_once()
    assert report.images == 4 and report.rows > 0
    assert (target / "manifest.json").is_file()
    assert len(list((target / "journal").glob("*.jsonl.gz"))) == 1

    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    restored = Store(other.db_path)
    try:
        syncer = prepare_sync(restored, other)
        assert syncer is not None and syncer.status().restored is not None
        assert current_rows(restored) == current_rows(store)  # ids, authors, times, metrics
        labels = {(lab.author, lab.kind) for lab in restored.labels_for_collection(1)}
        assert labels == {("carol", "negative"), ("dave", "negative"), (None, "also-positive")}
        run = restored.get_run("run-1")
        assert json.loads(run.metrics_json) == {"t2i": {"recall@1": 0.75}}
        assert [r.name for r in restored.list_runs()] == ["run-1"]  # a running run is not saved
        assert images_back(other, restored)

        # Restoring again changes nothing; saving right after a restore writes nothing.
        before = current_rows(restored)
        restore(restored, other, syncer.target, syncer.backend)
        assert current_rows(restored) == before
        assert syncer.sync_once().files == []
        assert len(list((target / "journal").glob("*.jsonl.gz"))) == 1
    finally:
        restored.close()


def test_each_sync_writes_only_the_changes_and_each_image_once(store, settings, tmp_path: Path):
    pairs = fill(store, settings)
    target = tmp_path / "target"
    syncer = folder_syncer(store, settings, target)
    syncer.sync_once()
    assert syncer.sync_once().files == []  # nothing changed, nothing written

    label = store.add_label(pairs[1].id, "negative", negative_caption="a red square", author="erin")
    store.remove_label(store.labels_for_pair(pairs[0].id)[0].id)
    second = syncer.sync_once()
    assert second.images == 0 and (second.rows, second.deletes) == (1, 1)
    # No image again; the manifest goes last with the save's seq (a save is in once it is).
    assert [f.split("/")[0] for f in second.files] == ["journal", "manifest.json"]
    assert json.loads((target / "manifest.json").read_text())["last_seq"] == 2
    lines = journal_lines((target / second.files[0]).read_bytes())
    assert lines[0]["header"]["seq"] == 2
    assert {"put": "negatives", "row": dataclasses.asdict(label)} in lines[1:]
    assert any(line.get("del") == "negatives" for line in lines[1:])
    names = sorted(p.name for p in (target / "journal").iterdir())
    assert [n.split("-")[0] for n in names] == ["00000001", "00000002"]  # never rewritten

    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    restored = Store(other.db_path)
    try:
        prepare_sync(restored, other)
        assert current_rows(restored) == current_rows(store)
    finally:
        restored.close()


def test_a_save_with_nothing_changed_reads_no_row(store, settings, tmp_path: Path, monkeypatch):
    pairs = fill(store, settings)
    syncer = folder_syncer(store, settings, tmp_path / "target")
    syncer.sync_once()
    reads = []
    original = sync_mod.TableReader.read
    monkeypatch.setattr(
        sync_mod.TableReader, "read", lambda self: reads.append(1) or original(self)
    )
    assert syncer.sync_once().files == [] and reads == []  # one PRAGMA data_version, no read
    other = Store(settings.db_path)  # another process's connection (the CLI beside the app)
    try:
        other.add_label(pairs[3].id, "negative", negative_caption="from the CLI", author="cli")
    finally:
        other.close()
    report = syncer.sync_once()
    assert reads == [1] and report.rows == 1


def test_snapshots_let_a_restore_skip_old_journals(store, settings, tmp_path: Path):
    pairs = fill(store, settings)
    target = tmp_path / "target"
    syncer = folder_syncer(store, settings, target, compact_every=2)
    syncer.sync_once()
    store.add_label(pairs[1].id, "negative", negative_caption="one", author="erin")
    syncer.sync_once()  # the second save also writes a snapshot
    store.update_pair(pairs[2].id, caption="a blue square, edited")
    syncer.sync_once()
    assert len(list((target / "snapshots").iterdir())) == 1
    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    restored = Store(other.db_path)
    try:
        report = prepare_sync(restored, other).status().restored
        assert report.files == 2  # the snapshot at seq 2 and journal 3
        assert current_rows(restored) == current_rows(store)
    finally:
        restored.close()


def test_a_newer_schema_is_refused_and_nothing_is_restored(store, settings, tmp_path: Path):
    fill(store, settings)
    target = tmp_path / "target"
    folder_syncer(store, settings, target).sync_once()
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "schema": 99}))
    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    restored = Store(other.db_path)
    try:
        with pytest.raises(SyncError, match="newer mmdemo.*Upgrade mmdemo"):
            prepare_sync(restored, other)
        assert restored.list_collections() == []
        (target / "manifest.json").write_text(json.dumps({**manifest, "store_schema": 99}))
        with pytest.raises(SyncError, match="store schema 99"):
            prepare_sync(restored, other)
    finally:
        restored.close()


def test_a_target_with_another_homes_history_is_refused(store, settings, tmp_path: Path):
    fill(store, settings)
    target = tmp_path / "target"
    folder_syncer(store, settings, target).sync_once()
    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    elsewhere = Store(other.db_path)
    try:
        elsewhere.create_collection("mine")  # not empty, never restored from the target
        with pytest.raises(SyncError, match="another mmdemo home"):
            prepare_sync(elsewhere, other)
    finally:
        elsewhere.close()


def test_the_background_thread_saves_and_a_clean_stop_saves_the_rest(
    store, settings, tmp_path: Path
):
    pairs = fill(store, settings)
    target = tmp_path / "target"
    syncer = folder_syncer(store, settings, target, every_s=3600)
    syncer.start()  # the first save happens at once
    for _ in range(2000):
        if syncer.status().last_ok_at is not None:
            break
        syncer._stop.wait(0.01)
    assert syncer.status().last_ok_at is not None
    store.add_label(pairs[3].id, "negative", negative_caption="last one", author="erin")
    syncer.stop(final=True)  # long before the next interval
    journals = sorted((target / "journal").iterdir())
    assert len(journals) == 2 and "last one" in gzip.decompress(journals[-1].read_bytes()).decode()


# -- Hub target, only the network faked ----------------------------------------------------------
def test_hub_sync_creates_a_private_repo_retries_a_failed_push_and_restores(
    store, settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the Space owner's secret, the only token used
    fill(store, settings)
    api = FakeSyncHfApi()
    hub_settings = dataclasses.replace(settings, sync_to="hf://datasets/alice/state")
    syncer = prepare_sync(store, hub_settings, api=api)
    assert syncer.status().restored is None  # nothing there yet

    api.fail["create_commit"] = [_http_error(500, "https://huggingface.co/api/datasets/x")]
    with caplog.at_level(logging.WARNING), pytest.raises(SyncError, match="server error"):
        syncer.sync_once()
    status = syncer.status()
    assert status.failures == 1 and status.last_ok_at is None
    assert describe(status, now=status.last_error_at + 5).startswith(
        "Saving to alice/state failed 5 s ago: The Hub had a server error (500)"
    )
    assert TOKEN not in caplog.text and TOKEN not in status.last_error

    report = syncer.sync_once()  # the retry saves everything the failed one had
    assert report.images == 4
    assert describe(syncer.status(), now=syncer.status().last_ok_at + 12) == (
        "Saved to alice/state 12 s ago."
    )
    created = [kw for name, kw in api.calls if name == "create_repo"]
    assert created and all(kw["private"] and kw["repo_type"] == "dataset" for kw in created)
    commits = [kw for name, kw in api.calls if name == "create_commit"]
    assert all(kw["token"] == TOKEN and kw["repo_type"] == "dataset" for kw in commits)
    remote = api.repos[("dataset", "alice/state")]
    assert "manifest.json" in remote and sum(p.startswith("images/") for p in remote) == 4

    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO="hf://datasets/alice/state")
    restored = Store(other.db_path)
    try:
        again = prepare_sync(restored, other, api=api)
        assert again.status().restored.images == 4
        assert current_rows(restored) == current_rows(store)
        assert images_back(other, restored)
        assert again.sync_once().files == []
    finally:
        restored.close()

    # The fake is called exactly as the real HfApi accepts.
    from huggingface_hub import HfApi

    for name, kwargs in api.calls:
        args = [kwargs.pop("repo_id")] if name == "list_repo_files" else []
        inspect.signature(getattr(HfApi, name)).bind(HfApi(), *args, **kwargs)


def test_an_unreachable_hub_is_not_an_empty_target(settings, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sync_mod.time, "sleep", lambda s: None)  # the start's retries
    api = FakeSyncHfApi()
    api.repos[("dataset", "alice/state")] = {"manifest.json": b"{}"}
    api.fail["hf_hub_download"] = [LocalEntryNotFoundError("connection failed")] * 4
    backend = HubBackend("alice/state", token=TOKEN, api=api)
    with pytest.raises(SyncError, match="Could not read manifest.json"):
        backend.read("manifest.json")
    store = Store(settings.db_path)
    try:
        hub_settings = dataclasses.replace(settings, sync_to="hf://datasets/alice/state")
        with pytest.raises(SyncError, match="Could not read"):
            prepare_sync(store, hub_settings, api=api, token=TOKEN)
    finally:
        store.close()


def test_without_hf_token_the_hub_sync_says_what_to_set(
    store, settings, no_ambient_token, monkeypatch
):
    api = FakeSyncHfApi()
    hub_settings = dataclasses.replace(settings, sync_to="hf://datasets/alice/state")
    syncer = prepare_sync(store, hub_settings, api=api)
    with pytest.raises(SyncError, match="set the HF_TOKEN secret"):
        syncer.sync_once()
    assert "create_commit" not in api.names()


# -- storage: buckets and journal mode -----------------------------------------------------------
def test_on_a_space_with_a_bucket_the_home_defaults_to_it(tmp_path: Path):
    data = tmp_path / "data"
    mounts = f"overlay / overlay rw 0 0\nhf-bucket {data} fuse.hf-mount rw 0 0\n"
    space = Settings.from_env({"SPACE_ID": "alice/s"}, mounts=mounts, data_dir=data)
    assert space.home == (data / "mmdemo").resolve()
    storage = detect_storage(space.home, mounts, data_dir=data)
    assert storage.bucket and storage.network and storage.journal_mode == "DELETE"
    # Not on a Space, or no bucket mounted, or MMDEMO_HOME set: the usual home.
    assert Settings.from_env({}, mounts=mounts, data_dir=data).home != space.home
    plain = "overlay / overlay rw 0 0\n"
    assert Settings.from_env({"SPACE_ID": "a/s"}, mounts=plain, data_dir=data).home != space.home
    mine = Settings.from_env({"SPACE_ID": "a/s", "MMDEMO_HOME": str(tmp_path / "h")}, mounts=mounts)
    assert mine.home == (tmp_path / "h").resolve()


@pytest.mark.parametrize(
    ("fs_type", "mode"),
    [("fuse.hf-mount", "DELETE"), ("nfs4", "DELETE"), ("cifs", "DELETE"), ("9p", "DELETE")]
    + [("ext4", "WAL"), ("overlay", "WAL"), ("tmpfs", "WAL")],
)
def test_network_filesystems_get_a_rollback_journal(tmp_path: Path, fs_type: str, mode: str):
    mounts = f"rootfs / overlay rw 0 0\nsrv {tmp_path} {fs_type} rw 0 0\n"
    assert sqlite_journal_mode(tmp_path / "home" / "db.sqlite3", mounts) == mode


def test_a_home_on_a_simulated_fuse_mount_opens_sqlite_without_wal(
    tmp_path: Path, caplog, tiny_clip_dir: Path
):
    from mmdemo.retrieval.models import TINY_MODEL_DIRNAME
    from mmdemo.services import Services
    from mmdemo.ui.app import persistence_lines

    home = tmp_path / "bucket" / "mmdemo"
    shutil.copytree(tiny_clip_dir, home / "models" / TINY_MODEL_DIRNAME)
    mounts = f"overlay / overlay rw 0 0\nbucket {tmp_path / 'bucket'} fuse.hf-mount rw 0 0\n"
    settings = Settings.from_env({"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny"})
    with caplog.at_level(logging.WARNING):
        services = Services.create(settings, demo=False, mounts=mounts)
    try:
        assert services.store.journal_mode == "DELETE"
        assert services.store._query("PRAGMA journal_mode")[0][0] == "delete"
        assert "journal_mode=DELETE" in caplog.text and "fuse.hf-mount" in caplog.text
        texts = [text for _, text in persistence_lines(services)]
        assert any("rollback journal (journal_mode=DELETE)" in t for t in texts)
    finally:
        services.close()


# -- the header ----------------------------------------------------------------------------------
def test_the_header_says_where_the_state_is_kept(store, settings, tmp_path: Path):
    from mmdemo.ui.app import NO_PERSISTENCE_WARNING, persistence_html, persistence_lines

    class Fake:  # only what the header reads
        def __init__(self, space_id=None, sync=None, storage=None):
            self.settings = dataclasses.replace(settings, space_id=space_id)
            self.sync = sync
            self.storage = storage or detect_storage(settings.home, "")

    assert persistence_lines(Fake()) == []  # locally, nothing to say
    assert persistence_lines(Fake(space_id="alice/s")) == [("warn", NO_PERSISTENCE_WARNING)]
    assert "MMDEMO_SYNC_TO=hf://datasets/OWNER/NAME" in NO_PERSISTENCE_WARNING
    bucket = detect_storage(
        Path("/data/mmdemo"), "b /data fuse.hf-mount rw 0 0", data_dir=Path("/data")
    )
    lines = persistence_lines(Fake(space_id="alice/s", storage=bucket))
    assert ("warn", NO_PERSISTENCE_WARNING) not in lines
    assert lines[0] == ("info", "State kept on the storage bucket: MMDEMO_HOME=/data/mmdemo.")

    syncer = folder_syncer(store, settings, tmp_path / "t")
    assert persistence_lines(Fake(space_id="alice/s", sync=syncer)) == [
        ("info", f"Saving to {(tmp_path / 't').resolve()} every 60 s (not saved yet).")
    ]
    syncer.sync_once()
    saved_at = syncer.status().last_ok_at
    kind, text = persistence_lines(Fake(sync=syncer), now=saved_at + 12)[0]
    assert (kind, text) == ("info", f"Saved to {(tmp_path / 't').resolve()} 12 s ago.")
    assert persistence_lines(Fake(sync=syncer), now=saved_at + 600)[0][1].endswith("10 min ago.")

    syncer._failed('<img src=x onerror="alert(1)"> refused')
    html = persistence_html(Fake(sync=syncer))
    assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert 'class="mm-warn"' in html


def test_every_database_on_a_fuse_home_uses_a_rollback_journal(
    settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mmdemo.settings
    from mmdemo.retrieval.embeddings import _Table

    mounts = tmp_path / "mounts"
    mounts.write_text(f"x / overlay rw 0 0\nbucket {settings.home} fuse.hf-mount rw 0 0\n")
    monkeypatch.setattr(mmdemo.settings, "MOUNTS_FILE", mounts)  # the kernel's table, injected
    store = Store(settings.db_path)  # as the CLI and a ZeroGPU worker open it: detected itself
    try:
        assert store._query("PRAGMA journal_mode")[0][0] == "delete"
    finally:
        store.close()
    index = _Table(settings.cache_dir / "embeddings", "image", "fp")._connection()
    assert index.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    index.close()


def test_the_real_hfapi_offline_is_an_error_never_an_empty_target(monkeypatch, tmp_path: Path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read per request: no network here
    backend = HubBackend("alice/state", token=TOKEN)
    with pytest.raises(SyncError, match="Could not read manifest.json"):
        backend.read("manifest.json")
    with pytest.raises(SyncError, match="Offline mode is on"):
        backend.push([("journal/x.jsonl.gz", b"x")], "m")


def test_the_background_thread_retries_a_failed_hub_push_before_the_next_interval(
    store, settings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fill(store, settings)
    api = FakeSyncHfApi()
    api.fail["create_commit"] = [_http_error(503, "https://huggingface.co/api/datasets/x")]
    hub_settings = dataclasses.replace(
        settings, sync_to="hf://datasets/alice/state", sync_every_s=3600.0
    )
    syncer = prepare_sync(store, hub_settings, api=api)
    syncer.start()
    try:
        for _ in range(3000):  # the retry comes after 2 s, not after the hour
            if syncer.status().last_ok_at is not None:
                break
            syncer._stop.wait(0.01)
        status = syncer.status()
        assert status.last_ok_at is not None and status.last_error_at is not None
        assert status.failures == 0 and api.names().count("create_commit") == 2
    finally:
        syncer.stop(final=False)
    assert "manifest.json" in api.repos[("dataset", "alice/state")]


# -- review fixes --------------------------------------------------------------------------------
def test_an_unexpected_error_never_shows_the_token(store, settings, tmp_path: Path, caplog):
    fill(store, settings)
    syncer = folder_syncer(store, settings, tmp_path / "target")
    syncer.backend._token = as_secret(TOKEN)

    def broken_push(files, message):
        raise RuntimeError(f"Authorization: Bearer {TOKEN} refused for {TOKEN}")

    syncer.backend.push = broken_push
    with caplog.at_level(logging.DEBUG), pytest.raises(SyncError) as raised:
        syncer.sync_once()
    status = syncer.status()
    for text in (str(raised.value), status.last_error, describe(status), caplog.text):
        assert TOKEN not in text
    assert "RuntimeError" in status.last_error and "***" in status.last_error


def test_a_save_after_stop_keeps_no_connection_open(store, settings, tmp_path: Path, monkeypatch):
    opened: list = []

    class CountingReader(sync_mod.TableReader):
        def __init__(self, db_path):
            super().__init__(db_path)
            self.closed = False
            opened.append(self)

        def close(self):
            self.closed = True
            super().close()

    monkeypatch.setattr(sync_mod, "TableReader", CountingReader)
    pairs = fill(store, settings)
    syncer = folder_syncer(store, settings, tmp_path / "target")
    syncer.stop(final=True)
    store.add_label(pairs[1].id, "negative", negative_caption="a pink star", author="erin")
    syncer.stop(final=True)  # Services.close() after the app's own stop: saves, then closes
    assert syncer.sync_once().files == []  # a save after stop opens and closes its own
    assert opened and all(reader.closed for reader in opened)
    assert syncer._reader is None
    labels = [
        line["row"]["author"]
        for path in sorted((tmp_path / "target" / "journal").glob("*"))
        for line in journal_lines(path.read_bytes())[1:]
        if line.get("put") == "negatives"
    ]
    assert "erin" in labels


def test_a_row_holding_only_its_key_is_inserted_or_left_alone():
    sql = sync_mod._upsert_sql("tags", ["id"], "id")
    assert sql.endswith("ON CONFLICT(id) DO NOTHING")
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, note TEXT DEFAULT 'x')")
    conn.execute(sql, [1])
    conn.execute(sql, [1])  # twice = once
    assert conn.execute("SELECT id, note FROM tags").fetchall() == [(1, "x")]
    full = sync_mod._upsert_sql("tags", ["id", "note"], "id")
    conn.execute(full, [1, "y"])
    assert conn.execute("SELECT note FROM tags").fetchall() == [("y",)]


def test_a_home_behind_the_target_refuses_to_save_over_a_newer_one(store, settings, tmp_path: Path):
    """An old container still saving after a new one restored (or two hosts on one target)."""
    pairs = fill(store, settings)
    target = tmp_path / "target"
    old = folder_syncer(store, settings, target)
    old.sync_once()  # seq 1

    other = new_home(tmp_path, "new", MMDEMO_SYNC_TO=str(target))
    newer = Store(other.db_path)
    try:
        syncer = prepare_sync(newer, other)
        newer.add_label(pairs[1].id, "negative", negative_caption="a pink star", author="erin")
        assert syncer.sync_once().files  # seq 2, from the new home
        store.add_label(pairs[3].id, "negative", negative_caption="a grey dot", author="frank")
        with pytest.raises(SyncError, match="ahead of this home"):
            old.sync_once()  # would write a second seq 2
        status = old.status()
        assert "#2, ahead of this home's #1" in status.last_error
        assert "ahead of this home" in describe(status)
        seqs = sorted(p.name[:8] for p in (target / "journal").glob("*.jsonl.gz"))
        assert seqs == ["00000001", "00000002"]
        assert json.loads((target / "manifest.json").read_text())["last_seq"] == 2
        # The old home cannot start on the target either (it would save from #1 again).
        with pytest.raises(SyncError, match="ahead of this home"):
            prepare_sync(
                store,
                settings.__class__.from_env(
                    {"MMDEMO_HOME": str(settings.home), "MMDEMO_SYNC_TO": str(target)}
                ),
            )

        # The new home keeps saving; a third home restores erin's label, not frank's.
        newer.add_label(pairs[2].id, "negative", negative_caption="a tiny cube", author="erin")
        assert syncer.sync_once().files
        third = new_home(tmp_path, "third", MMDEMO_SYNC_TO=str(target))
        restored = Store(third.db_path)
        try:
            prepare_sync(restored, third)
            captions = {lab.negative_caption for lab in restored.labels_for_collection(1)}
            assert {"a pink star", "a tiny cube"} <= captions and "a grey dot" not in captions
        finally:
            restored.close()
    finally:
        newer.close()


def test_a_push_cut_short_before_the_manifest_is_retried(store, settings, tmp_path: Path):
    pairs = fill(store, settings)
    target = tmp_path / "target"
    syncer = folder_syncer(store, settings, target)
    syncer.sync_once()
    real_push = syncer.backend.push

    def cut_short(files, message):
        real_push([f for f in files if f[0] != "manifest.json"], message)
        raise SyncError("connection lost")

    syncer.backend.push = cut_short
    store.add_label(pairs[1].id, "negative", negative_caption="a pink star", author="erin")
    with pytest.raises(SyncError, match="connection lost"):
        syncer.sync_once()  # journal #2 is there, the manifest still says #1
    syncer.backend.push = real_push
    assert syncer.sync_once().files  # its own half-save does not block it
    assert json.loads((target / "manifest.json").read_text())["last_seq"] == 2


def _tamper(target: Path, change) -> None:
    """Rewrite the target's one journal with ``change(line)`` applied to each row line."""
    (journal,) = (target / "journal").glob("*.jsonl.gz")
    lines = journal_lines(journal.read_bytes())
    for line in lines[1:]:
        change(line)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    journal.write_bytes(gzip.compress(text.encode()))


@pytest.mark.parametrize(
    ("table", "column", "value", "says"),
    [
        ("images", "ext", "png/../../../escaped", "extension"),
        ("images", "sha256", "../" * 20 + "x" * 4, "SHA-256"),
        ("pairs", "image_sha256", "zz", "SHA-256"),
        ("pairs", "caption", "   ", "(?i)blank caption"),
        ("pairs", "caption", "x" * 5000, "too long"),
        ("negatives", "negative_caption", "", "(?i)blank caption"),
        ("collections", "name", "n" * 300, "at most 100"),
        ("runs", "name", "", "needs a name"),
        ("pairs", "author", 7, "not text"),
        ("pairs", "id", "1 OR 1", "whole number"),
    ],
)
def test_a_restore_refuses_rows_the_store_would_not_write(
    store, settings, tmp_path: Path, table: str, column: str, value, says: str
):
    fill(store, settings)
    target = tmp_path / "target"
    folder_syncer(store, settings, target).sync_once()
    done = []

    def change(line: dict) -> None:
        if line.get("put") == table and not done and line["row"].get(column, "") is not None:
            line["row"][column] = value
            done.append(line)

    _tamper(target, change)
    assert done
    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    restored = Store(other.db_path)
    try:
        with pytest.raises(SyncError, match=says):
            prepare_sync(restored, other)
        assert sync_mod.is_empty(restored)
        assert not (tmp_path / "escaped").exists()
        assert not list(other.images_dir.rglob("*.*"))  # nothing fetched before the rows passed
    finally:
        restored.close()


def test_a_restore_cleans_text_as_the_store_does(store, settings, tmp_path: Path):
    fill(store, settings)
    target = tmp_path / "target"
    folder_syncer(store, settings, target).sync_once()

    def change(line: dict) -> None:
        if line.get("put") == "pairs" and line["row"]["caption"] == "a red square":
            line["row"]["caption"] = "  a red\tsquare\x07 "
        if line.get("put") == "collections":
            line["row"]["name"] = " shapes\n"

    _tamper(target, change)
    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    restored = Store(other.db_path)
    try:
        prepare_sync(restored, other)
        assert current_rows(restored)["pairs"]["1"]["caption"] == "a red square"
        assert [c.name for c in restored.list_collections()] == ["shapes"]
    finally:
        restored.close()


def test_a_folder_target_never_reads_or_writes_outside_itself(tmp_path: Path):
    backend = FolderBackend(tmp_path / "target")
    (tmp_path / "secret").write_text("x")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "link").symlink_to(tmp_path)
    for name in ("../secret", "/etc/passwd", "images/../../secret", "link/secret", "a//b", ""):
        with pytest.raises(SyncError, match="leaves"):
            backend.read(name)
        with pytest.raises(SyncError, match="leaves"):
            backend.push([(name, b"y")], "m")
    assert (tmp_path / "secret").read_text() == "x"
    backend.push([("images/ab/c.png", b"z")], "m")
    assert backend.read("images/ab/c.png") == b"z"


def test_a_schema_3_store_syncs_labels_per_author_and_skips_claims(store, settings, tmp_path: Path):
    """Team labeling (store schema 3): label_claims is deliberately not synced (a claim is a
    15-minute hold on a pair, meaningless after a restart); two authors' labels of one
    candidate are two rows and both come back."""
    assert sync_mod.SCHEMA_VERSION == 3 and "label_claims" not in sync_mod.TABLES
    pairs = fill(store, settings)
    store.add_label(
        pairs[0].id, "also-positive", negative_sha256=pairs[1].image_sha256, author="erin"
    )
    assert store.claim_pair(pairs[2].id, "gina", expires_before=0.0)
    target = tmp_path / "target"
    syncer = folder_syncer(store, settings, target)
    syncer.sync_once()
    assert store.claim_pair(pairs[3].id, "gina", expires_before=0.0)  # a claim alone: no save
    assert syncer.sync_once().files == []
    lines = [
        line
        for path in (target / "journal").glob("*.jsonl.gz")
        for line in journal_lines(path.read_bytes())
    ]
    assert lines[0]["header"]["store_schema"] == 3
    assert not any("label_claims" in (line.get("put"), line.get("del")) for line in lines)

    other = new_home(tmp_path, "other", MMDEMO_SYNC_TO=str(target))
    restored = Store(other.db_path)
    try:
        prepare_sync(restored, other)
        same = {
            (lab.author, lab.kind)
            for lab in restored.labels_for_pair(pairs[0].id)
            if lab.negative_sha256 == pairs[1].image_sha256
        }
        assert same == {("carol", "negative"), ("erin", "also-positive")}
        assert restored.claims(1, expires_before=0.0) == {}
        assert current_rows(restored)["negatives"] == current_rows(store)["negatives"]
    finally:
        restored.close()


def test_under_a_rollback_journal_a_save_lets_writers_commit_between_tables(tmp_path: Path):
    db = tmp_path / "bucket" / "mmdemo.db"
    slow = Store(db, journal_mode="DELETE")
    try:
        slow.create_collection("first")
        reader = sync_mod.TableReader(db)
        assert not reader.wal
        commits: list[str] = []

        def write_meanwhile(statement: str) -> None:
            # Another writer commits while the sync is between its tables (a label being saved).
            if statement.startswith("SELECT * FROM images") and not commits:
                writer = sqlite3.connect(db, timeout=0.2, isolation_level=None)
                try:
                    writer.execute(
                        "INSERT INTO collections(name, created_at, updated_at)"
                        " VALUES ('late', 0, 0)"
                    )
                    commits.append("committed")
                except sqlite3.OperationalError as exc:
                    commits.append(str(exc))
                finally:
                    writer.close()

        reader._conn.set_trace_callback(write_meanwhile)
        names, rows = reader.read()["collections"]
        reader._conn.set_trace_callback(None)
        assert commits == ["committed"]  # the writer was not blocked by the read
        # The commit came in the middle of a read: it was read again, as one state.
        assert sorted(values[names.index("name")] for values in rows.values()) == ["first", "late"]
        reader.close()
    finally:
        slow.close()


def test_a_store_written_all_the_time_is_still_read_as_one_state(tmp_path: Path):
    db = tmp_path / "bucket" / "mmdemo.db"
    slow = Store(db, journal_mode="DELETE")
    try:
        reader = sync_mod.TableReader(db)
        writes = []

        def always_writing(statement: str) -> None:
            if statement.startswith("SELECT * FROM pairs") and len(writes) < reader.ATTEMPTS:
                writer = sqlite3.connect(db, timeout=0.2, isolation_level=None)
                writer.execute(
                    "INSERT INTO collections(name, created_at, updated_at) VALUES (?, 0, 0)",
                    (f"c{len(writes)}",),
                )
                writer.close()
                writes.append(1)

        reader._conn.set_trace_callback(always_writing)
        names, rows = reader.read()["collections"]
        reader._conn.set_trace_callback(None)
        # Five tries saw a commit each; the sixth read in one transaction sees all five.
        assert len(writes) == reader.ATTEMPTS and len(rows) == reader.ATTEMPTS
        reader.close()
    finally:
        slow.close()
