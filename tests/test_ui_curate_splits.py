"""Curate's Splits panel and the import's eval share, called directly on a real Services."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui.app import build_app
from mmdemo.ui.curate import handlers as h
from mmdemo.ui.curate import importing as imp
from mmdemo.ui.curate import splits as sp
from mmdemo.ui.curate.handlers import CurateState, CurateView
from mmdemo.ui.curate.layout import as_outputs
from tests.conftest import make_image_bytes, plain


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("splits-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "24"}
    )
    services = Services.create(settings)
    yield services
    services.close()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("test_", "s-")


def add_pairs(services: Services, collection: str, captions: list[str], split: str = "train"):
    coll = services.store.get_or_create_collection(collection)
    report = ImportReport(coll.name)
    for i, caption in enumerate(captions):
        colour = ((37 * i + 11) % 256, (91 * i + 7 * len(collection)) % 256, (13 * i) % 256)
        ingest_item(
            services.store,
            services.settings,
            coll.id,
            report,
            f"{i}.png",
            make_image_bytes(colour, size=(40 + i % 9, 32 + i // 9)),
            caption,
            split,
        )
    assert report.added == len(captions), report.rejected
    return report.added_pair_ids


def splits_of(services: Services, collection: str) -> dict[str, int]:
    return dict(services.store.collection_stats(services.store.collection(collection).id).splits)


CAPTIONS = [f"icon {i}" for i in range(24)] + ["a dog", "A  dog", "a dog", "a cat", "a cow", "x"]


def test_make_splits_refreshes_the_counts_and_gallery_and_undoes(services, name):
    add_pairs(services, name, CAPTIONS)
    state = CurateState(collection=name)
    with pytest.warns(UserWarning, match="leave pairs for training"):
        bad = sp.make_splits_clicked(services, state, sp.SplitsState(), 60, 40, 0)
    assert splits_of(services, name)["train"] == 30 and bad.splits.undo == ()

    made = sp.make_splits_clicked(services, state, sp.SplitsState(), 20, 10, 3)
    counts = splits_of(services, name)
    assert counts == {"train": 21, "eval": 6, "test": 3}  # 20 % and 10 % of 30 pairs
    message = plain(made.curate.message)
    assert message.startswith("Made splits (seed 3): eval")
    assert "30 pairs in 28 groups of identical captions/images" in message
    assert f"eval {counts['eval']}" in made.curate.stats
    assert any(c.startswith("[eval] ") for _, c in made.curate.gallery)
    assert made.undo_make["visible"] and not made.undo_move["visible"]
    assert made.curate.caption == gr.skip()  # the editor's typed text is left alone
    dogs = {
        p.split
        for p in services.store.list_pairs(services.store.collection(name).id)
        if p.caption.casefold().split() == ["a", "dog"]
    }
    assert len(dogs) == 1  # identical captions stay together

    again = sp.make_splits_clicked(services, made.curate.state, made.splits, 20, 10, 3)
    assert (
        plain(again.curate.message).startswith("Splits unchanged") and again.splits == made.splits
    )

    undone = sp.undo_clicked(services, made.curate.state, made.splits)
    assert splits_of(services, name) == {"train": 30, "eval": 0, "test": 0}
    assert "Undid make splits" in plain(undone.curate.message)
    assert undone.splits.undo == () and not undone.undo_make["visible"]
    assert "eval" not in " ".join(c for _, c in undone.curate.gallery)


def test_move_the_filtered_pairs_and_undo(services, name):
    add_pairs(services, name, CAPTIONS)
    state = h.set_filter(services, CurateState(collection=name), "dog", h.ALL_SPLITS).state
    assert sp.move_label(services, state) == ("Move the 3 filtered pairs to", True)
    assert sp.move_label(services, CurateState(collection=name))[0] == "Move all 30 pairs to"
    nothing = h.set_filter(services, state, "giraffe", h.ALL_SPLITS).state
    assert sp.move_label(services, nothing) == ("No pairs match the filter", False)

    moved = sp.move_filtered_clicked(services, state, sp.SplitsState(), "test")
    assert splits_of(services, name)["test"] == 3
    assert plain(moved.curate.message).startswith("Moved 3 of the 3 filtered pairs to test")
    assert [c for _, c in moved.curate.gallery] == ["[test] a dog", "[test] A dog", "[test] a dog"]
    assert moved.undo_move["visible"] and not moved.undo_make["visible"]
    assert moved.move["value"] == "Move the 3 filtered pairs to"

    same = sp.move_filtered_clicked(services, moved.curate.state, moved.splits, "test")
    assert "all in test already" in plain(same.curate.message) and same.splits == moved.splits

    # Only the train "a dog" pairs: the moved ones leave their twins behind -> a warning.
    train_dogs = h.set_filter(services, moved.curate.state, "dog", "test").state
    first = services.store.list_pairs(services.store.collection(name).id, "dog")[0]
    services.store.update_pair(first.id, split="train")
    train_only = dataclasses.replace(train_dogs, split_filter="train")
    with pytest.warns(UserWarning, match="span two splits"):
        leaky = sp.move_filtered_clicked(services, train_only, moved.splits, "eval")
    assert len(leaky.splits.undo) == 2

    back = sp.undo_clicked(services, leaky.curate.state, leaky.splits)
    assert splits_of(services, name) == {"train": 28, "eval": 0, "test": 2}
    back = sp.undo_clicked(services, back.curate.state, back.splits)
    assert splits_of(services, name) == {"train": 30, "eval": 0, "test": 0}
    assert back.splits.undo == ()
    with pytest.warns(UserWarning, match="Nothing to undo"):
        sp.undo_clicked(services, back.curate.state, back.splits)


def test_a_bulk_change_updates_the_open_pairs_split_radio(services, name):
    add_pairs(services, name, ["one", "two", "three"])
    opened = h.open_pair(services, h.switch_collection(services, CurateState(), name).state, 1)
    assert opened.split == "train"
    moved = sp.move_filtered_clicked(services, opened.state, sp.SplitsState(), "eval")
    assert moved.curate.split == "eval"  # a later Save must not write "train" back
    assert moved.curate.caption == gr.skip() and moved.curate.editor == gr.skip()


def test_undo_only_in_the_collection_it_changed(services, name):
    add_pairs(services, name, ["p1", "p2", "p3", "p4"])
    made = sp.make_splits_clicked(
        services, CurateState(collection=name), sp.SplitsState(), 25, 0, 0
    )
    elsewhere = h.switch_collection(services, made.curate.state, "demo-shapes").state
    hidden = sp.panel_refresh(services, elsewhere, made.splits)
    assert not hidden[0]["visible"] and not hidden[1]["visible"]
    with pytest.warns(UserWarning, match="another collection"):
        refused = sp.undo_clicked(services, elsewhere, made.splits)
    assert refused.splits == made.splits and splits_of(services, name)["eval"] == 1


def test_on_a_space_a_visitor_must_log_in(services, name):
    add_pairs(services, name, ["p1", "p2", "p3"])
    space = dataclasses.replace(
        services, settings=dataclasses.replace(services.settings, space_id="alice/mmdemo")
    )
    state = CurateState(collection=name)
    with pytest.warns(UserWarning, match="Log in"):
        sp.make_splits_clicked(space, state, sp.SplitsState(), 50, 0, 0)
    with pytest.warns(UserWarning, match="Log in"):
        sp.move_filtered_clicked(space, state, sp.SplitsState(), "eval")
    assert splits_of(services, name)["eval"] == 0
    alice = SimpleNamespace(username="alice")
    made = sp.make_splits_clicked(space, state, sp.SplitsState(), 50, 0, 0, profile=alice)
    assert splits_of(services, name)["eval"] == 2 and made.splits.undo


def _folder_without_splits(folder: Path, n: int, split_column: bool = False) -> Path:
    folder.mkdir()
    rows = []
    for i in range(n):
        image = f"icon{i}.png"
        (folder / image).write_bytes(make_image_bytes(((29 * i) % 256, (71 * i) % 256, 200)))
        row = {"file_name": image, "caption": f"icon number {i % (n - 2)}"}
        if split_column:
            row["split"] = "eval" if i == 0 else "train"
        rows.append(row)
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_import_without_a_split_puts_a_share_in_eval(services, name, tmp_path):
    services.store.create_collection(name)
    folder = _folder_without_splits(tmp_path / "icons", 20)
    outcome = imp.import_files(
        services,
        CurateState(collection=name),
        None,
        "",
        str(folder),
        "",
        "",
        imp.SPLIT_FROM_DATA,
        no_split_eval_percent=10,
    )
    counts = splits_of(services, name)
    assert counts["eval"] == 2 and counts["train"] == 18
    assert (
        "No split in the data: put 10 % (2 pairs) in eval, grouped by identical captions/images."
        in plain(outcome.summary)
    )
    assert "eval 2" in outcome.view.stats
    # The twins (same caption) share a split.
    pairs = services.store.list_pairs(services.store.collection(name).id)
    by_caption: dict[str, set[str]] = {}
    for pair in pairs:
        by_caption.setdefault(pair.caption, set()).add(pair.split)
    assert all(len(s) == 1 for s in by_caption.values())

    # Importing more into a collection that has an eval split now changes nothing more.
    more = _folder_without_splits(tmp_path / "more", 5)
    again = imp.import_files(
        services,
        outcome.view.state,
        None,
        "",
        str(more),
        "",
        "",
        imp.SPLIT_FROM_DATA,
        no_split_eval_percent=10,
    )
    assert "No split in the data" not in again.summary and splits_of(services, name)["eval"] == 2


@pytest.mark.parametrize(
    ("split", "percent", "split_column"),
    [("train", 10, False), (imp.SPLIT_FROM_DATA, 0, False), (imp.SPLIT_FROM_DATA, 10, True)],
)
def test_import_keeps_splits_it_was_given(services, name, tmp_path, split, percent, split_column):
    services.store.create_collection(name)
    folder = _folder_without_splits(tmp_path / "icons", 10, split_column=split_column)
    outcome = imp.import_files(
        services,
        CurateState(collection=name),
        None,
        "",
        str(folder),
        "",
        "",
        split,
        no_split_eval_percent=percent,
    )
    assert "No split in the data" not in outcome.summary
    assert splits_of(services, name)["eval"] == (1 if split_column else 0)


def test_the_panel_is_wired_into_the_curate_tab(services):
    app = build_app(services)
    ids = {block._id: block for block in app.blocks.values()}
    by_elem = {getattr(b, "elem_id", None): b for b in ids.values()}
    assert {"mm-splits", "mm-make-splits", "mm-move-filtered", "mm-import-eval"} <= set(by_elem)
    make = by_elem["mm-make-splits"]
    (click,) = [fn for fn in app.fns.values() if (make._id, "click") in fn.targets]
    assert len(click.outputs) == len(CurateView._fields) + 4
    assert click.api_visibility == "private"
    view = sp.SplitsView(h.render(services, CurateState()), sp.SplitsState(), 1, 2, 3)
    assert len((*as_outputs(view.curate), *view[1:])) == len(click.outputs)
