"""The Label tab's handlers on a real Services (SQLite, the small demo collection, tiny CLIP):
candidates, marking with authors, undo, walking through pairs, and the keyboard wiring."""

from __future__ import annotations

import dataclasses
import html

import gradio as gr
import pytest

from mmdemo.data.demo import swap_attributes
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.retrieval.label_order import IN_ORDER
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.text import html_text
from mmdemo.ui.app import build_app
from mmdemo.ui.label import handlers as h
from mmdemo.ui.label import team
from mmdemo.ui.label.layout import KEYS, PICK_JS, as_outputs, keys_js
from mmdemo.ui.results import candidates_html, is_skip
from tests.conftest import make_image_bytes, plain


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
    """The tab opened on the demo, walking the pairs in order (hardest first is tested in
    tests/test_ui_label_order.py)."""
    state = h.on_load(services, h.initial_state(services), DEMO_COLLECTION).state
    state = dataclasses.replace(state, order=IN_ORDER)
    return h.open_tab(services, state, DEMO_COLLECTION, progress)


def tile_captions(view: h.LabelView) -> list[str]:
    """The tiles' captions as the list's rows carry them (the page puts them on the tiles)."""
    return [html.unescape(part.split('"')[0]) for part in view.listing.split('data-tile="')[1:]]


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
    assert tile_captions(view) == [caption for _, caption in view.candidates]
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
    assert view.state.selected == 2 and "Selected [3]" in h.selection_html(view.state)
    target = view.state.candidates[2]

    view = h.mark(services, view.state, "negative", "dora")
    labels = services.store.labels_for_pair(pair_id)
    assert [(lab.kind, lab.negative_sha256, lab.author) for lab in labels] == [
        ("negative", target.image_sha256, "dora")
    ]
    assert view.state.candidates[2].label == "negative"
    assert is_skip(view.candidates)  # the tiles get their marks from the list's rows
    assert " ✗ · " in tile_captions(view)[2]
    assert view.state.selected == 3  # the next unlabeled candidate
    assert view.progress.startswith(f"**1 of {train_total(services)}**")
    assert view.undo["visible"] is True

    view = h.mark(services, view.state, "also-positive", "dora")
    assert view.state.candidates[3].label == "also-positive"
    assert " + · " in tile_captions(view)[3]
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
    view = h.open_tab(services, opened(services).state, "three")  # the browser's collection
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


# -- user text is text, candidates you can tell apart, quick actions ---------------------
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_NAME = "<b>x</b>"
LONG = "a very long caption " + "with many many words " * 40


def hostile_collection(services: Services) -> int:
    """A collection with a hostile name, hostile captions and a very long caption."""
    store = services.store
    found = store.find_collection(HOSTILE_NAME)
    if found is not None:
        return found.id
    coll = store.create_collection(HOSTILE_NAME)
    report = ImportReport(coll.name)
    captions = [HOSTILE, f"{HOSTILE} twin", "a plain caption", LONG, "[link](http://x) **bold**"]
    for i, caption in enumerate(captions):
        ingest_item(
            services.store,
            services.settings,
            coll.id,
            report,
            f"{i}.png",
            make_image_bytes((40 * i, 180 - 30 * i, 90)),
            caption,
            "train",
        )
    return coll.id


def pair_with(services: Services, caption: str) -> int:
    cid = hostile_collection(services)
    return next(p.id for p in services.store.list_pairs(cid) if p.caption == caption)


def opened_on(services: Services, name: str) -> h.LabelView:
    state = h.on_load(services, h.initial_state(services), name).state
    return h.open_tab(services, dataclasses.replace(state, order=IN_ORDER), name)


def test_user_text_is_text_in_every_line(services):
    hostile_collection(services)
    view = opened_on(services, HOSTILE_NAME)
    assert view.state.collection == HOSTILE_NAME
    assert "<b>" not in view.progress and plain(view.progress).endswith(f"in “{HOSTILE_NAME}”")
    view = h.goto_pair(services, view.state, pair_with(services, HOSTILE))
    assert "<img" not in view.pair and f"### “{HOSTILE}”" in plain(view.pair)
    assert "<img" not in view.listing and html_text(f"{HOSTILE} twin") in view.listing
    twin = next(i for i, c in enumerate(view.state.candidates) if c.caption == f"{HOSTILE} twin")
    view = h.select(services, view.state, twin)
    line = h.selection_html(view.state)
    assert "<img" not in line and f"“{HOSTILE} twin”" in html.unescape(line)

    view = h.mark(services, view.state, "negative", "<b>eve</b>")
    twin_pair = view.state.candidates[twin].pair_id
    assert "<img" not in view.message and "<b>" not in view.message
    assert plain(view.message) == (
        f"Saved: hard negative: “{HOSTILE} twin” (pair {twin_pair}) for pair "
        f"{view.state.pair_id} (by <b>eve</b>)."
    )
    view = h.clear(services, h.select(services, view.state, twin).state)
    assert plain(view.message) == (
        f"Cleared the label of “{HOSTILE} twin” (pair {twin_pair}) for pair "
        f"{view.state.pair_id} (it was hard negative)."
    )
    assert "Saved" not in view.message

    view = h.add_negative_caption(services, view.state, f"{HOSTILE} swapped", "eve")
    assert "<img" not in view.caption_labels
    assert f"hard negative: “{HOSTILE} swapped”" in plain(view.caption_labels)
    assert "<img" not in view.message


def test_markdown_in_a_caption_stays_text(services):
    view = opened_on(services, HOSTILE_NAME)
    view = h.goto_pair(services, view.state, pair_with(services, "[link](http://x) **bold**"))
    assert "](" not in view.pair.replace("\\](", "") and "**bold**" not in view.pair
    assert "“[link](http://x) **bold**”" in plain(view.pair)


def test_long_captions_are_cut_with_the_whole_text_at_hand(services):
    long_caption = " ".join(LONG.split())
    view = opened_on(services, HOSTILE_NAME)
    view = h.goto_pair(services, view.state, pair_with(services, long_caption))
    heading = view.pair.split("\n\n")[0]
    assert len(plain(heading)) < h.HEADING_CHARS + 10 and plain(heading).endswith("…”")
    assert "<details>" in view.pair and long_caption in plain(view.pair)  # folded out below
    # Shown as a candidate of another pair, the list has the whole caption.
    view = h.goto_pair(services, view.state, pair_with(services, "a plain caption"))
    assert html_text(long_caption) in view.listing
    tile = next(caption for _, caption in view.candidates if "very long" in caption)
    assert len(tile) < 160  # the tile shows the start only


def test_the_list_shows_every_candidate_in_full(services):
    view = opened(services)
    st = view.state
    listing = view.listing
    assert listing.count("<tr data-key=") == len(st.candidates) == h.DEFAULT_K
    assert listing.count("mm-selected") == 1
    assert 'class="mm-selected"' in listing.split('data-key="1"')[1].split("</tr>")[0]
    for number, c in enumerate(st.candidates, start=1):
        row = listing.split(f'<tr data-key="{number}"')[1].split("</tr>")[0]
        assert f"<b>{number}</b>" in row and html_text(c.caption) in row
        assert f">{c.pair_id}<" in row and f">{c.score:.3f}<" in row
        assert ("⚠ maybe correct" in row) == c.possible_false_negative
    view = h.mark(services, h.select(services, st, 1).state, "negative", "ann")
    view = h.mark(services, view.state, "also-positive", "ann")
    rows = view.listing.split("<tr data-key=")[1:]
    assert "✗ hard negative" in rows[1] and "+ also correct" in rows[2]
    assert "mm-selected" in rows[3]  # the selection moved on to the next unlabeled one
    assert "hard negative" not in rows[0] and "also correct" not in rows[3]
    assert "labeled <b>also correct</b>" in h.selection_html(
        h.select(services, view.state, 2).state
    )


def fields_set(view: h.LabelView) -> set[str]:
    return {name for name, value in view._asdict().items() if not is_skip(value)}


def test_quick_actions_change_only_their_outputs_and_rank_nothing(services, monkeypatch):
    calls: list[int] = []
    real = team.load_candidates

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(team, "load_candidates", counting)
    view = opened(services)
    assert len(calls) == 1
    selected = h.select(services, view.state, 4)
    assert fields_set(selected) == set(h.SELECT_OUTPUTS) == {"state"}  # the page shows it
    label_views = [h.mark(services, selected.state, "negative", "ann")]
    label_views.append(h.mark(services, label_views[-1].state, "also-positive", "ann"))
    label_views.append(h.undo(services, label_views[-1].state))
    label_views.append(h.clear(services, h.select(services, label_views[-1].state, 4).state))
    label_views.append(h.undo(services, label_views[-1].state))
    label_views.append(h.add_negative_caption(services, label_views[-1].state, "a swap", "ann"))
    for label_view in label_views:
        assert fields_set(label_view) <= set(h.LABEL_OUTPUTS)
        assert {"listing", "progress", "message"} <= fields_set(label_view)
    assert len(calls) == 1  # no label re-ranked the pair
    assert [c.label for c in label_views[-1].state.candidates][4:6] == ["negative", None]
    assert label_views[-1].state.candidates[4].label_id is not None
    assert services.store.labels_for_pair(view.state.pair_id)[0].kind == "negative"

    after = h.next_pair(services, label_views[-1].state)
    assert len(calls) == 2 and fields_set(after) <= set(h.PAIR_OUTPUTS)
    assert fields_set(h.on_load(services, after.state, DEMO_COLLECTION)) == {"state"}


def test_opening_follows_the_browsers_collection(services):
    view = opened(services)
    view = h.select(services, h.next_pair(services, view.state).state, 3)
    again = h.open_tab(services, view.state, DEMO_COLLECTION)  # same collection: same place
    assert again.state.pair_id == view.state.pair_id and again.state.selected == 3
    assert again.state.history == view.state.history

    hostile_collection(services)
    other = h.open_tab(services, again.state, HOSTILE_NAME)  # another one: start over there
    cid = services.store.collection(HOSTILE_NAME).id
    assert other.state.collection == HOSTILE_NAME and other.state.history == ()
    assert services.store.get_pair(other.state.pair_id).collection_id == cid
    stale = h.open_tab(services, other.state, "deleted meanwhile")  # falls back to the default
    assert stale.state.collection == DEMO_COLLECTION
    assert h.on_load(services, h.initial_state(services), "gone").state.collection == (
        DEMO_COLLECTION
    )


def test_the_tab_wires_no_collection_change_and_quick_events(services):
    demo_app = build_app(services)
    label_fns = [
        f for f in demo_app.fns.values() if f.fn is not None and "build_label" in f.fn.__qualname__
    ]
    browser_states = {b._id for b in demo_app.blocks.values() if isinstance(b, gr.BrowserState)}
    assert label_fns and not [
        f for f in label_fns for target, event in f.targets if target in browser_states
    ]
    # A selection sends nothing: no event listens to the candidates gallery.
    gallery = next(b for b in demo_app.blocks.values() if b.elem_id == "mm-label-candidates")
    assert not [f for f in demo_app.fns.values() for t, _ in f.targets if t == gallery._id]
    by_name = {f.fn.__qualname__.rsplit(".", 1)[-1]: f for f in label_fns}
    for name in ("on_negative", "on_also", "on_clear", "on_undo"):
        assert len(by_name[name].outputs) == len(h.LABEL_OUTPUTS)
        assert by_name[name].show_progress == "hidden" and by_name[name].trigger_mode == "multiple"
    for name in ("on_negative", "on_also", "on_clear"):  # the page's selection goes with them
        assert by_name[name].js == PICK_JS and len(by_name[name].inputs) == 3
    assert all(f.concurrency_id == "label" for f in label_fns if f.queue)


def test_a_label_goes_to_what_the_page_showed(services):
    view = opened(services)
    st = view.state
    assert st.selected == 0
    # The page showed [3] selected (the server had not heard of it): [3] is labeled.
    view = h.mark(services, st, "negative", "ann", picked=2, shown=st.pair_id)
    [label] = services.store.labels_for_pair(st.pair_id)
    assert label.negative_sha256 == st.candidates[2].image_sha256
    assert view.state.selected == 3
    view = h.clear(services, view.state, picked=2, shown=st.pair_id)
    assert services.store.labels_for_pair(st.pair_id) == []
    assert "Cleared the label of" in view.message
    # A key pressed while the next pair was on its way labels nothing.
    later = h.next_pair(services, view.state).state
    refused = h.mark(services, later, "negative", "ann", picked=1, shown=st.pair_id)
    assert "pair changed" in refused.message and fields_set(refused) == {"state", "message"}
    assert services.store.labels_for_pair(later.pair_id) == []
    assert "pair changed" in h.clear(services, later, picked=1, shown=st.pair_id).message


def test_dropdown_and_undo_updates_go_out_only_when_they_change(services):
    view = opened(services)
    assert view.negative_caption["__type__"] == "update" and view.undo["visible"] is False
    first = h.mark(services, view.state, "negative", "ann")
    assert first.undo["visible"] is True and is_skip(first.negative_caption)
    second = h.mark(services, first.state, "negative", "ann")
    assert is_skip(second.undo)  # still visible: nothing to send
    undone = h.undo(services, second.state)
    assert is_skip(undone.negative_caption)  # an image label: the suggestions stay
    # Another demo pair has other suggestions; a pair whose are the same gets a plain value.
    moved = h.next_pair(services, undone.state)
    assert moved.negative_caption["choices"] == list(moved.state.suggested)
    assert is_skip(moved.undo)
    same = h.show_pair(services, moved.state, moved.state.pair_id)
    assert same.negative_caption == moved.state.suggested[0]


def test_the_list_rows_carry_what_the_page_needs_to_show_a_selection(services):
    view = opened(services)
    st = h.select(services, view.state, 2).state
    listing = candidates_html(st.candidates, st.selected, st.pair_id, st.renders)
    c = st.candidates[2]
    assert f'data-pair="{st.pair_id}" data-v="{st.renders}"' in listing  # the table
    row = listing.split('data-key="3"')[1].split(">")[0]
    assert f'data-pair="{c.pair_id}"' in row and ('data-flag="1"' in row) == (
        c.possible_false_negative
    )
    assert 'class="mm-selected"' in row
    # Every drawing differs from the one before, so the page redraws even an unchanged line.
    again = h.mark(services, st, "negative", "ann")
    assert again.state.renders == st.renders + 1 and again.selection != h.selection_html(st)
    assert f'data-v="{again.state.renders}"' in again.selection
