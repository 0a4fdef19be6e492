"""Splits in bulk: grouping without leaks, determinism, shares, move and undo (real SQLite)."""

from __future__ import annotations

import hashlib

import pytest

from mmdemo.data.splits import (
    SplitChange,
    caption_key,
    check_shares,
    group_pairs,
    make_splits,
    move_pairs,
    undo_split_change,
)
from mmdemo.data.store import Pair, Store


def _image(name: str) -> dict:
    return {
        "sha256": hashlib.sha256(name.encode()).hexdigest(),
        "width": 8,
        "height": 8,
        "ext": "png",
        "bytes": 100,
    }


def fill(store: Store, captions: list[str], name: str = "c") -> int:
    """A collection with one pair per caption, every image different, all train."""
    collection = store.create_collection(name)
    for index, caption in enumerate(captions):
        store.add_pair(collection.id, _image(f"{name}-{index}"), caption)
    return collection.id


def splits_by_caption(store: Store, collection_id: int) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pair in store.list_pairs(collection_id):
        found.setdefault(caption_key(pair.caption), set()).add(pair.split)
    return found


def _pair(pid: int, caption: str, sha: str, split: str = "train") -> Pair:
    return Pair(pid, 1, sha, caption, split, None, None, 0.0, 0.0)


def test_grouping_joins_identical_captions_and_images_transitively():
    pairs = [
        _pair(1, "A red  Circle", "s1"),
        _pair(2, "a red circle", "s2"),  # same caption as 1 (case, spaces)
        _pair(3, "a blue square", "s2"),  # same image as 2: joins 1 and 2
        _pair(4, "a green star", "s4"),
        _pair(5, "a green star.", "s5"),  # punctuation differs: its own group
    ]
    assert group_pairs(pairs) == [[0, 1, 2], [3], [4]]
    assert caption_key("  A\tRed   CIRCLE ") == "a red circle"


def test_identical_captions_never_cross_splits(store: Store):
    # 60 distinct captions, 20 of them used three times: 100 pairs in 60 groups.
    captions = [f"scene {i}" for i in range(60)] + [f"Scene  {i}" for i in range(20)]
    captions += [f"SCENE {i}" for i in range(20)]
    cid = fill(store, captions)
    for seed in range(5):
        change = make_splits(store, cid, eval_share=0.2, test_share=0.1, seed=seed)
        assert change.groups == 60 and change.crossing == 0
        assert all(len(splits) == 1 for splits in splits_by_caption(store, cid).values())
        assert change.after["eval"] > 0 and change.after["test"] > 0


def test_identical_images_never_cross_splits():
    """A collection holds an image once, so image groups are checked on the grouping itself:
    the dealer only ever moves whole groups."""
    pairs = [_pair(i, f"caption {i}", f"sha{i // 3}") for i in range(30)]
    groups = group_pairs(pairs)
    assert len(groups) == 10 and all(len(g) == 3 for g in groups)


def test_same_seed_same_splits_other_seed_other_splits(store: Store):
    cid = fill(store, [f"pair {i}" for i in range(200)])
    make_splits(store, cid, 0.1, seed=7)
    first = {p.id: p.split for p in store.list_pairs(cid)}
    make_splits(store, cid, 0.1, seed=3)
    other = {p.id: p.split for p in store.list_pairs(cid)}
    again = make_splits(store, cid, 0.1, seed=7)
    assert {p.id: p.split for p in store.list_pairs(cid)} == first
    assert other != first
    assert again.after == {"train": 180, "eval": 20, "test": 0}


def test_shares_are_of_pairs(store: Store):
    cid = fill(store, [f"pair {i}" for i in range(540)])
    change = make_splits(store, cid, eval_share=0.1, test_share=0.05)
    assert change.after == {"train": 459, "eval": 54, "test": 27}
    assert change.before == {"train": 540, "eval": 0, "test": 0}
    assert change.changed == 81 and change.pairs == 540 and change.groups == 540
    assert change.summary().startswith("eval 54 · test 27 · train 459 · 540 pairs")
    back = make_splits(store, cid, eval_share=0.0)
    assert back.after == {"train": 540, "eval": 0, "test": 0}


def test_big_groups_are_dealt_whole_and_a_share_never_ends_empty(store: Store):
    # class-like data: 4 captions, 25 pairs each. 10 % asks for 10 pairs: one whole group of 25
    # is farther from 10 than none, yet eval must not stay empty.
    cid = fill(store, [f"class {i % 4}" for i in range(100)])
    change = make_splits(store, cid, eval_share=0.1)
    assert change.after["eval"] == 25 and change.groups == 4
    assert "100 pairs in 4 groups of identical captions/images" in change.summary()
    assert all(len(s) == 1 for s in splits_by_caption(store, cid).values())


@pytest.mark.parametrize(
    ("eval_share", "test_share", "needle"),
    [
        (-0.1, 0.0, "eval share must be at least 0"),
        (1.0, 0.0, "eval share must be at least 0 and below 1"),
        (0.1, float("nan"), "test share"),
        ("lots", 0.0, "eval share must be a number"),
        (0.6, 0.4, "must leave pairs for training"),
    ],
)
def test_bad_shares_say_what_is_wrong(store: Store, eval_share, test_share, needle):
    cid = fill(store, ["a", "b"])
    with pytest.raises(ValueError, match=needle):
        make_splits(store, cid, eval_share, test_share)
    assert check_shares(0, 0.2) == (0.0, 0.2)


def test_collections_that_cannot_be_split(store: Store):
    empty = store.create_collection("empty").id
    with pytest.raises(ValueError, match="no pairs"):
        make_splits(store, empty)
    same = fill(store, ["one caption"] * 5, name="same")
    with pytest.raises(ValueError, match="share one caption"):
        make_splits(store, same)
    assert make_splits(store, same, eval_share=0).changed == 0  # all train is fine


def test_undo_restores_every_previous_split_exactly(store: Store):
    cid = fill(store, [f"pair {i}" for i in range(50)])
    move_pairs(store, [p.id for p in store.list_pairs(cid)[:7]], "test")
    before = {p.id: p.split for p in store.list_pairs(cid)}
    change = make_splits(store, cid, eval_share=0.3, seed=1)
    assert {p.id: p.split for p in store.list_pairs(cid)} != before
    assert change.previous == {pid: before[pid] for pid in change.previous}
    undone = undo_split_change(store, change)
    assert {p.id: p.split for p in store.list_pairs(cid)} == before
    assert undone.action == "undo" and undone.after == change.before
    undo_split_change(store, undone)  # undoing the undo redoes
    assert dict(store.collection_stats(cid).splits) == change.after


def test_only_train_keeps_existing_splits_and_joins_their_groups(store: Store):
    captions = [f"pair {i}" for i in range(98)] + ["pair 0", "pair 1"]
    cid = fill(store, captions)
    pairs = store.list_pairs(cid)
    store.set_splits({pairs[0].id: "test", pairs[1].id: "eval", pairs[2].id: "eval"})
    change = make_splits(store, cid, eval_share=0.1, only_train=True)
    after = {p.id: p.split for p in store.list_pairs(cid)}
    assert after[pairs[0].id] == "test" and after[pairs[1].id] == after[pairs[2].id] == "eval"
    assert after[pairs[98].id] == "test" and after[pairs[99].id] == "eval"  # joined their group
    assert change.after["eval"] == 10 and change.after["test"] == 2
    assert all(len(s) == 1 for s in splits_by_caption(store, cid).values())
    assert set(change.previous.values()) == {"train"}


def test_move_pairs_and_undo(store: Store):
    cid = fill(store, [f"cat {i}" for i in range(10)] + ["dog", "dog", "cow"])
    dogs = store.matching_pair_ids(cid, "dog")
    assert len(dogs) == 2 and store.count_pairs(cid, "dog") == 2
    change = move_pairs(store, dogs[:1], "eval")
    assert isinstance(change, SplitChange) and change.action == "move"
    assert change.after["eval"] == 1 and change.changed == 1
    assert change.crossing == 1 and "now span two splits" in change.summary()
    again = move_pairs(store, dogs, "eval")
    assert again.changed == 1 and again.crossing == 0 and again.pairs == 2
    undo_split_change(store, again)
    undo_split_change(store, change)
    assert {p.split for p in store.list_pairs(cid)} == {"train"}
    with pytest.raises(ValueError, match="Unknown split"):
        move_pairs(store, dogs, "holdout")
    with pytest.raises(ValueError, match="No pairs"):
        move_pairs(store, [], "eval")


def test_undo_leaves_pairs_deleted_since_alone(store: Store):
    cid = fill(store, [f"pair {i}" for i in range(20)])
    change = make_splits(store, cid, eval_share=0.25)
    gone = next(iter(change.previous))
    store.delete_pair(gone)
    undone = undo_split_change(store, change)
    assert undone.changed == change.changed - 1
    assert store.collection_stats(cid).splits == {"train": 19, "eval": 0, "test": 0}
