"""Curate's Splits panel in a real Chromium: make splits, move the filtered pairs, undo."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.browser"]

WAIT_MS = 20_000


@pytest.mark.browser
def test_make_splits_move_filtered_and_undo(live_app, page, screenshot):
    from playwright.sync_api import expect

    store = live_app.services.store
    demo = store.collection("demo-shapes")
    before = {p.id: p.split for p in store.list_pairs(demo.id)}  # the demo's own 12 % eval
    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    page.locator("#mm-splits").get_by_text("Splits", exact=True).click()
    move = page.locator("#mm-move-filtered")
    expect(move).to_have_text("Move all 24 pairs to", timeout=WAIT_MS)

    share = page.locator("#mm-eval-share input[type=number]")
    share.fill("25")
    share.press("Tab")
    page.locator("#mm-make-splits").click()
    message = page.locator("#mm-message")
    expect(message).to_contain_text("Made splits (seed 0): eval 6 · train 18", timeout=WAIT_MS)
    expect(page.locator("#mm-stats")).to_contain_text("eval 6")
    assert store.collection_stats(demo.id).splits["eval"] == 6
    expect(page.locator("#mm-undo-splits")).to_be_visible()

    # The move button counts what the gallery's filter matches, as the filter changes.
    page.locator("#mm-filter textarea").fill("red")
    red = store.count_pairs(demo.id, "red")
    expect(move).to_have_text(f"Move the {red} filtered pairs to", timeout=WAIT_MS)
    move.click()
    expect(message).to_contain_text(f"of the {red} filtered pairs to eval", timeout=WAIT_MS)
    assert len(store.list_pairs(demo.id, "red", "eval")) == red
    expect(page.locator("#mm-gallery .thumbnail-item").first).to_contain_text("[eval]")
    screenshot("splits-moved")

    undo = page.locator("#mm-undo-move")
    expect(undo).to_be_visible()
    undo.click()
    expect(message).to_contain_text("Undid move", timeout=WAIT_MS)
    assert store.collection_stats(demo.id).splits["eval"] == 6
    page.locator("#mm-undo-splits").click()
    expect(message).to_contain_text("Undid make splits", timeout=WAIT_MS)
    assert {p.id: p.split for p in store.list_pairs(demo.id)} == before
    expect(page.locator("#mm-undo-splits")).to_be_hidden()
    screenshot("splits-undone")
