"""A fresh home opened by several processes at once (torchrun's ranks): the file lock, the
database schema and the tiny model each come out right once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mmdemo.data.store import SCHEMA_VERSION, Store
from mmdemo.locks import file_lock
from mmdemo.settings import Settings
from tests.processes import run_at_once


def test_file_lock_makes_a_second_holder_wait(tmp_path: Path):
    path = tmp_path / "locks" / "x.lock"  # the folder is made on first use
    order: list[str] = []
    first_in, second_tried = threading.Event(), threading.Event()

    def second() -> None:
        second_tried.set()
        with file_lock(path):
            order.append("second")

    with file_lock(path):
        first_in.set()
        waiter = threading.Thread(target=second)
        waiter.start()
        second_tried.wait(10)
        waiter.join(0.3)  # it cannot get in while this block holds the lock
        assert waiter.is_alive()
        order.append("first")
    waiter.join(10)
    assert order == ["first", "second"] and path.is_file()
    with file_lock(path):  # free again after both left
        pass


def test_processes_opening_a_fresh_database_at_once(tmp_path: Path):
    """Every process gets the full schema; none fails with "table … already exists"."""
    db = tmp_path / "home" / "mmdemo.sqlite3"
    snippet = f"""
import json
from mmdemo.data.store import Store
store = Store({str(db)!r})
store.get_or_create_collection("shared")
print(json.dumps({{"version": store.schema_version()}}))
"""
    results = run_at_once(snippet, 4, tmp_path / "signals")
    assert results == [{"version": SCHEMA_VERSION}] * 4
    store = Store(db)
    assert [c.name for c in store.list_collections()] == ["shared"]
    store.close()


@pytest.mark.slow
def test_processes_asking_for_the_tiny_model_at_once_build_it_once(tmp_path: Path):
    home = tmp_path / "home"
    snippet = f"""
import json
from sentence_transformers import SentenceTransformer
from mmdemo.retrieval import models
from mmdemo.settings import Settings

built = []
build = models.build_tiny_clip
models.build_tiny_clip = lambda out, seed=0: built.append(1) or build(out, seed)
path = models.ensure_tiny_model(Settings.from_env({{"MMDEMO_HOME": {str(home)!r}}}))
dim = models.verify_encodes_both(SentenceTransformer(str(path), device="cpu"))
print(json.dumps({{"path": str(path), "built": len(built), "dim": dim}}))
"""
    results = run_at_once(snippet, 2, tmp_path / "signals")
    assert sorted(r["built"] for r in results) == [0, 1]  # the second waited, then found it
    assert results[0]["path"] == results[1]["path"]
    assert results[0]["dim"] == results[1]["dim"] > 0
    models_dir = Settings.from_env({"MMDEMO_HOME": str(home)}).models_dir
    assert [p.name for p in models_dir.iterdir()] == ["tiny-clip"]  # no staging left behind
