"""Caption checks: identical captions across splits and near-duplicate captions.

Identical means equal as :func:`mmdemo.data.splits.caption_key` (case-folded, whitespace
collapsed). Near duplicates are different captions whose words (:func:`caption_words`: case,
accents, punctuation and articles dropped) are the same, or the same but for a typo
(:func:`near_duplicate_words`): "a red circle above a blue square" and "a blue circle above a red
square" name the same words but are different captions. Candidates come from character-trigram
overlap with prefix filtering, so thousands of captions are not compared pair by pair. Used by
:mod:`mmdemo.retrieval.checks`.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mmdemo.data.splits import caption_key


class _Pairish(Protocol):
    id: int
    caption: str
    split: str


class UnionFind:
    """Union-find over ``0..n-1`` (the smaller root wins)."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self, members: Iterable[int]) -> list[list[int]]:
        """The sets of two or more among ``members``, each sorted, ordered by first member."""
        out: dict[int, list[int]] = {}
        for i in sorted(set(members)):
            out.setdefault(self.find(i), []).append(i)
        return sorted((g for g in out.values() if len(g) > 1), key=lambda g: g[0])


@dataclass(frozen=True)
class CaptionGroup:
    """Pairs whose captions are the same or nearly so."""

    pair_ids: tuple[int, ...]
    captions: tuple[str, ...]
    splits: tuple[str, ...]
    similarity: float
    """1.0 for identical captions, else the lowest word-pair overlap of the group's links."""

    @property
    def crosses_splits(self) -> bool:
        return len(set(self.splits)) > 1

    def as_json(self) -> dict[str, Any]:
        return {
            "pair_ids": list(self.pair_ids),
            "captions": list(self.captions),
            "splits": list(self.splits),
            "similarity": self.similarity,
        }


_PUNCTUATION = re.compile(r"[^\w\s]+")


def normalised_caption(caption: str) -> str:
    """Case, accents and punctuation dropped, whitespace collapsed: ``"A Café!"`` → ``"a cafe"``."""
    decomposed = unicodedata.normalize("NFKD", caption.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_PUNCTUATION.sub(" ", stripped).split())


def _trigrams(text: str) -> frozenset[str]:
    padded = f" {text} "
    return frozenset(padded[i : i + 3] for i in range(max(1, len(padded) - 2)))


def _overlap_links(sets: Sequence[frozenset[str]], threshold: float) -> list[tuple[int, int]]:
    """Index pairs of sets with Jaccard overlap ≥ ``threshold`` (prefix filtering: exact, and
    only sets sharing one of their rarest items are ever compared)."""
    frequency = Counter(token for s in sets for token in s)
    index: dict[str, list[int]] = {}
    links = []
    for i, items in enumerate(sets):
        if not items:
            continue
        tokens = sorted(items, key=lambda t: (frequency[t], t))
        prefix = len(tokens) - math.ceil(threshold * len(tokens)) + 1
        seen: set[int] = set()
        for token in tokens[:prefix]:
            for j in index.get(token, ()):
                if j not in seen:
                    seen.add(j)
                    inter = len(items & sets[j])
                    if inter / (len(items) + len(sets[j]) - inter) >= threshold:
                        links.append((j, i))
        for token in tokens[:prefix]:
            index.setdefault(token, []).append(i)
    return links


ARTICLES = frozenset({"a", "an", "the"})


def caption_words(caption: str) -> list[str]:
    """The normalised caption's words without articles: what near-duplicates compare."""
    return [w for w in normalised_caption(caption).split() if w not in ARTICLES]


def _typo(a: str, b: str, typo: float) -> bool:
    if min(len(a), len(b)) < 4:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= typo


def near_duplicate_words(a: Sequence[str], b: Sequence[str], typo: float = 0.8) -> bool:
    """Whether two word lists say the same thing but for typos: the same length, in the same
    order, and every differing word (at most one in eight, at least one allowed) a typo of the
    other. Swapped or replaced words ("red"/"blue") make different captions."""
    if len(a) != len(b) or not a:
        return False
    differing = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    if len(differing) > max(1, len(a) // 8):
        return False
    return all(_typo(x, y, typo) for x, y in differing)


def caption_groups(
    pairs: Sequence[_Pairish], typo: float = 0.8
) -> tuple[list[CaptionGroup], list[CaptionGroup]]:
    """(identical captions spanning splits, near-duplicate caption groups).

    Near duplicates are different captions whose words (:func:`caption_words`: case, accents,
    punctuation and articles dropped) are the same, or the same but for a typo
    (:func:`near_duplicate_words`). Candidates come from character-trigram overlap, so not
    every pair of captions is compared.
    """

    def group(members: list[int], value: float) -> CaptionGroup:
        return CaptionGroup(
            tuple(pairs[i].id for i in members),
            tuple(pairs[i].caption for i in members),
            tuple(pairs[i].split for i in members),
            round(value, 4),
        )

    by_key: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_key.setdefault(caption_key(pair.caption), []).append(i)
    identical = [
        group(members, 1.0)
        for members in by_key.values()
        if len(members) > 1 and len({pairs[i].split for i in members}) > 1
    ]
    keys = list(by_key)
    words = [caption_words(k) for k in keys]
    union = UnionFind(len(keys))
    scores: dict[tuple[int, int], float] = {}
    first_of: dict[str, int] = {}
    for n, ws in enumerate(words):
        text = " ".join(ws)
        if text in first_of:
            union.union(first_of[text], n)
            scores[(first_of[text], n)] = 1.0
        else:
            first_of[text] = n
    distinct = list(first_of.values())
    texts = [" ".join(words[n]) for n in distinct]
    for a, b in _overlap_links([_trigrams(t) for t in texts], 0.5):
        x, y = distinct[a], distinct[b]
        if near_duplicate_words(words[x], words[y], typo):
            union.union(x, y)
            ratio = difflib.SequenceMatcher(None, texts[a], texts[b], autojunk=False).ratio()
            scores[(x, y)] = ratio
    near = []
    for members in union.groups(range(len(keys))):
        root = union.find(members[0])
        value = min(v for (x, _), v in scores.items() if union.find(x) == root)
        near.append(group([i for n in members for i in by_key[keys[n]]], value))
    return identical, near
