"""The Label tab in a real Chromium with hostile user text: captions and a collection name that
look like HTML stay text (no injected element, no script run), every candidate is in the
numbered list, messages name captions, clearing says so, and a row of the list selects."""

from __future__ import annotations

import re

import pytest

from mmdemo.services import DEMO_COLLECTION

pytest_plugins = ["tests.browser"]

WAIT_MS = 30_000
HOSTILE_NAME = "<b>x</b>"


def hostile(caption: str, index: int) -> str:
    return f"<img src=x onerror=alert({index})> {caption}"


@pytest.mark.browser
def test_hostile_text_stays_text_and_candidates_read_in_full(live_app, page, screenshot):
    from playwright.sync_api import expect

    store = live_app.services.store
    collection = store.collection(DEMO_COLLECTION)
    for index, pair in enumerate(store.list_pairs(collection.id)):
        store.update_pair(pair.id, caption=hostile(pair.caption, index))
    # The page's stored collection name is now stale: the tab falls back to the only one.
    store.rename_collection(DEMO_COLLECTION, HOSTILE_NAME)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(live_app.url)
    page.get_by_role("tab", name="Label", exact=True).click()
    candidates = page.locator("#mm-label-candidates .thumbnail-item")
    expect(candidates).to_have_count(8, timeout=WAIT_MS)
    progress = page.locator("#mm-label-progress")
    expect(progress).to_contain_text(f"pairs labeled in “{HOSTILE_NAME}”")
    expect(progress.locator("b")).to_have_count(0)
    heading = page.locator("#mm-label-pair h3")
    expect(heading).to_contain_text("<img src=x onerror=alert(")
    rows = page.locator("#mm-label-list tbody tr")
    expect(rows).to_have_count(8)
    first_caption = rows.nth(0).locator("td").nth(1).inner_text()
    assert first_caption.startswith("<img src=x onerror=alert(")
    assert page.locator('img[src="x"]').count() == 0
    expect(rows.nth(0)).to_have_class(re.compile("mm-selected"))

    selection = page.locator("#mm-label-selection")
    expect(selection).to_contain_text("Selected [1]", timeout=WAIT_MS)
    drawn_by_server = selection.inner_text()
    page.locator("body").click(position={"x": 5, "y": 5})  # no text field has the focus
    page.keyboard.press("2")
    expect(selection).to_contain_text("Selected [2]", timeout=WAIT_MS)
    page.keyboard.press("1")  # the page draws the line itself, as the server does
    expect(selection).to_have_text(drawn_by_server, timeout=WAIT_MS)
    page.keyboard.press("2")
    expect(selection).to_contain_text("Selected [2]", timeout=WAIT_MS)
    expect(rows.nth(1)).to_have_class(re.compile("mm-selected"))
    second_caption = rows.nth(1).locator("td").nth(1).inner_text()
    second_pair = rows.nth(1).locator("td").nth(2).inner_text()
    page.keyboard.press("n")
    message = page.locator("#mm-label-message")
    expect(message).to_contain_text(
        f"Saved: hard negative: “{second_caption[:30]}", timeout=WAIT_MS
    )
    expect(message).to_contain_text(f"(pair {second_pair}) for pair")
    expect(rows.nth(1)).to_contain_text("✗ hard negative")
    expect(selection).to_contain_text("Selected [3]")
    sha = store.labels_for_collection(collection.id)[0].negative_sha256
    assert sha[:8] not in message.inner_text()

    rows.nth(1).click()  # a row of the list selects its candidate
    expect(selection).to_contain_text("Selected [2]", timeout=WAIT_MS)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("x")
    expect(message).to_contain_text("Cleared the label of “", timeout=WAIT_MS)
    expect(message).to_contain_text("(it was hard negative)")
    expect(rows.nth(1)).not_to_contain_text("hard negative")
    expect(page.locator("#mm-label .pending")).to_have_count(0, timeout=WAIT_MS)
    screenshot("label-hostile-text")
    # The page was built before the rename: no dropdown may send the stale name (an error toast).
    assert page.locator(".toast-body.error, [data-testid=toast-body]").count() == 0

    # The tiles' marks follow the labels (put there by the page) across pairs and undo.
    tiles = page.locator("#mm-label-candidates .caption-label")
    page.keyboard.press("2")
    page.keyboard.press("c")
    expect(tiles.nth(1)).to_contain_text("+ ·", timeout=WAIT_MS)
    heading_text = heading.inner_text()
    page.keyboard.press("s")
    expect(heading).not_to_have_text(heading_text, timeout=WAIT_MS)
    expect(tiles.nth(1)).not_to_contain_text("+ ·")
    page.keyboard.press("ArrowLeft")
    expect(heading).to_have_text(heading_text, timeout=WAIT_MS)
    expect(tiles.nth(1)).to_contain_text("+ ·", timeout=WAIT_MS)
    page.keyboard.press("u")
    expect(message).to_contain_text("Undone", timeout=WAIT_MS)
    expect(tiles.nth(1)).not_to_contain_text("+ ·")
    page.keyboard.press("s")
    expect(heading).not_to_have_text(heading_text, timeout=WAIT_MS)
    page.keyboard.press("ArrowLeft")
    expect(heading).to_have_text(heading_text, timeout=WAIT_MS)
    expect(tiles.nth(1)).not_to_contain_text("+ ·")
    expect(rows.nth(1)).not_to_contain_text("also correct")

    assert page.locator('img[src="x"]').count() == 0
    assert dialogs == []
    assert store.labels_for_collection(collection.id) == []
