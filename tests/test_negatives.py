"""Label-mode candidates: positive left out, possible false negatives flagged, labels shown."""

from __future__ import annotations

import numpy as np
import pytest

from mmdemo.retrieval.embeddings import EmbeddingCache
from mmdemo.retrieval.negatives import (
    caption_labels_of,
    label_candidates,
    labeling_progress,
    next_pair_to_label,
    open_suggestions,
    with_labels,
)
from tests.test_retrieval import BLUE, GREEN, RED, RED2, LookupEncoder, add_pair

# "red thing" → (0.741, 0.667, 0.074): R 0.741 (positive), R2 0.993, G 0.667, B 0.074.
TEXT = {"red thing": tuple(np.array([1, 0.9, 0.1]) / np.linalg.norm([1, 0.9, 0.1]))}
MODEL = LookupEncoder({**TEXT, "green thing": (0, 1, 0), "blue thing": (0, 0, 1)})


@pytest.fixture
def pairs(store, settings):
    coll = store.create_collection("colours")
    return coll, {
        "R": add_pair(store, settings, coll.id, RED, "red thing"),
        "G": add_pair(store, settings, coll.id, GREEN, "green thing"),
        "B": add_pair(store, settings, coll.id, BLUE, "blue thing"),
        "R2": add_pair(store, settings, coll.id, RED2, "red thing"),
        "T": add_pair(store, settings, coll.id, (25, 190, 30), "green thing", split="train"),
    }


def test_candidates_leave_the_positive_out_and_flag_close_ones(store, settings, pairs):
    _, p = pairs
    cache = EmbeddingCache(settings)
    task = label_candidates(store, settings, cache, MODEL, "m", p["R"].id, k=3, margin=0.1)
    assert task.pair.id == p["R"].id
    assert task.positive_score == pytest.approx(0.741, abs=1e-3)
    assert task.positive_rank == 2  # R2 scores above the positive
    got = [(c.pair_id, c.rank, c.possible_false_negative) for c in task.candidates]
    assert got == [
        (p["R2"].id, 1, True),  # higher than the positive, and the same caption
        (p["G"].id, 2, True),  # 0.667 ≥ 0.741 − 0.1
        (p["B"].id, 3, False),
    ]
    assert [c.score for c in task.candidates] == pytest.approx([0.993, 0.667, 0.074], abs=1e-3)
    assert all(c.label is None for c in task.candidates)
    assert task.suggested_captions == []  # not a demo caption: nothing to swap

    narrow = label_candidates(store, settings, cache, MODEL, "m", p["R"].id, k=2, margin=0.01)
    assert [(c.pair_id, c.possible_false_negative) for c in narrow.candidates] == [
        (p["R2"].id, True),
        (p["G"].id, False),
    ]


def test_pool_is_the_pairs_split_unless_asked(store, settings, pairs):
    _, p = pairs
    cache = EmbeddingCache(settings)
    same = label_candidates(store, settings, cache, MODEL, "m", p["R"].id, k=10)
    assert p["T"].id not in [c.pair_id for c in same.candidates] and len(same.candidates) == 3
    everything = label_candidates(store, settings, cache, MODEL, "m", p["R"].id, k=10, split=None)
    assert p["T"].id in [c.pair_id for c in everything.candidates]
    train = label_candidates(store, settings, cache, MODEL, "m", p["T"].id, k=10)
    assert train.candidates == []  # the only train pair: nothing to mine


def test_labels_show_on_candidates_and_undo(store, settings, pairs):
    _, p = pairs
    cache = EmbeddingCache(settings)
    neg = store.add_label(p["R"].id, "negative", negative_sha256=p["G"].image_sha256, author="ann")
    also = store.add_label(p["R"].id, "also-positive", negative_sha256=p["R2"].image_sha256)
    task = label_candidates(store, settings, cache, MODEL, "m", p["R"].id, k=3)
    labels = {c.pair_id: (c.label, c.label_id) for c in task.candidates}
    assert labels == {
        p["R2"].id: ("also-positive", also.id),
        p["G"].id: ("negative", neg.id),
        p["B"].id: (None, None),
    }
    store.remove_label(neg.id)
    task = label_candidates(store, settings, cache, MODEL, "m", p["R"].id, k=3)
    assert {c.pair_id: c.label for c in task.candidates}[p["G"].id] is None


def test_demo_caption_gets_swap_suggestions(store, settings):
    coll = store.create_collection("demo-like")
    caption = "a red circle above a blue square"
    swapped = "a blue circle above a red square"
    model = LookupEncoder({caption: (1, 0, 0)})
    pair = add_pair(store, settings, coll.id, RED, caption)
    add_pair(store, settings, coll.id, BLUE, "a blue square")
    cache = EmbeddingCache(settings)
    task = label_candidates(store, settings, cache, model, "m", pair.id)
    assert task.suggested_captions[0] == swapped
    assert caption not in task.suggested_captions
    label = store.add_label(pair.id, "negative", negative_caption=swapped)
    task = label_candidates(store, settings, cache, model, "m", pair.id)
    assert swapped not in task.suggested_captions
    assert task.caption_labels == [(label.id, "negative", swapped)]


def test_labeling_progress_and_walk(store, settings, pairs):
    coll, p = pairs
    assert labeling_progress(store, coll.id) == (0, 5)
    label = store.add_label(p["G"].id, "negative", negative_sha256=p["B"].image_sha256)
    store.add_label(p["G"].id, "negative", negative_sha256=p["R"].image_sha256)
    store.add_label(p["T"].id, "negative", negative_caption="a purple thing")
    assert labeling_progress(store, coll.id) == (2, 5)
    assert labeling_progress(store, coll.id, split="eval") == (1, 4)
    assert labeling_progress(store, coll.id, split="train") == (1, 1)
    store.delete_pair(p["T"].id)
    assert labeling_progress(store, coll.id) == (1, 4)

    # Walk the eval pairs: labeled ones are passed over, skipping moves on, the end wraps.
    walk = [p["R"].id, p["B"].id, p["R2"].id]
    current = next_pair_to_label(store, coll.id, split="eval")
    assert current.id == walk[0]
    current = next_pair_to_label(store, coll.id, current.id, split="eval")
    assert current.id == walk[1]
    current = next_pair_to_label(store, coll.id, current.id, split="eval")
    assert current.id == walk[2]
    assert next_pair_to_label(store, coll.id, current.id, split="eval").id == walk[0]
    store.remove_label(label.id)
    assert labeling_progress(store, coll.id, split="eval") == (1, 4)  # one label left on G
    assert next_pair_to_label(store, coll.id, walk[0], split="eval", unlabeled_only=False).id == (
        p["G"].id
    )


def test_real_tiny_model_candidates(store, settings):
    from mmdemo.retrieval.models import build_tiny_clip, load_model, model_fingerprint

    path = build_tiny_clip(settings.models_dir / "tiny")
    model = load_model(str(path))
    coll = store.create_collection("real")
    colours = [(r, g, b) for r in (30, 220) for g in (30, 220) for b in (40, 210)]
    ids = [add_pair(store, settings, coll.id, c, f"colour {c}", "train").id for c in colours]
    cache = EmbeddingCache(settings)
    task = label_candidates(
        store, settings, cache, model, model_fingerprint(str(path)), ids[2], k=4
    )
    assert len(task.candidates) == 4
    assert task.pair.image_sha256 not in [c.image_sha256 for c in task.candidates]
    scores = [c.score for c in task.candidates]
    assert scores == sorted(scores, reverse=True)
    assert [c.rank for c in task.candidates] == [1, 2, 3, 4]
    assert 1 <= task.positive_rank <= 8
    assert -1.0 <= task.positive_score <= 1.0


def test_labels_redrawn_in_place_without_ranking_again(store, settings, pairs):
    _, p = pairs
    cache = EmbeddingCache(settings)
    task = label_candidates(store, settings, cache, MODEL, "m", p["R"].id, k=3)
    neg = store.add_label(p["R"].id, "negative", negative_sha256=p["G"].image_sha256)
    store.add_label(p["R"].id, "negative", negative_caption="a purple thing")
    labels = store.labels_for_pair(p["R"].id)
    updated = with_labels(task.candidates, labels)
    assert [(c.pair_id, c.label, c.label_id) for c in updated] == [
        (p["R2"].id, None, None),
        (p["G"].id, "negative", neg.id),
        (p["B"].id, None, None),
    ]
    assert [c.score for c in updated] == [c.score for c in task.candidates]  # nothing re-ranked
    assert caption_labels_of(labels) == [(labels[1].id, "negative", "a purple thing")]
    assert with_labels(updated, []) == tuple(task.candidates)


def test_suggestions_leave_out_captions_already_labeled():
    caption = "a red circle above a blue square"
    everything = open_suggestions(caption, [])
    assert everything and caption not in everything
    assert open_suggestions(caption, [(1, "negative", everything[0])]) == everything[1:]


def test_walk_and_counts_are_queries_not_scans(store, settings, pairs):
    """The next pair and the counts come from the store's indexed queries, same answers as
    a walk over every pair would give, in every split and with deleted pairs."""
    coll, p = pairs
    ids = sorted(pair.id for pair in p.values())
    assert store.next_pair(coll.id).id == ids[0]
    assert store.next_pair(coll.id, ids[-1]).id == ids[0]  # wraps around
    assert store.next_pair(coll.id, ids[1], split="train").id == p["T"].id
    store.add_label(p["B"].id, "negative", negative_sha256=p["R"].image_sha256)
    assert store.next_pair(coll.id, p["G"].id, unlabeled_only=True).id == p["R2"].id
    assert store.count_labeled_pairs(coll.id) == 1 == store.count_labeled_pairs(coll.id, "eval")
    assert store.count_labeled_pairs(coll.id, "train") == 0
    store.delete_pair(p["B"].id)
    assert store.count_labeled_pairs(coll.id) == 0
    empty = store.create_collection("empty")
    assert store.next_pair(empty.id) is None and store.count_labeled_pairs(empty.id) == 0
