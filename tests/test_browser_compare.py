"""The Compare and Label tabs in a real Chromium: query, see both models, label, find the label
in Curate's counts and in the exported triplets; label by keyboard in the Label tab."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mmdemo.data.export import export_collection
from mmdemo.data.store import Store
from mmdemo.retrieval.models import build_tiny_clip
from mmdemo.services import DEMO_COLLECTION
from mmdemo.settings import Settings

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


HOSTILE_NAME = '<b id="mm-injected-name">x</b> & co'
HOSTILE_CAPTION = '<img id="mm-injected-caption" src=x onerror="window.__mmPwned=1"> **bold**'
INJECTED = (
    "() => Boolean(window.__mmPwned || document.querySelector("
    "'#mm-injected-name, #mm-injected-caption, img[src=\"x\"]'))"
)


def add_hostile_collection(services) -> None:  # noqa: ANN001
    """A collection named like markup, whose pairs (all eval) have markup captions."""
    from mmdemo.data.ingest import ImportReport, ingest_item
    from tests.conftest import make_image_bytes

    collection = services.store.create_collection(HOSTILE_NAME)
    report = ImportReport(HOSTILE_NAME)
    captions = [HOSTILE_CAPTION, "a [link](javascript:alert(1)) _here_", "plain words"]
    for i, caption in enumerate(captions):
        color = (60 * i + 30, 200 - 50 * i, 90)
        data = make_image_bytes(color, size=(64, 64))
        ingest_item(
            services.store,
            services.settings,
            collection.id,
            report,
            f"{i}.png",
            data,
            caption,
            "eval",
        )


@pytest.mark.browser
def test_compare_follows_curate_shows_one_progress_and_user_text_as_text(
    live_app, page, screenshot
):
    from playwright.sync_api import expect

    add_hostile_collection(live_app.services)
    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    open_tab(page, "Compare")
    expect(page.locator("#mm-compare-metrics")).to_contain_text("Eval split", timeout=WAIT_MS)
    settled(page)

    # A person picks the other collection in Curate; Compare reads it when shown.
    open_tab(page, "Curate")
    page.locator("#mm-picker input").click()
    page.get_by_role("option", name=HOSTILE_NAME, exact=True).click()
    expect(page.locator("#mm-picker input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    settled(page)
    open_tab(page, "Compare")
    metrics = page.locator("#mm-compare-metrics")
    expect(metrics).to_contain_text("Eval split (3 pairs)", timeout=WAIT_MS)
    settled(page)

    # The first query encodes the collection: one progress indicator, on the results.
    page.locator("#mm-query textarea").fill(HOSTILE_CAPTION)
    page.locator("#mm-search").click()
    most = 0
    thumbs = page.locator("#mm-results-a .thumbnail-item")
    while thumbs.count() < 3:
        most = max(most, page.locator(".pending").count())
        page.wait_for_timeout(20)
    settled(page)
    assert most <= 1, f"{most} progress indicators for one query"

    selection = page.locator("#mm-selection")
    expect(selection).to_contain_text("Labels go to pair", timeout=WAIT_MS)
    expect(selection).to_contain_text(f"“{HOSTILE_CAPTION}”")
    captions = page.locator("#mm-results-a .caption-label")
    texts = [captions.nth(i).inner_text() for i in range(3)]
    assert any(text.endswith(HOSTILE_CAPTION) for text in texts), texts
    assert not page.evaluate(INJECTED)
    page.locator("#mm-results-b .thumbnail-item").first.click()
    expect(selection).to_contain_text("Selected:", timeout=WAIT_MS)
    settled(page)
    assert not page.evaluate(INJECTED)
    assert page.locator("#mm-selection a, #mm-selection em").count() == 0
    assert page.locator("#mm-selection strong").all_inner_texts() == ["Selected:"]
    screenshot("compare-6-hostile-text")

    # A reload keeps the collection (the browser's current one) and asks nothing else of it.
    page.reload()
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    open_tab(page, "Compare")
    expect(metrics).to_contain_text("Eval split (3 pairs)", timeout=WAIT_MS)
    settled(page)
    assert not page.evaluate(INJECTED)


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
