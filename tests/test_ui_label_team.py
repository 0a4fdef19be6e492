"""Team labeling in the Label tab on a simulated Space (handlers called directly): each
annotator gets other pairs, the overlap share goes to everyone, blind mode hides the others'
labels, and the tab shows the team's agreement."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import pytest

from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.ui.label import handlers as h
from tests.conftest import plain
from tests.space import ALICE

pytest_plugins = ["tests.space"]

BOB = SimpleNamespace(username="bob")


@pytest.fixture(autouse=True)
def no_claims_left(space: Services):  # noqa: ANN201
    yield
    for who in ("alice", "bob"):
        space.store.release_claims(who)


def session(services: Services, profile, **fields) -> h.LabelView:  # noqa: ANN001, ANN003
    """A new browser session opening the Label tab as ``profile``."""
    state = h.on_load(services, h.initial_state(services), DEMO_COLLECTION).state
    state = dataclasses.replace(state, **fields)
    return h.open_tab(services, state, DEMO_COLLECTION, profile=profile)


def overlapping(space: Services, share: float) -> Services:
    return dataclasses.replace(
        space, settings=dataclasses.replace(space.settings, label_overlap=share)
    )


def test_two_annotators_get_different_pairs(space):
    alice = session(space, ALICE)
    bob = session(space, BOB)
    assert alice.state.annotator == "alice" and bob.state.annotator == "bob"
    assert "labeling as **alice**" in alice.progress and "labeling as **bob**" in bob.progress
    assert alice.state.pair_id is not None and bob.state.pair_id is not None
    assert alice.state.pair_id != bob.state.pair_id
    # alice labels her pair and moves on: never to bob's open pair, nor back to hers.
    labeled = h.mark(space, alice.state, "negative", profile=ALICE)
    assert "labeling as **alice** (1 of them yours)" in labeled.progress
    seen_by_alice = {alice.state.pair_id}
    view = labeled
    for _ in range(5):
        view = h.next_pair(space, view.state, profile=ALICE)
        seen_by_alice.add(view.state.pair_id)
    assert bob.state.pair_id not in seen_by_alice
    # bob walks on: alice's labeled pair is done for him too, and her open pair is hers.
    seen_by_bob = set()
    view = bob
    for _ in range(5):
        view = h.next_pair(space, view.state, profile=BOB)
        seen_by_bob.add(view.state.pair_id)
    assert alice.state.pair_id not in seen_by_bob
    # A visitor who is not logged in may look (no claim), but not label.
    anonymous = session(space, None)
    assert anonymous.state.annotator is None and anonymous.state.pair_id is not None
    assert "log in with your Hugging Face account to label" in anonymous.progress


def test_the_overlap_share_goes_to_everyone_and_blind_mode_hides_the_others_labels(space):
    team = overlapping(space, 1.0)  # every pair is labeled by everyone
    alice = session(team, ALICE)
    bob = session(team, BOB, blind=True)
    assert alice.state.pair_id == bob.state.pair_id  # the hardest pair, for both
    pair_id = alice.state.pair_id
    marked = h.mark(team, alice.state, "negative", profile=ALICE)
    caption = "a caption alice wrote"
    h.add_negative_caption(team, marked.state, caption, profile=ALICE)
    first = alice.state.candidates[0]

    blind = h.open_tab(team, bob.state, DEMO_COLLECTION, profile=BOB)
    assert blind.state.pair_id == pair_id
    assert all(c.label is None for c in blind.state.candidates)
    assert "✗" not in blind.listing.split("</thead>")[1] and caption not in blind.caption_labels
    seeing = h.set_options(team, blind.state, blind.state.model, "train", True, blind=False)
    [shown] = [c for c in seeing.state.candidates if c.image_sha256 == first.image_sha256]
    assert shown.label == "negative" and caption in plain(seeing.caption_labels)

    # bob decides the same candidate the other way, blind: both decisions are kept.
    bobs = h.mark(team, blind.state, "also-positive", profile=BOB, picked=0, shown=pair_id)
    assert bobs.state.candidates[0].label == "also-positive"
    kinds = {(lab.author, lab.kind) for lab in team.store.labels_for_pair(pair_id)}
    assert {("alice", "negative"), ("bob", "also-positive")} <= kinds
    # alice still sees her own label on it (hers wins where both labeled).
    again = h.open_tab(team, marked.state, DEMO_COLLECTION, profile=ALICE)
    assert again.state.candidates[0].label == "negative"
    # The agreement: one candidate decided by both, and they disagree (kappa 0).
    text = plain(again.agreement)
    assert "κ = **0.00** on 1 candidate labeled" in text and "0 of 1 decision agree" in text
    assert "alice: 2 labels on 1 pair" in text and "bob: 1 label on 1 pair" in text
    # An overlap pair labeled by alice is done for her but still offered to others.
    nxt = h.next_pair(team, again.state, profile=ALICE)
    assert nxt.state.pair_id != pair_id
    assert session(team, SimpleNamespace(username="carol")).state.pair_id == pair_id
    team.store.release_claims("carol")


def test_without_overlap_a_labeled_pair_is_done_for_everyone(space):
    alice = session(space, ALICE)
    h.mark(space, alice.state, "negative", profile=ALICE)
    space.store.release_claims("alice")
    bob = session(space, BOB)
    assert bob.state.pair_id != alice.state.pair_id
    text = plain(bob.agreement)
    assert "No candidate was labeled by two people yet" in text and "MMDEMO_LABEL_OVERLAP" in text


def test_agreement_names_are_escaped():
    from mmdemo.data.agreement import agreement
    from mmdemo.data.store import NegativeLabel

    labels = [
        NegativeLabel(1, 1, "x", None, "negative", "<b>eve</b>", 0.0),
        NegativeLabel(2, 1, "x", None, "negative", "*zed*", 0.0),
    ]
    text = h.agreement_text(agreement(labels))
    assert "<b>" not in text and "\\*zed\\*" in text
    assert "undefined" in text  # both used one kind only


def test_pairs_chosen_elsewhere_are_claimed_for_their_annotator(space):
    carol = SimpleNamespace(username="carol")
    hardest = session(space, carol).state.pair_id
    space.store.release_claims("carol")
    focus = {"collection": DEMO_COLLECTION, "pair_ids": [hardest]}
    state = h.on_load(space, h.initial_state(space), DEMO_COLLECTION).state
    alice = h.open_tab(space, state, DEMO_COLLECTION, focus=focus, profile=ALICE)
    assert alice.state.pair_id == hardest
    assert session(space, BOB).state.pair_id != hardest  # alice has it open


def test_clear_removes_only_the_annotators_own_label(space):
    team = overlapping(space, 1.0)
    alice = session(team, ALICE)
    pair_id = alice.state.pair_id
    h.mark(team, alice.state, "negative", profile=ALICE, picked=0, shown=pair_id)
    bob = h.goto_pair(team, session(team, BOB).state, pair_id)
    assert bob.state.candidates[0].label == "negative"  # alice's, shown (blind mode off)
    refused = h.clear(team, bob.state, profile=BOB, picked=0, shown=pair_id)
    assert "alice's label, not yours" in plain(refused.message)

    def kinds() -> set:
        return {(lab.author, lab.kind) for lab in team.store.labels_for_pair(pair_id)}

    assert ("alice", "negative") in kinds()
    # bob marks it himself, then clears: his label goes, alice's stays and shows again.
    bobs = h.mark(team, refused.state, "also-positive", profile=BOB, picked=0, shown=pair_id)
    assert ("bob", "also-positive") in kinds()
    cleared = h.clear(team, bobs.state, profile=BOB, picked=0, shown=pair_id)
    assert "Cleared" in plain(cleared.message)
    assert ("alice", "negative") in kinds() and not any(a == "bob" for a, _ in kinds())
    assert cleared.state.candidates[0].label == "negative"
    # alice clears her own.
    mine = h.goto_pair(team, alice.state, pair_id)
    gone = h.clear(team, mine.state, profile=ALICE, picked=0, shown=pair_id)
    assert "Cleared" in plain(gone.message) and not kinds()


def test_a_label_without_an_author_is_the_local_annotators():
    from mmdemo.data.store import NegativeLabel

    old = NegativeLabel(1, 1, "x", None, "negative", None, 0.0)
    assert h.visible_labels([old], "local", blind=True) == [old]
    assert h.visible_labels([old], "alice", blind=True) == []


def _claimed_at(services: Services, pair_id: int) -> tuple:
    with services.store.transaction() as conn:
        row = conn.execute(
            "SELECT author, claimed_at FROM label_claims WHERE pair_id = ?", (pair_id,)
        ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def _age_claims(services: Services, seconds: float) -> None:
    with services.store.transaction() as conn:
        conn.execute("UPDATE label_claims SET claimed_at = claimed_at - ?", (seconds,))


def test_a_pair_kept_open_stays_claimed_and_a_pair_someone_holds_shows_with_a_note(space):
    alice = session(space, ALICE)
    pair_id = alice.state.pair_id
    assert _claimed_at(space, pair_id)[0] == "alice"
    # 14 minutes later alice comes back to the tab: the pair shows again and her claim renews.
    _age_claims(space, h.CLAIM_S - 60)
    again = h.open_tab(space, alice.state, DEMO_COLLECTION, profile=ALICE)
    assert again.state.pair_id == pair_id
    author, at = _claimed_at(space, pair_id)
    assert author == "alice" and at > time.time() - 60
    # Another 14 minutes on, bob is still not sent to it.
    _age_claims(space, h.CLAIM_S - 60)
    assert session(space, BOB).state.pair_id != pair_id
    # bob goes to it by its id: he may look, and is told alice has it open; it stays hers.
    looked = h.goto_pair(space, session(space, BOB).state, pair_id)
    assert looked.state.pair_id == pair_id
    assert "open for **alice**" in looked.message
    assert _claimed_at(space, pair_id)[0] == "alice"
    # Pairs chosen elsewhere: the same note when someone else holds the first.
    focus = {"collection": DEMO_COLLECTION, "pair_ids": [pair_id]}
    state = h.on_load(space, h.initial_state(space), DEMO_COLLECTION).state
    chosen = h.open_tab(space, state, DEMO_COLLECTION, focus=focus, profile=BOB)
    assert chosen.state.pair_id == pair_id and "open for **alice**" in chosen.message
    assert "<i>" not in h.claim_note(3, "<i>x</i>")  # the name is escaped
