"""The labeling core the Label, Curate and Compare tabs share: login rules, saving, messages and
undo, on a real SQLite store with real (Pillow-made) images."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from mmdemo.data.images import ImageLimits, ingest_image_bytes
from mmdemo.data.store import Pair
from mmdemo.retrieval.compare import LabelEdit, clear_label, set_label
from mmdemo.retrieval.models import ModelChoice
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.ui.identity import LOCAL_AUTHOR
from mmdemo.ui.labeling import (
    LabelOutcome,
    LabelTarget,
    apply_label,
    caption_target,
    undo_label,
)
from tests.conftest import make_image_bytes

ALICE = SimpleNamespace(username="alice")  # what require_login reads from gr.OAuthProfile
LOGIN_FIRST = "Log in with your Hugging Face account"


@pytest.fixture
def services(settings, store) -> Services:
    """Local services over the test store (the core never touches the model)."""
    return Services(settings, store, ModelChoice("tiny", "tiny", "tests", True))


@pytest.fixture
def space(services: Services) -> Services:
    """The same store as on a Space: writes need a login."""
    return dataclasses.replace(
        services, settings=dataclasses.replace(services.settings, space_id="alice/mmdemo")
    )


@pytest.fixture
def pairs(services: Services) -> tuple[Pair, Pair]:
    """Two pairs of one collection, each with its own image."""
    settings, store = services.settings, services.store
    collection = store.create_collection("shapes")
    made = []
    for colour, caption in (((200, 30, 30), "a red square"), ((30, 30, 200), "a blue square")):
        stored = ingest_image_bytes(
            make_image_bytes(colour), settings.images_dir, ImageLimits.from_settings(settings)
        )
        made.append(store.add_pair(collection.id, stored.as_row(), caption, "train")[0])
    return made[0], made[1]


def image_of(pair: Pair, other: Pair) -> LabelTarget:
    return LabelTarget(pair.id, sha256=other.image_sha256)


def test_a_label_is_saved_by_local_and_undone(services, pairs):
    pair, other = pairs
    outcome = apply_label(services, image_of(pair, other), "negative", None)
    assert outcome.saved
    [label] = services.store.labels_for_pair(pair.id)
    assert (label.kind, label.negative_sha256, label.author) == (
        "negative",
        other.image_sha256,
        LOCAL_AUTHOR,
    )
    assert outcome.last_edit.written == label and outcome.last_edit.previous is None
    # Named by the caption of the image's pair, never by its hash.
    assert outcome.message == (
        f"Saved: hard negative: “a blue square” (pair {other.id}) for pair {pair.id} "
        f"(by {LOCAL_AUTHOR})."
    )
    assert other.image_sha256[:8] not in outcome.message

    undone = undo_label(services, outcome.last_edit)
    assert undone == LabelOutcome(
        None, f"Undone: hard negative: “a blue square” (pair {other.id}) for pair {pair.id}.", True
    )
    assert services.store.labels_for_pair(pair.id) == []


def test_relabeling_then_undo_puts_the_earlier_label_back(services, pairs):
    pair, other = pairs
    first = apply_label(services, image_of(pair, other), "negative", None)
    second = apply_label(services, image_of(pair, other), "also-positive", first.last_edit)
    assert second.last_edit.previous == first.last_edit.written
    assert second.message.startswith("Saved: also correct: “a blue square” (pair ")
    [label] = services.store.labels_for_pair(pair.id)
    assert (label.kind, label.author) == ("also-positive", LOCAL_AUTHOR)

    assert undo_label(services, second.last_edit).saved
    [label] = services.store.labels_for_pair(pair.id)
    assert (label.kind, label.author) == ("negative", LOCAL_AUTHOR)

    # Another author's label of the same image is their own decision: both stay, and undoing
    # it leaves the first one as it was.
    bobs = apply_label(services, image_of(pair, other), "also-positive", None, author="bob")
    assert bobs.last_edit.previous is None
    kinds = {(lab.author, lab.kind) for lab in services.store.labels_for_pair(pair.id)}
    assert kinds == {(LOCAL_AUTHOR, "negative"), ("bob", "also-positive")}
    assert undo_label(services, bobs.last_edit).saved
    [label] = services.store.labels_for_pair(pair.id)
    assert (label.kind, label.author) == ("negative", LOCAL_AUTHOR)


def test_nothing_to_label_or_a_refused_write_keeps_the_edit_to_undo(services, pairs):
    pair, other = pairs
    earlier = apply_label(services, image_of(pair, other), "negative", None).last_edit

    with pytest.warns(UserWarning, match="Click a result first"):  # the toast
        reason = apply_label(services, "Click a result first.", "negative", earlier)
    assert reason == LabelOutcome(earlier, md("Click a result first."))  # Markdown, escaped

    own_image = apply_label(services, image_of(pair, pair), "negative", earlier)
    assert own_image == LabelOutcome(
        earlier, md("An image cannot be a negative for its own caption.")
    )
    assert len(services.store.labels_for_pair(pair.id)) == 1
    assert undo_label(services, None) == LabelOutcome(None, md("Nothing to undo."))


def test_an_undo_the_store_cannot_do_is_spent(services, pairs):
    pair, other = pairs
    first = apply_label(services, image_of(pair, other), "negative", None)
    second = apply_label(services, image_of(pair, other), "also-positive", first.last_edit)
    services.store.delete_pair(pair.id)

    outcome = undo_label(services, second.last_edit)
    assert not outcome.saved and outcome.last_edit is None
    assert outcome.message == md(f"Pair {pair.id} does not exist (was it deleted?).")


def test_on_a_space_writes_need_a_login_first(space, pairs):
    pair, other = pairs
    refused = apply_label(space, "Find the look-alikes first.", "negative", None)
    assert not refused.saved and refused.message.startswith(LOGIN_FIRST)
    refused = apply_label(space, image_of(pair, other), "negative", None, author="bob")
    assert not refused.saved and refused.message.startswith(LOGIN_FIRST)
    assert space.store.labels_for_pair(pair.id) == []

    saved = apply_label(space, image_of(pair, other), "negative", None, author="bob", profile=ALICE)
    assert saved.message.endswith("(by alice).")
    assert space.store.labels_for_pair(pair.id)[0].author == "alice"

    kept = undo_label(space, saved.last_edit)
    assert kept.last_edit == saved.last_edit and kept.message.startswith(LOGIN_FIRST)
    assert len(space.store.labels_for_pair(pair.id)) == 1
    assert undo_label(space, saved.last_edit, profile=ALICE).saved
    assert space.store.labels_for_pair(pair.id) == []


def test_caption_negatives_need_a_pair_and_a_caption(services, pairs):
    pair, _ = pairs
    assert caption_target(None, "a red circle", "No pair.") == "No pair."
    assert caption_target(pair.id, "  ", "No pair.") == "Write a hard-negative caption first."
    target = caption_target(pair.id, " a red circle ", "No pair.")
    outcome = apply_label(services, target, "negative", None)
    [label] = services.store.labels_for_pair(pair.id)
    assert label.negative_caption == "a red circle"
    assert outcome.message == (
        f"Saved: hard negative: caption “a red circle” for pair {pair.id} (by {LOCAL_AUTHOR})."
    )


def test_messages_escape_and_shorten_captions(services, pairs):
    pair, other = pairs
    hostile = "<img src=x onerror=alert(1)> " + "very long words " * 20
    services.store.update_pair(other.id, caption=hostile)
    outcome = apply_label(services, image_of(pair, other), "negative", None, author="<b>eve</b>")
    message = outcome.message
    assert "<img" not in message and "&lt;img src=x onerror=alert\\(1\\)&gt;" in message
    assert "<b>" not in message and "(by &lt;b&gt;eve&lt;/b&gt;)." in message
    assert "very long words" in message and "…”" in message  # cut for the message line
    assert len(message) < len(hostile)


def test_undoing_a_clear_says_the_label_is_back(services, pairs):
    pair, other = pairs
    saved = apply_label(services, image_of(pair, other), "also-positive", None)
    cleared = clear_label(services.store, saved.last_edit.written.id)
    undone = undo_label(services, cleared)
    assert undone.message == (
        f"Undone: the label is back: also correct: “a blue square” (pair {other.id}) "
        f"for pair {pair.id}."
    )
    assert [lab.kind for lab in services.store.labels_for_pair(pair.id)] == ["also-positive"]


def test_describe_names_images_by_caption_and_never_by_hash(services, pairs):
    pair, other = pairs
    edit = set_label(services.store, pair.id, "negative", sha256=other.image_sha256)
    store = services.store
    assert (
        edit.describe(store)
        == f"hard negative: “a blue square” (pair {other.id}) for pair {pair.id}"
    )
    assert (
        edit.describe(store, with_kind=False)
        == f"“a blue square” (pair {other.id}) for pair {pair.id}"
    )
    assert edit.describe() == f"hard negative: image for pair {pair.id}"  # no store to ask
    store.delete_pair(other.id)
    assert edit.describe(store) == (
        f"hard negative: an image no longer in the collection for pair {pair.id}"
    )
    assert LabelEdit(None, None).describe(store) == "nothing"
