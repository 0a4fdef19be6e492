"""The Label tab's order on a real Services (the demo, the tiny CLIP, a real finetune): hardest
first under the newest run, labeled pairs skipped, the other orders, and pairs chosen elsewhere
(``shared.label_focus``) first."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from mmdemo.retrieval.compare import BASE, load, resolve_model
from mmdemo.retrieval.label_order import HARDEST, IN_ORDER, RANDOM
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.training.run import TrainConfig, run_training
from mmdemo.ui.label import handlers as h


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("label-order-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "80"}
    )
    services = Services.create(settings)
    yield services
    services.close()


@pytest.fixture(autouse=True)
def no_labels_left(services):  # noqa: ANN001, ANN201
    yield
    store = services.store
    for collection in store.list_collections():
        for label in store.labels_for_collection(collection.id):
            store.remove_label(label.id)


def demo(services: Services):  # noqa: ANN201
    return services.store.collection(DEMO_COLLECTION)


def fresh(services: Services, **fields) -> h.LabelState:  # noqa: ANN003
    state = h.on_load(services, h.initial_state(services), DEMO_COLLECTION).state
    return dataclasses.replace(state, **fields)


def walk(services: Services, view: h.LabelView, n: int) -> list[int]:
    """The pairs shown: the one open, then ``n - 1`` skips."""
    shown = [view.state.pair_id]
    for _ in range(n - 1):
        view = h.next_pair(services, view.state)
        shown.append(view.state.pair_id)
    return shown


def worst_ranked(
    services: Services, model_key: str, split: str = "train"
) -> tuple[list[int], dict[int, int]]:
    """Pair ids worst-ranked positive first (ties by id), computed here pair by pair from the
    model's embeddings: how many images of the split score above the pair's own image."""
    ref = resolve_model(services.store, services.model, model_key)
    loaded = load(services, ref)
    pairs = services.store.list_pairs(demo(services).id, split=split)
    cache = services.embeddings
    images = cache.image_embeddings(
        loaded.model, loaded.fingerprint, [p.image_sha256 for p in pairs]
    )
    texts = cache.text_embeddings(loaded.model, loaded.fingerprint, [p.caption for p in pairs])
    ranks = {}
    for i, pair in enumerate(pairs):
        own = float(np.dot(texts[i], images[i]))
        ranks[pair.id] = 1 + sum(
            float(np.dot(texts[i], images[j])) > own for j in range(len(pairs)) if j != i
        )
    return sorted(ranks, key=lambda pair_id: (-ranks[pair_id], pair_id)), ranks


def heading_rank(view: h.LabelView) -> int:
    found = re.search(r"ranks \*\*#(\d+)", view.pair)
    return int(found.group(1)) if found else -1


def test_orders_before_any_finetune_use_the_base_model(services):
    view = h.open_tab(services, fresh(services), DEMO_COLLECTION)
    assert view.state.order == HARDEST and view.state.model == BASE
    expected, ranks = worst_ranked(services, BASE)
    assert walk(services, view, 5) == expected[:5]
    ids = services.store.matching_pair_ids(demo(services).id, split="train")
    in_order = h.open_tab(services, fresh(services, order=IN_ORDER), DEMO_COLLECTION)
    assert walk(services, in_order, 4) == ids[:4]
    shuffled = h.open_tab(services, fresh(services, order=RANDOM, seed=3), DEMO_COLLECTION)
    first = walk(services, shuffled, len(ids))
    assert sorted(first) == ids and first != ids
    # Switching the order starts from the new order's first pair.
    switched = h.set_options(services, view.state, BASE, "train", True, None, None, IN_ORDER)
    assert switched.state.pair_id == ids[0] and switched.state.order == IN_ORDER


@pytest.mark.slow
def test_after_a_finetune_the_first_20_pairs_are_the_20_worst_ranked_and_labeled_ones_skip(
    services,
):
    result = run_training(
        services.store,
        services.settings,
        DEMO_COLLECTION,
        TrainConfig(epochs=2, max_minutes=1),
        run_name="round-1",
    )
    assert result.status == "finished", result.message
    view = h.open_tab(services, fresh(services), DEMO_COLLECTION)
    assert view.state.model == "run:round-1"  # the newest finished run of the collection
    expected, ranks = worst_ranked(services, "run:round-1")
    assert len(expected) >= 20
    shown = [view.state.pair_id]
    headings = [heading_rank(view)]
    for _ in range(19):
        view = h.next_pair(services, view.state)
        shown.append(view.state.pair_id)
        headings.append(heading_rank(view))
    assert shown == expected[:20]
    assert headings == [ranks[pair_id] for pair_id in shown]
    print("worst ranks", [ranks[pair_id] for pair_id in shown], "of", len(expected), "pairs")

    # A labeled pair is passed over by the next session, and by this one's next step.
    second = services.store.get_pair(expected[1])
    other = services.store.get_pair(expected[5])
    services.store.add_label(second.id, "negative", negative_sha256=other.image_sha256)
    again = h.open_tab(services, fresh(services), DEMO_COLLECTION)
    assert walk(services, again, 3) == [expected[0], expected[2], expected[3]]
    # A person's choice of model stays theirs.
    chose = h.set_options(services, again.state, BASE, "train", True)
    assert not chose.state.model_auto
    assert h.open_tab(services, chose.state, DEMO_COLLECTION).state.model == BASE


def test_pairs_chosen_elsewhere_come_first_in_their_order(services):
    ids = services.store.matching_pair_ids(demo(services).id, split="train")
    focus = {"collection": DEMO_COLLECTION, "pair_ids": [ids[6], ids[2], 10**6, ids[9]]}
    view = h.open_tab(services, fresh(services, order=IN_ORDER), DEMO_COLLECTION, focus=focus)
    assert view.state.pair_id == ids[6] and "3 pairs you chose" in view.message
    view = h.next_pair(services, view.state)
    assert view.state.pair_id == ids[2]
    # Opening the tab again with the same focus keeps the place (a focus is taken once).
    view = h.open_tab(services, view.state, DEMO_COLLECTION, focus=focus)
    assert view.state.pair_id == ids[2]
    view = h.next_pair(services, view.state)
    assert view.state.pair_id == ids[9]
    view = h.next_pair(services, view.state)  # done: the usual order from its start
    assert view.state.pair_id == ids[0] and view.state.focus == ()
    assert "Done with the pairs you chose" in view.message
    # A new choice is taken; a focus on another collection is not.
    view = h.open_tab(services, view.state, DEMO_COLLECTION, focus={**focus, "pair_ids": [ids[4]]})
    assert view.state.pair_id == ids[4]
    elsewhere = {"collection": "another", "pair_ids": [ids[7]]}
    assert (
        h.open_tab(services, view.state, DEMO_COLLECTION, focus=elsewhere).state.pair_id == (ids[4])
    )
    assert h.open_tab(services, fresh(services), DEMO_COLLECTION, focus=None).state.focus == ()


def test_the_tab_reads_the_focus_and_the_login_when_it_is_shown(services):
    """The Label tab's select handler takes the per-session focus (``shared.label_focus``)
    as an input, beside the state and the browser's collection; the login Gradio fills in."""
    import gradio as gr

    from mmdemo.ui.app import build_app

    demo = build_app(services)
    [opening] = [
        fn
        for fn in demo.fns.values()
        if fn.fn is not None
        and fn.fn.__module__ == "mmdemo.ui.label.layout"
        and any(target[1] == "select" for target in fn.targets)
    ]
    kinds = [type(block).__name__ for block in opening.inputs]
    assert kinds == ["State", "BrowserState", "State"]
    assert isinstance(demo.blocks[opening.targets[0][0]], gr.Tab)
    focus = opening.inputs[2]
    assert focus.value is None  # nothing chosen until a person picks pairs elsewhere
