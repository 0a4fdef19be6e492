"""A newcomer's first hour, in a real Chromium, on data that looks like a user's and not like our
demo: 520 small RGBA PNG icons named after what they show, no split column, a few identical
images, imported by server path into a collection with an awkward name; hostile captions and
names throughout (they must stay text: no injected element may reach the DOM)."""

from __future__ import annotations

import collections
import csv
import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytest_plugins = ["tests.browser"]

WAIT_MS = 30_000
ICONS = 520
DUPLICATES = 6
"""Icons whose pixels repeat an earlier icon's (a real icon set has a few)."""
HOSTILE_NAME = '<b id="mm-injected-name">icons</b> & "co"'
HOSTILE_CAPTION = '<img id="mm-injected-caption" src=x onerror="window.__mmPwned=1"> **bold**'
INJECTED = (
    "() => Boolean(window.__mmPwned || document.querySelector("
    "'#mm-injected-name, #mm-injected-caption, img[src=\"x\"]'))"
)
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "orange": (240, 140, 20),
    "purple": (140, 50, 180),
    "grey": (120, 120, 120),
}
THINGS = ("app", "badge", "button", "sign", "logo", "marker", "token", "symbol")


def _icon(shape: str, colour: tuple[int, int, int], size: int, seed: int) -> Image.Image:
    """A transparent icon of odd size with one shape on it."""
    rng = random.Random(seed)
    img = Image.new("RGBA", (size, size + rng.randint(-6, 6)), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    box = (w * 0.15, h * 0.15, w * 0.85, h * 0.85)
    fill = (*colour, 255)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(w / 2, h * 0.1), (w * 0.9, h * 0.9), (w * 0.1, h * 0.9)], fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, w // 8))
    elif shape == "cross":
        draw.rectangle((w * 0.4, h * 0.1, w * 0.6, h * 0.9), fill=fill)
        draw.rectangle((w * 0.1, h * 0.4, w * 0.9, h * 0.6), fill=fill)
    else:  # star
        points = []
        for i in range(10):
            radius = (w * 0.42) if i % 2 == 0 else (w * 0.18)
            angle = 3.14159 * (i / 5 - 0.5)
            points.append((w / 2 + radius * _cos(angle), h / 2 + radius * _sin(angle)))
        draw.polygon(points, fill=fill)
    draw.point((rng.randrange(w), rng.randrange(h)), fill=(rng.randrange(256), 0, 0, 128))
    return img


def _cos(x: float) -> float:
    import math

    return math.cos(x)


def _sin(x: float) -> float:
    import math

    return math.sin(x)


def make_icon_set(folder: Path) -> Path:
    """``ICONS`` PNG icons (24–72 px, alpha) plus a metadata.csv of ``file_name,name``."""
    folder.mkdir(parents=True)
    rng = random.Random(7)
    rows = []
    for i in range(ICONS):
        shape, colour = SHAPES[i % len(SHAPES)], list(COLOURS)[(i // len(SHAPES)) % len(COLOURS)]
        thing = THINGS[i % len(THINGS)]
        file_name = f"{colour}-{shape}-{thing}-{i:03d}.png"
        if i >= ICONS - DUPLICATES:  # the same pixels as an earlier icon, another name
            source = folder / rows[i - ICONS + DUPLICATES][0]
            (folder / file_name).write_bytes(source.read_bytes())
        else:
            _icon(shape, COLOURS[colour], rng.choice((24, 32, 40, 48, 64, 72)), i).save(
                folder / file_name
            )
        rows.append((file_name, f"{colour} {shape} {thing}"))
    rows[3] = (rows[3][0], HOSTILE_CAPTION)
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "name"])
        writer.writerows(rows)
    return folder


def timer_fn_indices(demo) -> set[int]:  # noqa: ANN001
    """Indices of the events the app's polling timer runs (the only ones an idle page sends)."""
    return {
        index
        for index, fn in enumerate(demo.fns.values())
        if any(target[1] == "tick" for target in fn.targets)
    }


def requests_while_idle(page, seconds: float) -> collections.Counter:  # noqa: ANN001
    """Event requests (by fn_index) the page sends in ``seconds`` without anyone touching it."""
    seen: collections.Counter = collections.Counter()

    def record(request) -> None:  # noqa: ANN001
        if request.url.endswith("/queue/join") and request.post_data:
            seen[json.loads(request.post_data).get("fn_index")] += 1

    page.on("request", record)
    page.wait_for_timeout(int(seconds * 1000))
    page.remove_listener("request", record)
    return seen


def assert_quiet(page, demo, seconds: float = 10.0) -> None:  # noqa: ANN001
    """No loading indicator, and nothing but the timer's ticks over ``seconds``."""
    from playwright.sync_api import expect

    expect(page.locator(".pending, .eta-bar")).to_have_count(0, timeout=WAIT_MS)
    sent = requests_while_idle(page, seconds)
    ticks = timer_fn_indices(demo)
    others = {fn: n for fn, n in sent.items() if fn not in ticks}
    assert not others, f"an idle page sent events {others} (timer ticks: {ticks})"
    per_tick = max(sent.values(), default=0)
    assert per_tick <= seconds / 2.0 + 2, f"the timer ticked {per_tick} times in {seconds} s"


def open_tab(page, label: str) -> None:  # noqa: ANN001
    page.get_by_role("tab", name=label, exact=True).click()


def press(page, key: str) -> None:  # noqa: ANN001
    """A key press with no text field focused (the Label tab's shortcuts)."""
    page.locator("#mm-label-keys").click()
    page.keyboard.press(key)


@pytest.mark.browser
def test_newcomer_journey(live_app, page, screenshot, tmp_path):
    from playwright.sync_api import expect

    icons = make_icon_set(tmp_path / "my icons")
    store = live_app.services.store
    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)

    # A collection with an awkward name: the name shows as typed, nowhere as markup.
    page.locator("#mm-manage").get_by_text("Manage collections", exact=True).click()
    page.locator("#mm-name textarea").fill(HOSTILE_NAME)
    page.get_by_role("button", name="Create new").click()
    expect(page.locator("#mm-picker input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    expect(page.locator("#mm-message")).to_contain_text(f"Created “{HOSTILE_NAME}”")
    assert not page.evaluate(INJECTED)

    # Import by server path: no split column, so an eval share is made; duplicates are listed.
    page.locator("#mm-import").get_by_text("Import pairs", exact=True).click()
    page.get_by_label("…or a Hub dataset id or a path on the server").fill(str(icons))
    page.get_by_role("button", name="Import", exact=True).click()
    # The caption column is called "name": the import says so and what to do, and adds nothing.
    expect(page.locator("#mm-rejected")).to_contain_text("Name it with caption_column")
    assert store.count_pairs(store.collection(HOSTILE_NAME).id) == 0
    page.get_by_label("Caption column").fill("name")
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#mm-import")).to_contain_text(
        f"Added {ICONS - DUPLICATES} pairs", timeout=120_000
    )
    skipped = page.locator("#mm-skipped")
    expect(skipped).to_be_visible()
    expect(skipped).to_contain_text("earlier in this import")
    collection = store.collection(HOSTILE_NAME)
    splits = store.collection_stats(collection.id).splits
    assert splits.get("eval", 0) > 0 and splits.get("train", 0) > splits["eval"], splits
    expect(page.locator("#mm-stats")).to_contain_text(f"{ICONS - DUPLICATES} pairs")
    assert not page.evaluate(INJECTED)
    screenshot("journey-1-imported")

    # The filter matches words: "star" finds stars, not "start"; a quoted phrase is exact.
    page.locator("#mm-filter textarea").fill('"red star"')
    expect(page.locator("#mm-page")).to_contain_text("match the filter", timeout=WAIT_MS)
    stars = store.count_pairs(collection.id, caption_filter='"red star"')
    expect(page.locator("#mm-page")).to_contain_text(f"{stars} pairs match")

    # Edit a caption, then click a split: the split saves with the caption, nothing reverts.
    page.locator("#mm-gallery .thumbnail-item").first.click()
    caption = page.locator("#mm-caption textarea")
    expect(caption).to_have_value(re.compile("^red star "), timeout=WAIT_MS)
    caption.fill("a red star, edited")
    page.locator("#mm-split").get_by_label("test", exact=True).check()
    expect(page.locator("#mm-message")).to_contain_text("Saved pair", timeout=WAIT_MS)
    expect(caption).to_have_value("a red star, edited")
    [edited] = store.list_pairs(collection.id, caption_filter='"red star, edited"')
    assert edited.split == "test"

    # Type, then click elsewhere (another thumbnail): the typed caption is saved.
    caption.fill(HOSTILE_CAPTION + " edited")
    page.locator("#mm-filter textarea").click()
    expect(page.locator("#mm-message")).to_contain_text("Saved the caption", timeout=WAIT_MS)
    assert store.get_pair(edited.id).caption == HOSTILE_CAPTION + " edited"
    assert not page.evaluate(INJECTED)
    screenshot("journey-2-edited")

    # Reload with the non-default collection selected: the page goes quiet.
    page.reload()
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    expect(page.locator("#mm-picker input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    assert_quiet(page, live_app.demo)
    for label in ("Label", "Finetune", "Compare", "Publish"):
        open_tab(page, label)
        page.wait_for_timeout(500)
    open_tab(page, "Curate")
    assert_quiet(page, live_app.demo)
    assert not page.evaluate(INJECTED)

    # A second browser tab on the same profile opens the same collection, and goes quiet too.
    other = page.context.new_page()
    other.goto(live_app.url)
    expect(other.locator("#mm-picker input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    assert_quiet(other, live_app.demo, seconds=6)
    other.close()
    screenshot("journey-3-quiet")

    # Label by keys: the collection is the one picked in Curate; candidates read in full.
    open_tab(page, "Label")
    expect(page.locator("#mm-label-progress")).to_contain_text(
        f"pairs labeled in “{HOSTILE_NAME}”", timeout=WAIT_MS
    )
    rows = page.locator("#mm-label-list tbody tr")
    expect(rows).to_have_count(8, timeout=WAIT_MS)
    press(page, "3")
    expect(page.locator("#mm-label-selection")).to_contain_text("Selected [3]", timeout=WAIT_MS)
    press(page, "n")
    message = page.locator("#mm-label-message")
    expect(message).to_contain_text("Saved: hard negative: “", timeout=WAIT_MS)
    press(page, "c")
    expect(message).to_contain_text("Saved: also correct: “", timeout=WAIT_MS)
    press(page, "u")
    expect(message).not_to_contain_text("Saved: also correct", timeout=WAIT_MS)
    press(page, "s")
    expect(page.locator("#mm-label-selection")).to_contain_text("Selected [1]", timeout=WAIT_MS)
    labels = store.labels_for_collection(collection.id)
    assert [label.kind for label in labels] == ["negative"]
    assert not page.evaluate(INJECTED)
    screenshot("journey-4-labeled")

    # Finetune with the defaults: it plans for the budget and finishes every planned step.
    open_tab(page, "Finetune")
    expect(page.locator("#mm-ft-collection input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    train = store.count_pairs(collection.id, split="train")
    expect(page.locator("#mm-ft-summary")).to_contain_text(f"{train} train pairs")
    start = page.locator("#mm-ft-start")
    start.click()
    expect(start).to_be_disabled(timeout=WAIT_MS)
    status = page.locator("#mm-ft-status")
    expect(status).to_contain_text("Finished", timeout=300_000)
    expect(start).to_be_enabled(timeout=WAIT_MS)
    [run] = store.list_runs(collection.id)
    assert run.status == "finished"
    schedule = json.loads((live_app.settings.runs_dir / run.name / "schedule.json").read_text())
    assert schedule, "the run records the schedule it planned"
    screenshot("journey-5-finetuned")

    # Compare base and the run on a query typed by the person.
    open_tab(page, "Compare")
    expect(page.locator("#mm-compare-metrics")).to_contain_text("t→i A", timeout=120_000)
    page.locator("#mm-query textarea").fill(HOSTILE_CAPTION)
    page.locator("#mm-search").click()
    expect(page.locator("#mm-results-b .thumbnail-item").first).to_be_visible(timeout=WAIT_MS)
    assert not page.evaluate(INJECTED)
    screenshot("journey-6-compared")

    # Publish: a dry run of the run and the collection, nothing sent.
    open_tab(page, "Publish")
    expect(page.locator("#mm-pub-collection input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    page.locator("#mm-pub-model-repo textarea").fill("newcomer/icons-clip")
    page.locator("#mm-pub-dataset-repo textarea").fill("newcomer/icons")
    expect(page.locator("#mm-pub-check")).to_contain_text("Ready: run", timeout=WAIT_MS)
    page.locator("#mm-pub-dry").click()
    expect(page.locator("#mm-pub-status")).to_contain_text("Dry run ready", timeout=120_000)
    expect(page.locator("#mm-pub-check")).not_to_contain_text("Nothing to publish")
    assert not page.evaluate(INJECTED)
    screenshot("journey-7-published")

    # The collection deleted in another tab, then a reload here: quiet, on the default one.
    other = page.context.new_page()
    other.goto(live_app.url)
    expect(other.locator("#mm-picker input")).to_have_value(HOSTILE_NAME, timeout=WAIT_MS)
    other.locator("#mm-manage").get_by_text("Manage collections", exact=True).click()
    other.get_by_role("button", name="Delete current…").click()
    other.get_by_role("button", name=re.compile("^Really delete")).click()
    expect(other.locator("#mm-picker input")).to_have_value("demo-shapes", timeout=WAIT_MS)
    other.close()
    open_tab(page, "Label")  # still showing the deleted collection: it moves on quietly
    expect(page.locator("#mm-label-progress")).to_contain_text("demo-shapes", timeout=WAIT_MS)
    page.reload()
    expect(page.locator("#mm-picker input")).to_have_value("demo-shapes", timeout=WAIT_MS)
    assert_quiet(page, live_app.demo, seconds=6)

    # A stale or unreadable remembered value ends quiet on the default collection too.
    page.evaluate("localStorage.setItem('mmdemo-collection', 'not:encrypted')")
    page.reload()
    expect(page.locator("#mm-picker input")).to_have_value("demo-shapes", timeout=WAIT_MS)
    assert_quiet(page, live_app.demo, seconds=6)
    screenshot("journey-8-after-delete")
