"""The Label tab's handlers on a real Services (SQLite, the small demo collection, tiny CLIP):
candidates, marking with authors, undo, walking through pairs, and the keyboard wiring."""

from __future__ import annotations

import gradio as gr
import pytest

from mmdemo.demo_data import swap_attributes
from mmdemo.ingest import ImportReport, ingest_item
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.ui import label_handlers as h
from mmdemo.ui.app import build_app
from mmdemo.ui.label import KEYS, as_outputs, keys_js
from tests.conftest import make_image_bytes


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("label-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "24"}
    )
    services = Services.create(settings)
    yield services
    services.close()


@pytest.fixture(autouse=True)
def no_labels_left(services):
    yield
    store = services.store
    for collection in store.list_collections():
        for label in store.labels_for_collection(collection.id):
            store.remove_label(label.id)


def demo(services: Services):
    return services.store.collection(DEMO_COLLECTION)


def train_total(services: Services) -> int:
    return services.store.count_pairs(demo(services).id, split="train")


def opened(services: Services, progress=None) -> h.LabelView:  # noqa: ANN001
    state = h.on_load(services, h.initial_state(services), DEMO_COLLECTION).state
    return h.open_tab(services, state, progress)


def test_opening_shows_the_first_pair_with_its_candidates(services):
    calls: list = []
    view = opened(services, lambda value, desc=None, **kw: calls.append((value, desc)))
    st = view.state
    first = services.store.list_pairs(demo(services).id, split="train")[0]
    assert st.pair_id == first.id
    assert len(st.candidates) == h.DEFAULT_K == len(view.candidates)
    assert all(c.image_sha256 != first.image_sha256 for c in st.candidates)  # positive left out
    assert {services.store.get_pair(c.pair_id).split for c in st.candidates} == {"train"}
    assert view.progress.startswith(f"**0 of {train_total(services)}** train pairs labeled")
    assert f"“{first.caption}”" in view.pair and "its own image ranks" in view.pair
    assert view.positive.endswith(".png")
    assert view.candidates[0][1].startswith("[1] ")
    flagged = [c.possible_false_negative for c in st.candidates]
    assert [" ⚠ " in caption for _, caption in view.candidates] == flagged
    assert st.selected == 0 and "Selected [1]" in view.selection
    assert view.negative_caption["value"] == swap_attributes(first.caption)
    assert any(desc and desc.startswith("Loading") for _, desc in calls)
    assert len(as_outputs(view)) == len(h.LabelView._fields)


def test_mark_moves_on_and_undo_takes_it_back(services):
    view = opened(services)
    st = view.state
    pair_id = st.pair_id
    view = h.select(services, st, 2)
    assert view.state.selected == 2 and "Selected [3]" in view.selection
    target = view.state.candidates[2]

    view = h.mark(services, view.state, "negative", "dora")
    labels = services.store.labels_for_pair(pair_id)
    assert [(lab.kind, lab.negative_sha256, lab.author) for lab in labels] == [
        ("negative", target.image_sha256, "dora")
    ]
    assert view.state.candidates[2].label == "negative"
    assert " ✗ · " in view.candidates[2][1]
    assert view.state.selected == 3  # the next unlabeled candidate
    assert view.progress.startswith(f"**1 of {train_total(services)}**")
    assert view.undo["visible"] is True

    view = h.mark(services, view.state, "also-positive", "dora")
    assert view.state.candidates[3].label == "also-positive"
    assert " + · " in view.candidates[3][1]
    view = h.undo(services, view.state)
    assert [lab.kind for lab in services.store.labels_for_pair(pair_id)] == ["negative"]
    assert view.state.candidates[3].label is None and "Undone" in view.message

    # Clearing a label, and undoing the clear.
    view = h.clear(services, h.select(services, view.state, 2).state)
    assert services.store.labels_for_pair(pair_id) == []
    view = h.undo(services, view.state)
    assert [lab.author for lab in services.store.labels_for_pair(pair_id)] == ["dora"]
    assert (
        "Select a candidate"
        in h.mark(services, h.LabelState(pair_id=pair_id), "negative", "x").message
    )


def test_walk_skips_labeled_pairs_and_goes_back(services):
    view = opened(services)
    first = view.state.pair_id
    view = h.mark(services, view.state, "negative", "eve")
    train_ids = [p.id for p in services.store.list_pairs(demo(services).id, split="train")]
    seen = [first]
    for _ in range(len(train_ids) - 1):
        view = h.next_pair(services, view.state)
        seen.append(view.state.pair_id)
    assert seen == train_ids
    view = h.next_pair(services, view.state)  # wraps around, past the labeled first pair
    assert view.state.pair_id == train_ids[1]
    back = h.previous_pair(services, view.state)
    assert back.state.pair_id == train_ids[-1]

    # Without "only unlabeled" the labeled pair comes back.
    view = h.set_options(services, view.state, "base", "train", False)
    assert view.state.pair_id == train_ids[1]  # the current pair still fits: it stays
    view = h.goto_pair(services, view.state, f" {first} ")
    assert view.state.pair_id == first
    assert [c.label for c in view.state.candidates].count("negative") == 1
    assert "does not exist" in h.goto_pair(services, view.state, 10**6).message
    assert "not a pair id" in h.goto_pair(services, view.state, "twelve").message


def test_other_split_all_pairs_and_caption_negatives(services):
    evals = services.store.count_pairs(demo(services).id, split="eval")
    assert evals == 3
    view = h.set_options(services, opened(services).state, "base", "eval", True, 4)
    pair = services.store.get_pair(view.state.pair_id)
    # Candidates come from the eval split only: the other eval pairs, fewer than the 4 asked for.
    assert pair.split == "eval" and len(view.state.candidates) == evals - 1
    assert {services.store.get_pair(c.pair_id).split for c in view.state.candidates} == {"eval"}
    assert view.progress.startswith(f"**0 of {evals}** eval pairs")

    swapped = swap_attributes(pair.caption)
    view = h.add_negative_caption(services, view.state, swapped, "finn")
    labels = services.store.labels_for_pair(pair.id)
    assert [(lab.negative_caption, lab.author) for lab in labels] == [(swapped, "finn")]
    assert f"hard negative: “{swapped}”" in view.caption_labels
    assert swapped not in view.negative_caption["choices"]  # no longer suggested

    everything = h.set_options(services, view.state, "base", "all", True)
    assert everything.progress.startswith(f"**1 of {services.store.count_pairs(demo(services).id)}")


def test_a_fully_labeled_collection_says_so(services):
    coll = services.store.get_or_create_collection("three")
    report = ImportReport(coll.name)
    for i, caption in enumerate(["one", "two", "three"]):
        ingest_item(
            services.store,
            services.settings,
            coll.id,
            report,
            f"{i}.png",
            make_image_bytes((60 * i, 200, 30)),
            caption,
            "train",
        )
    view = h.switch_collection(services, opened(services).state, "three")
    assert view.state.pair_id is None and view.candidates == []
    view = h.open_tab(services, view.state)
    assert len(view.state.candidates) == 2  # three pairs: the positive and two others
    for _ in range(3):
        view = h.mark(services, h.select(services, view.state, 0).state, "negative", "gus")
        view = h.next_pair(services, view.state)
    assert view.state.pair_id is None
    assert "Every train pair has a label" in view.pair
    assert view.progress.startswith("**3 of 3**")


def test_the_app_has_the_tabs_and_the_keys_find_their_buttons(services):
    demo_app = build_app(services)
    tabs = [b.label for b in demo_app.blocks.values() if isinstance(b, gr.Tab)]
    assert tabs.index("Curate") < tabs.index("Label") < tabs.index("Compare")
    elem_ids = {getattr(b, "elem_id", None) for b in demo_app.blocks.values()}
    assert set(KEYS.values()) <= elem_ids
    assert {"mm-label", "mm-label-candidates"} <= elem_ids
    script = keys_js()
    assert all(f'"{elem_id}"' in script for elem_id in KEYS.values())
    assert "#mm-label-candidates .thumbnail-item" in script
