"""The order in which the Label tab offers pairs, and the per-annotator queue over it.

Orders (:data:`ORDERS`):

- ``"hardest"`` (the default): pairs whose own image ranks worst for their caption first, under
  the chosen model, among the images of the split being labeled (all the collection's images for
  ``split=None``). That is where the model is most wrong, so where a label helps most; after a
  finetune the next round starts from what the new model still gets wrong. Ties keep id order.
  Computed once per model, collection, split and set of pairs from the cached embeddings
  (captions encoded once), in chunks, so a big split never holds its whole similarity matrix;
- ``"in order"``: by pair id, as the pairs were added;
- ``"random"``: a fixed shuffle per seed (a session keeps its seed).

The team queue (:func:`next_in_queue`) walks such an order for one annotator: a pair already
labeled is passed over (by anyone; for an *overlap* pair, by this annotator: overlap pairs are
labeled by everyone, for agreement), and so is a pair another annotator holds a claim on (the
pair they have open, see :meth:`mmdemo.data.store.Store.claim_pair`). Which pairs are overlap
pairs is a fixed share of the collection chosen by a hash of the pair id
(:func:`in_overlap`), the same for every annotator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from mmdemo.data.store import Store
from mmdemo.retrieval.embeddings import EmbeddingCache, Encoder, ProgressFn
from mmdemo.retrieval.search import collection_corpus

HARDEST = "hardest first"
IN_ORDER = "in order"
RANDOM = "random"
ORDERS = (HARDEST, IN_ORDER, RANDOM)
_CHUNK = 512


def positive_ranks(
    store: Store,
    cache: EmbeddingCache,
    model: Encoder,
    fingerprint: str,
    collection_id: int,
    split: str | None,
    progress: ProgressFn | None = None,
) -> dict[int, int]:
    """``{pair_id: rank}``: the 1-based rank of each pair's own image for its caption among the
    split's images (ties count in the pair's favour, as in the Label tab's heading).

    Memoised in the embedding cache until the collection's pairs change (labels do not)."""
    signature = store.pairs_signature(collection_id)
    key = (fingerprint, "positive-ranks", collection_id, split, signature)

    def build() -> dict[int, int]:
        corpus = collection_corpus(
            store, cache, model, fingerprint, collection_id, split, progress=progress
        )
        if not len(corpus):
            return {}
        texts = cache.text_embeddings(model, fingerprint, list(corpus.captions))
        ranks: dict[int, int] = {}
        for start in range(0, len(corpus), _CHUNK):
            scores = texts[start : start + _CHUNK] @ corpus.matrix.T
            own = scores[np.arange(len(scores)), np.arange(start, start + len(scores))]
            above = (scores > own[:, None]).sum(axis=1)
            for offset, count in enumerate(above.tolist()):
                ranks[int(corpus.pair_ids[start + offset])] = 1 + int(count)
        return ranks

    return cache.derived(key, build)


def hardest_first(ranks: Mapping[int, int]) -> list[int]:
    """Pair ids, worst-ranked positive first (ties by id)."""
    return sorted(ranks, key=lambda pair_id: (-ranks[pair_id], pair_id))


def shuffled(pair_ids: Iterable[int], seed: int) -> list[int]:
    """A fixed shuffle of ``pair_ids`` for ``seed`` (stable as pairs come and go)."""

    def key(pair_id: int) -> bytes:
        return hashlib.sha1(f"{seed}:{pair_id}".encode()).digest()

    return sorted(pair_ids, key=key)


def in_overlap(collection_id: int, pair_id: int, share: float) -> bool:
    """Whether a pair belongs to the share labeled by every annotator (a fixed hash draw)."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha1(f"overlap:{collection_id}:{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def next_in_queue(
    order: Sequence[int],
    after: int | None,
    annotator: str | None,
    labeled_by: Mapping[int, set],
    claims: Mapping[int, str],
    is_overlap: Callable[[int], bool],
    unlabeled_only: bool = True,
) -> list[int]:
    """The pairs ``annotator`` may take next, in order from the one after ``after`` (wrapping
    around; from the start when ``after`` is not in ``order``), best first.

    Passed over: pairs another annotator has claimed (unless overlap pairs), and with
    ``unlabeled_only`` pairs that are done: labeled by anyone, or for an overlap pair by
    ``annotator``. The caller claims the first it can (a claim may be lost to a race).
    """
    start = 0
    if after is not None:
        try:
            start = list(order).index(after) + 1
        except ValueError:
            start = 0
    walk = list(order[start:]) + list(order[:start])
    chosen = []
    for pair_id in walk:
        overlap = is_overlap(pair_id)
        holder = claims.get(pair_id)
        if not overlap and holder is not None and holder != annotator:
            continue
        if unlabeled_only:
            authors = labeled_by.get(pair_id, set())
            if overlap and annotator in authors:
                continue
            if not overlap and authors:
                continue
        chosen.append(pair_id)
    return chosen
