"""Retrieval metrics for a text–image model, the same before and after a finetune.

Everything is computed from embeddings (exact cosine, float64, numpy), so the numbers can be
checked by hand and the Compare tab can reuse cached embeddings.

Conventions (as in the CLIP retrieval tables):

- text→image: the queries are the *distinct* captions, the corpus the distinct images; an image is
  relevant to a caption when some pair joins them. Identical captions are relevant to each other's
  images, so retrieving another image with the very same caption is not a miss.
- image→text: the queries are the distinct images, the corpus the distinct captions; the relevant
  captions of an image are all captions paired with it.
- recall@k is the share of queries with a relevant item in the top k ("hit rate"), MRR@10 the mean
  reciprocal rank of the first relevant item (0 beyond 10), NDCG@10 binary-relevance NDCG.
- Ties are broken against the query: a non-relevant item with the same score ranks first, so a
  collapsed model (all embeddings equal) scores chance, not perfection.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmdemo.data.images import load_rgb, train_path
from mmdemo.data.store import Store
from mmdemo.settings import Settings

KS = (1, 5, 10)
METRIC_KEYS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "queries")
DIRECTIONS = ("t2i", "i2t")
_CHUNK = 1024  # queries scored at once: bounds the memory of the score matrix


class EvaluationError(ValueError):
    """The split cannot be evaluated (e.g. no pairs); ``str(exc)`` is a message for people."""


@dataclass
class EncodedSplit:
    """One row per pair: caption and image embeddings (normalised float32) and their keys."""

    text_emb: np.ndarray
    image_emb: np.ndarray
    captions: list[str]
    image_ids: list[str]


def _distinct(keys: Sequence[Hashable]) -> tuple[list[int], np.ndarray]:
    """First index of every distinct key (in first-seen order) and each row's distinct index."""
    seen: dict[Hashable, int] = {}
    firsts: list[int] = []
    index = np.empty(len(keys), dtype=np.int64)
    for row, key in enumerate(keys):
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(row)
        index[row] = seen[key]
    return firsts, index


def _unit(rows: np.ndarray) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"Expected a 2-D embedding matrix, got shape {array.shape}.")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return array / norms


def _rank_queries(
    queries: np.ndarray, corpus: np.ndarray, relevant: list[set[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the first relevant item (1-based) and NDCG@10 for every query."""
    n_queries = queries.shape[0]
    ranks = np.empty(n_queries, dtype=np.int64)
    ndcg = np.empty(n_queries, dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, 12, dtype=np.float64))
    for start in range(0, n_queries, _CHUNK):
        stop = min(start + _CHUNK, n_queries)
        scores = queries[start:stop] @ corpus.T
        rel = np.zeros(scores.shape, dtype=bool)
        for offset, items in enumerate(relevant[start:stop]):
            rel[offset, list(items)] = True
        # Sort by score descending; among equal scores non-relevant items first (pessimistic).
        order = np.lexsort((rel, -scores), axis=-1)
        sorted_rel = np.take_along_axis(rel, order, axis=1)
        ranks[start:stop] = np.argmax(sorted_rel, axis=1) + 1
        top = sorted_rel[:, :10]
        dcg = (top * discounts[: top.shape[1]]).sum(axis=1)
        ideal_counts = np.minimum(rel.sum(axis=1), 10)
        idcg = np.array([discounts[:count].sum() for count in ideal_counts])
        ndcg[start:stop] = dcg / idcg
    return ranks, ndcg


def _summarise(ranks: np.ndarray, ndcg: np.ndarray) -> dict[str, float | int]:
    result: dict[str, float | int] = {f"recall@{k}": float(np.mean(ranks <= k)) for k in KS}
    result["mrr@10"] = float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))
    result["ndcg@10"] = float(np.mean(ndcg))
    result["queries"] = int(len(ranks))
    return result


def _directions(
    text_emb: np.ndarray,
    image_emb: np.ndarray,
    captions: Sequence[str],
    image_ids: Sequence[Hashable],
) -> dict[str, tuple[list[Hashable], np.ndarray, np.ndarray]]:
    """Per direction: the query keys, first-relevant ranks and NDCG@10 values."""
    n = len(captions)
    if n == 0:
        raise EvaluationError("There are no pairs to evaluate.")
    if not (len(image_ids) == n == len(text_emb) == len(image_emb)):
        raise ValueError(
            f"Row counts differ: {len(text_emb)} text and {len(image_emb)} image embeddings, "
            f"{n} captions, {len(image_ids)} image ids."
        )
    text, image = _unit(text_emb), _unit(image_emb)
    cap_first, cap_index = _distinct(list(captions))
    img_first, img_index = _distinct(list(image_ids))
    images_of_caption: list[set[int]] = [set() for _ in cap_first]
    captions_of_image: list[set[int]] = [set() for _ in img_first]
    for c, i in zip(cap_index.tolist(), img_index.tolist(), strict=True):
        images_of_caption[c].add(i)
        captions_of_image[i].add(c)
    caption_queries, image_corpus = text[cap_first], image[img_first]
    image_queries, caption_corpus = image[img_first], text[cap_first]
    t2i = _rank_queries(caption_queries, image_corpus, images_of_caption)
    i2t = _rank_queries(image_queries, caption_corpus, captions_of_image)
    return {
        "t2i": ([captions[r] for r in cap_first], *t2i),
        "i2t": ([image_ids[r] for r in img_first], *i2t),
    }


def retrieval_metrics(
    text_emb: np.ndarray,
    image_emb: np.ndarray,
    captions: Sequence[str],
    image_ids: Sequence[Hashable],
) -> dict[str, dict[str, float | int]]:
    """Text→image and image→text recall@1/5/10, MRR@10, NDCG@10 and the number of queries.

    One row per pair: ``text_emb[i]`` embeds ``captions[i]``, ``image_emb[i]`` the image
    ``image_ids[i]``. Returns ``{"t2i": {...}, "i2t": {...}}`` with the keys of
    :data:`METRIC_KEYS`.
    """
    found = _directions(text_emb, image_emb, captions, image_ids)
    return {d: _summarise(found[d][1], found[d][2]) for d in DIRECTIONS}


def query_ranks(
    text_emb: np.ndarray,
    image_emb: np.ndarray,
    captions: Sequence[str],
    image_ids: Sequence[Hashable],
) -> dict[str, dict[Hashable, int]]:
    """Rank of the first relevant item for every query: ``{"t2i": {caption: rank},
    "i2t": {image_id: rank}}`` (1 is best), to compare two models query by query."""
    found = _directions(text_emb, image_emb, captions, image_ids)
    return {d: dict(zip(found[d][0], found[d][1].tolist(), strict=True)) for d in DIRECTIONS}


# -- encoding a split ------------------------------------------------------------------------------
def encode_texts(model: Any, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Embed captions as text, always: each is wrapped as ``{"text": …}`` so that a caption that
    happens to name an existing image file is never read as an image."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = model.encode(
        [{"text": t} for t in texts],
        batch_size=batch_size,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return _unit(vectors).astype(np.float32)


def encode_image_files(
    model: Any, paths: Sequence[Any], batch_size: int = 32, chunk: int = 256
) -> np.ndarray:
    """Embed image files (loaded as PIL images, ``chunk`` at a time to bound memory)."""
    blocks = []
    for start in range(0, len(paths), chunk):
        images = [load_rgb(p) for p in paths[start : start + chunk]]
        blocks.append(
            model.encode(
                images, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        )
    if not blocks:
        return np.zeros((0, 0), dtype=np.float32)
    return _unit(np.concatenate(blocks)).astype(np.float32)


def encode_split(
    model: Any,
    store: Store,
    settings: Settings,
    collection_id: int,
    split: str = "eval",
    batch_size: int = 32,
) -> EncodedSplit:
    """Embed the captions and pre-resized images of a split's pairs (one modality per call)."""
    pairs = store.list_pairs(collection_id, split=split)
    if not pairs:
        raise EvaluationError(
            f"The {split} split of this collection is empty: move some pairs to {split!r} to "
            "measure retrieval."
        )
    captions = [p.caption for p in pairs]
    image_ids = [p.image_sha256 for p in pairs]
    paths = [train_path(settings.images_dir, sha) for sha in image_ids]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise EvaluationError(
            f"{len(missing)} pre-resized image(s) are missing, e.g. {missing[0]}; re-import them."
        )
    return EncodedSplit(
        text_emb=encode_texts(model, captions, batch_size),
        image_emb=encode_image_files(model, paths, batch_size),
        captions=captions,
        image_ids=image_ids,
    )


def evaluate_model(
    model: Any,
    store: Store,
    settings: Settings,
    collection_id: int,
    split: str = "eval",
    batch_size: int = 32,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Encode a split with ``model`` (in eval mode) and return :func:`retrieval_metrics`."""
    if progress is not None:
        progress(f"encoding the {split} split")
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        encoded = encode_split(model, store, settings, collection_id, split, batch_size)
    finally:
        if was_training:
            model.train()
    return retrieval_metrics(
        encoded.text_emb, encoded.image_emb, encoded.captions, encoded.image_ids
    )


# -- the evaluation a stranger can reproduce ---------------------------------------------------
IR_METRIC_KEYS = ("accuracy@1", "accuracy@5", "accuracy@10", "mrr@10", "ndcg@10")
"""What a published card reports; ``accuracy@k`` is this module's ``recall@k`` (the hit rate)."""


@dataclass(frozen=True)
class PublishedPair:
    """One pair as a published dataset holds it: caption, image id and the decoded image."""

    caption: str
    image_id: str
    image: Any


def published_pairs(
    store: Store, settings: Settings, collection_id: int, split: str = "eval"
) -> list[PublishedPair]:
    """A split's pairs with their images decoded exactly as ``datasets`` decodes the export.

    The export embeds the stored originals' bytes in an ``Image()`` column; decoding the same
    bytes with the same feature gives the very pixels someone loading the published dataset gets.
    Pairs whose original is missing are left out, as the export leaves them out.
    """
    import datasets

    from mmdemo.data.export import ImageReader

    feature, reader = datasets.Image(), ImageReader(store, settings)
    rows = []
    for pair in store.list_pairs(collection_id, split=split):
        cell = reader.cell(pair.image_sha256)
        if cell is not None:
            image = feature.decode_example(cell)
            rows.append(PublishedPair(pair.caption, pair.image_sha256, image))
    return rows


def ir_evaluators(pairs: Sequence[PublishedPair], batch_size: int = 32) -> dict[str, Any]:
    """sentence-transformers ``InformationRetrievalEvaluator``s for both directions.

    Same conventions as :func:`retrieval_metrics`: distinct captions query the distinct images
    (every image paired with the exact caption is relevant) and the other way round. The
    published card's snippet builds exactly these from the published dataset.
    """
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    if not pairs:
        raise EvaluationError("There are no pairs to evaluate.")
    captions: dict[str, str] = {}
    images: dict[str, Any] = {}
    t2i: dict[str, set[str]] = {}
    i2t: dict[str, set[str]] = {}
    for pair in pairs:
        captions[pair.caption] = pair.caption
        images.setdefault(pair.image_id, pair.image)
        t2i.setdefault(pair.caption, set()).add(pair.image_id)
        i2t.setdefault(pair.image_id, set()).add(pair.caption)
    settings = {
        "accuracy_at_k": [1, 5, 10],
        "precision_recall_at_k": [10],
        "batch_size": batch_size,
        "write_csv": False,
    }
    return {
        "t2i": InformationRetrievalEvaluator(captions, images, t2i, name="t2i", **settings),
        "i2t": InformationRetrievalEvaluator(images, captions, i2t, name="i2t", **settings),
    }


def ir_metrics(model: Any, evaluators: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    """Run :func:`ir_evaluators` on ``model``: ``{"t2i": {"accuracy@1": …, "queries": n}, …}``."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        out: dict[str, dict[str, float | int]] = {}
        for name, evaluator in evaluators.items():
            results = evaluator(model)
            prefix = f"{name}_{model.similarity_fn_name}_"
            found: dict[str, float | int] = {k: float(results[prefix + k]) for k in IR_METRIC_KEYS}
            found["queries"] = len(evaluator.queries)
            out[name] = found
        return out
    finally:
        if was_training:
            model.train()
