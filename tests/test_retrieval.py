"""Exact search, collection search, and per-query ranks under two models.

Hand-computed cases use :class:`LookupEncoder`, whose vectors the test sets, on real stored
images; the end-to-end tests use two real tiny CLIPs.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmdemo.data.images import ImageLimits, ingest_image_bytes, load_rgb, train_path
from mmdemo.data.store import Store
from mmdemo.retrieval.embeddings import EmbeddingCache
from mmdemo.retrieval.search import (
    ImageQuery,
    collection_corpus,
    compare_runs,
    positive_ranks,
    search,
    search_collection,
)
from tests.conftest import make_image_bytes

RED, RED2, GREEN, BLUE = (220, 20, 20), (150, 70, 60), (20, 200, 20), (20, 20, 220)
IMAGE_VECTORS = {RED: (1, 0, 0), RED2: (0.8, 0.6, 0), GREEN: (0, 1, 0), BLUE: (0, 0, 1)}


class LookupEncoder:
    """Hand-set vectors: texts from a table, images by their nearest dominant colour."""

    def __init__(self, texts: dict[str, tuple], images: dict[tuple, tuple] = IMAGE_VECTORS):
        self.texts = texts
        self.images = images
        self.calls = 0

    def encode(self, inputs: list, **kwargs: object) -> np.ndarray:
        self.calls += 1
        rows = []
        for item in inputs:
            if isinstance(item, dict):  # the cache marks texts as {"text": ...}
                item = item["text"]
            if isinstance(item, str):
                rows.append(self.texts[item])
                continue
            mean = np.asarray(item.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
            colour = min(self.images, key=lambda c: float(np.sum((np.array(c) - mean) ** 2)))
            rows.append(self.images[colour])
        return np.asarray(rows, dtype=np.float32)


def add_pair(store, settings, collection_id: int, colour, caption: str, split: str = "eval"):
    stored = ingest_image_bytes(
        make_image_bytes(colour), settings.images_dir, ImageLimits.from_settings(settings)
    )
    pair, added = store.add_pair(collection_id, stored.as_row(), caption, split)
    assert added
    return pair


@pytest.fixture
def shapes(store, settings):
    """Four eval pairs: two reds share the caption "red thing"."""
    coll = store.create_collection("colours")
    pairs = {
        "R": add_pair(store, settings, coll.id, RED, "red thing"),
        "G": add_pair(store, settings, coll.id, GREEN, "green thing"),
        "B": add_pair(store, settings, coll.id, BLUE, "blue thing"),
        "R2": add_pair(store, settings, coll.id, RED2, "red thing"),
    }
    return coll, pairs


# Model A prefers the wrong colour for "red"/"green"; model B fixes them and breaks "blue".
MODEL_A = LookupEncoder(
    {"red thing": (0, 1, 0), "green thing": (0, 0.6, 0.8), "blue thing": (0, 0, 1)}
)
MODEL_B = LookupEncoder(
    {"red thing": (1, 0, 0), "green thing": (0, 1, 0), "blue thing": (1, 0, 0.5)}
)


def test_search_matches_a_full_sort():
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((500, 16)).astype(np.float32)
    query = rng.standard_normal(16).astype(np.float32)
    indices, scores = search(query, matrix, 7)
    full = np.argsort(-(matrix @ query), kind="stable")[:7]
    np.testing.assert_array_equal(indices, full)
    np.testing.assert_allclose(scores, (matrix @ query)[full], rtol=1e-6)
    assert len(search(query, matrix, 900)[0]) == 500
    assert len(search(query, matrix, 0)[0]) == 0
    assert len(search(query, matrix[:0], 5)[0]) == 0


def test_search_ties_keep_row_order():
    matrix = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    indices, scores = search(np.array([1, 0], dtype=np.float32), matrix, 3)
    assert indices.tolist() == [1, 3, 4]
    np.testing.assert_allclose(scores, [1, 1, 0.6], rtol=1e-6)


def test_search_collection_text_and_image_queries(store, settings, shapes):
    coll, pairs = shapes
    cache = EmbeddingCache(settings)
    hits = search_collection(store, settings, cache, MODEL_A, "A", coll.id, "red thing", k=4)
    # scores: G 1.0, R2 0.6, R 0, B 0 (tie: row order)
    assert [h.pair_id for h in hits] == [pairs[n].id for n in ("G", "R2", "R", "B")]
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    np.testing.assert_allclose([h.score for h in hits], [1, 0.6, 0, 0], atol=1e-6)
    assert [h.positive for h in hits] == [False, True, True, False]
    assert hits[0].as_json()["caption"] == "green thing"

    by_image = search_collection(
        store, settings, cache, MODEL_A, "A", coll.id, ImageQuery(pairs["R"].image_sha256), k=2
    )
    assert [h.pair_id for h in by_image] == [pairs["R"].id, pairs["R2"].id]
    assert all(h.positive for h in by_image)
    np.testing.assert_allclose([h.score for h in by_image], [1, 0.8], atol=1e-6)

    upload = load_rgb(train_path(settings.images_dir, pairs["B"].image_sha256))
    by_upload = search_collection(store, settings, cache, MODEL_A, "A", coll.id, upload, k=1)
    assert by_upload[0].pair_id == pairs["B"].id and not by_upload[0].positive

    with pytest.raises(ValueError):
        search_collection(store, settings, cache, MODEL_A, "A", coll.id, "   ")


def test_search_follows_edits_deletes_and_splits(store, settings, shapes):
    coll, pairs = shapes
    cache = EmbeddingCache(settings)
    train = add_pair(store, settings, coll.id, (30, 230, 40), "green thing", split="train")
    hits = search_collection(store, settings, cache, MODEL_A, "A", coll.id, "green thing", k=10)
    assert train.id in [h.pair_id for h in hits]
    hits = search_collection(
        store, settings, cache, MODEL_A, "A", coll.id, "green thing", k=10, split="eval"
    )
    assert train.id not in [h.pair_id for h in hits] and len(hits) == 4

    store.update_pair(pairs["B"].id, caption="green thing")
    store.delete_pair(pairs["G"].id)
    hits = search_collection(
        store, settings, cache, MODEL_A, "A", coll.id, "green thing", k=10, split="eval"
    )
    assert pairs["G"].id not in [h.pair_id for h in hits]
    blue = next(h for h in hits if h.pair_id == pairs["B"].id)
    assert blue.caption == "green thing" and blue.positive


def test_changes_by_another_process_are_seen(store, settings, shapes):
    coll, pairs = shapes
    cache = EmbeddingCache(settings)
    first = search_collection(store, settings, cache, MODEL_A, "A", coll.id, "red thing", k=1)
    assert first[0].pair_id == pairs["G"].id
    other = Store(settings.db_path)  # e.g. the CLI next to the running app
    try:
        other.delete_pair(pairs["G"].id)
    finally:
        other.close()
    again = search_collection(store, settings, cache, MODEL_A, "A", coll.id, "red thing", k=4)
    assert pairs["G"].id not in [h.pair_id for h in again] and len(again) == 3


def test_ranks_hand_computed_and_identical_captions(store, settings, shapes):
    coll, pairs = shapes
    cache = EmbeddingCache(settings)
    ranks = positive_ranks(store, cache, MODEL_A, "A", coll.id, "eval")
    got = {r.query: (r.rank, r.n_positives, r.pair_id) for r in ranks}
    # "red thing": positives R (0) and R2 (0.6); G scores 1.0 above them → rank 2.
    assert got == {
        "red thing": (2, 2, pairs["R"].id),
        "green thing": (2, 1, pairs["G"].id),
        "blue thing": (1, 1, pairs["B"].id),
    }
    i2t = positive_ranks(store, cache, MODEL_A, "A", coll.id, "eval", "image_to_text")
    assert [(r.pair_id, r.rank) for r in i2t] == [
        (pairs["R"].id, 1),  # all captions score 0: ties count in its favour
        (pairs["G"].id, 2),  # "red thing" 1.0 > "green thing" 0.6
        (pairs["B"].id, 1),
        (pairs["R2"].id, 1),
    ]


def test_also_correct_label_counts_as_a_positive(store, settings, shapes):
    coll, pairs = shapes
    store.add_label(pairs["R"].id, "also-positive", negative_sha256=pairs["G"].image_sha256)
    store.add_label(pairs["B"].id, "negative", negative_sha256=pairs["G"].image_sha256)
    cache = EmbeddingCache(settings)
    ranks = {r.query: r for r in positive_ranks(store, cache, MODEL_A, "A", coll.id)}
    assert ranks["red thing"].rank == 1 and ranks["red thing"].n_positives == 3
    assert ranks["blue thing"].rank == 1  # a hard-negative label changes nothing here


def test_compare_runs_sorts_improved_first(store, settings, shapes):
    coll, pairs = shapes
    cache = EmbeddingCache(settings)
    rows = compare_runs(store, settings, cache, MODEL_A, "A", MODEL_B, "B", coll.id)
    assert [(r["query"], r["rank_a"], r["rank_b"], r["delta"]) for r in rows] == [
        ("red thing", 2, 1, 1),
        ("green thing", 2, 1, 1),
        ("blue thing", 1, 3, -2),  # B: R 0.89 and R2 0.72 beat B 0.45
    ]
    assert rows[0]["pair_id"] == pairs["R"].id and rows[0]["n_positives"] == 2
    calls = MODEL_A.calls + MODEL_B.calls
    compare_runs(store, settings, EmbeddingCache(settings), MODEL_A, "A", MODEL_B, "B", coll.id)
    assert MODEL_A.calls + MODEL_B.calls == calls  # reopening encodes nothing


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from mmdemo.retrieval.models import build_tiny_clip, load_model, model_fingerprint

    models = []
    for seed in (0, 1):
        path = build_tiny_clip(tmp_path_factory.mktemp(f"tiny{seed}") / "model", seed=seed)
        models.append((load_model(str(path)), model_fingerprint(str(path))))
    return models


class Counting:
    def __init__(self, model):
        self.model = model
        self.calls = 0

    def encode(self, inputs, **kwargs):
        self.calls += 1
        return self.model.encode(inputs, **kwargs)


def test_real_models_compare_view_switch_costs_no_encoding(store, settings, tiny_models):
    (model_a, fp_a), (model_b, fp_b) = tiny_models
    assert fp_a != fp_b
    coll = store.create_collection("real")
    colours = [(r, g, b) for r in (30, 220) for g in (30, 220) for b in (40, 210)]
    captions = [f"a shape coloured {c}" for c in colours]
    for i, (colour, caption) in enumerate(zip(colours, captions, strict=True)):
        add_pair(store, settings, coll.id, colour, caption, "eval" if i % 2 else "train")
    a, b = Counting(model_a), Counting(model_b)
    cache = EmbeddingCache(settings)

    hits = search_collection(store, settings, cache, a, fp_a, coll.id, captions[0], k=5)
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    direct_q = model_a.encode([captions[0]], normalize_embeddings=True)[0]
    direct_i = model_a.encode(
        [load_rgb(train_path(settings.images_dir, hits[0].image_sha256))],
        normalize_embeddings=True,
    )[0]
    assert hits[0].score == pytest.approx(float(direct_q @ direct_i), abs=1e-5)

    search_collection(store, settings, cache, b, fp_b, coll.id, captions[0], k=5)
    rows = compare_runs(store, settings, cache, a, fp_a, b, fp_b, coll.id, "eval")
    assert len(rows) == 4
    for row in rows:
        assert 1 <= row["rank_a"] <= 4 and 1 <= row["rank_b"] <= 4
        assert row["delta"] == row["rank_a"] - row["rank_b"]

    # Both models cached: switching the view to another collection caption encodes nothing,
    # in this process or after a restart.
    for view_cache in (cache, EmbeddingCache(settings)):
        before = (a.calls, b.calls)
        for model, fp in ((a, fp_a), (b, fp_b)):
            search_collection(store, settings, view_cache, model, fp, coll.id, captions[3], k=3)
        compare_runs(store, settings, view_cache, a, fp_a, b, fp_b, coll.id, "eval")
        assert (a.calls, b.calls) == before
    corpus = collection_corpus(store, cache, a, fp_a, coll.id)
    assert len(corpus) == 8
