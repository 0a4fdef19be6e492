"""The Curate tab in a real Chromium: create, import a zip, filter, edit, reload, see the edit,
then mark a look-alike of the opened pair hard negative."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_image_bytes

pytest_plugins = ["tests.browser"]

WAIT_MS = 20_000


def imagefolder_zip(path: Path) -> Path:
    """Three good pairs, one file that is not an image, one blank caption."""
    rows = [
        ("sunset.png", "a sunset over the sea", make_image_bytes((250, 120, 30), (96, 64))),
        ("lemon.png", "a lemon on a table", make_image_bytes((240, 230, 40), (96, 64))),
        ("forest.png", "a pine forest", make_image_bytes((20, 120, 40), (96, 64))),
        ("broken.png", "a broken file", b"this is not an image"),
        ("blank.png", "  ", make_image_bytes((90, 90, 200), (96, 64))),
    ]
    with zipfile.ZipFile(path, "w") as archive:
        for name, _, data in rows:
            archive.writestr(name, data)
        meta = "\n".join(json.dumps({"file_name": n, "text": t}) for n, t, _ in rows)
        archive.writestr("metadata.jsonl", meta + "\n")
    return path


def wait_for_app(page) -> None:  # noqa: ANN001
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)


def filter_to(page, text: str):  # noqa: ANN001, ANN201
    """Type a caption filter; return the gallery's thumbnails once exactly one is left."""
    from playwright.sync_api import expect

    page.locator("#mm-filter textarea").fill(text)
    thumbs = page.locator("#mm-gallery .thumbnail-item")
    expect(thumbs).to_have_count(1, timeout=WAIT_MS)
    return thumbs


@pytest.mark.browser
def test_import_filter_edit_and_reload(live_app, page, screenshot, tmp_path):
    from playwright.sync_api import expect

    upload = imagefolder_zip(tmp_path / "pairs.zip")
    page.goto(live_app.url)
    wait_for_app(page)
    expect(page.locator("#mm-picker input")).to_have_value("demo-shapes")

    # A new collection to import into.
    page.locator("#mm-manage").get_by_text("Manage collections", exact=True).click()
    page.locator("#mm-name textarea").fill("my pairs")
    page.get_by_role("button", name="Create new").click()
    expect(page.locator("#mm-page")).to_contain_text("0 pairs", timeout=WAIT_MS)
    expect(page.locator("#mm-picker input")).to_have_value("my pairs")

    # Upload the zip and import it: the summary and the rejected items show.
    page.locator("#mm-import").get_by_text("Import pairs", exact=True).click()
    page.locator("#mm-import input[type=file]").set_input_files(str(upload))
    # Uploaded: the file list links to the server's copy.
    uploaded = page.locator('#mm-import a[href*="pairs.zip"]')
    expect(uploaded).to_be_visible(timeout=WAIT_MS)
    page.get_by_role("button", name="Import", exact=True).click()
    rejected = page.locator("#mm-rejected")
    expect(rejected).to_be_visible(timeout=WAIT_MS)
    expect(rejected).to_contain_text("broken.png")
    expect(rejected).to_contain_text("not an image")
    expect(rejected).to_contain_text("blank.png")
    expect(page.locator("#mm-import")).to_contain_text("Added 3 pairs, rejected 2")
    expect(page.locator("#mm-stats")).to_contain_text("3 pairs")
    expect(page.locator("#mm-gallery .thumbnail-item")).to_have_count(3)
    screenshot("curate-1-imported")

    # Filter to one pair, open it, edit its caption and split, save.
    filter_to(page, "lemon").first.click()
    caption = page.locator("#mm-caption textarea")
    expect(caption).to_have_value("a lemon on a table", timeout=WAIT_MS)
    caption.fill("a ripe lemon on a wooden table")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#mm-message")).to_contain_text("Saved pair", timeout=WAIT_MS)
    screenshot("curate-2-edited")

    # The edit is in SQLite: a reload (fresh session) reopens the collection and shows it.
    page.reload()
    wait_for_app(page)
    expect(page.locator("#mm-picker input")).to_have_value("my pairs", timeout=WAIT_MS)
    expect(page.locator("#mm-stats")).to_contain_text("3 pairs")
    filter_to(page, "ripe").first.click()
    expect(caption).to_have_value("a ripe lemon on a wooden table", timeout=WAIT_MS)
    screenshot("curate-3-after-reload")

    # Its look-alikes load when the accordion opens; mark one hard negative, then undo it.
    page.locator("#mm-lookalikes").get_by_text("Hard negatives for this caption").click()
    looks = page.locator("#mm-look-gallery .thumbnail-item")
    # The zip has no split column, so the import put 10 % (one pair) in eval: the look-alikes are
    # the other train pair, never the pair's own image.
    expect(page.locator("#mm-stats")).to_contain_text("train 2 · eval 1")
    expect(looks).to_have_count(1, timeout=WAIT_MS)
    looks.first.click()
    expect(page.locator("#mm-look-selection")).to_contain_text("Selected [1]", timeout=WAIT_MS)
    page.get_by_role("button", name="✗ Hard negative").click()
    expect(page.locator("#mm-stats")).to_contain_text("1 labeled negative", timeout=WAIT_MS)
    expect(page.locator("#mm-look-message")).to_contain_text("Saved: hard negative")
    expect(looks.first).to_contain_text("✗")
    screenshot("curate-4-hard-negative")

    store = live_app.services.store
    coll = store.collection("my pairs")
    [lemon] = store.list_pairs(coll.id, caption_filter="lemon")
    assert lemon.caption == "a ripe lemon on a wooden table"
    assert [(lab.kind, lab.author) for lab in store.labels_for_pair(lemon.id)] == [
        ("negative", "local")
    ]
    page.get_by_role("button", name="↶ Undo").click()
    expect(page.locator("#mm-stats")).to_contain_text("0 labeled negatives", timeout=WAIT_MS)
    assert store.labels_for_pair(lemon.id) == []
