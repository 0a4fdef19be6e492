"""Search latency through the embedding cache against the bare numpy lower bound.

1. Over 10,000 and 100,000 cached image embeddings (random, normalised, float32, dim 512),
   written with :meth:`EmbeddingCache.add_vectors` and read back by a fresh cache through its
   memory map, times, interleaved in one run:
   - ``bare``: an in-RAM matrix, ``matrix @ q`` + ``argpartition`` + sort of the top k;
   - ``search``: :func:`mmdemo.retrieval.search.search` on the cache's memory-mapped matrix;
   - ``search_collection``: the whole server-side call (store check, cached query embedding,
     search, hits with captions).
2. Switching the Compare view to another query, two cached models (two real tiny CLIPs whose
   10,000 image embeddings are cached), server-side: a new typed query (each model encodes it)
   and a query seen before (nothing is encoded), plus the most-improved/regressed table.

Prints one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub from a benchmark

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mmdemo.data.store import Store  # noqa: E402
from mmdemo.retrieval.embeddings import EmbeddingCache, normalise_rows, text_key  # noqa: E402
from mmdemo.retrieval.search import collection_corpus, compare_runs, search, search_collection  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402

K = 10
DIM = 512


class NoEncoder:
    """Stands in for a model whose embeddings are all cached: encoding would be a bug here."""

    def encode(self, inputs, **kwargs):  # noqa: ANN001, ANN003
        raise AssertionError(f"unexpected encode of {len(inputs)} items")


class CountingModel:
    def __init__(self, model):  # noqa: ANN001
        self.model = model
        self.calls = 0

    def encode(self, inputs, **kwargs):  # noqa: ANN001, ANN003
        self.calls += 1
        return self.model.encode(inputs, **kwargs)


def _fill(store: Store, n: int, seed: int) -> tuple[int, list[str], list[str]]:
    """n pairs with synthetic image rows (no files: every embedding is cached)."""
    rng = random.Random(seed)
    collection = store.create_collection(f"bench-search-{n}-{seed}")
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    shapes = ["circle", "square", "triangle"]
    now = time.time()
    images, pairs, shas, captions = [], [], [], []
    for i in range(n):
        sha = hashlib.sha256(f"{seed}-{n}-{i}".encode()).hexdigest()
        caption = f"a {rng.choice(colours)} {rng.choice(shapes)} #{i}"
        split = "eval" if rng.random() < 0.2 else "train"
        images.append((sha, 128, 128, "png", 1000, now))
        pairs.append((collection.id, sha, caption, split, now, now))
        shas.append(sha)
        captions.append(caption)
    with store.transaction() as conn:
        conn.executemany("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?)", images)
        conn.executemany(
            "INSERT INTO pairs(collection_id, image_sha256, caption, split, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            pairs,
        )
    return collection.id, shas, captions


def _random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return normalise_rows(rng.standard_normal((n, dim), dtype=np.float32))


def _stats(values_s: list[float]) -> dict:
    values = sorted(v * 1000 for v in values_s)
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p95_ms": round(values[int(0.95 * (len(values) - 1))], 3),
    }


def _bare(matrix: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ query
    top = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
    return top[np.argsort(-scores[top])]


def bench_latency(settings: Settings, store: Store, n: int, queries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cid, shas, _ = _fill(store, n, seed)
    fingerprint = f"bench:random-{n}"
    writer = EmbeddingCache(settings)
    start = time.perf_counter()
    writer.add_vectors(fingerprint, "image", shas, _random_unit(rng, n, DIM))
    write_s = time.perf_counter() - start
    texts = [f"query {i} for {n}" for i in range(queries)]
    query_vectors = _random_unit(rng, queries, DIM)
    writer.add_vectors(fingerprint, "text", [text_key(t) for t in texts], query_vectors)
    writer.close()

    cache = EmbeddingCache(settings)  # a fresh process-wide cache: reads through the memory map
    model = NoEncoder()
    start = time.perf_counter()
    corpus = collection_corpus(store, cache, model, fingerprint, cid)
    open_s = time.perf_counter() - start
    mapped = corpus.matrix
    in_ram = np.array(mapped)  # the lower bound's matrix: plain memory
    assert not mapped.flags.owndata  # the cache served a view of its memory map
    for i in range(5):  # warm both paths
        _bare(in_ram, query_vectors[i], K)
        search(query_vectors[i], mapped, K)
        search_collection(store, settings, cache, model, fingerprint, cid, texts[i], K)

    timings: dict[str, list[float]] = {"bare": [], "search": [], "search_collection": []}
    for i in range(queries):
        q = query_vectors[i]
        order = list(timings)
        random.Random(i).shuffle(order)  # interleave so drift hits every path alike
        for name in order:
            begin = time.perf_counter()
            if name == "bare":
                _bare(in_ram, q, K)
            elif name == "search":
                search(q, mapped, K)
            else:
                search_collection(store, settings, cache, model, fingerprint, cid, texts[i], K)
            timings[name].append(time.perf_counter() - begin)
    same = np.array_equal(
        search(query_vectors[0], mapped, K)[0], _bare(in_ram, query_vectors[0], K)
    )
    result = {name: _stats(values) for name, values in timings.items()}
    bare50 = statistics.median(timings["bare"])
    bare95 = sorted(timings["bare"])[int(0.95 * (queries - 1))]
    for name in ("search", "search_collection"):
        values = sorted(timings[name])
        result[name]["ratio_p50"] = round(statistics.median(values) / bare50, 3)
        result[name]["ratio_p95"] = round(values[int(0.95 * (queries - 1))] / bare95, 3)
    result["same_top_k_as_bare"] = bool(same)
    result["cache_write_s"] = round(write_s, 3)
    result["first_open_s"] = round(open_s, 3)
    result["encoder_calls"] = cache.encode_calls
    return result


def bench_switch(settings: Settings, store: Store, n: int, queries: int, seed: int) -> dict:
    from mmdemo.retrieval.models import build_tiny_clip, load_model, model_fingerprint

    rng = np.random.default_rng(seed)
    cid, shas, _ = _fill(store, n, seed)
    pairs = store.list_pairs(cid)
    eval_captions = list(dict.fromkeys(p.caption for p in pairs if p.split == "eval"))
    models = []
    for model_seed in (0, 1):
        path = build_tiny_clip(Path(settings.models_dir) / f"tiny-{model_seed}", seed=model_seed)
        model = CountingModel(load_model(str(path)))
        fingerprint = model_fingerprint(str(path))
        dim = int(model.encode(["probe"], convert_to_numpy=True).shape[-1])
        writer = EmbeddingCache(settings)
        writer.add_vectors(fingerprint, "image", shas, _random_unit(rng, n, dim))
        writer.add_vectors(
            fingerprint,
            "text",
            [text_key(c) for c in eval_captions],
            _random_unit(rng, len(eval_captions), dim),
        )
        writer.close()
        models.append((model, fingerprint))

    cache = EmbeddingCache(settings)

    def switch(query: str) -> None:
        for model, fingerprint in models:
            search_collection(store, settings, cache, model, fingerprint, cid, query, K)

    switch("warm-up query")  # opens both corpora (first view of the tab)
    new_times, seen_times = [], []
    for i in range(queries):
        query = f"a typed query number {i}"
        begin = time.perf_counter()
        switch(query)
        new_times.append(time.perf_counter() - begin)
    calls = sum(m.calls for m, _ in models)
    for i in range(queries):
        begin = time.perf_counter()
        switch(f"a typed query number {(i * 7) % queries}")  # back to an earlier query
        seen_times.append(time.perf_counter() - begin)
    seen_calls = sum(m.calls for m, _ in models) - calls
    begin = time.perf_counter()
    rows = compare_runs(
        store, settings, cache, models[0][0], models[0][1], models[1][0], models[1][1], cid, "eval"
    )
    table_s = time.perf_counter() - begin
    return {
        "images": n,
        "models": 2,
        "new_typed_query": _stats(new_times),
        "query_seen_before": _stats(seen_times),
        "encoder_calls_for_queries_seen_before": seen_calls,
        "most_improved_table_s": round(table_s, 3),
        "most_improved_table_queries": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--switch-images", type=int, default=10_000)
    parser.add_argument("--switch-queries", type=int, default=30)
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="mmdemo-bench-search-") as tmp:
        settings = Settings.from_env({"MMDEMO_HOME": tmp, "MMDEMO_BASE_MODEL": "tiny"})
        settings.ensure_dirs()
        store = Store(settings.db_path)
        try:
            for index, n in enumerate(int(s) for s in args.sizes.split(",")):
                results[str(n)] = bench_latency(settings, store, n, args.queries, seed=index)
            switch = bench_switch(settings, store, args.switch_images, args.switch_queries, 7)
        finally:
            store.close()
    report = {
        "benchmark": "search_latency",
        "k": K,
        "dim": DIM,
        "queries": args.queries,
        "results": results,
        "target_ratio": 1.3,
        "worst_search_ratio_p50": max(r["search"]["ratio_p50"] for r in results.values()),
        "worst_search_collection_ratio_p50": max(
            r["search_collection"]["ratio_p50"] for r in results.values()
        ),
        "compare_view_switch": switch,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
