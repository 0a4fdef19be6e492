"""The attribute-binding probe on a hand-made case and on the real tiny model."""

from __future__ import annotations

import pytest

from mmdemo.data.demo import generate_demo_scenes, swap_attributes
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.retrieval.embeddings import EmbeddingCache
from mmdemo.retrieval.probe import binding_probe, compare_binding
from tests.test_retrieval import BLUE, GREEN, RED, RED2, LookupEncoder, add_pair

CAPTIONS = {
    RED: "a red circle above a blue square",
    GREEN: "a green circle above a blue triangle",
    BLUE: "a yellow square below a purple circle",
    RED2: "a red circle above a red square",  # same colours: no swap, not counted
}
# Image vectors: RED (1,0,0), GREEN (0,1,0), BLUE (0,0,1).
BAG_OF_WORDS = LookupEncoder(
    {
        CAPTIONS[RED]: (1, 0, 0),
        swap_attributes(CAPTIONS[RED]): (0, 1, 0),  # right 1.0 > wrong 0.0
        CAPTIONS[GREEN]: (0, 1, 0),
        swap_attributes(CAPTIONS[GREEN]): (0, 1, 0),  # a tie counts as wrong
        CAPTIONS[BLUE]: (0, 0.6, 0.8),
        swap_attributes(CAPTIONS[BLUE]): (0, 0, 1),  # right 0.8 < wrong 1.0
    }
)
BINDS = LookupEncoder(
    {
        CAPTIONS[RED]: (1, 0, 0),
        swap_attributes(CAPTIONS[RED]): (0, 1, 0),
        CAPTIONS[GREEN]: (0, 1, 0),
        swap_attributes(CAPTIONS[GREEN]): (0.6, 0.8, 0),
        CAPTIONS[BLUE]: (0, 0, 1),
        swap_attributes(CAPTIONS[BLUE]): (0, 0.6, 0.8),
    }
)


@pytest.fixture
def demo_like(store, settings):
    coll = store.create_collection("demo-like")
    for colour, caption in CAPTIONS.items():
        add_pair(store, settings, coll.id, colour, caption, "eval")
    add_pair(store, settings, coll.id, (40, 40, 200), "a blue circle above a red square", "train")
    return coll


def test_probe_hand_made_case(store, settings, demo_like):
    result = binding_probe(BAG_OF_WORDS, store, settings, demo_like.id)
    assert result == {"accuracy": pytest.approx(1 / 3), "correct": 1, "n": 3, "chance": 0.5}
    assert binding_probe(BINDS, store, settings, demo_like.id)["correct"] == 3
    assert binding_probe(BINDS, store, settings, demo_like.id, split="train")["n"] == 1


def test_probe_through_the_cache_and_compare(store, settings, demo_like):
    cache = EmbeddingCache(settings)
    first = binding_probe(BAG_OF_WORDS, store, settings, demo_like.id, cache=cache, fingerprint="a")
    calls = BAG_OF_WORDS.calls
    again = binding_probe(BAG_OF_WORDS, store, settings, demo_like.id, cache=cache, fingerprint="a")
    assert first == again and BAG_OF_WORDS.calls == calls
    both = compare_binding(
        BAG_OF_WORDS,
        BINDS,
        store,
        settings,
        demo_like.id,
        cache=cache,
        fingerprint_a="a",
        fingerprint_b="b",
    )
    assert both["a"]["correct"] == 1 and both["b"]["correct"] == 3
    assert both["delta"] == pytest.approx(2 / 3)


def test_probe_none_without_swappable_captions(store, settings):
    coll = store.create_collection("plain")
    add_pair(store, settings, coll.id, RED, "my cat on the sofa", "eval")
    add_pair(store, settings, coll.id, RED2, "a red circle above a red square", "eval")
    assert binding_probe(BAG_OF_WORDS, store, settings, coll.id) is None
    empty = store.create_collection("empty")
    assert binding_probe(BAG_OF_WORDS, store, settings, empty.id) is None
    assert compare_binding(BAG_OF_WORDS, BINDS, store, settings, coll.id) is None


def test_probe_real_tiny_model_on_demo_scenes(store, settings):
    from mmdemo.retrieval.models import build_tiny_clip, load_model

    model = load_model(str(build_tiny_clip(settings.models_dir / "tiny")))
    coll = store.create_collection("demo")
    report = ImportReport(collection="demo")
    scenes = generate_demo_scenes(30)
    for i, scene in enumerate(scenes):
        ingest_item(
            store, settings, coll.id, report, f"s{i}", scene.image_bytes, scene.caption, scene.split
        )
    expected_n = sum(1 for s in scenes if s.split == "eval" and swap_attributes(s.caption))
    assert expected_n > 0
    result = binding_probe(model, store, settings, coll.id)
    assert result["n"] == expected_n
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["correct"] == round(result["accuracy"] * expected_n)
