"""Curate's embedding map in a real Chromium: points drawn, hover shows a caption as text, a
click opens the pair, a box selection moves pairs to a split and the Splits undo takes it back."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.browser"]

WAIT_MS = 30_000
MARKUP = "<b>x</b> marks the spot"


def overlay(page):  # noqa: ANN001, ANN201 - playwright's Page and Locator
    return page.locator("#mm-map canvas.mm-map-overlay")


def points(page) -> dict[int, tuple[float, float]]:  # noqa: ANN001
    """Each drawn pair's position in the viewport (the map scrolled into view)."""
    overlay(page).scroll_into_view_if_needed()
    box = overlay(page).bounding_box()
    drawn = overlay(page).evaluate("canvas => canvas.mmPoints()")
    return {int(pid): (box["x"] + x, box["y"] + y) for pid, x, y in drawn}


@pytest.mark.browser
def test_map_draws_hovers_opens_and_moves_a_box_selection(live_app, page, screenshot):
    from playwright.sync_api import expect

    store = live_app.services.store
    demo = store.collection("demo-shapes")
    pairs = store.list_pairs(demo.id)
    marked = pairs[3]
    store.update_pair(marked.id, caption=MARKUP)

    page.goto(live_app.url)
    page.locator("#mm-gallery").wait_for(state="visible", timeout=WAIT_MS)
    page.locator("#mm-map-panel").get_by_text("Embedding map", exact=True).click()
    canvas = page.locator("#mm-map canvas.mm-map-points")
    expect(canvas).to_have_attribute("data-points", str(len(pairs)), timeout=WAIT_MS)
    expect(page.locator("#mm-map-status")).to_contain_text("24 pairs · PCA")
    expect(page.locator("#mm-map .mm-map-legend")).to_contain_text("train (")
    # Something is drawn: the canvas holds coloured (non-transparent) pixels.
    painted = canvas.evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"
    )
    assert painted > len(pairs)

    # Hover: the marked pair's caption shows as text, markup and all (no <b> element made).
    spots = points(page)
    assert set(spots) == {p.id for p in pairs}
    x, y = spots[marked.id]
    page.mouse.move(x, y)
    caption = page.locator("#mm-map .mm-map-caption")
    expect(caption).to_have_text(MARKUP, timeout=WAIT_MS)
    assert caption.locator("b").count() == 0
    expect(page.locator("#mm-map .mm-map-thumb")).to_be_visible()
    page.wait_for_function(  # the thumbnail loaded from the app's image URL
        "() => document.querySelector('#mm-map .mm-map-thumb').naturalWidth > 0",
        timeout=WAIT_MS,
    )
    expect(page.locator("#mm-map .mm-map-meta")).to_contain_text(f"pair {marked.id}")
    screenshot("map-hover")

    # A click on the point opens the pair in Curate's editor, scrolled into view.
    page.mouse.click(x, y)
    expect(page.locator("#mm-caption textarea")).to_have_value(MARKUP, timeout=WAIT_MS)
    expect(page.locator("#mm-caption textarea")).to_be_in_viewport(timeout=WAIT_MS)

    # A box around the left half of the points selects exactly those; move them to test.
    spots = points(page)
    xs = sorted(px for px, _ in spots.values())
    middle = (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
    top = min(py for _, py in spots.values()) - 8
    bottom = max(py for _, py in spots.values()) + 8
    left = xs[0] - 8
    chosen = {pid for pid, (px, _) in spots.items() if px < middle}
    assert chosen and len(chosen) < len(pairs)
    before = {p.id: p.split for p in store.list_pairs(demo.id)}
    page.mouse.move(left, top)
    page.mouse.down()
    page.mouse.move((left + middle) / 2, (top + bottom) / 2, steps=4)
    page.mouse.move(middle, bottom, steps=4)
    page.mouse.up()
    selection = page.locator("#mm-map-selection")
    expect(selection).to_contain_text(f"{len(chosen)} pairs selected", timeout=WAIT_MS)
    screenshot("map-box-selection")

    page.locator("#mm-map-target").click()
    page.get_by_role("option", name="test", exact=True).click()
    move = page.locator("#mm-map-move")
    expect(move).to_have_text(f"Move {len(chosen)} selected to")
    move.click()
    message = page.locator("#mm-message")
    expect(message).to_contain_text("selected pairs to test", timeout=WAIT_MS)
    now = {p.id: p.split for p in store.list_pairs(demo.id)}
    assert {pid for pid, split in now.items() if split == "test"} == chosen
    assert all(now[pid] == before[pid] for pid in now if pid not in chosen)
    expect(page.locator("#mm-map .mm-map-legend")).to_contain_text(f"test ({len(chosen)})")
    expect(page.locator("#mm-stats")).to_contain_text(f"test {len(chosen)}")
    screenshot("map-moved")

    # The Splits panel's undo takes the move back.
    page.locator("#mm-splits").get_by_text("Splits", exact=True).click()
    page.locator("#mm-undo-move").click()
    expect(message).to_contain_text("Undid move", timeout=WAIT_MS)
    assert {p.id: p.split for p in store.list_pairs(demo.id)} == before
    expect(page.locator("#mm-map .mm-map-legend")).to_contain_text("test (0)", timeout=WAIT_MS)

    # A lasso (a triangle here) selects the points inside it; "Open in Label" hands them on.
    page.locator("#mm-map .mm-map-tool[data-mode=lasso]").click()
    spots = points(page)
    xs = [px for px, _ in spots.values()]
    ys = [py for _, py in spots.values()]
    corners = [
        (min(xs) - 10, min(ys) - 10),
        (max(xs) + 10, min(ys) - 10),
        (min(xs) - 10, max(ys) + 10),
    ]
    lassoed = {pid for pid, (px, py) in spots.items() if inside(corners, px, py)}
    assert lassoed and len(lassoed) < len(pairs)
    page.mouse.move(*corners[0])
    page.mouse.down()
    for corner in (*corners[1:], corners[0]):
        page.mouse.move(*corner, steps=6)
    page.mouse.up()
    expect(selection).to_contain_text(f"{len(lassoed)} pairs selected", timeout=WAIT_MS)
    screenshot("map-lasso")
    page.locator("#mm-map-label").click()
    expect(message).to_contain_text(f"{len(lassoed)} pairs of “demo-shapes” ready to label")


def inside(polygon: list[tuple[float, float]], x: float, y: float) -> bool:
    """Whether (x, y) lies inside the polygon (even-odd rule, as the canvas decides)."""
    hit = False
    for (xa, ya), (xb, yb) in zip(polygon, polygon[-1:] + polygon[:-1], strict=True):
        if (ya > y) != (yb > y) and x < (xb - xa) * (y - ya) / (yb - ya) + xa:
            hit = not hit
    return hit


@pytest.mark.browser
def test_ten_thousand_points_draw_and_answer_a_hover(page):
    """The canvas alone (no app) with 10,000 synthetic points: all drawn, hover still finds
    the point under the mouse. (How long it takes is measured by bench/bench_map.py.)"""
    import gradio as gr
    from playwright.sync_api import expect

    from bench.bench_map import synthetic_payload
    from mmdemo.ui.curate.map import encode
    from mmdemo.ui.curate.map_canvas import map_component
    from tests.browser import free_port

    payload = synthetic_payload(10_000, seed=1)
    with gr.Blocks() as demo:
        plot = map_component(
            lambda pid: {"caption": f"<i>point</i> {pid}", "meta": "", "thumb": None},
            elem_id="mm-map",
        )
        gr.Button("draw", elem_id="draw").click(lambda: encode(payload), None, plot)
    demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port())
    try:
        page.goto(demo.local_url)
        page.locator("#draw").click()
        canvas = page.locator("#mm-map canvas.mm-map-points")
        expect(canvas).to_have_attribute("data-points", "10000", timeout=WAIT_MS)
        spots = points(page)
        assert len(spots) == 10_000

        # Of a few candidates, the most isolated point: the nearest to the mouse is surely it.
        def room(pid: int) -> float:
            x0, y0 = spots[pid]
            return min((x - x0) ** 2 + (y - y0) ** 2 for o, (x, y) in spots.items() if o != pid)

        target = max(range(500, 10_001, 500), key=room)
        page.mouse.move(*spots[target])
        expect(page.locator("#mm-map .mm-map-caption")).to_have_text(
            f"<i>point</i> {target}", timeout=WAIT_MS
        )
    finally:
        demo.close()
