"""The Finetune tab in a real Chromium: picking the sigmoid loss shows where its learnable
temperature and bias start; picking another loss hides the box again."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytest_plugins = ["tests.browser"]

WAIT_MS = 120_000  # upper bound for the app to react; a safety net, not a speed check
SIGMOID = "Sigmoid (SigLIP): every pair a yes/no, learned temperature"


def pick_loss(page, label: str) -> None:  # noqa: ANN001
    page.locator("#mm-ft-loss input").click()
    page.get_by_role("option", name=label, exact=True).click()


@pytest.mark.browser
def test_the_sigmoid_start_values_show_while_the_sigmoid_loss_is_picked(live_app, page, screenshot):
    page.goto(live_app.url)
    page.get_by_role("tab", name="Finetune").click()
    box = page.locator("#mm-ft-sigmoid-start")
    expect(page.locator("#mm-ft-loss")).to_be_visible(timeout=WAIT_MS)
    expect(box).to_be_hidden()
    pick_loss(page, SIGMOID)
    value = box.locator("textarea, input").first
    expect(value).to_have_value(
        "t = 10, b = -10 (the SigLIP paper's start; the base model has no trained t and b)",
        timeout=WAIT_MS,
    )
    screenshot("finetune-sigmoid-start")
    pick_loss(page, "MNRL: text → image")
    expect(box).to_be_hidden(timeout=WAIT_MS)
