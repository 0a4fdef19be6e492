"""The folder sync end to end (issue 12): ``python app.py`` with ``MMDEMO_SYNC_TO=<folder>``,
import and label, wait for a save, ``kill -9``, start on an empty home with the same target:
everything is back (collections, pairs, images, labels with authors and times, runs' metrics)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmdemo.data.store import Store
from mmdemo.hub.sync import _hashes, current_rows, load_state, parse_target
from mmdemo.retrieval.models import TINY_MODEL_DIRNAME
from mmdemo.settings import Settings
from tests.test_sync import fill, images_back

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 180.0  # upper bound for the app to come up or save; a safety net, not a speed check


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_app(
    home: Path, target: Path, tiny: Path, log: Path, every_s: str = "1"
) -> tuple[subprocess.Popen, str]:
    """``python app.py`` on ``home`` saving to ``target`` every ``every_s`` seconds; waits until
    it serves."""
    models = home / "models" / TINY_MODEL_DIRNAME
    if not models.exists():
        shutil.copytree(tiny, models)
    port = free_port()
    env = {
        **os.environ,
        "MMDEMO_HOME": str(home),
        "MMDEMO_PORT": str(port),
        "MMDEMO_BASE_MODEL": "tiny",
        "MMDEMO_DEMO_PAIRS": "24",
        "MMDEMO_SYNC_TO": str(target),
        "MMDEMO_SYNC_EVERY_S": every_s,
        "HF_HUB_OFFLINE": "1",
    }
    with log.open("w") as out:
        app = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert app.poll() is None, f"app.py exited: {log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return app, url
        except OSError:
            time.sleep(0.5)
    app.kill()
    raise AssertionError(f"app.py did not answer at {url}: {log.read_text()[-3000:]}")


@pytest.mark.slow
def test_a_killed_app_comes_back_from_its_folder_target(tmp_path: Path, tiny_clip_dir: Path):
    target = tmp_path / "target"
    first_home, second_home = tmp_path / "first", tmp_path / "second"
    app, _ = start_app(first_home, target, tiny_clip_dir, tmp_path / "first.log")
    try:
        # Import and label beside the running app, as the CLI does (same database, WAL).
        settings = Settings.from_env({"MMDEMO_HOME": str(first_home)})
        store = Store(settings.db_path)
        try:
            pairs = fill(store, settings, "team shapes")
            demo = store.find_collection("demo-shapes")
            demo_pair = store.list_pairs(demo.id, limit=1)[0]
            store.add_label(demo_pair.id, "negative", negative_sha256=pairs[0].image_sha256,
                            author="frank")  # fmt: skip
            expected = current_rows(store)
        finally:
            store.close()
        # Wait until a save holds all of it: the record of what is saved is written after the push.
        wanted = _hashes(expected)
        deadline = time.monotonic() + WAIT_S
        while True:
            state = load_state(settings, parse_target(str(target)))
            if state is not None and state.hashes == wanted:
                break
            assert time.monotonic() < deadline, "no save of the labels"
            assert app.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        app.send_signal(signal.SIGKILL)  # kill -9: no clean stop, no last save
        app.wait()

    journals = sorted((target / "journal").iterdir())
    assert journals and all(p.name.endswith(".jsonl.gz") for p in journals)
    header = json.loads(gzip.decompress(journals[0].read_bytes()).decode().splitlines()[0])
    assert header["header"]["format"] == "mmdemo-sync"

    app, url = start_app(second_home, target, tiny_clip_dir, tmp_path / "second.log")
    try:
        with urllib.request.urlopen(url + "config", timeout=10) as response:
            config = response.read().decode()
        assert f"Saved to {target.resolve()}" in config  # the header, as served
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait()
    log = (tmp_path / "second.log").read_text()
    assert "Restored from" in log, log[-3000:]

    settings = Settings.from_env({"MMDEMO_HOME": str(second_home)})
    store = Store(settings.db_path)
    try:
        assert current_rows(store) == expected  # same ids, authors, times, metrics
        assert {lab.author for lab in store.labels_for_collection(pairs[0].collection_id)} == {
            "carol",
            "dave",
            None,
        }
        assert json.loads(store.get_run("run-1").metrics_json) == {"t2i": {"recall@1": 0.75}}
        assert images_back(settings, store)  # every image file back, by its SHA-256
    finally:
        store.close()


@pytest.mark.slow
def test_sigterm_saves_the_last_labels_before_the_app_ends(tmp_path: Path, tiny_clip_dir: Path):
    target = tmp_path / "target"
    home = tmp_path / "home"
    # A save only every hour: the labels below reach the target only through the clean stop.
    app, _ = start_app(home, target, tiny_clip_dir, tmp_path / "app.log", every_s="3600")
    try:
        settings = Settings.from_env({"MMDEMO_HOME": str(home)})
        deadline = time.monotonic() + WAIT_S
        while load_state(settings, parse_target(str(target))) is None:  # the save at start
            assert time.monotonic() < deadline and app.poll() is None
            time.sleep(0.2)
        store = Store(settings.db_path)
        try:
            demo = store.find_collection("demo-shapes")
            first, second = store.list_pairs(demo.id, limit=2)
            store.add_label(first.id, "negative", negative_sha256=second.image_sha256, author="gus")
            expected = current_rows(store)
        finally:
            store.close()
        app.send_signal(signal.SIGTERM)  # what a Space sends before it restarts
        assert app.wait(timeout=WAIT_S) == 0, (tmp_path / "app.log").read_text()[-3000:]
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    state = load_state(settings, parse_target(str(target)))
    assert state.hashes == _hashes(expected)


def test_a_target_written_by_a_newer_mmdemo_stops_the_app_with_a_reason(tmp_path: Path):
    target = tmp_path / "target"
    target.mkdir()
    manifest = {"format": "mmdemo-sync", "schema": 99, "store_schema": 1, "lineage": "x"}
    (target / "manifest.json").write_text(json.dumps(manifest))
    env = {
        **os.environ,
        "MMDEMO_HOME": str(tmp_path / "home"),
        "MMDEMO_SYNC_TO": str(target),
        "MMDEMO_BASE_MODEL": "tiny",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert "mmdemo: " in done.stderr and "newer mmdemo" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
