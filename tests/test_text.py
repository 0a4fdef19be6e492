"""The one validation of user text and the one escaping helper (mmdemo.text)."""

from __future__ import annotations

import pytest

from mmdemo.data.images import ImageLimits, ingest_image_bytes
from mmdemo.data.store import Store, StoreError
from mmdemo.text import CaptionRejected, clean_caption, clean_name, html_text, md, shorten
from tests.conftest import make_image_bytes

HOSTILE = "<img src=x onerror=alert(1)> **bold** [link](http://x) `code` # head & 'q'"


def test_md_keeps_markup_as_text():
    out = md(HOSTILE)
    assert "<" not in out and ">" not in out
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in out
    assert "\\*\\*bold\\*\\*" in out and "\\[link\\]\\(http\\:" in out
    assert "\\`code\\`" in out and "\\# head &amp; &#x27;q&#x27;" in out


def test_html_text_escapes_attributes_too():
    assert html_text('"><b>x</b>') == "&quot;&gt;&lt;b&gt;x&lt;/b&gt;"


def test_shorten_and_limits():
    assert shorten("abcdef", 4) == "abc…" and shorten("abc", 4) == "abc"
    assert md("x" * 500, limit=10) == "x" * 9 + "…"


def test_clean_caption_rules():
    assert clean_caption("  a \n red\tcircle ") == "a red circle"
    with pytest.raises(CaptionRejected, match="blank"):
        clean_caption("   ")
    with pytest.raises(CaptionRejected, match="too long"):
        clean_caption("x" * 5000, 2000)
    with pytest.raises(CaptionRejected, match="needs a name"):
        clean_name(" \t")
    with pytest.raises(CaptionRejected, match="at most 100"):
        clean_name("n" * 101)


def test_every_store_write_path_uses_the_same_caption_rule(settings):
    store = Store(settings.db_path, max_caption_chars=50)
    try:
        collection = store.create_collection("c")
        stored = ingest_image_bytes(make_image_bytes(), settings.images_dir, ImageLimits())
        image = stored.as_row()
        with pytest.raises(StoreError, match="too long"):
            store.add_pair(collection.id, image, "y" * 51)
        pair, added = store.add_pair(collection.id, image, "  a  caption ")
        assert added and pair.caption == "a caption"
        with pytest.raises(StoreError, match=r"too long \(5,000 characters, limit 50\)"):
            store.update_pair(pair.id, caption="z" * 5000)
        with pytest.raises(StoreError, match="too long"):
            store.add_label(pair.id, negative_caption="w" * 60)
        with pytest.raises(StoreError, match="Blank caption"):
            store.update_pair(pair.id, caption=" \n ")
        assert store.get_pair(pair.id).caption == "a caption"
        with pytest.raises(StoreError, match="at most 100"):
            store.rename_collection("c", "r" * 101)
    finally:
        store.close()
