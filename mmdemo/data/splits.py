"""Splits in bulk: a random eval/test share without leaks, moving many pairs at once, undo.

:func:`make_splits` groups pairs that must never be torn apart — identical captions (compared
case-folded with collapsed whitespace) or identical images (same sha256) — with union-find, then
deals whole groups, in an order fixed by the seed, into eval and test until each share of the
pairs is met; the rest is train. A caption in eval is then never also a train caption, so eval
measures what it claims to. :func:`move_pairs` moves chosen pairs to one split. Both return a
:class:`SplitChange` that remembers every changed pair's previous split, so
:func:`undo_split_change` puts them back exactly. Every write is one ``Store.set_splits``
transaction.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from mmdemo.data.store import SPLITS, Store

DEFAULT_EVAL_SHARE = 0.1
GROUPING = "identical captions/images"


class _Pairish(Protocol):
    id: int
    caption: str
    image_sha256: str
    split: str


@dataclass(frozen=True)
class SplitChange:
    """What one bulk change did: enough to describe it and to undo it exactly."""

    collection_id: int
    action: str
    """``split`` (make_splits), ``move`` (move_pairs) or ``undo``."""
    previous: dict[int, str]
    """Split before the change of every pair it changed (and only those)."""
    current: dict[int, str]
    """Split after the change of the same pairs."""
    before: dict[str, int]
    """Pairs per split in the whole collection before the change."""
    after: dict[str, int]
    """Pairs per split in the whole collection after it."""
    pairs: int
    """Pairs the change looked at (the collection for ``split``, the chosen ones for ``move``)."""
    groups: int = 0
    """Groups of identical captions/images among the collection's pairs (0 when not counted)."""
    crossing: int = 0
    """Groups whose pairs now sit in more than one split (a leak between splits)."""
    settings: dict[str, float | int | bool] = field(default_factory=dict)
    """The shares and seed of a ``split``."""

    @property
    def changed(self) -> int:
        return len(self.previous)

    def counts_text(self) -> str:
        """``eval 54 · train 486`` (eval and test first; empty splits left out, train always)."""
        shown = [s for s in ("eval", "test") if self.after.get(s, 0)] + ["train"]
        return " · ".join(f"{s} {self.after.get(s, 0):,}" for s in shown)

    def summary(self) -> str:
        """One plain-text line, e.g. ``eval 54 · train 486 · 540 pairs in 212 groups of identical
        captions/images · 59 pairs changed split``."""
        total = sum(self.after.values())
        parts = [self.counts_text()]
        if self.groups and self.groups < total:
            parts.append(f"{total:,} pairs in {self.groups:,} groups of {GROUPING}")
        elif self.groups:
            parts.append(f"{total:,} pairs, no identical captions or images")
        parts.append(f"{self.changed:,} pair{'' if self.changed == 1 else 's'} changed split")
        if self.crossing:
            n = self.crossing
            parts.append(f"⚠ {n:,} group{'' if n == 1 else 's'} of {GROUPING} now span two splits")
        return " · ".join(parts)

    def as_json(self) -> dict[str, object]:
        """The change as plain data (for the CLI); pair ids are left out."""
        return {
            "action": self.action,
            "pairs": sum(self.after.values()),
            "groups": self.groups,
            "changed": self.changed,
            "before": dict(self.before),
            "after": dict(self.after),
            "crossing_groups": self.crossing,
            **self.settings,
        }


# -- grouping ------------------------------------------------------------------------------------
def caption_key(caption: str) -> str:
    """Captions compare equal when they match case-folded with whitespace collapsed."""
    return " ".join(caption.casefold().split())


def group_pairs(pairs: Sequence[_Pairish]) -> list[list[int]]:
    """Indices into ``pairs``, grouped (union-find) so that pairs with identical captions or
    identical images share a group. Groups are ordered by their first index, members ascending."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first_of: dict[tuple[str, str], int] = {}
    for index, pair in enumerate(pairs):
        for key in (("caption", caption_key(pair.caption)), ("image", pair.image_sha256)):
            if key in first_of:
                union(first_of[key], index)
            else:
                first_of[key] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(pairs)):
        groups.setdefault(find(index), []).append(index)
    return sorted(groups.values(), key=lambda members: members[0])


# -- validation ----------------------------------------------------------------------------------
def check_shares(eval_share: float, test_share: float) -> tuple[float, float]:
    """The shares as floats, or a ``ValueError`` saying what is wrong with them."""
    checked = []
    for name, value in (("eval", eval_share), ("test", test_share)):
        try:
            share = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"The {name} share must be a number (got {value!r}).") from None
        if not math.isfinite(share) or not 0.0 <= share < 1.0:
            raise ValueError(
                f"The {name} share must be at least 0 and below 1 (got {value}); "
                f"0.1 puts 10 % of the pairs in {name}."
            )
        checked.append(share)
    if checked[0] + checked[1] >= 1.0:
        raise ValueError(
            f"The eval and test shares must leave pairs for training: {checked[0]:g} + "
            f"{checked[1]:g} is not below 1."
        )
    return checked[0], checked[1]


def _target(share: float, total: int) -> int:
    """How many pairs a share asks for: at least one for any share above 0."""
    return 0 if share <= 0 else max(1, round(share * total))


def _deal(
    groups: list[list[int]], counts: dict[str, int], targets: dict[str, int]
) -> dict[int, str]:
    """Give each group (in the given order) to eval, then test, while that split is short of its
    target and taking the group lands no farther from the target than leaving it; else train."""
    assigned: dict[int, str] = {}
    for number, members in enumerate(groups):
        size = len(members)
        chosen = "train"
        for split in ("eval", "test"):
            short = targets[split] - counts[split]
            if short > 0 and size - short <= short:
                chosen = split
                break
        assigned[number] = chosen
        counts[chosen] += size
    # A share above 0 never ends empty while a group can be spared from train: take the
    # smallest train group (the first of that size in the dealt order).
    for split in ("eval", "test"):
        if targets[split] > 0 and counts[split] == 0:
            spare = [n for n, s in assigned.items() if s == "train"]
            if len(spare) > 1:
                smallest = min(spare, key=lambda n: len(groups[n]))
                assigned[smallest] = split
                counts[split] += len(groups[smallest])
                counts["train"] -= len(groups[smallest])
    return assigned


# -- changes -------------------------------------------------------------------------------------
def _split_counts(store: Store, collection_id: int) -> dict[str, int]:
    return dict(store.collection_stats(collection_id).splits)


def _apply(
    store: Store,
    collection_id: int,
    action: str,
    assignments: dict[int, str],
    old: dict[int, str],
    pairs: int,
    **extra: object,
) -> SplitChange:
    """Write the assignments that change something, in one transaction, and describe them."""
    before = _split_counts(store, collection_id)
    changes = {pid: split for pid, split in assignments.items() if old.get(pid) != split}
    if changes:
        store.set_splits(changes)
    after = _split_counts(store, collection_id)
    return SplitChange(
        collection_id=collection_id,
        action=action,
        previous={pid: old[pid] for pid in changes},
        current=changes,
        before=before,
        after=after,
        pairs=pairs,
        **extra,  # type: ignore[arg-type]
    )


def make_splits(
    store: Store,
    collection_id: int,
    eval_share: float = DEFAULT_EVAL_SHARE,
    test_share: float = 0.0,
    seed: int = 0,
    only_train: bool = False,
) -> SplitChange:
    """Put a random ``eval_share`` (and ``test_share``) of the collection's pairs in eval (test),
    the rest in train, keeping every group of identical captions/images in one split.

    Shares are of pairs, approximately (whole groups are dealt). The same pairs and seed give
    the same splits. With ``only_train`` the pairs now in eval or test stay where they are and
    count toward the shares; a train pair grouped with one of them joins its split, and the
    other train groups are dealt as usual (used after an import that brought no split).
    Raises ``ValueError`` for bad shares or a collection that cannot be split.
    """
    eval_share, test_share = check_shares(eval_share, test_share)
    store.collection_by_id(collection_id)  # a clear StoreError for an unknown collection
    pairs = store.list_pairs(collection_id)
    if not pairs:
        raise ValueError("The collection has no pairs to split.")
    groups = group_pairs(pairs)
    targets = {
        "eval": _target(eval_share, len(pairs)),
        "test": _target(test_share, len(pairs)),
    }
    if (targets["eval"] or targets["test"]) and len(groups) < 2:
        raise ValueError(
            f"All {len(pairs):,} pairs share one caption or image, so they cannot be split "
            "without the same caption in train and eval."
        )
    old = {p.id: p.split for p in pairs}
    assignments: dict[int, str] = {}
    counts = {split: 0 for split in SPLITS}
    free: list[list[int]] = []
    for members in groups:
        held = {pairs[i].split for i in members} - {"train"} if only_train else set()
        if not held:
            free.append(members)
            continue
        # A group that already has eval/test pairs: its train pairs join them (eval first).
        split = "eval" if "eval" in held else "test"
        for i in members:
            if pairs[i].split == "train":
                assignments[pairs[i].id] = split
                counts[split] += 1
            else:
                counts[pairs[i].split] += 1
    random.Random(seed).shuffle(free)
    dealt = _deal(free, counts, targets)
    for number, members in enumerate(free):
        for i in members:
            assignments[pairs[i].id] = dealt[number]
    if counts["train"] == 0:
        raise ValueError(
            f"{len(pairs):,} pairs in {len(groups):,} groups of {GROUPING} are too few to keep "
            "any for training with these shares."
        )
    settings = {
        "eval_share": eval_share,
        "test_share": test_share,
        "seed": int(seed),
        "only_train": bool(only_train),
    }
    change = _apply(store, collection_id, "split", assignments, old, len(pairs), settings=settings)
    return _with_groups(change, pairs, groups)


def move_pairs(store: Store, pair_ids: Iterable[int], split: str) -> SplitChange:
    """Move the given pairs (all of one collection) to ``split``.

    ``crossing`` in the result counts the groups of identical captions/images that the move
    left spanning two splits, so the caller can warn about the leak.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    chosen = store.get_pairs(list(pair_ids))
    if not chosen:
        raise ValueError("No pairs to move.")
    collections = {p.collection_id for p in chosen}
    if len(collections) > 1:
        raise ValueError("The pairs to move belong to more than one collection.")
    (collection_id,) = collections
    everything = store.list_pairs(collection_id)
    old = {p.id: p.split for p in chosen}
    change = _apply(store, collection_id, "move", {p.id: split for p in chosen}, old, len(chosen))
    return _with_groups(change, everything)


def _with_groups(
    change: SplitChange, pairs: Sequence[_Pairish], groups: list[list[int]] | None = None
) -> SplitChange:
    """``change`` with the collection's group count and the groups that now span two splits.

    ``pairs`` are the collection's pairs as read before the change (``groups`` their grouping,
    if known): the change's new splits are applied to them here rather than read again.
    """
    groups = group_pairs(pairs) if groups is None else groups
    now = [change.current.get(p.id, p.split) for p in pairs]
    crossing = sum(len({now[i] for i in members}) > 1 for members in groups)
    return replace(change, groups=len(groups), crossing=crossing)


def undo_split_change(store: Store, change: SplitChange) -> SplitChange:
    """Put every pair ``change`` moved back in its previous split (pairs deleted since are left
    alone). Returns the undo as a change of its own (undoing that redoes)."""
    everything = store.list_pairs(change.collection_id)
    still = {p.id: p.split for p in everything if p.id in change.previous}
    restore = {pid: split for pid, split in change.previous.items() if pid in still}
    undone = _apply(store, change.collection_id, "undo", restore, still, len(restore))
    return _with_groups(undone, everything)


def split_after_import(store: Store, collection_id: int, eval_share: float, added: int) -> str:
    """After an import that took its splits "as in the data": when the collection has pairs but
    no eval and no test pair, put ``eval_share`` of them in eval (groups kept whole).

    Returns the sentence for the import summary, "" when nothing was done (``added`` is the
    number of pairs the import added: an import that added none changes nothing).
    """
    if eval_share <= 0 or added <= 0:
        return ""
    counts = _split_counts(store, collection_id)
    if not sum(counts.values()) or counts.get("eval") or counts.get("test"):
        return ""
    try:
        change = make_splits(store, collection_id, eval_share=eval_share, only_train=True)
    except ValueError as exc:
        return f"No split in the data, and none made: {exc}"
    n = change.after.get("eval", 0)
    return (
        f"No split in the data: put {eval_share * 100:g} % ({n:,} pair{'s' if n != 1 else ''})"
        f" in eval, grouped by {GROUPING}."
    )


def assign_splits(store: Store, collection_id: int, assignments: dict[int, str]) -> SplitChange:
    """Give each pair (of one collection) its own split, as one undoable change (used by the data
    checks to move each leaking group into one split)."""
    bad = sorted(set(assignments.values()) - set(SPLITS))
    if bad:
        raise ValueError(f"Unknown split {bad[0]!r}; use one of {', '.join(SPLITS)}.")
    everything = store.list_pairs(collection_id)
    old = {p.id: p.split for p in everything}
    unknown = [pid for pid in assignments if pid not in old]
    if unknown:
        raise ValueError(f"Pair {unknown[0]} is not in this collection (or was deleted).")
    change = _apply(store, collection_id, "move", dict(assignments), old, len(assignments))
    return _with_groups(change, everything)
