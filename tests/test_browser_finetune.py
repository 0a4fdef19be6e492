"""The Finetune tab in a real Chromium: start a long finetune, watch it advance (also after a
reload) with Start off, cancel it, then run a short one and read its before/after metrics; pick
a collection with no eval split (an awkward name) and make one from the tab."""

from __future__ import annotations

import time

import pytest

pytest_plugins = ["tests.browser"]

AWKWARD = '<b>icons</b> & "co"'

WAIT_MS = 120_000  # upper bound for the app to react; a safety net, not a speed check


def shown_step(page) -> int:  # noqa: ANN001
    return int(page.locator("#mm-ft-bar .mm-ft-bar").get_attribute("data-step") or 0)


def wait_for_step_above(page, step: int) -> int:  # noqa: ANN001
    """Wait until the progress bar shows more than ``step`` steps; return what it shows."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while (now := shown_step(page)) <= step:
        assert time.monotonic() < deadline, f"the progress stayed at step {now}"
        page.wait_for_timeout(250)
    return now


def set_number(page, elem_id: str, value: str) -> None:  # noqa: ANN001
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Tab")


def pick_loss(page, label: str) -> None:  # noqa: ANN001
    page.locator("#mm-ft-loss input").click()
    page.get_by_role("option", name=label, exact=True).click()


def add_all_train_collection(services, name: str, pairs: int) -> None:  # noqa: ANN001
    """A collection as a folder import without a split column leaves it: every pair in train."""
    from mmdemo.data.images import ImageLimits, ingest_image_bytes
    from tests.conftest import make_image_bytes

    found = services.store.create_collection(name)
    limits = ImageLimits.from_settings(services.settings)
    for n in range(pairs):
        image = make_image_bytes((20 * n, 250 - 20 * n, 90))
        stored = ingest_image_bytes(image, services.settings.images_dir, limits)
        services.store.add_pair(found.id, stored.as_row(), f"icon {n}", split="train")


@pytest.mark.browser
@pytest.mark.slow
def test_start_watch_cancel_and_see_the_metrics_of_a_finished_run(live_app, page, screenshot):
    from playwright.sync_api import expect

    add_all_train_collection(live_app.services, AWKWARD, 12)
    page.goto(live_app.url)
    page.get_by_role("tab", name="Finetune").click()
    expect(page.locator("#mm-ft-device")).to_contain_text("CPU")
    expect(page.locator("#mm-ft-device")).to_contain_text("tiny-clip (built-in)")
    expect(page.locator("#mm-ft-collection input")).to_have_value("demo-shapes")
    expect(page.locator("#mm-ft-summary")).to_contain_text("train pairs")
    expect(page.locator("#mm-ft-make-split")).to_be_hidden()  # the demo has an eval split
    plan = page.locator("#mm-ft-plan")
    expect(plan).to_contain_text("This run: 80 epochs")  # before any run: speed not measured
    expect(plan).to_contain_text("Speed not measured yet")
    status = page.locator("#mm-ft-status")
    start, cancel = page.locator("#mm-ft-start"), page.locator("#mm-ft-cancel")
    expect(start).to_be_enabled()
    expect(cancel).to_be_disabled()
    expect(status).to_contain_text("No finetune has run")

    # The cached losses take a mini-batch size; the less common knobs sit under Advanced.
    mini_batch = page.locator("#mm-ft-mini-batch")
    expect(mini_batch).to_be_hidden()
    pick_loss(page, "Cached MNRL: big batches in small pieces")
    expect(mini_batch).to_be_visible()
    page.locator("#mm-ft-advanced").get_by_text("Advanced").click()
    expect(page.locator("#mm-ft-dims textarea")).to_be_visible()
    screenshot("finetune-0-knobs")
    pick_loss(page, "MNRL: text → image")
    expect(mini_batch).to_be_hidden()

    # A long run: watch its progress advance, then reload the page: it is still there.
    set_number(page, "mm-ft-epochs", "400")
    set_number(page, "mm-ft-batch", "4")
    set_number(page, "mm-ft-minutes", "10")
    expect(plan).to_contain_text("This run: 400 epochs")  # the plan follows the knobs
    start.click()
    expect(page.locator("#mm-ft-message")).to_contain_text("Started a finetune")
    expect(start).to_be_disabled()  # while the run goes
    expect(status).to_contain_text("Training", timeout=WAIT_MS)
    first = wait_for_step_above(page, 0)
    wait_for_step_above(page, first)
    expect(status).to_contain_text("ETA")
    expect(page.locator("#mm-ft-loss-curve canvas, #mm-ft-loss-curve svg").first).to_be_visible(
        timeout=WAIT_MS
    )
    expect(cancel).to_be_enabled()
    screenshot("finetune-1-training")

    page.reload()
    page.get_by_role("tab", name="Finetune").click()
    expect(status).to_contain_text("Training", timeout=WAIT_MS)
    after_reload = wait_for_step_above(page, 0)
    wait_for_step_above(page, after_reload)  # the job went on; this page re-attached to it
    expect(start).to_be_disabled()  # also after a reload: no second start from this page
    expect(cancel).to_be_enabled()
    cancel.click()
    expect(status).to_contain_text("Cancelled", timeout=WAIT_MS)
    expect(page.locator("#mm-ft-runs")).to_contain_text("cancelled", timeout=WAIT_MS)
    expect(start).to_be_enabled(timeout=WAIT_MS)  # the run ended: Start is back
    expect(cancel).to_be_disabled()
    screenshot("finetune-2-cancelled")

    # A short run to the end: the before/after table and the run in the list.
    set_number(page, "mm-ft-epochs", "2")
    set_number(page, "mm-ft-batch", "8")
    start.click()
    expect(status).to_contain_text("Finished", timeout=WAIT_MS)
    expect(status).to_contain_text("text→image recall@1")
    runs = live_app.services.store.list_runs()
    assert [r.status for r in runs] == ["finished", "cancelled"]
    title = page.locator("#mm-ft-metrics-title")
    expect(title).to_contain_text(f"Run {runs[0].name}", timeout=WAIT_MS)
    metrics = page.locator("#mm-ft-metrics")
    for text in ("t→i base", "t→i finetuned", "Δ t→i", "recall@1", "mrr@10", "ndcg@10"):
        expect(metrics).to_contain_text(text)
    expect(page.locator("#mm-ft-runs")).to_contain_text("finished", timeout=WAIT_MS)
    expect(page.locator("#mm-ft-bar .mm-ft-bar")).to_have_attribute("data-state", "finished")
    expect(start).to_be_enabled()
    expect(plan).to_contain_text("at the measured speed")  # the run just measured it
    expect(plan).to_contain_text(runs[0].name)
    screenshot("finetune-3-finished")

    # Picking the cancelled run shows its metrics: the base measured, no finetuned column.
    page.locator("#mm-ft-runs").get_by_text(runs[1].name, exact=True).click()
    expect(title).to_contain_text(f"Run {runs[1].name}", timeout=WAIT_MS)
    expect(title).to_contain_text("cancelled")
    screenshot("finetune-4-past-run")

    # A collection with no eval split: the tab offers to make one, and the counts follow.
    page.locator("#mm-ft-collection input").click()
    page.get_by_role("option", name=AWKWARD, exact=True).click()
    summary = page.locator("#mm-ft-summary")
    expect(summary).to_contain_text("12 train pairs · 0 eval pairs")
    expect(summary).to_contain_text("the eval split is empty")
    make_split = page.locator("#mm-ft-make-split")
    expect(make_split).to_be_visible()
    expect(make_split).to_have_text("Make an eval split (10 %)")
    screenshot("finetune-5-no-eval-split")
    make_split.click()
    message = page.locator("#mm-ft-message")
    expect(message).to_contain_text(f"Made an eval split of “{AWKWARD}”: eval 1 · train 11")
    expect(summary).to_contain_text("11 train pairs · 1 eval pairs")
    expect(make_split).to_be_hidden()
    for where in ("#mm-ft-message", "#mm-ft-summary", "#mm-ft-plan"):
        assert page.locator(f"{where} b").count() == 0  # the name stayed text
    screenshot("finetune-6-eval-split-made")

    # The pick is this browser's collection now: a reload opens the tab on it.
    page.reload()
    page.get_by_role("tab", name="Finetune").click()
    expect(page.locator("#mm-ft-collection input")).to_have_value(AWKWARD, timeout=WAIT_MS)
    expect(summary).to_contain_text("11 train pairs · 1 eval pairs")
