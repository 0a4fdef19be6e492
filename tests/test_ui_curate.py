"""The Curate tab's handlers, called directly on a real Services (SQLite, images, tiny model)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest

from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.ui.app import build_app, header_html, launch_options
from mmdemo.ui.curate import handlers as h
from mmdemo.ui.curate import importing as imp
from mmdemo.ui.curate.handlers import PAGE_SIZE, CurateState
from mmdemo.ui.curate.layout import as_outputs
from mmdemo.ui.results import is_skip
from tests.conftest import make_image_bytes, plain

DEMO_PAIRS = 24


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    """One app's services for the module (the tiny model builds once); tests use own collections."""
    home = tmp_path_factory.mktemp("curate-home")
    settings = Settings.from_env(
        {
            "MMDEMO_HOME": str(home),
            "MMDEMO_BASE_MODEL": "tiny",
            "MMDEMO_DEMO_PAIRS": str(DEMO_PAIRS),
        }
    )
    services = Services.create(settings)
    yield services
    services.close()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A collection name unique to the test."""
    return request.node.name.replace("test_", "c-")


def _color(i: int) -> tuple[int, int, int]:
    return (17 * i % 256, 101 * i % 256, 53 * i % 256)


def add_pairs(services: Services, collection: str, captions: list[str], split: str = "train"):
    """Add real image–caption pairs (distinct images) and return their ids in order."""
    coll = services.store.get_or_create_collection(collection)
    report = ImportReport(coll.name)
    seed = len(services.store.list_pairs(coll.id)) + 1000 * len(collection)
    for i, caption in enumerate(captions):
        color = _color(seed + i)
        ingest_item(
            services.store,
            services.settings,
            coll.id,
            report,
            f"{i}.png",
            make_image_bytes(color, size=(40 + i % 7, 32)),
            caption,
            split,
        )
    assert report.added == len(captions), report.rejected
    return report.added_pair_ids


def state_for(collection: str) -> CurateState:
    return CurateState(collection=collection)


def png(color: tuple[int, int, int]) -> bytes:
    return make_image_bytes(color)


# -- the shell -----------------------------------------------------------------------------------
def test_services_create_marks_interrupted_runs_and_makes_the_demo(services, tmp_path):
    services.store.create_run("left-running", None, "tiny", str(tmp_path), status="running")
    # A second process start on the same home: the tiny model is already built there.
    again = Services.create(services.settings)
    try:
        assert again.store.get_run("left-running").status == "interrupted"
        demo = again.store.collection(DEMO_COLLECTION)
        assert again.store.count_pairs(demo.id) == DEMO_PAIRS
        assert again.model.is_tiny and "tiny" in again.model.label
    finally:
        again.close()


def test_services_create_without_demo(tmp_path, services):
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(tmp_path / "h"), "MMDEMO_BASE_MODEL": services.model.spec}
    )
    fresh = Services.create(settings, demo=False)
    try:
        assert fresh.store.list_collections() == []
        assert fresh.model.spec == services.model.spec and not fresh.model.is_tiny
        assert h.render(fresh, h.initial_state(fresh)).stats.startswith("No collection yet")
    finally:
        fresh.close()


def test_app_header_tabs_and_launch_options(services):
    header = header_html(services)
    assert "mmdemo" in header and services.model.label in header
    assert "MMDEMO_BASE_MODEL=tiny" in header  # the reason, not only the name
    demo = build_app(services)
    assert isinstance(demo, gr.Blocks)
    labels = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert labels[0] == "Curate"
    options = launch_options(services.settings)
    # Only the images and the dry-run zips may be served, both under MMDEMO_HOME.
    assert options["allowed_paths"] == [
        str(services.settings.images_dir),
        str(services.settings.downloads_dir),
    ]
    assert options["max_file_size"] == services.settings.max_upload_mb * 1024 * 1024
    assert demo.analytics_enabled is False


# -- collections ---------------------------------------------------------------------------------
def test_default_selection_is_the_demo_collection(services):
    view = h.render(services, h.initial_state(services))
    assert view.state.collection == DEMO_COLLECTION
    assert len(view.gallery) == DEMO_PAIRS
    assert all(Path(path).is_file() and path.endswith(".thumb.jpg") for path, _ in view.gallery)
    assert view.page_label == f"Page 1 of 1 · {DEMO_PAIRS} pairs"
    assert f"**{DEMO_PAIRS} pairs**" in view.stats
    assert view.editor["visible"] is False and view.placeholder["visible"] is True
    assert DEMO_COLLECTION in view.picker["choices"]


def test_create_rename_and_delete_with_confirmation(services, name):
    view = h.create_collection(services, h.initial_state(services), name)
    assert view.state.collection == name and name in view.picker["choices"]
    assert view.gallery == [] and "Created" in view.message

    with pytest.warns(UserWarning, match="already exists"):
        dup = h.create_collection(services, view.state, name)
    assert "already exists" in dup.message and dup.state.collection == name

    renamed = h.rename_collection(services, view.state, f"{name}-2")
    assert renamed.state.collection == f"{name}-2"
    assert services.store.find_collection(name) is None
    add_pairs(services, f"{name}-2", ["one", "two", "three"])

    asked = h.ask_delete_collection(services, renamed.state)
    assert asked.confirm["visible"] is True and asked.cancel["visible"] is True
    assert asked.confirm["value"] == f"Really delete “{name}-2” and its 3 pairs?"
    assert services.store.find_collection(f"{name}-2") is not None  # nothing deleted yet

    cancelled = h.cancel_delete_collection(services, asked.state)
    assert cancelled.confirm["visible"] is False
    assert services.store.find_collection(f"{name}-2") is not None

    asked = h.ask_delete_collection(services, cancelled.state)
    gone = h.confirm_delete_collection(services, asked.state)
    assert services.store.find_collection(f"{name}-2") is None
    assert gone.state.collection == DEMO_COLLECTION and f"{name}-2" not in gone.picker["choices"]
    assert gone.confirm["visible"] is False


def test_confirm_deletes_the_collection_named_when_asked(services, name):
    add_pairs(services, name, ["kept?"])
    add_pairs(services, f"{name}-other", ["other"])
    asked = h.ask_delete_collection(services, state_for(name))
    # The person switches collection before confirming: the switch cancels the pending delete.
    switched = h.switch_collection(services, asked.state, f"{name}-other")
    assert switched.confirm["visible"] is False
    h.confirm_delete_collection(services, switched.state)
    assert services.store.find_collection(name) is not None
    assert services.store.find_collection(f"{name}-other") is not None


def test_on_load_reopens_the_remembered_collection(services, name):
    add_pairs(services, name, ["remembered"])
    view = h.on_load(services, h.initial_state(services), name)
    assert view.state.collection == name and view.gallery[0][1] == "remembered"
    unknown = h.on_load(services, h.initial_state(services), "no-such-collection")
    assert unknown.state.collection == DEMO_COLLECTION


# -- gallery -------------------------------------------------------------------------------------
def test_pagination_and_filters(services, name):
    captions = [f"item {i:02d}" for i in range(PAGE_SIZE + 2)]
    add_pairs(services, name, captions[:-2])
    add_pairs(services, name, ["item 48 eval", "item 49 eval"], split="eval")
    view = h.switch_collection(services, h.initial_state(services), name)
    assert len(view.gallery) == PAGE_SIZE and view.page_label.startswith("Page 1 of 2")
    assert view.prev["interactive"] is False and view.next["interactive"] is True

    second = h.change_page(services, view.state, +1)
    assert [c for _, c in second.gallery] == ["[eval] item 48 eval", "[eval] item 49 eval"]
    assert second.page_label == "Page 2 of 2 · 50 pairs" and second.next["interactive"] is False
    assert second.caption == gr.skip()  # paging leaves the editor alone
    assert h.change_page(services, second.state, +5).state.page == 1  # clamped

    one = h.set_filter(services, second.state, "item 07", "all")
    assert one.state.page == 0 and [c for _, c in one.gallery] == ["item 07"]
    assert one.page_label == "Page 1 of 1 · 1 pair match the filter"
    evals = h.set_filter(services, one.state, "", "eval")
    assert len(evals.gallery) == 2
    none = h.set_filter(services, evals.state, "100%_", "all")  # LIKE wildcards are literal
    assert none.gallery == [] and none.page_label.startswith("Page 1 of 1 · 0 pairs")


# -- the pair editor -----------------------------------------------------------------------------
def test_open_edit_save_and_reload_shows_the_edit(services, name):
    ids = add_pairs(services, name, ["a red square", "a blue circle"])
    view = h.switch_collection(services, h.initial_state(services), name)
    opened = h.open_pair(services, view.state, 1)
    assert opened.state.selected == ids[1]
    assert opened.editor["visible"] is True and opened.caption == "a blue circle"
    assert Path(opened.image).is_file() and opened.split == "train"

    saved = h.save_pair(services, opened.state, "a big blue circle", "eval")
    assert "Saved" in saved.message and saved.caption == "a big blue circle"
    assert saved.split == "eval" and "eval 1" in saved.stats

    # A reload is a fresh session state: everything comes from SQLite.
    fresh = h.set_filter(services, state_for(name), "big blue", "all")
    assert [c for _, c in fresh.gallery] == ["[eval] a big blue circle"]
    assert h.open_pair(services, fresh.state, 0).caption == "a big blue circle"

    only_split = h.save_pair(services, saved.state, None, "test")
    assert only_split.caption == "a big blue circle" and only_split.split == "test"


def test_save_errors_become_messages(services, name):
    add_pairs(services, name, ["keep me"])
    opened = h.open_pair(services, h.switch_collection(services, state_for(name), name).state, 0)
    with pytest.warns(UserWarning, match="Blank caption"):
        view = h.save_pair(services, opened.state, "   ", "train")
    assert "Blank caption" in view.message
    assert services.store.get_pair(opened.state.selected).caption == "keep me"
    with pytest.warns(UserWarning, match="Select a pair"):
        h.save_pair(services, state_for(name), "x", "train")
    stale = h.open_pair(services, opened.state, 7)  # index beyond the page
    assert stale.state.selected == opened.state.selected and "gone" in stale.message


def test_delete_pair_and_undo(services, name):
    ids = add_pairs(services, name, ["first", "second"])
    opened = h.open_pair(services, h.switch_collection(services, state_for(name), name).state, 0)
    deleted = h.delete_pair(services, opened.state)
    assert deleted.state.selected is None and deleted.state.last_deleted == ids[0]
    assert deleted.undo["visible"] is True and [c for _, c in deleted.gallery] == ["second"]
    assert "1 pairs" not in deleted.page_label and "1 pair" in deleted.page_label

    undone = h.undo_delete(services, deleted.state)
    assert undone.state.selected == ids[0] and undone.caption == "first"
    assert undone.undo["visible"] is False and len(undone.gallery) == 2
    with pytest.warns(UserWarning, match="Nothing to undo"):
        h.undo_delete(services, undone.state)


def test_editor_shows_labels_and_stats_count_them(services, name):
    ids = add_pairs(services, name, ["a red circle above a blue square", "other", "unlabeled"])
    other = services.store.get_pair(ids[1])
    services.store.add_label(ids[0], negative_caption="a blue circle above a red square")
    services.store.add_label(ids[0], negative_sha256=other.image_sha256)
    services.store.add_label(ids[1], kind="also-positive", negative_caption="another")
    opened = h.open_pair(services, h.switch_collection(services, state_for(name), name).state, 0)
    assert "Labels (2)" in opened.labels
    assert "caption “a blue circle above a red square”" in opened.labels
    # An image label names the caption of the pair with that image (and shows its thumbnail).
    assert 'hard negative: <img src="/gradio_api/file=' in opened.labels
    assert f"“other” (pair {other.id})" in opened.labels
    assert other.image_sha256[:12] not in opened.labels.split("file=")[0]
    assert "**2 labeled negatives** (1 caption) · 1 also-positive" in opened.stats
    assert "also correct: caption “another”" in h.open_pair(services, opened.state, 1).labels
    assert "No hard-negative labels" in h.open_pair(services, opened.state, 2).labels


def test_coming_back_to_the_tab_shows_labels_made_elsewhere(services, name):
    ids = add_pairs(services, name, ["a red circle", "a blue square"])
    shown = h.switch_collection(services, state_for(name), name)
    opened = h.open_pair(services, shown.state, 0)
    assert "**0 labeled negatives**" in opened.stats and "**2 pairs**" in opened.stats
    other = services.store.get_pair(ids[1])
    services.store.add_label(ids[0], negative_sha256=other.image_sha256)  # e.g. the Label tab

    again = h.refresh(services, opened.state)
    assert "**1 labeled negative**" in again.stats
    assert again.state.selected == opened.state.selected  # still on the same pair
    assert all(is_skip(getattr(again, f)) for f in ("caption", "split", "image"))  # editor kept


# -- import --------------------------------------------------------------------------------------
def _imagefolder_zip(path: Path) -> Path:
    """A zip in imagefolder layout: two good pairs, a corrupt image, a blank caption."""
    rows = [
        {"file_name": "good1.png", "text": "zip pair one"},
        {"file_name": "good2.png", "text": "zip pair two"},
        {"file_name": "broken.png", "text": "a broken image"},
        {"file_name": "blank.png", "text": "   "},
    ]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("good1.png", png((250, 10, 10)))
        archive.writestr("good2.png", png((10, 250, 10)))
        archive.writestr("broken.png", b"this is not a png")
        archive.writestr("blank.png", png((10, 10, 250)))
        archive.writestr("metadata.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_import_uploads_images_and_a_zip_with_progress(services, name, tmp_path):
    add_pairs(services, name, ["already here"])
    zip_path = _imagefolder_zip(tmp_path / "pairs.zip")
    cat, dog = tmp_path / "cat.png", tmp_path / "dog.jpg"
    cat.write_bytes(png((200, 100, 0)))
    dog.write_bytes(make_image_bytes((0, 100, 200), fmt="JPEG"))
    calls = []

    def progress(value, desc=None, unit="steps"):  # the shape of gr.Progress.__call__
        calls.append((value, desc))

    outcome = imp.import_files(
        services,
        state_for(name),
        [str(zip_path), str(cat), str(dog)],
        "a cat\na dog",
        "",
        "",
        "",
        imp.SPLIT_FROM_DATA,
        progress=progress,
    )
    assert outcome.summary.count("Added 2 pairs") == 2, outcome.summary
    rejected = outcome.rejected
    assert list(rejected.columns) == ["Item", "Reason"]
    reasons = dict(zip(rejected["Item"], rejected["Reason"], strict=True))
    assert set(reasons) == {"broken.png", "blank.png"}, reasons
    assert "not an image" in reasons["broken.png"] and "blank caption" in reasons["blank.png"]
    assert calls and all(isinstance(v, tuple) for v, _ in calls)
    view = outcome.view
    assert "**5 pairs**" in view.stats and len(view.gallery) == 5
    assert {c for _, c in view.gallery} >= {"a cat", "a dog", "zip pair one", "zip pair two"}
    assert view.caption == gr.skip()


def test_import_into_a_split_and_from_a_server_path(services, name, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.png").write_bytes(png((1, 2, 3)))
    (folder / "x.txt").write_text("from a server folder", encoding="utf-8")
    services.store.create_collection(name)
    outcome = imp.import_files(
        services, state_for(name), None, "", str(folder), "", "", "test", progress=None
    )
    assert "Added 1 pair " in outcome.summary and outcome.rejected.empty
    assert [c for _, c in outcome.view.gallery] == ["[test] from a server folder"]


def test_import_failures_are_messages_not_tracebacks(services, name, tmp_path):
    services.store.create_collection(name)
    with pytest.warns(UserWarning, match="Choose files"):
        nothing = imp.import_files(services, state_for(name), [], "", "  ", "", "", "train")
    assert "Choose files" in nothing.summary and nothing.rejected.empty

    img = tmp_path / "lonely.png"
    img.write_bytes(png((9, 9, 9)))
    missing = tmp_path / "missing.csv"
    with pytest.warns(UserWarning, match="could not be imported"):
        outcome = imp.import_files(
            services, state_for(name), [str(img)], "", str(missing), "", "", "train"
        )
    rows = outcome.rejected.values.tolist()
    assert [r[0] for r in rows] == [str(missing), "1 uploaded images"]
    assert "not found" in rows[0][1] and "captions" in rows[1][1]
    assert services.store.count_pairs(services.store.collection(name).id) == 0
    assert isinstance(outcome.rejected, pd.DataFrame)


def test_import_needs_a_collection(tmp_path, services):
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(tmp_path / "h"), "MMDEMO_BASE_MODEL": services.model.spec}
    )
    empty = Services.create(settings, demo=False)
    try:
        with pytest.warns(UserWarning, match="Create a collection first"):
            outcome = imp.import_files(empty, h.initial_state(empty), [], "", "x", "", "", "train")
        assert outcome.view.state.collection is None
    finally:
        empty.close()


def test_import_never_lands_in_another_collection(services, name, tmp_path):
    services.store.create_collection(name)
    state = h.switch_collection(services, h.initial_state(services), name).state
    services.store.delete_collection(name)  # e.g. from another browser tab
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x.png").write_bytes(png((5, 6, 7)))
    (folder / "x.txt").write_text("orphan", encoding="utf-8")
    demo = services.store.collection(DEMO_COLLECTION)
    with pytest.warns(UserWarning, match="no longer exists"):
        outcome = imp.import_files(services, state, None, "", str(folder), "", "", "train")
    assert services.store.count_pairs(demo.id) == DEMO_PAIRS
    assert services.store.find_collection(name) is None
    assert outcome.view.state.collection == DEMO_COLLECTION


def test_outputs_highlight_the_open_pair_only(services, name):
    add_pairs(services, name, ["p0", "p1", "p2"])
    opened = h.open_pair(services, h.switch_collection(services, state_for(name), name).state, 2)
    outputs = as_outputs(opened)
    assert len(outputs) == len(h.CurateView._fields)
    gallery = outputs[h.CurateView._fields.index("gallery")]
    assert isinstance(gallery, gr.Gallery) and gallery.selected_index == 2
    filtered = as_outputs(h.set_filter(services, opened.state, "p0", "all"))
    assert filtered[h.CurateView._fields.index("gallery")].selected_index is None


# -- no edit is lost; names stay text; duplicates are listed ------------------------------------
def _open(services: Services, name: str, index: int):
    """The Curate view with the ``index``-th thumbnail of collection ``name`` opened."""
    return h.open_pair(services, h.switch_collection(services, state_for(name), name).state, index)


def test_a_split_click_saves_the_typed_caption_and_reverts_nothing(services, name):
    ids = add_pairs(services, name, ["old caption", "second"])
    opened = _open(services, name, 0)
    view = h.save_split(services, opened.state, "new caption, typed", "eval")
    assert is_skip(view.caption) and is_skip(view.split)  # the fields keep what the person set
    pair = services.store.get_pair(ids[0])
    assert (pair.caption, pair.split) == ("new caption, typed", "eval")


def test_leaving_the_caption_box_saves_it_and_writes_nothing_else(services, name):
    ids = add_pairs(services, name, ["before"])
    opened = _open(services, name, 0)
    assert is_skip(h.save_caption_on_leave(services, opened.state, "before"))
    message = h.save_caption_on_leave(services, opened.state, "after <b>x</b>")
    assert services.store.get_pair(ids[0]).caption == "after <b>x</b>"
    assert "&lt;b&gt;" in message and "<b>" not in message
    too_long = h.save_caption_on_leave(services, opened.state, "y" * 5000)
    assert "too long" in plain(too_long) and services.store.get_pair(ids[0]).caption.startswith(
        "after"
    )


def test_opening_another_pair_saves_the_open_one_or_stays(services, name):
    ids = add_pairs(services, name, ["first", "second"])
    opened = _open(services, name, 0)
    moved = h.open_pair(services, opened.state, 1, "first, edited")
    assert moved.state.selected == ids[1] and moved.caption == "second"
    assert services.store.get_pair(ids[0]).caption == "first, edited"
    assert "Saved the caption of pair" in plain(moved.message)
    back = h.open_pair(services, moved.state, 0, "z" * 5000)  # cannot be saved: stay
    assert back.state.selected == ids[1] and is_skip(back.caption)
    assert "not saved" in plain(back.message) and services.store.get_pair(ids[1]).caption == (
        "second"
    )


def test_a_failed_save_keeps_the_typed_text(services, name):
    add_pairs(services, name, ["kept"])
    opened = _open(services, name, 0)
    failed = h.save_pair(services, opened.state, "   ", None)
    assert "Blank caption" in plain(failed.message) and is_skip(failed.caption)


def test_filters_survive_creating_and_deleting_a_collection(services, name):
    add_pairs(services, name, ["a red cat", "a blue dog"])
    filtered = h.set_filter(services, state_for(name), "cat", "all")
    assert len(filtered.gallery) == 1
    created = h.create_collection(services, filtered.state, f"{name}-new")
    assert created.state.caption_filter == "cat"
    back = h.switch_collection(services, created.state, name)
    assert len(back.gallery) == 1 and back.state.caption_filter == "cat"
    asked = h.ask_delete_collection(services, created.state)
    gone = h.confirm_delete_collection(services, asked.state)
    assert gone.state.caption_filter == "cat"


def test_collection_names_and_captions_stay_text(services):
    hostile = "<b>x</b> *y*"
    created = h.create_collection(services, CurateState(), hostile)
    assert "<b>" not in created.message and "&lt;b&gt;x&lt;/b&gt; \\*y\\*" in created.message
    assert created.state.collection == hostile
    add_pairs(services, hostile, ["<img src=x onerror=alert(1)>"])
    deleted = h.delete_pair(services, _open(services, hostile, 0).state)
    assert "<img" not in deleted.message and "&lt;img src=x" in deleted.message


def test_duplicates_are_listed_with_the_pair_that_has_the_image(services, name, tmp_path):
    folder = tmp_path / "dups"
    folder.mkdir()
    same = png((9, 99, 199))
    for file_name in ("a.png", "b.png", "c.png"):
        (folder / file_name).write_bytes(same)
    (folder / "d.png").write_bytes(png((199, 9, 99)))
    lines = [{"file_name": f, "text": f"icon {f[0]}"} for f in ("a.png", "b.png", "c.png", "d.png")]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    services.store.create_collection(name)
    outcome = imp.import_files(
        services, state_for(name), None, "", str(folder), "", "", imp.SPLIT_FROM_DATA
    )
    assert "skipped 2 duplicates of an image (2 repeated within this import)" in plain(
        outcome.summary
    )
    rows = outcome.skipped.values.tolist()
    assert [r[0] for r in rows] == ["b.png", "c.png"]
    assert all(r[1].startswith("pair ") and r[1].endswith("icon a") for r in rows)
    assert {r[2] for r in rows} == {"earlier in this import"}
