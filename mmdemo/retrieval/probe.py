"""The attribute-binding probe: does the model know *which* shape is red?

Each eval image of the demo collection is offered its own caption and the same caption with the
two colours swapped ("a red circle above a blue square" vs "a blue circle above a red square").
Both name the same words, so a bag-of-words model cannot tell them apart and scores about 50%;
a model that binds colours to shapes prefers its own caption. Hard negatives like the swapped
captions are known to fix this (NegCLIP); the probe shows whether finetuning did.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmdemo.data.store import Store
from mmdemo.retrieval.embeddings import EmbeddingCache, Encoder
from mmdemo.settings import Settings

SwapFn = Callable[[str], str | None]


def _default_swap() -> SwapFn:
    from mmdemo.data.demo import swap_attributes

    return swap_attributes


def binding_probe(
    model: Encoder,
    store: Store,
    settings: Settings,
    collection_id: int,
    split: str | None = "eval",
    *,
    cache: EmbeddingCache | None = None,
    fingerprint: str | None = None,
    swap: SwapFn | None = None,
) -> dict | None:
    """How often the model scores an image's caption above its attribute-swapped twin.

    Returns ``{"accuracy", "correct", "n", "chance"}`` (a tie counts as wrong), or ``None``
    when no caption of the split can be swapped (not a demo-style collection). With ``cache``
    and ``fingerprint`` the embeddings come from (and go to) the embedding cache.
    """
    swap = swap or _default_swap()
    items = []
    for pair in store.list_pairs(collection_id, split=split):
        swapped = swap(pair.caption)
        if swapped and swapped != pair.caption:
            items.append((pair.image_sha256, pair.caption, swapped))
    if not items:
        return None
    shas = [sha for sha, _, _ in items]
    texts = [c for _, c, _ in items] + [s for _, _, s in items]
    if cache is not None and fingerprint is not None:
        images = cache.image_embeddings(model, fingerprint, shas)
        captions = cache.text_embeddings(model, fingerprint, texts)
    else:
        images, captions = _encode_direct(model, settings, shas, texts)
    n = len(items)
    right = np.einsum("ij,ij->i", images, captions[:n])
    wrong = np.einsum("ij,ij->i", images, captions[n:])
    correct = int((right > wrong).sum())
    return {"accuracy": correct / n, "correct": correct, "n": n, "chance": 0.5}


def _encode_direct(
    model: Encoder, settings: Settings, shas: list[str], texts: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Encode without the cache (e.g. inside a training job that must not share it)."""
    from mmdemo.data.images import load_rgb, train_path
    from mmdemo.retrieval.embeddings import normalise_rows

    images = [load_rgb(train_path(settings.images_dir, sha)) for sha in shas]
    kwargs = {"convert_to_numpy": True, "normalize_embeddings": True, "show_progress_bar": False}
    image_vectors = normalise_rows(np.asarray(model.encode(images, **kwargs)))
    text_vectors = normalise_rows(np.asarray(model.encode(texts, **kwargs)))
    return image_vectors, text_vectors


def compare_binding(
    model_a: Encoder,
    model_b: Encoder,
    store: Store,
    settings: Settings,
    collection_id: int,
    split: str | None = "eval",
    *,
    cache: EmbeddingCache | None = None,
    fingerprint_a: str | None = None,
    fingerprint_b: str | None = None,
) -> dict | None:
    """The probe under two models (e.g. base and finetuned): ``{"a", "b", "delta"}``."""
    a = binding_probe(
        model_a, store, settings, collection_id, split, cache=cache, fingerprint=fingerprint_a
    )
    if a is None:
        return None
    b = binding_probe(
        model_b, store, settings, collection_id, split, cache=cache, fingerprint=fingerprint_b
    )
    return {"a": a, "b": b, "delta": b["accuracy"] - a["accuracy"]}
