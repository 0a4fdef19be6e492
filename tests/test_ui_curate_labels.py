"""Hard-negative labels from the Curate tab's pair editor: the base model's look-alikes for the
opened pair's caption, marked on a real Services (SQLite, the small demo collection, tiny CLIP)."""

from __future__ import annotations

import gradio as gr
from gradio.helpers import special_args
from gradio.utils import get_type_hints

from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.ui.app import build_app
from mmdemo.ui.curate import handlers as h
from mmdemo.ui.curate import lookalikes as lk
from mmdemo.ui.curate.layout import lookalike_outputs
from mmdemo.ui.results import is_skip
from tests.conftest import plain
from tests.space import ALICE

pytest_plugins = ["tests.space"]


def opened(services: Services) -> h.CurateState:
    """The Curate state with the first train pair of the demo collection open in the editor."""
    state = h.render(services, h.CurateState(collection=DEMO_COLLECTION)).state
    index = next(
        i
        for i, pair_id in enumerate(state.page_ids)
        if services.store.get_pair(pair_id).split == "train"
    )
    view = h.open_pair(services, state, index)
    assert view.state.selected == state.page_ids[index]
    return view.state


def loaded(services: Services, state: h.CurateState) -> lk.LookalikeView:
    return lk.find_lookalikes(services, state, lk.LookalikeState())


def test_look_alikes_load_for_the_opened_pair_without_its_own_image(local):
    state = opened(local)
    pair = local.store.get_pair(state.selected)
    calls: list = []
    view = lk.find_lookalikes(
        local,
        state,
        lk.LookalikeState(),
        lambda value, desc=None, **kw: calls.append(desc),
    )
    looks = view.lookalikes
    assert looks.pair_id == pair.id
    assert len(looks.candidates) == lk.LOOKALIKES_K == len(view.candidates)
    assert all(c.image_sha256 != pair.image_sha256 for c in looks.candidates)
    assert {local.store.get_pair(c.pair_id).split for c in looks.candidates} == {"train"}
    assert view.candidates[0][1].startswith("[1] ")
    assert looks.selected is None and "Click a look-alike" in view.selection
    assert any(desc and desc.startswith("Loading") for desc in calls)
    assert is_skip(view.stats) and is_skip(view.labels)  # nothing written, nothing refreshed
    outputs = lookalike_outputs(view)
    assert len(outputs) == len(lk.LookalikeView._fields)
    assert isinstance(outputs[lk.LookalikeView._fields.index("candidates")], gr.Gallery)


def test_mark_hard_negative_then_undo(local):
    state = opened(local)
    looks = loaded(local, state).lookalikes
    refused = lk.mark_lookalike(local, state, looks, "negative")
    assert "Click a look-alike first" in plain(refused.message)
    assert local.store.labels_for_pair(state.selected) == []

    looks = lk.select_lookalike(local, looks, 2).lookalikes
    target = looks.candidates[2]
    view = lk.mark_lookalike(local, state, looks, "negative")
    labels = local.store.labels_for_pair(state.selected)
    assert [(lab.kind, lab.negative_sha256, lab.author) for lab in labels] == [
        ("negative", target.image_sha256, "local")
    ]
    assert "(by local)" in view.message
    assert "**1 labeled negative**" in view.stats
    assert "hard negative: <img" in view.labels and "**Labels (1)**" in view.labels
    assert view.lookalikes.candidates[2].label == "negative"
    assert " ✗ " in view.candidates[2][1]
    assert view.lookalikes.selected == 2 and view.undo["visible"] is True

    undone = lk.undo_lookalike(local, state, view.lookalikes)
    assert local.store.labels_for_pair(state.selected) == []
    assert undone.message.startswith("Undone: hard negative")
    assert "**0 labeled negatives**" in undone.stats
    assert undone.labels == "No hard-negative labels for this pair yet."
    assert undone.lookalikes.candidates[2].label is None
    assert undone.undo["visible"] is False
    assert "Nothing to undo" in lk.undo_lookalike(local, state, undone.lookalikes).message


def test_mark_also_correct(local):
    state = opened(local)
    looks = lk.select_lookalike(local, loaded(local, state).lookalikes, 0).lookalikes
    view = lk.mark_lookalike(local, state, looks, "also-positive")
    labels = local.store.labels_for_pair(state.selected)
    assert [(lab.kind, lab.negative_sha256) for lab in labels] == [
        ("also-positive", looks.candidates[0].image_sha256)
    ]
    assert "also-positive" in view.stats and "**0 labeled negatives**" in view.stats
    assert "also correct: <img" in view.labels and "(pair " in view.labels
    assert " + " in view.candidates[0][1]


def test_on_a_space_a_visitor_without_login_is_refused(space):
    state = opened(space)
    looks = lk.select_lookalike(space, loaded(space, state).lookalikes, 1).lookalikes
    view = lk.mark_lookalike(space, state, looks, "negative")
    assert "Log in with your Hugging Face account" in view.message
    assert view.lookalikes == looks and is_skip(view.stats) and is_skip(view.candidates)
    assert space.store.labels_for_pair(state.selected) == []

    marked = lk.mark_lookalike(space, state, looks, "negative", ALICE)
    assert [lab.author for lab in space.store.labels_for_pair(state.selected)] == ["alice"]
    refused = lk.undo_lookalike(space, state, marked.lookalikes)
    assert "Log in" in refused.message
    assert len(space.store.labels_for_pair(state.selected)) == 1
    lk.undo_lookalike(space, state, marked.lookalikes, ALICE)
    assert space.store.labels_for_pair(state.selected) == []


def test_loading_is_lazy_and_follows_the_opened_pair(local):
    state = opened(local)
    # A pair opened with the accordion closed: nothing loads.
    closed = lk.pair_changed(local, state, lk.LookalikeState())
    assert closed.lookalikes.pair_id is None and closed.candidates == []
    assert "Find look-alikes" in closed.message
    # Opening the accordion loads them; opening it again does not reload.
    first = lk.expand_lookalikes(local, state, closed.lookalikes)
    assert first.lookalikes.opened and first.lookalikes.pair_id == state.selected
    again = lk.expand_lookalikes(local, state, first.lookalikes)
    assert is_skip(again.candidates) and again.lookalikes.candidates == first.lookalikes.candidates
    # Another pair opened while the accordion is open: its look-alikes load at once.
    other = h.open_pair(local, state, state.page_ids.index(state.selected) + 1).state
    moved = lk.pair_changed(local, other, first.lookalikes)
    assert moved.lookalikes.pair_id == other.selected != state.selected
    # Closed again: the next pair's candidates are dropped, not loaded.
    shut = lk.collapse_lookalikes(local, moved.lookalikes).lookalikes
    assert not shut.opened
    dropped = lk.pair_changed(local, state, shut)
    assert dropped.lookalikes.pair_id is None and dropped.lookalikes.candidates == ()
    assert "Open a pair first" in lk.find_lookalikes(local, h.CurateState(), shut).message


def test_the_panel_is_wired_with_the_login(local):
    """The write buttons get the Space login from Gradio, like the other Curate writes."""
    demo = build_app(local)
    writers: dict[str, int] = {}
    for block_fn in demo.fns.values():
        name = getattr(block_fn.fn, "__name__", "")
        if not name.startswith("on_look_"):
            continue
        if gr.OAuthProfile | None in get_type_hints(block_fn.fn).values():
            writers[name] = writers.get(name, 0) + 1
            inputs = [object() for _ in block_fn.inputs]
            filled, *_ = special_args(block_fn.fn, list(inputs), request=None)
            assert None in filled and len(filled) > len(inputs), name  # off a Space: None
    assert writers == {"on_look_negative": 1, "on_look_also": 1, "on_look_undo": 1}
