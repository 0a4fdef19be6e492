"""The Compare and Label tabs in a real Chromium: query, see both models, label, find the label
in Curate's counts and in the exported triplets; label by keyboard in the Label tab."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mmdemo.export import export_collection
from mmdemo.models import build_tiny_clip
from mmdemo.services import DEMO_COLLECTION
from mmdemo.settings import Settings
from mmdemo.store import Store

pytest_plugins = ["tests.browser"]

WAIT_MS = 30_000
RUN = "tuned"


@pytest.fixture(scope="module")
def tuned_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny CLIP (another seed) standing in for a finetuned model."""
    return build_tiny_clip(tmp_path_factory.mktemp("tuned") / "model", seed=1)


@pytest.fixture
def app_settings(app_settings: Settings, tuned_model_dir: Path) -> Settings:
    """The app's settings, with a finished run whose model is the second tiny CLIP."""
    run_dir = app_settings.runs_dir / RUN
    shutil.copytree(tuned_model_dir, run_dir / "model")
    store = Store(app_settings.db_path)
    try:
        store.create_run(RUN, None, "tiny", str(run_dir), status="finished")
    finally:
        store.close()
    return app_settings


def open_tab(page, name: str) -> None:  # noqa: ANN001
    page.get_by_role("tab", name=name, exact=True).click()


def settled(page) -> None:  # noqa: ANN001
    """Wait until no event is running (Gradio marks the outputs of a running event pending)."""
    from playwright.sync_api import expect

    expect(page.locator(".pending")).to_have_count(0, timeout=WAIT_MS)


@pytest.mark.browser
def test_query_label_and_find_it_in_curate_and_export(live_app, page, screenshot, tmp_path):
    from playwright.sync_api import expect

    store = live_app.services.store
    collection = store.collection(DEMO_COLLECTION)
    query = store.list_pairs(collection.id, split="eval")[0]

    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    open_tab(page, "Compare")
    metrics = page.locator("#mm-compare-metrics")
    expect(metrics).to_contain_text("t→i A", timeout=WAIT_MS)
    expect(metrics).to_contain_text("Run: tuned")
    expect(page.locator("#mm-rank-table")).to_contain_text("Δ rank")
    settled(page)
    screenshot("compare-1-opened")

    page.locator("#mm-query textarea").fill(query.caption)
    page.locator("#mm-search").click()
    thumbs_a = page.locator("#mm-results-a .thumbnail-item")
    thumbs_b = page.locator("#mm-results-b .thumbnail-item")
    expect(thumbs_a).to_have_count(8, timeout=WAIT_MS)
    expect(thumbs_b).to_have_count(8, timeout=WAIT_MS)
    expect(page.locator("#mm-selection")).to_contain_text(f"pair {query.id}")
    settled(page)
    screenshot("compare-2-results")

    # Mark a result of model B that is not the query's own image as a hard negative.
    hits_b = page.locator("#mm-results-b .caption-label")
    texts = [hits_b.nth(i).inner_text() for i in range(8)]
    index = next(i for i, text in enumerate(texts) if "✓" not in text)
    thumbs_b.nth(index).click()
    expect(page.locator("#mm-selection")).to_contain_text("Selected:", timeout=WAIT_MS)
    page.locator("#mm-mark-negative").click()
    expect(page.locator("#mm-compare-message")).to_contain_text("Saved: hard negative")
    expect(hits_b.nth(index)).to_contain_text("✗ ·")
    expect(page.locator("#mm-compare-undo")).to_be_visible()
    settled(page)
    screenshot("compare-3-labeled")

    labels = store.labels_for_pair(query.id)
    assert [(lab.kind, lab.author) for lab in labels] == [("negative", "local")]
    negative_sha = labels[0].negative_sha256

    # Query by an image of the collection: it finds itself first, under both models.
    page.locator("#mm-image-query").get_by_text("Query by image", exact=True).click()
    page.locator("#mm-image-picker .thumbnail-item").first.click()
    for side in ("a", "b"):
        first = page.locator(f"#mm-results-{side} .caption-label").first
        expect(first).to_contain_text("#1 1.000 ✓", timeout=WAIT_MS)
    settled(page)
    screenshot("compare-4-image-query")

    # Back in Curate, its counts include the new label (the tab re-reads the store when opened).
    page.get_by_role("tab", name="Curate").click()
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    expect(page.locator("#mm-stats")).to_contain_text("1 labeled negative", timeout=WAIT_MS)
    settled(page)
    screenshot("compare-5-curate-counts")

    # And the export carries it as a triplet.
    out = export_collection(store, live_app.settings, DEMO_COLLECTION, tmp_path / "export")
    files = sorted((out.out_dir / "triplets").glob("*.parquet"))
    triplets = pd.concat([pd.read_parquet(f) for f in files])
    assert triplets[["anchor", "negative_sha256", "author"]].values.tolist() == [
        [query.caption, negative_sha, "local"]
    ]


@pytest.mark.browser
def test_label_mode_by_keyboard(live_app, page, screenshot):
    from playwright.sync_api import expect

    store = live_app.services.store
    collection = store.collection(DEMO_COLLECTION)
    total = store.count_pairs(collection.id, split="train")

    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    open_tab(page, "Label")
    candidates = page.locator("#mm-label-candidates .thumbnail-item")
    expect(candidates).to_have_count(8, timeout=WAIT_MS)
    progress = page.locator("#mm-label-progress")
    expect(progress).to_contain_text(f"0 of {total} train pairs labeled")
    first_pair = page.locator("#mm-label-pair").inner_text()
    settled(page)
    screenshot("label-1-opened")

    page.locator("body").click(position={"x": 5, "y": 5})  # no text field has the focus
    page.keyboard.press("3")
    selection = page.locator("#mm-label-selection")
    expect(selection).to_contain_text("Selected [3]", timeout=WAIT_MS)
    page.keyboard.press("n")
    expect(page.locator("#mm-label-message")).to_contain_text("Saved: hard negative")
    marks = page.locator("#mm-label-candidates .caption-label")
    expect(marks.nth(2)).to_contain_text("✗ ·")
    expect(progress).to_contain_text(f"1 of {total} train pairs labeled")
    expect(selection).to_contain_text("Selected [4]")  # moved on to the next candidate
    page.keyboard.press("c")
    expect(marks.nth(3)).to_contain_text("+ ·", timeout=WAIT_MS)
    settled(page)
    screenshot("label-2-marked")

    page.keyboard.press("u")  # undo the "also correct"
    expect(page.locator("#mm-label-message")).to_contain_text("Undone", timeout=WAIT_MS)
    expect(marks.nth(3)).not_to_contain_text("+ ·")
    page.keyboard.press("s")
    expect(page.locator("#mm-label-pair")).not_to_have_text(first_pair, timeout=WAIT_MS)
    settled(page)
    screenshot("label-3-next-pair")

    labels = store.labels_for_collection(collection.id)
    assert [(lab.kind, lab.author) for lab in labels] == [("negative", "local")]
