"""The header in a real Chromium: "Saved to …" refreshes on the app's timer, a failing save shows
its error (escaped) until a retry works (issue 12)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmdemo.hub.sync import FolderBackend
from mmdemo.retrieval.models import TINY_MODEL_DIRNAME
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui.app import build_app, launch
from tests.test_sync_process import free_port

pytest_plugins = ["tests.browser"]

WAIT_MS = 60_000


class BrokenBackend(FolderBackend):
    """A folder target whose writes fail, as a full disk or a revoked token would."""

    def push(self, files, message):  # noqa: ANN001 - the Backend protocol
        from mmdemo.hub.sync import SyncError

        raise SyncError('The target refused the save: <img src=x onerror="alert(1)">')


@pytest.fixture
def synced_app(tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[Services, str]]:
    settings = Settings.from_env(
        {
            "MMDEMO_HOME": str(tmp_path / "home"),
            "MMDEMO_BASE_MODEL": "tiny",
            "MMDEMO_DEMO_PAIRS": "24",
            "MMDEMO_SYNC_TO": str(tmp_path / "target"),
            "MMDEMO_SYNC_EVERY_S": "1",
        }
    ).with_overrides(port=free_port())
    settings.ensure_dirs()
    shutil.copytree(tiny_model_dir, settings.models_dir / TINY_MODEL_DIRNAME)
    services = Services.create(settings, sync=True)
    demo = launch(services, build_app(services), prevent_thread_lock=True)
    try:
        yield services, f"http://{settings.host}:{settings.port}/"
    finally:
        demo.close()
        services.close()


@pytest.mark.browser
def test_the_header_shows_the_last_save_and_the_last_error(synced_app, page, screenshot):
    from playwright.sync_api import expect

    services, url = synced_app
    target = str(services.sync.target.folder)
    page.goto(url)
    header = page.locator("#mm-sync")
    expect(header).to_contain_text(f"Saved to {target}", timeout=WAIT_MS)
    screenshot("sync-header-saved")

    working = services.sync.backend
    services.sync.backend = BrokenBackend(Path(target))
    store = services.store
    pair = store.list_pairs(store.collection("demo-shapes").id, limit=1)[0]
    store.add_label(pair.id, "negative", negative_caption="a label to save", author="alice")
    # The page is not reloaded: the timer's ticks bring the error in, as text.
    expect(header).to_contain_text(f"Saving to {target} failed", timeout=WAIT_MS)
    expect(header).to_contain_text('<img src=x onerror="alert(1)">')
    assert header.locator("img").count() == 0
    screenshot("sync-header-error")

    services.sync.backend = working  # the retry works
    expect(header).to_contain_text(f"Saved to {target}", timeout=WAIT_MS)
    expect(header).not_to_contain_text("failed")
