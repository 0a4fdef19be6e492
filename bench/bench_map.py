"""How long the embedding map takes to draw 10,000 points in Chromium (synthetic points).

A page holding only the map's ``gr.HTML`` (:mod:`mmdemo.ui.curate.map_canvas`) gets a payload of
``--points`` points in three colours from a button, five times over. Reported (medians):

- ``draw_ms``: the canvas draw itself (one path per colour), as the page measures it;
- ``layout_and_draw_ms``: placing the points (fit, hover grid) and drawing, run in the page;
- ``new_value_to_drawn_ms``: from a new value reaching the component to the points drawn (JSON
  parse, legend, layout, draw); ``click_to_new_value_ms``: from the click to that moment
  (Gradio's round trip: the queue, the handler, the transfer, the component update);
- ``click_to_drawn_ms``: from the click to the new map on screen, through Gradio: the Python
  handler, the JSON payload, the component update, the layout and the draw;
  ``click_to_drawn_ms_10_points`` is the same round trip with 10 points (Gradio's own cost).

The app's side for a collection of that size (the embeddings cached, as after its first
encoding) is timed too: ``python_pca_map_s``, ``python_own_ranks_s`` (the "gets it wrong"
colouring) and ``python_payload_json_s``. Needs Debian's ``/usr/bin/chromium``. Prints one
JSON object (``--out FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from mmdemo.ui.curate.map import encode  # noqa: E402
from mmdemo.ui.curate.map_canvas import map_component  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def synthetic_payload(n: int, seed: int) -> dict:
    """``n`` points in a few Gaussian blobs in the unit square, three colours."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.8, size=(6, 2))
    points = centres[rng.integers(0, 6, n)] + rng.normal(scale=0.07, size=(n, 2))
    points = np.clip(points, 0.0, 1.0)
    codes = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    colours = ["#4c78a8", "#f58518", "#54a24b"]
    return {
        "collection": f"synthetic-{seed}",
        "ids": list(range(1, n + 1)),
        "x": [round(float(v), 4) for v in points[:, 0]],
        "y": [round(float(v), 4) for v in points[:, 1]],
        "c": codes.tolist(),
        "legend": [
            {"name": name, "color": colours[k], "count": int((codes == k).sum())}
            for k, name in enumerate(["train", "eval", "test"])
        ],
        "selected": [],
        "empty": "",
    }


class NeverEncodes:
    """The model of vectors put in the cache beforehand: nothing may be encoded."""

    def encode(self, inputs, **kwargs):  # noqa: ANN001, ANN003, ANN201
        raise AssertionError(f"unexpected encode of {len(inputs)} items")


def python_side(n: int, dim: int = 512) -> dict[str, float]:
    """Seconds the app's side takes for an ``n``-pair collection whose embeddings are cached:
    the PCA map, the own-image ranks ("gets it wrong") and the payload's JSON."""
    from mmdemo.data.store import Store
    from mmdemo.retrieval.embeddings import EmbeddingCache, text_key
    from mmdemo.retrieval.projection import collection_map, own_image_ranks
    from mmdemo.settings import Settings

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.from_env({"MMDEMO_HOME": home})
        settings.ensure_dirs()
        store = Store(settings.db_path)
        collection = store.create_collection("bench-map")
        shas = [f"{i:064x}" for i in range(n)]
        captions = [f"synthetic caption {i % (n // 2)}" for i in range(n)]  # pairs of twins
        for sha, caption in zip(shas, captions, strict=True):
            image = {"sha256": sha, "width": 64, "height": 64, "ext": "jpg", "bytes": 1}
            store.add_pair(collection.id, image, caption)
        cache = EmbeddingCache(settings)
        fingerprint = "bench-map-vectors"
        centres = rng.normal(size=(20, dim))
        images = centres[rng.integers(0, 20, n)] + rng.normal(scale=0.5, size=(n, dim))
        cache.add_vectors(fingerprint, "image", shas, images)
        distinct = list(dict.fromkeys(captions))
        texts = rng.normal(size=(len(distinct), dim))
        cache.add_vectors(fingerprint, "text", [text_key(c) for c in distinct], texts)
        model = NeverEncodes()
        started = time.perf_counter()
        embedding_map = collection_map(store, cache, model, fingerprint, collection.id)
        pca_s = time.perf_counter() - started
        started = time.perf_counter()
        ranks = own_image_ranks(store, cache, model, fingerprint, collection.id)
        ranks_s = time.perf_counter() - started
        assert len(embedding_map) == len(ranks) == n
        started = time.perf_counter()
        payload = synthetic_payload(n, 0)
        payload["x"] = [round(float(v), 4) for v in embedding_map.points[:, 0]]
        payload["y"] = [round(float(v), 4) for v in embedding_map.points[:, 1]]
        encode(payload)
        json_s = time.perf_counter() - started
        store.close()
    return {
        "python_pca_map_s": round(pca_s, 3),
        "python_own_ranks_s": round(ranks_s, 3),
        "python_payload_json_s": round(json_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    # Each 10,000-point draw is followed by the same round trip with 10 points (Gradio's own
    # cost of a click and an update), interleaved so a busy machine slows both alike.
    payloads = []
    for seed in range(args.repeats):
        payloads += [synthetic_payload(args.points, seed), synthetic_payload(10, 100 + seed)]
    with gr.Blocks() as demo:
        counter = gr.State(0)
        plot = map_component(lambda pid: {"caption": f"point {pid}", "meta": "", "thumb": None})
        button = gr.Button("draw", elem_id="draw")
        button.click(
            lambda i: (encode(payloads[i % len(payloads)]), i + 1), [counter], [plot, counter]
        )
    demo.launch(prevent_thread_lock=True, quiet=True, server_port=None)
    draw_ms, redraw_ms, wall_ms, small_ms, load_ms, arrive_ms = [], [], [], [], [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(demo.local_url)
            canvas = page.locator("canvas.mm-map-points")
            overlay = page.locator("canvas.mm-map-overlay")
            canvas.wait_for(state="attached")
            page.evaluate(
                "() => document.addEventListener('click',"
                " () => { window.mmClickedAt = performance.now(); }, true)"
            )
            for payload in payloads:
                started = time.perf_counter()
                page.locator("#draw").click()
                page.wait_for_function(
                    "tag => document.querySelector('canvas.mm-map-points')"
                    ".dataset.collection === tag",
                    arg=payload["collection"],
                    polling="raf",
                )
                wall_ms.append((time.perf_counter() - started) * 1000)
                if len(payload["ids"]) != args.points:
                    small_ms.append(wall_ms.pop())
                    continue
                draw_ms.append(float(canvas.get_attribute("data-draw-ms")))
                load_ms.append(float(canvas.get_attribute("data-load-ms")))
                clicked = page.evaluate("() => window.mmClickedAt")
                loaded = float(canvas.get_attribute("data-loaded-at"))
                arrive_ms.append(loaded - float(canvas.get_attribute("data-load-ms")) - clicked)
                assert canvas.get_attribute("data-points") == str(args.points)
                redraw_ms.append(overlay.evaluate("c => c.mmRedraw()"))
            page.locator("#draw").click()  # back to the first 10,000-point payload
            page.wait_for_function(
                "() => document.querySelector('canvas.mm-map-points').dataset.points !== '10'"
            )
            shot = Path(__file__).parent / "out" / "map-10k.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            browser.close()
    finally:
        demo.close()
    result = {
        "points": args.points,
        "repeats": args.repeats,
        "payload_bytes": len(encode(payloads[0])),
        "draw_ms": round(statistics.median(draw_ms), 1),
        "layout_and_draw_ms": round(statistics.median(redraw_ms), 1),
        "new_value_to_drawn_ms": round(statistics.median(load_ms), 1),
        "click_to_new_value_ms": round(statistics.median(arrive_ms), 1),
        "click_to_drawn_ms": round(statistics.median(wall_ms), 1),
        "click_to_drawn_ms_max": round(max(wall_ms), 1),
        "click_to_drawn_ms_10_points": round(statistics.median(small_ms), 1),
    }
    result.update(python_side(args.points))
    line = json.dumps(result)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
