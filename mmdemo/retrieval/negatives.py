"""Candidates for hand-labeling hard negatives (the Label mode), and labeling progress.

For a pair, the chosen model ranks the images of the pair's split (so a train pair's negatives
are train images and eval images never leak into training) by similarity to its caption, with
the positive left out. Mining is our own matrix product over the cached embeddings rather than
``sentence_transformers.util.mine_hard_negatives``, which fails on PIL image columns and would
re-encode everything on each call.

A candidate scored almost as high as the positive (within ``margin``), or whose caption is the
same text, is flagged ``possible_false_negative``: it may be a correct match, better labeled
"also correct" than "hard negative".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmdemo.data.store import NegativeLabel, Pair, Store
from mmdemo.retrieval.embeddings import EmbeddingCache, Encoder
from mmdemo.retrieval.search import collection_corpus, top_k
from mmdemo.settings import Settings

DEFAULT_MARGIN = 0.05
"""Cosine gap below the positive's score within which a candidate may be a false negative."""


@dataclass(frozen=True)
class Candidate:
    """An image the model ranks high for a caption that is not the caption's own image."""

    pair_id: int
    """The pair the candidate image belongs to (its own caption is ``caption``)."""
    image_sha256: str
    caption: str
    score: float
    rank: int
    """1-based among the candidates (the positive left out)."""
    possible_false_negative: bool
    label: str | None = None
    """``"negative"`` / ``"also-positive"`` when already labeled for this pair."""
    label_id: int | None = None


@dataclass(frozen=True)
class LabelTask:
    """What the Label mode shows for one pair."""

    pair: Pair
    positive_score: float
    positive_rank: int
    """Rank of the pair's own image among all images of the split (1 = the model gets it)."""
    candidates: list[Candidate]
    caption_labels: list[tuple[int, str, str]]
    """``(label_id, kind, negative_caption)`` of caption labels already on the pair."""
    suggested_captions: list[str]
    """Hard-negative captions to offer (attribute swaps of demo captions), not yet labeled."""


def _same_caption(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def suggest_negative_captions(caption: str) -> list[str]:
    """Hard-negative captions for a caption, where the demo grammar knows how (else none)."""
    from mmdemo.data.demo import hard_negative_captions

    return [c for c in hard_negative_captions(caption) if c and c != caption]


def label_candidates(
    store: Store,
    settings: Settings,
    cache: EmbeddingCache,
    model: Encoder,
    fingerprint: str,
    pair_id: int,
    k: int = 8,
    margin: float = DEFAULT_MARGIN,
    split: str | None = "same",
) -> LabelTask:
    """The top-``k`` images for a pair's caption with its positive left out, flagged and labeled.

    ``split="same"`` mines among the pair's own split, ``None`` the whole collection.
    ``settings`` is accepted for a uniform signature with the other entry points.
    """
    del settings
    pair = store.get_pair(pair_id)
    pool_split = pair.split if split == "same" else split
    corpus = collection_corpus(store, cache, model, fingerprint, pair.collection_id, pool_split)
    query = cache.text_embeddings(model, fingerprint, [pair.caption])[0]
    positive = cache.image_embeddings(model, fingerprint, [pair.image_sha256])[0]
    positive_score = float(np.dot(positive, query))
    scores_all = corpus.matrix @ query if len(corpus) else np.zeros(0, dtype=np.float32)
    others = np.fromiter((s != pair.image_sha256 for s in corpus.shas), bool, len(corpus))
    positive_rank = 1 + int((scores_all[others] > positive_score).sum())
    indices, scores = top_k(scores_all, k + 1)
    labels = store.labels_for_pair(pair_id)
    image_labels = {lab.negative_sha256: lab for lab in labels if lab.negative_sha256}
    candidates: list[Candidate] = []
    for index, score in zip(indices.tolist(), scores.tolist(), strict=True):
        sha = corpus.shas[index]
        if sha == pair.image_sha256 or len(candidates) == k:
            continue
        caption = corpus.captions[index]
        label = image_labels.get(sha)
        candidates.append(
            Candidate(
                pair_id=int(corpus.pair_ids[index]),
                image_sha256=sha,
                caption=caption,
                score=float(score),
                rank=len(candidates) + 1,
                possible_false_negative=bool(
                    score >= positive_score - margin or _same_caption(caption, pair.caption)
                ),
                label=label.kind if label else None,
                label_id=label.id if label else None,
            )
        )
    caption_labels = caption_labels_of(labels)
    suggestions = open_suggestions(pair.caption, caption_labels)
    return LabelTask(pair, positive_score, positive_rank, candidates, caption_labels, suggestions)


def labeled_pair_ids(store: Store, collection_id: int) -> set[int]:
    """Pairs with at least one label (image or caption, either kind)."""
    return {label.pair_id for label in store.labels_for_collection(collection_id)}


def labeling_progress(
    store: Store, collection_id: int, split: str | None = None
) -> tuple[int, int]:
    """``(n_labeled, m_total)``: pairs with at least one label, and all pairs (of a split).

    Two counting queries: the Label tab shows this after every label, on big collections too.
    """
    return store.count_labeled_pairs(collection_id, split), store.count_pairs(
        collection_id, split=split
    )


def next_pair_to_label(
    store: Store,
    collection_id: int,
    after_pair_id: int | None = None,
    split: str | None = "train",
    unlabeled_only: bool = True,
) -> Pair | None:
    """The next pair for the Label mode after ``after_pair_id`` (wrapping around), or ``None``.

    With ``unlabeled_only`` pairs that already carry a label are passed over, so "skip" moves on
    and labeled pairs do not come back. One indexed query, whatever the collection's size.
    """
    return store.next_pair(collection_id, after_pair_id, split, unlabeled_only)


def with_labels(
    candidates: Sequence[Candidate], labels: Sequence[NegativeLabel]
) -> tuple[Candidate, ...]:
    """The candidates with their label marks taken from ``labels`` (the pair's labels now).

    What a label change needs to redraw: no re-ranking, no embeddings, one read of the labels.
    """
    by_image = {lab.negative_sha256: lab for lab in labels if lab.negative_sha256}
    updated = []
    for candidate in candidates:
        label = by_image.get(candidate.image_sha256)
        updated.append(
            dataclasses.replace(
                candidate,
                label=label.kind if label else None,
                label_id=label.id if label else None,
            )
        )
    return tuple(updated)


def caption_labels_of(labels: Sequence[NegativeLabel]) -> list[tuple[int, str, str]]:
    """``(label_id, kind, negative_caption)`` of the caption labels among ``labels``."""
    return [(lab.id, lab.kind, lab.negative_caption) for lab in labels if lab.negative_caption]


def open_suggestions(caption: str, caption_labels: Sequence[tuple[int, str, str]]) -> list[str]:
    """Hard-negative caption suggestions for ``caption`` not labeled yet."""
    taken = {text for _, _, text in caption_labels}
    return [c for c in suggest_negative_captions(caption) if c not in taken]
