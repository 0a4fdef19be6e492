"""The Publish tab in a real Chromium: check the repo names, dry run, download the zip."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.browser"]

WAIT_MS = 60_000
METRICS = {
    side: {d: {"recall@1": r1, "recall@5": 1.0, "mrr@10": r1} for d in ("t2i", "i2t")}
    for side, r1 in (("base", 0.5), ("finetuned", 0.875))
}


def add_finished_run(live_app, tiny_model_dir: Path, name: str = "shapes-run") -> None:  # noqa: ANN001
    """A finished run on the demo collection, laid out as training leaves one."""
    services = live_app.services
    run_dir = services.settings.runs_dir / name
    shutil.copytree(tiny_model_dir, run_dir / "model")
    (run_dir / "config.json").write_text(json.dumps({"epochs": 1, "learning_rate": 1e-4}))
    (run_dir / "metrics.json").write_text(json.dumps(METRICS))
    demo = services.store.collection("demo-shapes")
    services.store.create_run(name, demo.id, str(tiny_model_dir), str(run_dir), status="finished")


@pytest.mark.browser
def test_dry_run_offers_a_zip_with_the_model_and_the_dataset(
    live_app, page, screenshot, tiny_model_dir, tmp_path
):
    from playwright.sync_api import expect

    add_finished_run(live_app, tiny_model_dir)
    page.goto(live_app.url)
    page.get_by_role("tab", name="Publish").click()
    expect(page.locator("#mm-pub-run input")).to_have_value("shapes-run", timeout=WAIT_MS)
    expect(page.locator("#mm-pub-collection input")).to_have_value("demo-shapes")

    # A bad name is caught while typing, before anything is sent.
    model_repo = page.locator("#mm-pub-model-repo textarea")
    model_repo.fill("shapes-clip")
    check = page.locator("#mm-pub-check")
    expect(check).to_contain_text("must be owner/name", timeout=WAIT_MS)
    model_repo.fill("alice/shapes-clip")
    page.locator("#mm-pub-dataset-repo textarea").fill("alice/demo-shapes")
    expect(check).to_contain_text("Ready: run shapes-run", timeout=WAIT_MS)
    expect(page.locator("#mm-pub-token input")).to_have_attribute("type", "password")

    page.locator("#mm-pub-dry").click()
    status = page.locator("#mm-pub-status")
    expect(status).to_contain_text("Dry run ready", timeout=WAIT_MS)
    download_button = page.locator("#mm-pub-download")
    expect(download_button).to_be_visible()
    preview = page.locator("#mm-pub-preview")
    expect(preview).to_contain_text("Evaluation: base vs finetuned")
    # Measured while publishing, on the published images, with the reproducing snippet.
    expect(preview).to_contain_text("accuracy@1")
    expect(preview).to_contain_text("InformationRetrievalEvaluator")
    screenshot("publish-1-dry-run")

    with page.expect_download(timeout=WAIT_MS) as info:
        download_button.click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name == "mmdemo-dry-run-shapes-clip.zip"
    with zipfile.ZipFile(saved) as archive:
        names = set(archive.namelist())
        card = archive.read("model/README.md").decode()
        data_card = archive.read("dataset/README.md").decode()
    assert {"model/modules.json", "model/model.safetensors", "model/config.json"} <= names
    assert any(n.startswith("dataset/") and n.endswith(".parquet") for n in names)
    assert "datasets/alice/demo-shapes" in card and "| text → image | accuracy@1 |" in card
    assert "No base column" not in card, "the run's base model was measured too"
    assert str(live_app.settings.home) not in card
    assert 'load_dataset("alice/demo-shapes", "pairs")' in data_card
    # Nothing was pushed and nothing is left in the app's temp folder.
    assert not list(live_app.settings.tmp_dir.iterdir())
    screenshot("publish-2-downloaded")


HOSTILE_NAME = '<b id="mm-injected-name">x</b> & co'
INJECTED = "() => Boolean(document.querySelector('#mm-injected-name'))"


@pytest.mark.browser
def test_the_form_follows_curate_and_its_two_lines_agree(
    live_app, page, screenshot, tiny_model_dir
):
    from playwright.sync_api import expect

    add_finished_run(live_app, tiny_model_dir)
    live_app.services.store.create_collection(HOSTILE_NAME)
    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    page.get_by_role("tab", name="Publish").click()
    collection = page.locator("#mm-pub-collection input")
    expect(collection).to_have_value("demo-shapes", timeout=WAIT_MS)
    check, status = page.locator("#mm-pub-check"), page.locator("#mm-pub-status")
    expect(check).to_contain_text("Nothing to publish yet")

    # A click before the form is filled says so; filling it in clears that message.
    page.locator("#mm-pub-dry").click()
    expect(status).to_contain_text("Nothing to publish yet", timeout=WAIT_MS)
    page.locator("#mm-pub-dataset-repo textarea").fill("alice/demo-shapes")
    expect(check).to_contain_text("Ready: collection demo-shapes", timeout=WAIT_MS)
    expect(status).not_to_contain_text("Nothing to publish", timeout=WAIT_MS)

    # Another collection picked in Curate: Publish follows it when shown, named as typed.
    page.get_by_role("tab", name="Curate").click()
    page.locator("#mm-picker input").click()
    page.get_by_role("option", name=HOSTILE_NAME, exact=True).click()
    expect(page.locator("#mm-picker input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    page.get_by_role("tab", name="Publish").click()
    expect(collection).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    expect(check).to_contain_text(f"Ready: collection {HOSTILE_NAME} → dataset repo")
    expect(page.locator("#mm-pub-run input")).to_have_value("shapes-run")
    assert not page.evaluate(INJECTED)
    screenshot("publish-3-follows-curate")
