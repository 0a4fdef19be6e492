"""Retrieval metrics: a hand-computed example, the conventions, and a cross-check against
sentence-transformers' InformationRetrievalEvaluator on a real (tiny) model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mmdemo.data.images import load_rgb, train_path
from mmdemo.data.store import Store
from mmdemo.retrieval.evaluation import (
    EvaluationError,
    encode_texts,
    evaluate_model,
    query_ranks,
    retrieval_metrics,
)
from mmdemo.settings import Settings

# Four pairs; "cat" names two images (a, b). 2-D vectors so every score is easy to check:
# a text query's score for an image is the image's x (cat), y (dog) or -x (bird) over its norm.
CAPTIONS = ["cat", "cat", "dog", "bird"]
IMAGE_IDS = ["a", "b", "c", "d"]
TEXT = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
IMAGES = np.array([[0.2, 1.0], [0.9, 0.5], [1.0, 0.2], [-1.0, 0.2]])
# c and d have the same y and norm: the "dog" query scores them exactly equal.


def _ndcg_one(rank: int) -> float:
    return 1.0 / math.log2(rank + 1)


def test_hand_computed_example_with_duplicate_captions():
    metrics = retrieval_metrics(TEXT, IMAGES, CAPTIONS, IMAGE_IDS)
    t2i, i2t = metrics["t2i"], metrics["i2t"]

    # text→image, queries = distinct captions (3):
    #   cat:  c .98, b .87, a .20, d -.98 → first relevant (b) at 2; relevant {a, b} at 2 and 3
    #   dog:  a .98, b .49, then c and d tie at .20: the tie goes against the query → c at 4
    #   bird: d first → 1
    assert t2i["queries"] == 3
    assert t2i["recall@1"] == pytest.approx(1 / 3)
    assert t2i["recall@5"] == pytest.approx(1.0)
    assert t2i["recall@10"] == pytest.approx(1.0)
    assert t2i["mrr@10"] == pytest.approx((1 / 2 + 1 / 4 + 1) / 3)
    cat_ndcg = (_ndcg_one(2) + _ndcg_one(3)) / (1 + _ndcg_one(2))
    assert t2i["ndcg@10"] == pytest.approx((cat_ndcg + _ndcg_one(4) + 1) / 3)

    # image→text, queries = distinct images (4), corpus = distinct captions (cat, dog, bird):
    #   a: dog, cat, bird → cat at 2;  b: cat at 1;  c: cat, dog → dog at 2;  d: bird at 1
    assert i2t["queries"] == 4
    assert i2t["recall@1"] == pytest.approx(0.5)
    assert i2t["recall@5"] == pytest.approx(1.0)
    assert i2t["mrr@10"] == pytest.approx((1 / 2 + 1 + 1 / 2 + 1) / 4)
    assert i2t["ndcg@10"] == pytest.approx((2 * _ndcg_one(2) + 2) / 4)

    ranks = query_ranks(TEXT, IMAGES, CAPTIONS, IMAGE_IDS)
    assert ranks == {
        "t2i": {"cat": 2, "dog": 4, "bird": 1},
        "i2t": {"a": 2, "b": 1, "c": 2, "d": 1},
    }


def test_same_caption_images_are_not_misses():
    # Two images share the caption "cat": whichever of them comes first is a hit.
    text = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    images = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    metrics = retrieval_metrics(text, images, ["cat", "cat", "dog"], ["x", "y", "z"])
    assert metrics["t2i"] == {
        "recall@1": 1.0,
        "recall@5": 1.0,
        "recall@10": 1.0,
        "mrr@10": 1.0,
        "ndcg@10": 1.0,
        "queries": 2,
    }


def test_an_image_with_two_captions_has_both_relevant():
    # The image "x" appears in two pairs; for the image query either caption is a hit.
    text = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    images = np.array([[0.8, 0.2], [0.8, 0.2], [0.0, 1.0]])
    ranks = query_ranks(text, images, ["kitten", "cat", "dog"], ["x", "x", "z"])
    assert ranks["i2t"] == {"x": 1, "z": 1}
    assert (
        retrieval_metrics(text, images, ["kitten", "cat", "dog"], ["x", "x", "z"])["i2t"]["queries"]
        == 2
    )


def test_scale_does_not_matter_and_ties_are_pessimistic():
    scaled = retrieval_metrics(TEXT * 7.0, IMAGES * 0.1, CAPTIONS, IMAGE_IDS)
    assert scaled == retrieval_metrics(TEXT, IMAGES, CAPTIONS, IMAGE_IDS)
    # A collapsed model (every embedding equal) must score badly, not perfectly.
    collapsed = retrieval_metrics(np.ones((5, 3)), np.ones((5, 3)), list("abcde"), list("vwxyz"))
    assert collapsed["t2i"]["recall@1"] == 0.0
    assert collapsed["i2t"]["recall@1"] == 0.0
    assert collapsed["t2i"]["recall@5"] == 1.0


def test_bad_inputs_are_refused():
    with pytest.raises(EvaluationError):
        retrieval_metrics(np.zeros((0, 2)), np.zeros((0, 2)), [], [])
    with pytest.raises(ValueError, match="Row counts differ"):
        retrieval_metrics(TEXT, IMAGES[:3], CAPTIONS, IMAGE_IDS)


# -- with a real model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    from sentence_transformers import SentenceTransformer

    from mmdemo.retrieval.models import build_tiny_clip

    path = build_tiny_clip(tmp_path_factory.mktemp("tiny") / "tiny-clip", seed=0)
    return SentenceTransformer(str(path), device="cpu")


def _demo_split(store: Store, settings: Settings, n: int, split: str) -> int:
    from mmdemo.data.demo import generate_demo_scenes
    from mmdemo.data.images import ImageLimits, ingest_image_bytes

    collection = store.create_collection("eval-check")
    limits = ImageLimits.from_settings(settings)
    for scene in generate_demo_scenes(n, seed=3):
        stored = ingest_image_bytes(scene.image_bytes, settings.images_dir, limits)
        store.add_pair(collection.id, stored.as_row(), scene.caption, split=split)
    return collection.id


def test_agrees_with_information_retrieval_evaluator(tiny_model, store, settings):
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    collection_id = _demo_split(store, settings, 30, "eval")
    pairs = store.list_pairs(collection_id, split="eval")
    assert len({p.caption for p in pairs}) == len(pairs) == 30  # unique captions
    ours = evaluate_model(tiny_model, store, settings, collection_id, "eval")["t2i"]

    queries = {f"q{p.id}": p.caption for p in pairs}
    corpus = {f"d{p.id}": load_rgb(train_path(settings.images_dir, p.image_sha256)) for p in pairs}
    relevant = {f"q{p.id}": {f"d{p.id}"} for p in pairs}
    evaluator = InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        name="x",
        accuracy_at_k=[1, 5, 10],
        precision_recall_at_k=[1, 5, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        show_progress_bar=False,
    )
    theirs = evaluator(tiny_model)
    for k in (1, 5, 10):
        assert ours[f"recall@{k}"] == pytest.approx(theirs[f"x_cosine_accuracy@{k}"], abs=1e-6)
        # With one relevant item per query, their recall@k is the same number.
        assert ours[f"recall@{k}"] == pytest.approx(theirs[f"x_cosine_recall@{k}"], abs=1e-6)
    assert ours["mrr@10"] == pytest.approx(theirs["x_cosine_mrr@10"], abs=1e-6)
    assert ours["ndcg@10"] == pytest.approx(theirs["x_cosine_ndcg@10"], abs=1e-6)
    assert ours["queries"] == 30


def test_captions_that_name_files_are_encoded_as_text(tiny_model, tmp_path: Path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)  # "cat.jpg" now names an existing image file
    as_text = encode_texts(tiny_model, ["cat.jpg"])
    plain = tiny_model.encode([{"text": "cat.jpg"}], convert_to_numpy=True)
    image = tiny_model.encode(["cat.jpg"], convert_to_numpy=True)  # what a bare string does
    plain = plain / np.linalg.norm(plain, axis=1, keepdims=True)
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    assert np.allclose(as_text, plain, atol=1e-5)
    assert not np.allclose(as_text, image, atol=1e-3)


def test_empty_split_is_a_clear_error(tiny_model, store, settings):
    collection_id = _demo_split(store, settings, 4, "train")
    with pytest.raises(EvaluationError, match="eval split of this collection is empty"):
        evaluate_model(tiny_model, store, settings, collection_id, "eval")
