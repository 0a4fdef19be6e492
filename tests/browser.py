"""Fixtures for tests that drive the real app in a real Chromium (Playwright).

Use them from a test module with ``pytest_plugins = ["tests.browser"]`` and mark the tests
``@pytest.mark.browser``:

- ``live_app``: the app built by :func:`mmdemo.ui.app.build_app` on a temporary MMDEMO_HOME,
  served on a free port (``demo.launch(prevent_thread_lock=True)``) and closed after the test.
  Override ``app_settings`` in a module to change its settings.
- ``page``: a fresh Chromium page (its own context: no shared cookies or localStorage).
- ``screenshot(name)``: saves the page as ``tests/artifacts/<name>.png`` (git-ignored).

Chromium is Debian's ``/usr/bin/chromium`` (``make chromium``); Playwright never downloads one.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest

from mmdemo.retrieval.models import TINY_MODEL_DIRNAME, ensure_tiny_model
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui.app import build_app, launch

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
BROWSER_DEMO_PAIRS = 24
"""The demo collection in browser tests: big enough to page through, quick to generate."""


@dataclass
class LiveApp:
    """A running app: its address and the objects behind it."""

    url: str
    services: Services
    demo: gr.Blocks

    @property
    def settings(self) -> Settings:
        return self.services.settings


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in tiny model, built once per test session and copied into each app home."""
    home = tmp_path_factory.mktemp("tiny-model-home")
    return ensure_tiny_model(Settings.from_env({"MMDEMO_HOME": str(home)}))


@pytest.fixture
def app_settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    """Settings of the app under test: a fresh home, the tiny model, a small demo, a free port."""
    settings = Settings.from_env(
        {
            "MMDEMO_HOME": str(tmp_path / "app-home"),
            "MMDEMO_BASE_MODEL": "tiny",
            "MMDEMO_DEMO_PAIRS": str(BROWSER_DEMO_PAIRS),
        }
    ).with_overrides(port=free_port())
    settings.ensure_dirs()
    shutil.copytree(tiny_model_dir, settings.models_dir / TINY_MODEL_DIRNAME)
    return settings


@pytest.fixture
def live_app(app_settings: Settings) -> Iterator[LiveApp]:
    """The whole app, served in this process until the test ends."""
    services = Services.create(app_settings)
    demo = build_app(services)
    try:
        launch(services, demo, prevent_thread_lock=True, quiet=True)
        yield LiveApp(f"http://{app_settings.host}:{app_settings.port}/", services, demo)
    finally:
        demo.close()
        services.close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One headless Chromium for the session (skips when Debian's chromium is missing)."""
    if not CHROMIUM_PATH.exists():
        pytest.skip(f"{CHROMIUM_PATH} is missing: run `make chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium) -> Iterator[object]:  # noqa: ANN001 - playwright's Browser
    """A page in a fresh browser context, closed after the test."""
    context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(page) -> Callable[[str], Path]:  # noqa: ANN001 - playwright's Page
    """``screenshot(name)`` saves the whole page as ``tests/artifacts/<name>.png``."""

    def save(name: str) -> Path:
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS_DIR / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
