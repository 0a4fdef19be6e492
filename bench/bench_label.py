"""Labeling latency in a real Chromium: from a key press in the Label tab to the updated view.

Starts the whole app (tiny model, as ``tests/browser.py`` does) on a temporary home, once with
the built-in demo collection and once with a collection of 10,000 pairs (small images drawn
with Pillow), and drives Chromium with Playwright through rounds of the labeling keys:

    s (next pair) · 3 (select) · n (hard negative) · u (undo) · 2 (select) · c (also correct)
    · 2 (select) · x (clear)

For each press it measures, in the page, the time from the ``keydown`` event to the DOM showing
the new state (the selection line, the message or the pair heading changed as expected), and on
the server the time Gradio spent processing the events the press caused (``process_api``:
pre-processing, the handler, post-processing; summed over the Label tab's events). With
``GRADIO_PROFILING=1`` Gradio's own per-phase medians are added. Prints ONE JSON object:
p50/p95 per action and collection, browser and server, against the targets (p95 ≤ 300 ms in
the browser, ≤ 100 ms on the server).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub from a benchmark
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from PIL import Image, ImageDraw  # noqa: E402

from mmdemo.data.ingest import ImportReport, ingest_item  # noqa: E402
from mmdemo.data.store import Store  # noqa: E402
from mmdemo.retrieval.compare import base_ref, ensure_corpus, load  # noqa: E402
from mmdemo.services import Services  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402
from mmdemo.ui.app import build_app, launch  # noqa: E402

TARGET_BROWSER_P95_MS = 300.0
TARGET_SERVER_P95_MS = 100.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROUND = [
    ("next", "s"),
    ("select", "3"),
    ("label", "n"),
    ("undo", "u"),
    ("select", "2"),
    ("label", "c"),
    ("select", "2"),
    ("clear", "x"),
]
"""One round of key presses on a pair, as a person labels: ``(action, key)``."""
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 50, 170),
    "orange": (240, 140, 30),
}
SHAPES = ("circle", "square", "triangle")

# Runs in the page: arm(action, key) snapshots the view and waits, on every DOM mutation, for
# the state the press must lead to; t0 is the keydown, t1 the first mutation that shows it.
ARM_JS = """
([action, key]) => {
  const text = (id) => {
    const element = document.querySelector(id);
    const inner = element && element.querySelector('[data-testid="markdown"], p.mm-sel');
    return ((inner || element)?.innerText || "").trim();
  };
  const busy = () => document.querySelector(
    '#mm-label .pending, #mm-label [data-testid="status-tracker"]:not(.hide)') !== null;
  const before = {
    selection: text("#mm-label-selection"),
    message: text("#mm-label-message"),
    pair: text("#mm-label-pair"),
  };
  const done = () => {
    if (busy()) return false;
    if (action === "select") return text("#mm-label-selection").includes(`[${key}]`) &&
        text("#mm-label-selection") !== before.selection;
    if (action === "next") return text("#mm-label-pair") !== before.pair &&
        text("#mm-label-pair") !== "";
    const message = text("#mm-label-message");
    if (message === before.message || message === "") return false;
    if (action === "label") return message.startsWith("Saved");
    if (action === "undo") return message.startsWith("Undone");
    return true;  // clear: whatever the message says now, it changed
  };
  const bench = window.__mmBench = {t0: null, t1: null};
  document.addEventListener("keydown", () => { bench.t0 = performance.now(); },
                            {once: true, capture: true});
  const observer = new MutationObserver(() => {
    if (bench.t0 !== null && bench.t1 === null && done()) {
      bench.t1 = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true,
                                   attributes: true});
}
"""
IDLE_JS = """
() => document.querySelector(
  '#mm-label .pending, #mm-label [data-testid="status-tracker"]:not(.hide)') === null
"""


class ServerClock:
    """Times ``Blocks.process_api`` (pre-process, handler, post-process) per event."""

    def __init__(self, demo: Any, keep: Callable[[Any], bool]):
        self.events: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        inner = demo.process_api

        async def timed(block_fn: Any, *args: Any, **kwargs: Any) -> Any:
            fn = demo.fns[block_fn] if isinstance(block_fn, int) else block_fn
            start = time.perf_counter()
            try:
                return await inner(block_fn, *args, **kwargs)
            finally:
                if keep(fn):
                    with self._lock:
                        name = getattr(fn.fn, "__qualname__", str(fn.fn))
                        self.events.append((name, (time.perf_counter() - start) * 1000))

        demo.process_api = timed

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def since(self, mark: int) -> list[tuple[str, float]]:
        with self._lock:
            return self.events[mark:]


def _is_label_event(fn: Any) -> bool:
    """Events wired by the Label tab's builder (its handlers are defined inside it)."""
    return "build_label" in getattr(fn.fn, "__qualname__", "")


def _image(rng: random.Random, colour1: str, shape1: str, colour2: str, shape2: str) -> bytes:
    """A 64×64 PNG with two shapes: cheap to draw, distinct enough to embed."""
    canvas = Image.new("RGB", (64, 64), tuple(rng.randrange(225, 250) for _ in range(3)))
    draw = ImageDraw.Draw(canvas)
    for (x, y), colour, shape in (
        ((rng.randrange(4, 24), rng.randrange(4, 24)), colour1, shape1),
        ((rng.randrange(34, 44), rng.randrange(34, 44)), colour2, shape2),
    ):
        size = rng.randrange(12, 20)
        box = (x, y, x + size, y + size)
        fill = tuple(max(0, min(255, v + rng.randrange(-15, 16))) for v in COLOURS[colour])
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x + size / 2, y), (x + size, y + size), (x, y + size)], fill=fill)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def fill_collection(store: Store, settings: Settings, name: str, n: int, seed: int = 0) -> int:
    """A collection of ``n`` pairs (80% train), through the real import path."""
    rng = random.Random(seed)
    collection = store.create_collection(name)
    report = ImportReport(name)
    colours = list(COLOURS)
    for i in range(n):
        c1, c2 = rng.sample(colours, 2)
        s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
        caption = f"a {c1} {s1} above and left of a {c2} {s2}, item {i}"
        split = "eval" if rng.random() < 0.2 else "train"
        image = _image(rng, c1, s1, c2, s2)
        ingest_item(store, settings, collection.id, report, f"{i}.png", image, caption, split)
    return collection.id


def _stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[round(0.95 * (len(ordered) - 1))], 1),
    }


def _settings(home: Path, pairs: int) -> Settings:
    return Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": str(pairs)}
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure_app(services: Services, browser: Any, rounds: int, timeout_ms: int) -> dict:
    """Serve the app, open the Label tab and press the round's keys ``rounds`` times."""
    from playwright.sync_api import expect

    settings = services.settings.with_overrides(port=_free_port())
    services.settings = settings
    demo = build_app(services)
    clock = ServerClock(demo, _is_label_event)
    launch(services, demo, prevent_thread_lock=True, quiet=True)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    browser_ms: dict[str, list[float]] = {action: [] for action, _ in ROUND}
    server_ms: dict[str, list[float]] = {action: [] for action, _ in ROUND}
    try:
        page.goto(f"http://{settings.host}:{settings.port}/")
        page.get_by_role("tab", name="Label", exact=True).click()
        expect(page.locator("#mm-label-candidates .thumbnail-item")).to_have_count(
            8, timeout=timeout_ms
        )
        expect(page.locator("#mm-label-selection")).to_contain_text("Selected", timeout=timeout_ms)
        page.locator("body").click(position={"x": 5, "y": 5})  # no text field has the focus
        for round_index in range(rounds + 1):  # the first round warms up
            for action, key in ROUND:
                page.wait_for_timeout(120)  # a person's pause; lets trailing events end
                page.wait_for_function(IDLE_JS, polling=20)
                page.evaluate(ARM_JS, [action, key])
                mark = clock.mark()
                page.keyboard.press(key)
                page.wait_for_function(
                    "() => window.__mmBench.t1 !== null", timeout=timeout_ms, polling=20
                )
                took = page.evaluate("() => window.__mmBench.t1 - window.__mmBench.t0")
                page.wait_for_function(IDLE_JS, polling=20)
                page.wait_for_timeout(30)  # let the server's bookkeeping finish
                server = sum(ms for _, ms in clock.since(mark))
                if round_index > 0:
                    browser_ms[action].append(float(took))
                    server_ms[action].append(server)
    finally:
        context.close()
        demo.close()
    return {
        action: {"browser": _stats(browser_ms[action]), "server": _stats(server_ms[action])}
        for action in browser_ms
    }


def _gradio_phases() -> dict:
    """With ``GRADIO_PROFILING=1``: Gradio's own p50 per phase and event (queued events only)."""
    from gradio import profiling

    if not profiling.PROFILING_ENABLED:
        return {}
    by_event: dict[str, list[dict]] = {}
    for trace in profiling.collector.get_all():
        by_event.setdefault(str(trace["fn_name"]), []).append(trace)
    profiling.collector.clear()
    phases = (
        "queue_wait",
        "preprocess",
        "fn_call",
        "postprocess",
        "postprocess_update_state_in_config",
        "postprocess_move_to_cache",
        "total",
    )
    return {
        name: {p: round(statistics.median(t[f"{p}_ms"] for t in traces), 1) for p in phases}
        | {"n": len(traces)}
        for name, traces in by_event.items()
        if len(traces) >= 3
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10_000, help="size of the big collection")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of keys per collection")
    parser.add_argument("--only", choices=("demo", "big"), default=None)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(json.dumps({"benchmark": "label_latency", "error": f"{CHROMIUM} is missing"}))
        sys.exit(1)
    from playwright.sync_api import sync_playwright

    results: dict[str, dict] = {}
    setup_s: dict[str, float] = {}
    gradio_phases: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            runs = [("demo", True), ("big", False)]
            for which, with_demo in runs:
                if args.only and which != args.only:
                    continue
                started = time.perf_counter()
                settings = _settings(Path(tmp) / which, 540)
                services = Services.create(settings, demo=with_demo)
                try:
                    if not with_demo:
                        cid = fill_collection(services.store, settings, "bench-big", args.pairs)
                    else:
                        cid = services.store.list_collections()[0].id
                    # Encode the images once up front: opening the tab is not what is measured.
                    loaded = load(services, base_ref(services.model))
                    for split in ("train", "eval"):
                        ensure_corpus(services, loaded, cid, split)
                    pairs = services.store.count_pairs(cid)
                    setup_s[which] = round(time.perf_counter() - started, 1)
                    key = f"demo-{pairs}" if with_demo else str(pairs)
                    results[key] = measure_app(services, browser, args.rounds, 60_000)
                    if phases := _gradio_phases():
                        gradio_phases[key] = phases
                finally:
                    services.close()
        finally:
            browser.close()
    worst_browser = max(v["browser"]["p95_ms"] for r in results.values() for v in r.values())
    worst_server = max(v["server"]["p95_ms"] for r in results.values() for v in r.values())
    report = {
        "benchmark": "label_latency",
        "what": "key press → updated Label view in headless Chromium; server = process_api",
        "rounds": args.rounds,
        "target_browser_p95_ms": TARGET_BROWSER_P95_MS,
        "target_server_p95_ms": TARGET_SERVER_P95_MS,
        "results": results,
        "worst_browser_p95_ms": worst_browser,
        "worst_server_p95_ms": worst_server,
        "meets_target": worst_browser <= TARGET_BROWSER_P95_MS
        and worst_server <= TARGET_SERVER_P95_MS,
        "setup_s": setup_s,
    }
    if gradio_phases:
        report["gradio_phases_p50_ms"] = gradio_phases
    print(json.dumps(report))


if __name__ == "__main__":
    main()
