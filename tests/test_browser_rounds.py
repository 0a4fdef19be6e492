"""Rounds in a real Chromium: finetune from the base model, then a second round started from the
first run through the "Start from" picker; the recall@1-over-runs plot and its list follow."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.browser"]

WAIT_MS = 120_000  # upper bound for the app to react; a safety net, not a speed check


def set_number(page, elem_id: str, value: str) -> None:  # noqa: ANN001
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Tab")


@pytest.mark.browser
@pytest.mark.slow
def test_two_rounds_from_the_finetune_tab(live_app, page, screenshot):
    from playwright.sync_api import expect

    services = live_app.services
    page.goto(live_app.url)
    page.get_by_role("tab", name="Finetune").click()
    picker = page.locator("#mm-ft-start-from input")
    expect(picker).to_have_value("Base model")
    lineage = page.locator("#mm-ft-rounds-lineage")
    expect(lineage).to_contain_text("Eval recall@1 of each finished run shows here")

    set_number(page, "mm-ft-epochs", "2")
    set_number(page, "mm-ft-batch", "8")
    start, status = page.locator("#mm-ft-start"), page.locator("#mm-ft-status")
    start.click()
    expect(status).to_contain_text("Finished", timeout=WAIT_MS)
    first = services.store.list_runs()[0].name
    # The run's end redraws the plot and the list (the tick), and offers the run to start from.
    expect(lineage).to_contain_text(first, timeout=WAIT_MS)
    expect(lineage).to_contain_text("round 1, from base model")
    expect(page.locator("#mm-ft-rounds canvas, #mm-ft-rounds svg").first).to_be_visible()
    assert services.background.wait(WAIT_MS / 1000)  # the new model was encoded meanwhile

    picker.click()
    page.get_by_role("option", name=f"{first} (round 1)", exact=True).click()
    expect(picker).to_have_value(f"{first} (round 1)")
    start.click()
    expect(page.locator("#mm-ft-message")).to_contain_text("Started a finetune")
    # The status line still says the first run "Finished": wait for the second job itself.
    done = services.jobs.wait(services.jobs.status().job_id, WAIT_MS / 1000)
    assert done.state == "finished", done.message
    second = done.progress["run_name"]
    assert second != first and services.store.get_run(second).status == "finished"
    expect(status).to_contain_text(second, timeout=WAIT_MS)
    expect(status).to_contain_text("Finished")
    expect(start).to_be_enabled(timeout=WAIT_MS)
    expect(lineage).to_contain_text(f"round 2, from {first}", timeout=WAIT_MS)
    # The run's end reaches these views on the next ticks, on a busy machine seconds later.
    expect(picker).to_have_value(f"{first} (round 1)", timeout=WAIT_MS)  # the pick stays
    expect(page.locator("#mm-ft-runs")).to_contain_text(second, timeout=WAIT_MS)
    expect(page.locator("#mm-ft-metrics-title")).to_contain_text(
        f"started from run {first}", timeout=WAIT_MS
    )
    screenshot("rounds-1-two-rounds")

    # Shown again after a reload: the list and the picker's choices are read afresh.
    page.reload()
    page.get_by_role("tab", name="Finetune").click()
    expect(lineage).to_contain_text(f"round 2, from {first}", timeout=WAIT_MS)
    picker.click()
    expect(page.get_by_role("option", name=f"{second} (round 2, from {first})")).to_be_visible()
