"""Curate's embedding map, its handlers called directly on a real Services (tiny model)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import gradio as gr
import pytest

from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.retrieval.compare import BASE
from mmdemo.retrieval.projection import own_image_ranks
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui.curate import map as m
from mmdemo.ui.curate import splits as sp
from mmdemo.ui.curate.handlers import CurateState
from mmdemo.ui.results import is_skip
from tests.conftest import make_image_bytes, plain


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("map-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "24"}
    )
    services = Services.create(settings)
    yield services
    services.close()


def add_collection(services: Services, name: str, captions: list[str]) -> list[int]:
    coll = services.store.get_or_create_collection(name)
    report = ImportReport(coll.name)
    for i, caption in enumerate(captions):
        colour = ((41 * i + 9) % 256, (83 * i + 5 * len(name)) % 256, (17 * i + 100) % 256)
        ingest_item(
            services.store,
            services.settings,
            coll.id,
            report,
            f"{i}.png",
            make_image_bytes(colour, size=(40 + i % 7, 32 + i // 7)),
            caption,
            "train",
        )
    assert report.added == len(captions), report.rejected
    return report.added_pair_ids


@pytest.fixture
def coll(services: Services, request: pytest.FixtureRequest) -> tuple[str, list[int]]:
    name = request.node.name.replace("test_", "m-")[:60]
    ids = add_collection(services, name, [f"{name} shape {i}" for i in range(10)])
    return name, ids


def payload_of(view: m.MapView) -> dict:
    """The canvas's value (a JSON string) as data."""
    return json.loads(view.plot)


def opened(services: Services, name: str) -> tuple[CurateState, m.MapView]:
    curate = CurateState(collection=name)
    return curate, m.expand(services, curate, m.MapState())


def test_expand_draws_every_pair_coloured_by_split(services, coll):
    name, ids = coll
    services.store.update_pair(ids[2], split="eval")
    services.store.update_pair(ids[5], split="test")
    curate, view = opened(services, name)
    payload = json.loads(view.plot)
    assert view.state.open and view.state.collection == name
    assert payload["collection"] == name
    assert payload["ids"] == ids
    assert len(payload["x"]) == len(payload["y"]) == len(payload["c"]) == 10
    assert all(0.0 <= v <= 1.0 for v in payload["x"] + payload["y"])
    legend = {entry["name"]: entry["count"] for entry in payload["legend"]}
    assert legend == {"train": 8, "eval": 1, "test": 1}
    names = [entry["name"] for entry in payload["legend"]]
    assert names[payload["c"][ids.index(ids[2])]] == "eval"
    assert names[payload["c"][ids.index(ids[5])]] == "test"
    assert "10 pairs · PCA" in plain(view.status)
    assert view.selection == m.HINT
    assert view.model["value"] == BASE  # no finished run yet: the base model

    # Nothing changed: the drawn map is current, the canvas is left alone.
    again = m.refresh(services, curate, view.state)
    assert is_skip(again.plot)
    # A split edit elsewhere in Curate makes it stale: redrawn with the new split.
    services.store.update_pair(ids[0], split="eval")
    redrawn = m.refresh(services, curate, again.state)
    legend = {entry["name"]: entry["count"] for entry in payload_of(redrawn)["legend"]}
    assert legend["eval"] == 2


def test_a_closed_map_computes_nothing(services, coll):
    name, _ = coll
    curate = CurateState(collection=name)
    calls = services.embeddings.encode_calls
    view = m.refresh(services, curate, m.MapState())
    assert is_skip(view.plot) and not view.state.open
    assert services.embeddings.encode_calls == calls
    shown = m.expand(services, curate, m.MapState())
    closed = m.collapse(services, shown.state)
    assert not closed.state.open and all(is_skip(v) for v in closed[1:])


def test_colour_by_label_state(services, coll):
    name, ids = coll
    store = services.store
    other = store.get_pair(ids[7])
    store.add_label(ids[3], "negative", negative_sha256=other.image_sha256)
    curate, view = opened(services, name)
    view = m.change_options(services, curate, view.state, BASE, m.LABEL, "pca", 5)
    names = [entry["name"] for entry in payload_of(view)["legend"]]
    assert {e["name"]: e["count"] for e in payload_of(view)["legend"]} == {
        "labeled": 1,
        "not labeled": 9,
    }
    assert names[payload_of(view)["c"][ids.index(ids[3])]] == "labeled"
    assert is_skip(view.model)  # the dropdown a person used is not written back
    assert "by label state" in plain(view.status)


def test_colour_by_whether_the_model_gets_it_wrong(services, coll):
    name, ids = coll
    curate, view = opened(services, name)
    model = m._load(services, BASE)
    collection = services.store.collection(name)
    ranks = own_image_ranks(
        services.store, services.embeddings, model.model, model.fingerprint, collection.id
    )
    for k in (5, 1):
        view = m.change_options(services, curate, view.state, BASE, m.WRONG, "pca", k)
        names = [entry["name"] for entry in payload_of(view)["legend"]]
        for pid, code in zip(payload_of(view)["ids"], payload_of(view)["c"], strict=True):
            rank = ranks[pid]
            if rank == 1:
                assert names[code] == "right (top 1)"
            elif k == 1:
                assert names[code] == "wrong (not top 1)"
            elif rank <= k:
                assert names[code] == f"in top {k}, not first"
            else:
                assert names[code] == f"not in top {k}"
        assert sum(e["count"] for e in payload_of(view)["legend"]) == len(ids)
    assert len(names) == 2  # k = 1: right or wrong


def test_selection_keeps_only_pairs_of_the_collection(services, coll):
    name, ids = coll
    elsewhere = add_collection(services, name[:50] + "-other", ["another shape"])
    curate, view = opened(services, name)
    chosen = m.select_points(services, curate, view.state, [ids[1], str(ids[4]), "x", *elsewhere])
    assert chosen.state.selected == (ids[1], ids[4])
    assert "2 pairs selected" in plain(chosen.selection)
    assert chosen.move["interactive"] and chosen.move["value"] == "Move 2 selected to"
    assert chosen.label["interactive"]
    assert is_skip(chosen.plot)  # the canvas already shows what the person selected
    # The drawn map stays current with the selection: a refresh redraws nothing.
    assert is_skip(m.refresh(services, curate, chosen.state).plot)
    cleared = m.select_points(services, curate, chosen.state, [])
    assert cleared.state.selected == () and not cleared.move["interactive"]
    assert cleared.selection == m.HINT
    assert m.select_points(services, curate, view.state, None).state.selected == ()


def test_move_selection_to_a_split_and_undo_it_with_the_splits_panel(services, coll):
    name, ids = coll
    store = services.store
    curate, view = opened(services, name)
    state = m.select_points(services, curate, view.state, ids[:3]).state
    result = m.move_selection(services, curate, state, sp.SplitsState(), "test")
    assert [p.split for p in store.get_pairs(ids)] == ["test"] * 3 + ["train"] * 7
    assert "Moved 3 of the 3 selected pairs to test" in plain(result.curate.message)
    assert "test 3" in result.curate.stats
    assert len(result.splits.undo) == 1 and result.splits.undo[-1].action == "move"
    undo_make, undo_move, _ = result.panel
    assert undo_move["visible"] and "Undo move (3 pairs)" in undo_move["value"]
    legend = {e["name"]: e["count"] for e in payload_of(result.map)["legend"]}
    assert legend["test"] == 3  # the open map is redrawn with the new splits
    assert result.map.state.selected == tuple(ids[:3])  # the selection stays for another action

    again = m.move_selection(services, curate, result.map.state, result.splits, "test")
    assert "all in test already" in plain(again.curate.message)
    assert len(again.splits.undo) == 1

    undone = sp.undo_clicked(services, curate, result.splits)
    assert "Undid move" in plain(undone.curate.message)
    assert [p.split for p in store.get_pairs(ids)] == ["train"] * 10


def test_move_needs_a_selection_and_a_split(services, coll):
    name, ids = coll
    curate, view = opened(services, name)
    nothing = m.move_selection(services, curate, view.state, sp.SplitsState(), "eval")
    assert "Select pairs on the map first" in plain(nothing.curate.message)
    state = m.select_points(services, curate, view.state, ids[:1]).state
    wrong = m.move_selection(services, curate, state, sp.SplitsState(), "holdout")
    assert "Choose a split" in plain(wrong.curate.message)
    assert services.store.get_pair(ids[0]).split == "train"


def test_open_in_label_writes_the_label_focus(services, coll):
    name, ids = coll
    curate, view = opened(services, name)
    focus, message = m.open_in_label(services, curate, view.state)
    assert is_skip(focus) and "Select pairs on the map first" in plain(message)
    state = m.select_points(services, curate, view.state, [ids[6], ids[2]]).state
    focus, message = m.open_in_label(services, curate, state)
    assert focus == {"collection": name, "pair_ids": [ids[2], ids[6]]}
    assert "2 pairs of" in plain(message) and "Label" in message


def test_a_click_opens_the_pair_in_the_editor_wherever_the_gallery_is(services, coll):
    name, ids = coll
    # A filter that hides the pair from the gallery: the editor opens it all the same.
    curate = CurateState(collection=name, caption_filter="shape 1")
    view = m.open_point(services, curate, ids[5], None)
    assert view.state.selected == ids[5]
    assert view.caption == f"{name} shape 5"
    assert ids[5] not in view.state.page_ids
    # An unsaved edit of the pair open so far is saved first, as on a gallery click.
    view = m.open_point(services, view.state, ids[6], "a typed caption")
    assert services.store.get_pair(ids[5]).caption == "a typed caption"
    assert view.state.selected == ids[6]
    # A pair of another collection, or no pair at all, opens nothing.
    elsewhere = add_collection(services, name[:50] + "-else", ["elsewhere"])
    refused = m.open_point(services, view.state, elsewhere[0], None)
    assert refused.state.selected == ids[6]
    assert "not in this collection" in plain(refused.message)
    assert "names no pair" in plain(m.open_point(services, view.state, "?", None).message)


def test_pair_card_gives_the_caption_as_plain_text_and_the_thumbnail_url(services, coll):
    name, ids = coll
    services.store.update_pair(ids[0], caption="<b>x</b> & more")
    card = m.pair_card(services, ids[0])
    assert card["caption"] == "<b>x</b> & more"  # the canvas sets it as text, unescaped
    assert card["meta"] == f"pair {ids[0]} · train"
    assert card["thumb"].startswith("/gradio_api/file=")
    assert card["thumb"].endswith(".thumb.jpg")
    services.store.delete_pair(ids[1])
    assert m.pair_card(services, ids[1]) is None
    assert m.pair_card(services, "nope") is None


def test_the_map_follows_the_curate_collection(services, coll):
    name, ids = coll
    curate, view = opened(services, name)
    state = m.select_points(services, curate, view.state, ids[:2]).state
    other = name[:50] + "-next"
    add_collection(services, other, ["one", "two", "three"])
    switched = m.refresh(services, CurateState(collection=other), state)
    assert switched.state.collection == other
    assert switched.state.selected == ()  # a selection never crosses collections
    assert len(payload_of(switched)["ids"]) == 3


def test_the_newest_finished_run_is_the_default_model(tmp_path):
    settings = Settings.from_env(
        {
            "MMDEMO_HOME": str(tmp_path / "home"),
            "MMDEMO_BASE_MODEL": "tiny",
            "MMDEMO_DEMO_PAIRS": "8",
        }
    )
    services = Services.create(settings)
    try:
        state = m.MapState()
        assert m.model_key(services, state) == BASE
        # A finished run that saved a model (here the tiny model's folder, as a run saves it).
        run_dir = settings.runs_dir / "round-1"
        shutil.copytree(Path(services.model.spec), run_dir / "model")
        demo = services.store.collection("demo-shapes")
        services.store.create_run("round-1", demo.id, services.model.spec, str(run_dir))
        assert m.model_key(services, state) == BASE  # queued, not finished: not offered
        services.store.update_run("round-1", status="finished", finished=True)
        assert m.model_key(services, state) == "run:round-1"
        dropdown = m.model_dropdown(services, state)
        assert dropdown["value"] == "run:round-1"
        assert ("Run: round-1", "run:round-1") in dropdown["choices"]
        # A person's choice sticks; a choice that is gone falls back to the default.
        assert m.model_key(services, dataclasses.replace(state, model=BASE)) == BASE
        gone = dataclasses.replace(state, model="run:gone")
        assert m.model_key(services, gone) == "run:round-1"
        view = m.expand(services, CurateState(collection="demo-shapes"), state)
        assert "Run: round-1" in plain(view.status)
    finally:
        services.close()


def test_the_curate_tab_mounts_the_map(services):
    from mmdemo.ui.app import build_app

    demo = build_app(services)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"mm-map-panel", "mm-map", "mm-map-move", "mm-map-label"} <= ids
    assert isinstance(
        next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "mm-map"),
        gr.HTML,
    )
