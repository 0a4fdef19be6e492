"""Labels by several people: agreement between annotators, and one decision per candidate.

A label is one author's decision about one *target* of a pair (a candidate image, or a
caption), of kind ``"negative"`` (hard negative) or ``"also-positive"`` (also correct). When two
people decided the same target, their decisions can be compared:

- :func:`cohen_kappa` is Cohen's kappa of two raters over two-category decisions,
  ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the share of equal decisions and ``p_e`` the agreement
  expected from each rater's own shares; ``None`` when ``p_e`` is 1 (both raters used one and
  the same kind for everything: kappa is undefined);
- :func:`agreement` computes it for every two annotators who decided a common target, and over
  all those decision pairs together (the headline; with two annotators it is their kappa), with
  per-annotator counts. Targets decided by one person only do not count; labels without an
  author cannot be attributed and are left out.

:func:`consensus` is the rule training and exports use for conflicting labels: a target someone
marked also-correct is never a negative; otherwise it is a negative once (the latest label).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from mmdemo.data.store import NegativeLabel, author_key

KINDS = ("negative", "also-positive")


def target_of(label: NegativeLabel) -> tuple[int, str, str]:
    """What a label decides: ``(pair_id, "image" | "caption", sha256 or caption)``."""
    if label.negative_sha256 is not None:
        return (label.pair_id, "image", label.negative_sha256)
    return (label.pair_id, "caption", label.negative_caption or "")


def cohen_kappa(decisions: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of ``(rater A's kind, rater B's kind)`` decisions (``None`` if undefined)."""
    n = len(decisions)
    if n == 0:
        return None
    observed = sum(a == b for a, b in decisions) / n
    first = Counter(a for a, _ in decisions)
    second = Counter(b for _, b in decisions)
    expected = sum(first[k] * second[k] for k in set(first) | set(second)) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class AnnotatorCounts:
    """One annotator's labels."""

    author: str
    pairs: int
    negatives: int
    also_positives: int


@dataclass(frozen=True)
class RaterAgreement:
    """Two annotators on the targets both decided."""

    a: str
    b: str
    items: int
    agreed: int
    kappa: float | None


@dataclass(frozen=True)
class Agreement:
    """Agreement over every target decided by two or more annotators."""

    items: int
    """Targets (pair, candidate) decided by at least two annotators."""
    shared_pairs: int
    """Pairs with such a target."""
    decisions: int
    """Decision pairs compared (one per two annotators per target)."""
    agreed: int
    kappa: float | None
    """Cohen's kappa over all decision pairs (``None``: undefined or nothing to compare)."""
    raters: tuple[RaterAgreement, ...]
    annotators: tuple[AnnotatorCounts, ...]
    """Everyone who labeled, most labels first."""

    @property
    def observed(self) -> float | None:
        """The share of decision pairs that agree."""
        return self.agreed / self.decisions if self.decisions else None


def agreement(labels: Iterable[NegativeLabel]) -> Agreement:
    """Agreement between annotators and per-annotator counts from a collection's labels."""
    by_target: dict[tuple, dict[str, str]] = defaultdict(dict)
    counts: dict[str, Counter] = defaultdict(Counter)
    pairs_of: dict[str, set[int]] = defaultdict(set)
    for label in labels:
        if not label.author:
            continue
        by_target[target_of(label)][label.author] = label.kind
        counts[label.author][label.kind] += 1
        pairs_of[label.author].add(label.pair_id)
    per_raters: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    shared: set[int] = set()
    items = 0
    for target, kinds in by_target.items():
        if len(kinds) < 2:
            continue
        items += 1
        shared.add(target[0])
        for a, b in combinations(sorted(kinds), 2):
            per_raters[(a, b)].append((kinds[a], kinds[b]))
    raters = tuple(
        RaterAgreement(a, b, len(d), sum(x == y for x, y in d), cohen_kappa(d))
        for (a, b), d in sorted(per_raters.items())
    )
    pooled = [decision for d in per_raters.values() for decision in d]
    annotators = tuple(
        sorted(
            (
                AnnotatorCounts(
                    author,
                    len(pairs_of[author]),
                    counts[author]["negative"],
                    counts[author]["also-positive"],
                )
                for author in counts
            ),
            key=lambda c: (-(c.negatives + c.also_positives), c.author),
        )
    )
    return Agreement(
        items=items,
        shared_pairs=len(shared),
        decisions=len(pooled),
        agreed=sum(a == b for a, b in pooled),
        kappa=cohen_kappa(pooled),
        raters=raters,
        annotators=annotators,
    )


def latest_per_annotator(labels: Iterable[NegativeLabel]) -> list[NegativeLabel]:
    """Each annotator's latest label of each target (no author: the local annotator's), in
    the order the targets first appear."""
    latest: dict[tuple, NegativeLabel] = {}
    for label in labels:
        key = (target_of(label), author_key(label.author))
        held = latest.get(key)
        if held is None or label.created_at >= held.created_at:
            latest[key] = label
    return list(latest.values())


def consensus(labels: Iterable[NegativeLabel]) -> list[NegativeLabel]:
    """One label per target, in the order targets first appear: an also-positive when anyone
    marked the target also correct (it is never a negative then), else its latest negative.

    Each annotator counts with their latest label of a target only (a label without an author
    is the local annotator's, :func:`mmdemo.data.store.author_key`): someone who changed their
    mind is not overruled by their own older label."""
    chosen: dict[tuple, NegativeLabel] = {}
    for label in latest_per_annotator(labels):
        key = target_of(label)
        held = chosen.get(key)
        if held is None:
            chosen[key] = label
        elif held.kind == "also-positive":
            continue
        elif label.kind == "also-positive" or label.created_at >= held.created_at:
            chosen[key] = label
    return list(chosen.values())


def conflicts(labels: Iterable[NegativeLabel]) -> int:
    """Targets marked a hard negative by someone and also correct by someone else."""
    kinds: dict[tuple, set[str]] = defaultdict(set)
    for label in latest_per_annotator(labels):
        kinds[target_of(label)].add(label.kind)
    return sum(1 for found in kinds.values() if len(found) > 1)
