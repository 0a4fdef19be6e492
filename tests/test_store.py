"""The SQLite store: schema, collections, pairs, labels, runs, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mmdemo.data.images import ImageLimits, ingest_image_bytes
from mmdemo.data.processes import process_owner
from mmdemo.data.store import _MIGRATIONS, SCHEMA_VERSION, Store, StoreError
from tests.conftest import make_image_bytes


def _image(settings, color=(10, 20, 30)):
    return ingest_image_bytes(make_image_bytes(color), settings.images_dir, ImageLimits()).as_row()


def test_schema_wal_and_foreign_keys(store):
    assert store.schema_version() == SCHEMA_VERSION
    assert store._query("PRAGMA journal_mode")[0][0] == "wal"
    assert store._query("PRAGMA foreign_keys")[0][0] == 1


def test_reopening_keeps_data_and_does_not_remigrate(settings):
    first = Store(settings.db_path)
    first.create_collection("kept")
    first.close()
    second = Store(settings.db_path)
    assert [c.name for c in second.list_collections()] == ["kept"]
    second.close()


def test_newer_schema_is_refused(settings):
    Store(settings.db_path).close()
    conn = sqlite3.connect(settings.db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(settings.db_path)


def test_collection_lifecycle(store, settings):
    c = store.create_collection("  shoes ")
    assert c.name == "shoes"
    with pytest.raises(StoreError, match="already exists"):
        store.create_collection("shoes")
    with pytest.raises(StoreError, match="needs a name"):
        store.create_collection("   ")
    renamed = store.rename_collection("shoes", "sneakers")
    assert renamed.id == c.id and store.find_collection("shoes") is None
    pair, _ = store.add_pair(c.id, _image(settings), "a shoe")
    store.add_label(pair.id, negative_caption="a boot")
    store.delete_collection("sneakers")
    assert store.list_collections() == []
    assert store._query("SELECT COUNT(*) FROM pairs")[0][0] == 0
    assert store._query("SELECT COUNT(*) FROM negatives")[0][0] == 0


def test_add_pair_dedups_by_image_and_counts(store, settings):
    c = store.create_collection("c")
    img = _image(settings)
    first, added = store.add_pair(c.id, img, "one", "train")
    again, added_again = store.add_pair(c.id, img, "another caption", "eval")
    assert added and not added_again and again.id == first.id
    other = store.create_collection("other")
    _, added_elsewhere = store.add_pair(other.id, img, "same image, other collection")
    assert added_elsewhere
    with pytest.raises(StoreError, match="split"):
        store.add_pair(c.id, _image(settings, (1, 2, 3)), "x", "holdout")


def test_filters_and_pagination(store, settings):
    c = store.create_collection("c")
    for i in range(10):
        split = "eval" if i % 3 == 0 else "train"
        store.add_pair(c.id, _image(settings, (i * 20, 5, 5)), f"item {i} 100%_odd", split)
    page0, total = store.page_pairs(c.id, 0, page_size=4)
    assert total == 10 and [p.caption for p in page0][0] == "item 0 100%_odd"
    page2, _ = store.page_pairs(c.id, 2, page_size=4)
    assert len(page2) == 2
    assert store.count_pairs(c.id, split="eval") == 4
    assert store.count_pairs(c.id, caption_filter="ITEM 7") == 1
    # LIKE wildcards in the filter are literal text, not patterns.
    assert store.count_pairs(c.id, caption_filter="100%_") == 10
    assert store.count_pairs(c.id, caption_filter="1_0") == 0


def test_caption_filter_matches_words_not_inside_words(store, settings):
    c = store.create_collection("c")
    captions = ["a cat on a mat", "identification card", "two cats", "a scattered catalog"]
    for i, caption in enumerate(captions):
        store.add_pair(c.id, _image(settings, (i * 40, 9, 9)), caption)

    def found(text: str) -> list[str]:
        return [p.caption for p in store.page_pairs(c.id, 0, 50, caption_filter=text)[0]]

    assert found("cat") == ["a cat on a mat", "two cats", "a scattered catalog"]
    assert found('"cat"') == ["a cat on a mat"]
    assert found("CAT mat") == ["a cat on a mat"]
    assert found('"two cats" two') == ["two cats"]
    assert found("card") == ["identification card"] and found("ard") == []
    assert store.count_pairs(c.id, caption_filter='"cat on"') == 1


def test_edit_delete_undo(store, settings):
    c = store.create_collection("c")
    pair, _ = store.add_pair(c.id, _image(settings), "old")
    edited = store.update_pair(pair.id, caption="new", split="eval")
    assert (edited.caption, edited.split) == ("new", "eval")
    with pytest.raises(StoreError, match="Blank caption"):
        store.update_pair(pair.id, caption="  ")
    store.delete_pair(pair.id)
    assert store.count_pairs(c.id) == 0
    with pytest.raises(StoreError):
        store.get_pair(pair.id)
    assert store.restore_pair(pair.id).caption == "new"
    with pytest.raises(StoreError, match="nothing to undo"):
        store.restore_pair(pair.id)


def test_reimport_after_delete_replaces_tombstone(store, settings):
    c = store.create_collection("c")
    img = _image(settings)
    pair, _ = store.add_pair(c.id, img, "old")
    store.delete_pair(pair.id)
    again, added = store.add_pair(c.id, img, "fresh")
    assert added and again.caption == "fresh" and store.count_pairs(c.id) == 1


def test_labels_upsert_remove_restore_and_stats(store, settings):
    c = store.create_collection("c")
    a, _ = store.add_pair(c.id, _image(settings, (200, 0, 0)), "a red circle")
    b, _ = store.add_pair(c.id, _image(settings, (0, 0, 200)), "a blue circle", "eval")
    neg = store.add_label(a.id, "negative", negative_sha256=b.image_sha256, author="ann")
    same = store.add_label(a.id, "also-positive", negative_sha256=b.image_sha256, author="ann")
    assert same.id == neg.id and same.kind == "also-positive" and same.author == "ann"
    # A label is one author's decision: another author's label of the same image is its own.
    bobs = store.add_label(a.id, "negative", negative_sha256=b.image_sha256, author="bob")
    assert bobs.id != neg.id and store.get_label(neg.id).kind == "also-positive"
    store.remove_label(bobs.id)
    cap = store.add_label(a.id, "negative", negative_caption="a blue circle")
    stats = store.collection_stats(c.id)
    assert (stats.pairs, stats.negatives, stats.also_positives, stats.caption_negatives) == (
        2,
        1,
        1,
        1,
    )
    assert stats.splits == {"train": 1, "eval": 1, "test": 0}
    removed = store.remove_label(cap.id)
    assert len(store.labels_for_pair(a.id)) == 1
    store.restore_label(removed)
    assert {lab.negative_caption for lab in store.labels_for_pair(a.id)} == {None, "a blue circle"}
    with pytest.raises(StoreError, match="own caption"):
        store.add_label(a.id, negative_sha256=a.image_sha256)
    with pytest.raises(StoreError, match="either"):
        store.add_label(a.id, negative_sha256=b.image_sha256, negative_caption="x")
    with pytest.raises(StoreError, match="kind"):
        store.add_label(a.id, "maybe", negative_caption="x")
    # Labels of a soft-deleted pair are hidden from the collection, and come back on undo.
    store.delete_pair(a.id)
    assert store.labels_for_collection(c.id) == []
    store.restore_pair(a.id)
    assert len(store.labels_for_collection(c.id)) == 2


def test_runs_and_interrupted_marking(store):
    c = store.create_collection("c")
    store.create_run("r1", c.id, "tiny", "/tmp/r1", status="running")
    store.create_run("r2", c.id, "tiny", "/tmp/r2", status="finished")
    with pytest.raises(StoreError, match="already exists"):
        store.create_run("r1", c.id, "tiny", "/tmp/x")
    assert store.mark_interrupted_runs() == 1
    assert store.get_run("r1").status == "interrupted"
    assert store.get_run("r2").status == "finished"
    done = store.update_run("r1", status="failed", message="boom", finished=True)
    assert done.finished_at is not None and done.message == "boom"
    assert [r.name for r in store.list_runs(c.id)] == ["r2", "r1"]


def test_a_run_of_another_live_process_is_not_marked_interrupted(store, settings):
    """An app starting while a CLI `train` runs leaves that run alone, until its process dies."""
    child_code = (
        "import sys, time\n"
        "from mmdemo.data.store import Store\n"
        "Store(sys.argv[1]).create_run('cli-run', None, 'tiny', '/tmp/cli-run', status='running')\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, str(settings.db_path)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        store.create_run("mine-left-over", None, "tiny", "/tmp/mine", status="running")
        assert store.get_run("cli-run").owner.split(":")[1] == str(child.pid)
        assert store.mark_interrupted_runs() == 1  # only this process's own left-over run
        assert store.get_run("cli-run").status == "running"
        assert store.get_run("mine-left-over").status == "interrupted"
    finally:
        child.kill()
        child.wait()
    assert store.mark_interrupted_runs() == 1
    assert store.get_run("cli-run").status == "interrupted"


def test_a_version_1_database_gains_run_owners_and_keeps_its_runs(settings):
    conn = sqlite3.connect(settings.db_path)
    conn.executescript(_MIGRATIONS[1])
    conn.execute(
        "INSERT INTO runs(name, base_model, status, path, created_at, updated_at)"
        " VALUES ('old', 'tiny', 'running', '/tmp/old', 1, 1)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store(settings.db_path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        old = store.get_run("old")
        assert old.owner is None and old.status == "running"
        assert store.mark_interrupted_runs() == 1  # no owner: the app that made it is gone
        assert store.create_run("new", None, "tiny", "/tmp/new").owner == process_owner()
    finally:
        store.close()


def test_two_connections_edit_concurrently_without_losing_writes(settings):
    """Two stores (two tabs / the CLI beside the app) writing at once keep every write."""
    first, second = Store(settings.db_path), Store(settings.db_path)
    c = first.create_collection("c")
    pairs = [first.add_pair(c.id, _image(settings, (i * 8, 1, 1)), f"p{i}")[0] for i in range(20)]

    def label(st: Store, author: str) -> None:
        for p in pairs:
            st.add_label(p.id, negative_caption=f"not {p.caption} by {author}", author=author)

    threads = [
        threading.Thread(target=label, args=(first, "ann")),
        threading.Thread(target=label, args=(second, "bob")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.collection_stats(c.id).negatives == 40
    first.close()
    second.close()


def test_page_index_sees_writes_from_another_connection(settings):
    """The cached gallery page index is invalidated when another process/tab writes."""
    app, cli = Store(settings.db_path), Store(settings.db_path)
    c = app.create_collection("c")
    for i in range(5):
        app.add_pair(c.id, _image(settings, (i * 40, 9, 9)), f"p{i}")
    assert app.page_pairs(c.id, 0, page_size=2)[1] == 5
    cli.add_pair(c.id, _image(settings, (7, 250, 7)), "added elsewhere")
    pairs, total = app.page_pairs(c.id, 2, page_size=2)
    assert total == 6 and [p.caption for p in pairs] == ["p4", "added elsewhere"]
    cli.delete_pair(pairs[0].id)
    assert app.page_pairs(c.id, 0, page_size=2)[1] == 5
    assert app.page_pairs(c.id, 5, page_size=2) == ([], 5)
    app.close()
    cli.close()


def test_an_in_memory_store_leaves_no_lock_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(":memory:")
    try:
        assert store.schema_version() > 0
    finally:
        store.close()
    assert list(tmp_path.iterdir()) == []
