"""Gallery page latency, server side, for 48-item pages of 10,000- and 100,000-pair collections.

Times the Curate tab's page function (store query + thumbnail paths + captions), for random pages
with no filter, a split filter and a caption filter. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import tempfile
import time

from mmdemo.data.store import Store
from mmdemo.settings import Settings


def _fill(store: Store, n: int, seed: int = 0) -> int:
    """Insert n pairs with synthetic image rows directly (no image files needed for latency)."""
    rng = random.Random(seed)
    collection = store.create_collection(f"bench-{n}")
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    shapes = ["circle", "square", "triangle"]
    now = time.time()
    images, pairs = [], []
    for i in range(n):
        sha = hashlib.sha256(f"{n}-{i}".encode()).hexdigest()
        caption = (
            f"a {rng.choice(colours)} {rng.choice(shapes)} above a "
            f"{rng.choice(colours)} {rng.choice(shapes)} #{i}"
        )
        split = "eval" if rng.random() < 0.2 else "train"
        images.append((sha, 128, 128, "png", 1000, now))
        pairs.append((collection.id, sha, caption, split, now, now))
    with store.transaction() as conn:
        conn.executemany("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?)", images)
        conn.executemany(
            "INSERT INTO pairs(collection_id, image_sha256, caption, split, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            pairs,
        )
    return collection.id


def _page_fn(store: Store, settings: Settings):
    """The function the Curate gallery calls (falls back to the store query + paths)."""
    try:
        from mmdemo.ui.curate.layout import gallery_page  # type: ignore[attr-defined]

        def page_fn(cid, page, text, split):
            return gallery_page(store, settings, cid, page, text, split)

    except ImportError:
        from mmdemo.data.images import thumb_path

        def page_fn(cid, page, text, split):
            pairs, total = store.page_pairs(cid, page, 48, text, split)
            return [
                (str(thumb_path(settings.images_dir, p.image_sha256)), p.caption) for p in pairs
            ]

    page_fn.store = store
    return page_fn


def _measure(fn, cid: int, n: int, repeats: int, rng: random.Random) -> dict:
    timings = {
        "no_filter": [],
        "split_filter": [],
        "caption_filter": [],
        "last_page": [],
        "after_edit": [],
    }
    pages = max(1, n // 48)
    for _ in range(repeats):
        for kind in timings:
            page = rng.randrange(pages)
            text, split = None, None
            if kind == "split_filter":
                split, page = "eval", rng.randrange(max(1, pages // 5))
            elif kind == "caption_filter":
                text, page = "red circle", 0
            elif kind == "last_page":
                page = pages - 1
            elif kind == "after_edit":
                # An edit invalidates the cached page index: the next view pays one index scan.
                with fn.store.transaction() as conn:
                    conn.execute("UPDATE pairs SET updated_at = ? WHERE id = ?", (time.time(), 1))
            start = time.perf_counter()
            fn(cid, page, text, split)
            timings[kind].append((time.perf_counter() - start) * 1000)
    out = {}
    for kind, values in timings.items():
        values.sort()
        out[kind] = {
            "p50_ms": round(statistics.median(values), 3),
            "p95_ms": round(values[int(0.95 * (len(values) - 1))], 3),
        }
    out["p95_ms_worst"] = max(v["p95_ms"] for v in out.values() if isinstance(v, dict))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({"MMDEMO_HOME": tmp})
        settings.ensure_dirs()
        store = Store(settings.db_path)
        fn = _page_fn(store, settings)
        for n in sizes:
            cid = _fill(store, n)
            results[str(n)] = _measure(fn, cid, n, args.repeats, rng)
        store.close()
    report = {"benchmark": "gallery_page_latency", "page_size": 48, "results": results}
    if len(sizes) >= 2:
        small, large = results[str(sizes[0])], results[str(sizes[-1])]
        report["ratio_p95_large_vs_small"] = round(
            large["p95_ms_worst"] / max(small["p95_ms_worst"], 1e-9), 2
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
