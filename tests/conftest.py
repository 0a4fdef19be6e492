"""Shared fixtures: a real Settings/Store on a temporary MMDEMO_HOME, real images."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from mmdemo.data.store import Store  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose MMDEMO_HOME is a fresh temporary folder."""
    s = Settings.from_env({"MMDEMO_HOME": str(tmp_path / "home"), "MMDEMO_BASE_MODEL": "tiny"})
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in tiny CLIP, built once per test session in a folder named like the app's."""
    from mmdemo.retrieval.models import TINY_MODEL_DIRNAME, build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("shared-tiny") / TINY_MODEL_DIRNAME, seed=0)


@pytest.fixture
def store(settings: Settings):
    st = Store(settings.db_path)
    yield st
    st.close()


def make_image_bytes(
    color: tuple[int, int, int] = (200, 30, 30),
    size: tuple[int, int] = (64, 48),
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    """A real encoded image of one colour with a marker pixel pattern."""
    img = Image.new("RGB", size, color)
    for x in range(0, size[0], 7):
        img.putpixel((x, x % size[1]), (255 - color[0], 255 - color[1], 255 - color[2]))
    if mode != "RGB":
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def plain(markdown: str) -> str:
    """What a person reads from Markdown made by ``mmdemo.text.md``: escapes undone."""
    import html
    import re

    return html.unescape(re.sub(r"\\([\\`*_{}\[\]()#+\-.!|~:$])", r"\1", markdown))
