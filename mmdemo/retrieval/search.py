"""Exact cosine search over cached embeddings, and per-query ranks under two models.

All vectors are normalised float32, so cosine similarity is a dot product. :func:`search` is the
bare kernel (one matrix-vector product, ``argpartition``, a sort of the top k).
:func:`collection_corpus` is a collection's (or split's) image matrix and pair metadata, built
from the embedding cache and memoised there until the collection's pairs change, so switching
queries costs one text lookup and one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmdemo.data.store import Store
from mmdemo.retrieval.embeddings import EmbeddingCache, Encoder, ProgressFn
from mmdemo.settings import Settings

DIRECTIONS = ("text_to_image", "image_to_text")
_RANK_CHUNK = 256


@dataclass(frozen=True)
class Hit:
    """One search result."""

    pair_id: int
    image_sha256: str
    caption: str
    score: float
    rank: int
    """1-based."""
    positive: bool = False
    """A ground-truth match: the pair's caption is the query text, or it is the query image."""

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageQuery:
    """A query by an image already in the store (picked from the collection)."""

    sha256: str


Query = Any
"""``str`` (text), :class:`ImageQuery` (a stored image) or a PIL image (an upload)."""


@dataclass(frozen=True)
class Corpus:
    """A collection's pairs (optionally one split) and their image embeddings, row-aligned."""

    fingerprint: str
    collection_id: int
    split: str | None
    pair_ids: np.ndarray
    shas: tuple[str, ...]
    captions: tuple[str, ...]
    matrix: np.ndarray

    def __len__(self) -> int:
        return len(self.shas)


def search(query_vec: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of ``matrix`` by dot product with ``query_vec`` (cosine, when normalised).

    Returns ``(indices, scores)``, best first; equal scores keep row order.
    """
    query = np.asarray(query_vec, dtype=np.float32).reshape(-1)
    n = int(matrix.shape[0])
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return top_k(matrix @ query, k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` highest scores, best first; ties keep index order."""
    n = int(scores.shape[0])
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    top = np.argpartition(scores, n - k)[n - k :] if k < n else np.arange(n)
    order = np.lexsort((top, -scores[top]))
    indices = top[order].astype(np.int64, copy=False)
    return indices, scores[indices]


def collection_corpus(
    store: Store,
    cache: EmbeddingCache,
    model: Encoder,
    fingerprint: str,
    collection_id: int,
    split: str | None = None,
    progress: ProgressFn | None = None,
) -> Corpus:
    """The collection's image matrix under a model; encodes only images not cached yet.

    Memoised in the cache per (model, collection, split) until :meth:`Store.pairs_signature`
    changes: a deleted pair drops out, a replaced image (new SHA) is encoded, nothing else is.
    """
    signature = store.pairs_signature(collection_id)
    key = (fingerprint, "corpus", collection_id, split, signature)

    def build() -> Corpus:
        pairs = store.list_pairs(collection_id, split=split)
        shas = tuple(p.image_sha256 for p in pairs)
        matrix = cache.image_embeddings(model, fingerprint, shas, progress=progress)
        return Corpus(
            fingerprint,
            collection_id,
            split,
            np.fromiter((p.id for p in pairs), dtype=np.int64, count=len(pairs)),
            shas,
            tuple(p.caption for p in pairs),
            matrix,
        )

    return cache.derived(key, build)


def embed_query(
    cache: EmbeddingCache, model: Encoder, fingerprint: str, query: Query
) -> np.ndarray:
    """The normalised embedding of a text, a stored image or a PIL image (cached)."""
    if isinstance(query, str):
        if not query.strip():
            raise ValueError("Type a query, or pick an image.")
        return cache.text_embeddings(model, fingerprint, [query])[0]
    if isinstance(query, ImageQuery):
        return cache.image_embeddings(model, fingerprint, [query.sha256])[0]
    if hasattr(query, "convert"):
        return cache.pil_embedding(model, fingerprint, query)
    raise TypeError(f"Cannot search with a {type(query).__name__}; use text or an image.")


def _norm_caption(text: str) -> str:
    return " ".join(text.split()).casefold()


def search_collection(
    store: Store,
    settings: Settings,
    cache: EmbeddingCache,
    model: Encoder,
    fingerprint: str,
    collection_id: int,
    query: Query,
    k: int = 10,
    split: str | None = None,
) -> list[Hit]:
    """Top-``k`` pairs of a collection for a text or image query under one model.

    ``positive`` marks ground truth: pairs whose caption is the query text (ignoring case and
    spacing), or the pair of the query image and pairs sharing its caption. ``settings`` is
    accepted so every domain entry point takes the same arguments.
    """
    del settings  # locations come from the cache; kept for a uniform signature
    corpus = collection_corpus(store, cache, model, fingerprint, collection_id, split)
    vector = embed_query(cache, model, fingerprint, query)
    indices, scores = search(vector, corpus.matrix, k)
    wanted: set[str] = set()
    if isinstance(query, str):
        wanted = {_norm_caption(query)}
    elif isinstance(query, ImageQuery):
        wanted = {
            _norm_caption(c)
            for s, c in zip(corpus.shas, corpus.captions, strict=True)
            if s == query.sha256
        }
    hits = []
    for rank, (index, score) in enumerate(
        zip(indices.tolist(), scores.tolist(), strict=True), start=1
    ):
        caption = corpus.captions[index]
        sha = corpus.shas[index]
        positive = _norm_caption(caption) in wanted or (
            isinstance(query, ImageQuery) and sha == query.sha256
        )
        hits.append(Hit(int(corpus.pair_ids[index]), sha, caption, float(score), rank, positive))
    return hits


# -- per-query ranks of the positive --------------------------------------------------------------
@dataclass(frozen=True)
class QueryRank:
    """Where the best ground-truth match of one eval query landed (1 = top)."""

    query: str
    """The caption (text→image) or the caption of the query image's pair (image→text)."""
    pair_id: int
    image_sha256: str
    rank: int
    score: float
    """Similarity of the best ground-truth match."""
    n_positives: int


def _also_positive(store: Store, collection_id: int) -> list[tuple[int, str]]:
    """(pair_id, image_sha256) of every "also correct" label in the collection."""
    return [
        (label.pair_id, label.negative_sha256)
        for label in store.labels_for_collection(collection_id)
        if label.kind == "also-positive" and label.negative_sha256 is not None
    ]


def _ranks(queries: np.ndarray, targets: np.ndarray, relevant: Sequence[Sequence[int]]):
    """1-based rank of the best relevant target per query, and its score.

    Ties count in the query's favour (only strictly higher scores push it down).
    """
    ranks = np.zeros(len(relevant), dtype=np.int64)
    best = np.zeros(len(relevant), dtype=np.float32)
    for start in range(0, len(relevant), _RANK_CHUNK):
        scores = queries[start : start + _RANK_CHUNK] @ targets.T
        for offset, row in enumerate(scores):
            top = float(row[list(relevant[start + offset])].max())
            best[start + offset] = top
            ranks[start + offset] = 1 + int((row > top).sum())
    return ranks, best


def positive_ranks(
    store: Store,
    cache: EmbeddingCache,
    model: Encoder,
    fingerprint: str,
    collection_id: int,
    split: str | None = "eval",
    direction: str = "text_to_image",
) -> list[QueryRank]:
    """For each query of a split, the rank of its ground truth under one model.

    text→image: one query per distinct caption; its positives are every image with that caption
    plus images labelled "also correct" for it. image→text: one query per image against the
    split's distinct captions; its positives are its caption and those it was labelled "also
    correct" for. Captions are compared exactly (identical captions are one query).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}")
    corpus = collection_corpus(store, cache, model, fingerprint, collection_id, split)
    if len(corpus) == 0:
        return []
    captions = list(dict.fromkeys(corpus.captions))
    caption_index = {c: i for i, c in enumerate(captions)}
    row_of_sha = {s: i for i, s in enumerate(corpus.shas)}
    caption_of_pair = dict(zip(corpus.pair_ids.tolist(), corpus.captions, strict=True))
    extra = [
        (caption_index[caption_of_pair[pid]], row_of_sha[sha])
        for pid, sha in _also_positive(store, collection_id)
        if pid in caption_of_pair and sha in row_of_sha
    ]
    text_vectors = cache.text_embeddings(model, fingerprint, captions)
    image_vectors = np.asarray(corpus.matrix)
    if direction == "text_to_image":
        relevant: list[list[int]] = [[] for _ in captions]
        for row, caption in enumerate(corpus.captions):
            relevant[caption_index[caption]].append(row)
        for text_row, image_row in extra:
            relevant[text_row].append(image_row)
        ranks, best = _ranks(text_vectors, image_vectors, relevant)
        first = [rows[0] for rows in relevant]
        return [
            QueryRank(
                captions[i],
                int(corpus.pair_ids[first[i]]),
                corpus.shas[first[i]],
                int(ranks[i]),
                float(best[i]),
                len(set(relevant[i])),
            )
            for i in range(len(captions))
        ]
    relevant = [[caption_index[c]] for c in corpus.captions]
    for text_row, image_row in extra:
        relevant[image_row].append(text_row)
    ranks, best = _ranks(image_vectors, text_vectors, relevant)
    return [
        QueryRank(
            corpus.captions[i],
            int(corpus.pair_ids[i]),
            corpus.shas[i],
            int(ranks[i]),
            float(best[i]),
            len(set(relevant[i])),
        )
        for i in range(len(corpus))
    ]


def compare_runs(
    store: Store,
    settings: Settings,
    cache: EmbeddingCache,
    model_a: Encoder,
    fingerprint_a: str,
    model_b: Encoder,
    fingerprint_b: str,
    collection_id: int,
    split: str | None = "eval",
    direction: str = "text_to_image",
) -> list[dict]:
    """Per-query ranks of the ground truth under model A (e.g. base) and B (e.g. finetuned).

    Rows ``{query, pair_id, image_sha256, rank_a, rank_b, delta, score_a, score_b,
    n_positives}`` with ``delta = rank_a - rank_b`` (positive: B ranks it higher), sorted most
    improved first and most regressed last.
    """
    del settings  # uniform signature with the other entry points
    ranks_a = positive_ranks(store, cache, model_a, fingerprint_a, collection_id, split, direction)
    ranks_b = positive_ranks(store, cache, model_b, fingerprint_b, collection_id, split, direction)
    by_key_b = {(r.query, r.pair_id): r for r in ranks_b}
    rows = []
    for a in ranks_a:
        b = by_key_b.get((a.query, a.pair_id))
        if b is None:  # the collection changed between the two passes
            continue
        rows.append(
            {
                "query": a.query,
                "pair_id": a.pair_id,
                "image_sha256": a.image_sha256,
                "rank_a": a.rank,
                "rank_b": b.rank,
                "delta": a.rank - b.rank,
                "score_a": round(a.score, 6),
                "score_b": round(b.score, 6),
                "n_positives": a.n_positives,
            }
        )
    rows.sort(key=lambda r: (-r["delta"], r["rank_b"], r["pair_id"]))
    return rows
