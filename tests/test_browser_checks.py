"""Curate's Data checks section in a real Chromium: run, see the leak, move it, undo."""

from __future__ import annotations

import random

import pytest

pytest_plugins = ["tests.browser"]

WAIT_MS = 60_000


@pytest.mark.browser
def test_run_checks_move_the_leaking_group_and_undo(live_app, page, screenshot):
    from PIL import Image
    from playwright.sync_api import expect

    from bench.bench_check import edited
    from mmdemo.data.images import image_path
    from mmdemo.data.ingest import ImportReport, ingest_item

    services = live_app.services
    store = services.store
    demo = store.collection("demo-shapes")
    original = next(p for p in store.list_pairs(demo.id) if p.split == "train")
    info = store.image_info(original.image_sha256)
    with Image.open(
        image_path(services.settings.images_dir, original.image_sha256, info["ext"])
    ) as img:
        data = edited(img, "jpeg", random.Random(0))
    report = ImportReport(demo.name)
    ingest_item(
        store, services.settings, demo.id, report, "copy.jpg", data, "<b>a copy</b>", "eval"
    )
    (copy_id,) = report.added_pair_ids
    evals = store.collection_stats(demo.id).splits["eval"]  # the copy included

    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    page.locator("#mm-checks").get_by_text("Data checks", exact=True).click()
    page.locator("#mm-checks").get_by_role("button", name="Run checks").click()
    summary = page.locator("#mm-checks-summary")
    expect(summary).to_contain_text("1 duplicate group leaks between train", timeout=WAIT_MS)
    expect(page.locator("#mm-checks-duplicates")).to_contain_text("<b>a copy</b>")
    expect(page.locator("#mm-checks-thumbs .thumbnail-item")).to_have_count(2)
    fix = page.locator("#mm-checks-fix")
    expect(fix).to_contain_text("Move the 1 leaking group")
    screenshot("checks-leak")
    fix.click()
    expect(summary).to_contain_text("Moved 1 pair", timeout=WAIT_MS)
    assert store.get_pair(copy_id).split == "train"
    expect(page.locator("#mm-stats")).to_contain_text(f"eval {evals - 1}")
    page.locator("#mm-checks").get_by_role("button", name="Undo move").click()
    expect(summary).to_contain_text("Undid the move", timeout=WAIT_MS)
    assert store.get_pair(copy_id).split == "eval"
    screenshot("checks-undone")
