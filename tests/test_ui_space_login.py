"""On a Hugging Face Space every handler that writes to collections needs a logged-in visitor,
whose name is saved as the author; the server's own files cannot be imported there. Locally
the same handlers work without a login. Real Services (SQLite, images, the tiny CLIP)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gradio as gr
import pytest
from gradio.helpers import special_args
from gradio.utils import get_type_hints

from mmdemo.data.demo import swap_attributes
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.hub.publish import on_space
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.ui.app import build_app
from mmdemo.ui.compare import handlers as compare
from mmdemo.ui.curate import handlers as curate
from mmdemo.ui.curate import importing as curate_import
from mmdemo.ui.curate.handlers import CurateState
from mmdemo.ui.label import handlers as label
from tests.conftest import make_image_bytes
from tests.space import ALICE

pytest_plugins = ["tests.space"]

LOGIN = "Log in with your Hugging Face account"


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A collection name unique to the test."""
    return request.node.name.replace("test_", "c-")[:60]


def snapshot(services: Services) -> list:
    """Everything a write could change: collections, their pairs and labels, with authors."""
    store = services.store
    return [
        (
            c.name,
            [(p.id, p.caption, p.split, p.author) for p in store.list_pairs(c.id)],
            [
                (
                    lab.id,
                    lab.pair_id,
                    lab.kind,
                    lab.negative_sha256,
                    lab.negative_caption,
                    lab.author,
                )
                for lab in store.labels_for_collection(c.id)
            ],
        )
        for c in store.list_collections()
    ]


def add_pairs(services: Services, collection: str, captions: list[str]) -> list[int]:
    coll = services.store.get_or_create_collection(collection)
    report = ImportReport(coll.name)
    for i, caption in enumerate(captions):
        color = (40 * i % 256, 90 + 7 * len(collection) % 100, 200 - 13 * i % 150)
        data = make_image_bytes(color, size=(36 + i, 30))
        ingest_item(
            services.store, services.settings, coll.id, report, f"{i}.png", data, caption, "train"
        )
    assert report.added == len(captions), report.rejected
    return report.added_pair_ids


def refused(services: Services, before: list, message: str) -> None:
    assert LOGIN in message, message
    assert snapshot(services) == before, "a refused write changed the store"


def image_files(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"upload-{i}.png"
        path.write_bytes(make_image_bytes((200 - 30 * i, 20 + 40 * i, 90), size=(44, 40 + i)))
        paths.append(str(path))
    return paths


def zip_of_pairs(path: Path, captions: list[str]) -> Path:
    """An imagefolder zip (images + metadata.jsonl): a source on the server's disk."""
    with zipfile.ZipFile(path, "w") as archive:
        rows = []
        for i, caption in enumerate(captions):
            archive.writestr(f"{i}.png", make_image_bytes((10 + 60 * i, 150, 30 * i), (48, 40)))
            rows.append(json.dumps({"file_name": f"{i}.png", "text": caption}))
        archive.writestr("metadata.jsonl", "\n".join(rows) + "\n")
    return path


def do_import(services: Services, collection: str, files=None, source=None, profile=None):  # noqa: ANN001, ANN201
    return curate_import.import_files(
        services,
        CurateState(collection=collection),
        files,
        "an uploaded picture",
        source,
        "",
        "",
        curate_import.SPLIT_FROM_DATA,
        profile=profile,
    )


# -- Curate ----------------------------------------------------------------------------------------
def test_collection_writes_need_a_login_on_a_space(space, name):
    assert on_space(space.settings)
    before = snapshot(space)
    state = CurateState(collection=DEMO_COLLECTION)
    refused(space, before, curate.create_collection(space, state, name).message)
    refused(space, before, curate.rename_collection(space, state, name).message)
    asked = curate.ask_delete_collection(space, state)
    refused(space, before, asked.message)
    assert asked.state.pending_delete is None and asked.confirm["visible"] is False

    view = curate.create_collection(space, state, name, ALICE)
    assert view.state.collection == name and space.store.find_collection(name) is not None
    view = curate.rename_collection(space, view.state, name + "-2", ALICE)
    assert view.state.collection == name + "-2"

    pending = curate.ask_delete_collection(space, view.state, ALICE).state
    assert pending.pending_delete == name + "-2"
    before = snapshot(space)
    view = curate.confirm_delete_collection(space, pending)  # the visitor logged out meanwhile
    refused(space, before, view.message)
    view = curate.confirm_delete_collection(space, pending, ALICE)
    assert "Deleted collection" in view.message
    assert space.store.find_collection(name + "-2") is None


def test_pair_edits_need_a_login_on_a_space(space, name):
    pair_id = add_pairs(space, name, ["a red square", "a blue circle"])[0]
    state = CurateState(collection=name, selected=pair_id)
    before = snapshot(space)
    refused(space, before, curate.save_pair(space, state, "changed", "eval").message)
    view = curate.save_pair(space, state, None, "test")  # the split radio alone
    refused(space, before, view.message)
    assert view.caption == gr.skip(), "a refusal leaves the caption being typed alone"
    refused(space, before, curate.delete_pair(space, state).message)

    view = curate.save_pair(space, state, "a red square, edited", "eval", ALICE)
    pair = space.store.get_pair(pair_id)
    assert (pair.caption, pair.split) == ("a red square, edited", "eval")

    view = curate.delete_pair(space, view.state, ALICE)
    assert view.state.last_deleted == pair_id
    before = snapshot(space)
    refused(space, before, curate.undo_delete(space, view.state).message)
    assert pair_id not in [p.id for p in space.store.list_pairs(space.store.collection(name).id)]
    view = curate.undo_delete(space, view.state, ALICE)
    assert view.state.selected == pair_id and "Restored" in view.message


def test_uploads_import_with_the_visitor_as_author(space, name, tmp_path):
    space.store.create_collection(name)
    files = image_files(tmp_path / "gradio-upload", 3)
    before = snapshot(space)
    outcome = do_import(space, name, files=files)
    refused(space, before, outcome.summary)
    assert outcome.rejected.empty

    outcome = do_import(space, name, files=files, profile=ALICE)
    pairs = space.store.list_pairs(space.store.collection(name).id)
    assert [(p.caption, p.author) for p in pairs] == [("an uploaded picture", "alice")] * 3
    assert "3" in outcome.summary and outcome.rejected.empty

    # A zip uploaded through the browser is a temp file too: it imports, authored by the visitor.
    bundle = zip_of_pairs(tmp_path / "gradio-upload" / "more.zip", ["a green star", "a dot"])
    do_import(space, name, files=[str(bundle)], profile=ALICE)
    pairs = space.store.list_pairs(space.store.collection(name).id)
    assert len(pairs) == 5 and {p.author for p in pairs} == {"alice"}


def test_server_paths_cannot_be_imported_on_a_space(space, name, tmp_path, monkeypatch):
    space.store.create_collection(name)
    on_disk = zip_of_pairs(tmp_path / "pairs.zip", ["a yellow lemon", "a white cloud"])
    folder = tmp_path / "owner" / "name"  # a folder that looks like a Hub dataset id
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    uploads = image_files(tmp_path / "gradio-upload", 1)
    before = snapshot(space)
    for typed in (str(on_disk), "pairs.zip", str(tmp_path), "/etc/passwd", "owner/name", "a/.."):
        outcome = do_import(space, name, files=uploads, source=typed, profile=ALICE)
        assert curate_import.SPACE_SOURCES in outcome.summary, (typed, outcome.summary)
        assert snapshot(space) == before, f"{typed!r} was imported on a Space"

    assert curate_import.hub_dataset_id("someone/pairs") == "someone/pairs"
    assert curate_import.hub_dataset_id("hf://datasets/someone/pairs") == "someone/pairs"
    assert curate_import.hub_dataset_id("owner/name") is None  # names a local folder here
    assert curate_import.hub_dataset_id("/data/pairs.csv") is None
    # A Hub id is let through to the Hub (offline here, so it fails as a source, not as a path).
    outcome = do_import(space, name, source="someone/pairs", profile=ALICE)
    assert curate_import.SPACE_SOURCES not in outcome.summary
    assert outcome.rejected["Item"].tolist() == ["someone/pairs"]
    assert snapshot(space) == before


def test_locally_the_same_writes_need_no_login(local, name, tmp_path):
    assert not on_space(local.settings)
    state = CurateState(collection=DEMO_COLLECTION)
    view = curate.create_collection(local, state, name)
    view = curate.rename_collection(local, view.state, name + "-x")
    assert local.store.find_collection(name + "-x") is not None

    outcome = do_import(local, name + "-x", files=image_files(tmp_path / "up", 2))
    on_disk = zip_of_pairs(tmp_path / "pairs.zip", ["a yellow lemon", "a white cloud"])
    outcome = do_import(local, name + "-x", source=str(on_disk))  # a server path: fine locally
    assert outcome.rejected.empty
    pairs = local.store.list_pairs(local.store.collection(name + "-x").id)
    assert len(pairs) == 4 and {p.author for p in pairs} == {None}

    selected = CurateState(collection=name + "-x", selected=pairs[0].id)
    view = curate.save_pair(local, selected, "edited locally", None)
    assert local.store.get_pair(pairs[0].id).caption == "edited locally"
    view = curate.undo_delete(local, curate.delete_pair(local, view.state).state)
    assert "Restored" in view.message
    pending = curate.ask_delete_collection(local, view.state).state
    assert "Deleted" in curate.confirm_delete_collection(local, pending).message


# -- Label -----------------------------------------------------------------------------------------
def label_opened(services: Services) -> label.LabelView:
    state = label.on_load(services, label.initial_state(services), DEMO_COLLECTION).state
    return label.open_tab(services, state)


def test_label_writes_need_a_login_on_a_space(space):
    st = label_opened(space).state
    assert st.pair_id is not None and st.selected == 0
    before = snapshot(space)
    refused(space, before, label.mark(space, st, "negative").message)
    refused(space, before, label.mark(space, st, "also-positive", "someone").message)
    refused(space, before, label.add_negative_caption(space, st, "a blue square").message)

    view = label.mark(space, st, "negative", profile=ALICE)
    labels = space.store.labels_for_pair(st.pair_id)
    assert [(lab.kind, lab.author) for lab in labels] == [("negative", "alice")]
    assert "(by alice)" in view.message
    # On a Space the login is the author, whatever a caller passes.
    caption = swap_attributes(space.store.get_pair(st.pair_id).caption)
    view = label.add_negative_caption(space, view.state, caption, "mallory", ALICE)
    assert {lab.author for lab in space.store.labels_for_pair(st.pair_id)} == {"alice"}

    before = snapshot(space)
    refused(space, before, label.undo(space, view.state).message)
    view = label.undo(space, view.state, profile=ALICE)
    assert "Undone" in view.message and len(space.store.labels_for_pair(st.pair_id)) == 1

    marked = label.select(space, view.state, 0).state
    assert marked.candidates[0].label_id is not None
    before = snapshot(space)
    refused(space, before, label.clear(space, marked).message)
    label.clear(space, marked, ALICE)
    assert space.store.labels_for_pair(st.pair_id) == []


def test_label_writes_locally_are_by_local(local):
    st = label_opened(local).state
    label.mark(local, st, "negative")
    label.add_negative_caption(local, st, "a caption that is wrong")
    assert [lab.author for lab in local.store.labels_for_pair(st.pair_id)] == ["local"] * 2


# -- Compare ---------------------------------------------------------------------------------------
def compare_selected(services: Services) -> compare.CompareState:
    """A caption query for an eval pair, with a result that is not its own image selected."""
    demo = services.store.collection(DEMO_COLLECTION)
    pair = services.store.list_pairs(demo.id, split="eval")[0]
    state = compare.on_load(services, compare.initial_state(services), DEMO_COLLECTION).state
    view = compare.search_text(
        services, compare.open_tab(services, state, 8, None).state, pair.caption, 8
    )
    index = next(i for i, hit in enumerate(view.state.hits_a) if not hit.positive)
    st = compare.select_hit(services, view.state, "a", index).state
    assert st.anchor == pair.id
    return st


def test_compare_writes_need_a_login_on_a_space(space):
    st = compare_selected(space)
    before = snapshot(space)
    refused(space, before, compare.mark(space, st, "negative").message)
    refused(space, before, compare.mark(space, st, "also-positive", "local").message)
    refused(space, before, compare.add_negative_caption(space, st, "a wrong caption").message)

    view = compare.mark(space, st, "negative", profile=ALICE)
    assert [lab.author for lab in space.store.labels_for_pair(st.anchor)] == ["alice"]
    assert "(by alice)" in view.message
    view = compare.add_negative_caption(space, view.state, "a wrong caption", profile=ALICE)
    labels = space.store.labels_for_pair(st.anchor)
    assert [(lab.negative_caption, lab.author) for lab in labels] == [
        (None, "alice"),
        ("a wrong caption", "alice"),
    ]
    before = snapshot(space)
    refused(space, before, compare.undo(space, view.state).message)
    compare.undo(space, view.state, ALICE)
    assert len(space.store.labels_for_pair(st.anchor)) == 1


def test_compare_writes_locally_are_by_local(local):
    st = compare_selected(local)
    view = compare.mark(local, st, "negative")
    assert "(by local)" in view.message
    assert [lab.author for lab in local.store.labels_for_pair(st.anchor)] == ["local"]
    compare.undo(local, view.state)
    assert local.store.labels_for_pair(st.anchor) == []


# -- wiring ----------------------------------------------------------------------------------------
WRITERS = {
    # Curate
    "on_create": 1,
    "on_rename": 1,
    "on_ask_delete": 1,
    "on_confirm_delete": 1,
    "on_save": 1,
    "on_split": 1,
    "on_leave_caption": 1,  # leaving the caption box saves it
    "on_delete_pair": 1,
    "on_import": 1,
    "on_undo": 6,  # Curate, Label, Compare, the Splits panel's undo of a split and of a move,
    # and the Data checks' undo of a leak fix
    "on_make": 1,  # the Splits panel makes splits
    "on_move": 2,  # the Splits panel's and the embedding map's move to a split
    "on_fix": 1,  # the Data checks move leaking groups into one split
    # Label and Compare
    "on_negative": 2,
    "on_also": 2,
    "on_clear": 1,
    "on_caption": 1,  # Label's (Compare's on_caption picks a query)
    "on_caption_negative": 1,
}


def test_every_write_event_gets_the_login_from_gradio(local):
    """Gradio fills an argument typed ``gr.OAuthProfile | None`` (not an event input)."""
    demo = build_app(local)
    found: dict[str, int] = {}
    for block_fn in demo.fns.values():
        hints = get_type_hints(block_fn.fn)
        if gr.OAuthProfile | None not in hints.values():
            continue
        name = block_fn.fn.__name__
        found[name] = found.get(name, 0) + 1
        inputs = [object() for _ in block_fn.inputs]
        filled, *_ = special_args(block_fn.fn, list(inputs), request=None)
        assert None in filled and len(filled) > len(inputs), name  # off a Space: None
    assert {k: v for k, v in found.items() if k in WRITERS} == WRITERS
