"""Ready when you are: encode a collection with a new model before anyone asks.

After a finetune the first Compare or Label query with the new model would load it, hash its
weights (the embedding cache's fingerprint) and encode every image of the collection: seconds,
minutes for a full-size CLIP on a CPU. :func:`warm_model` does all of that ahead, the way those
queries do it (the shared model cache, the on-disk embedding cache, the collection's memoised
image matrix), so the first query is as fast as later ones. The app runs it in a low-priority
background thread when a run finishes (:meth:`mmdemo.services.Services.after_finetune`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from mmdemo.retrieval.compare import embedding_cache, ensure_corpus, load, resolve_model

if TYPE_CHECKING:
    from mmdemo.services import Services

log = logging.getLogger(__name__)


def warm_model(services: Services, model_key: str, collection_id: int) -> dict[str, float | int]:
    """Load ``model_key`` (``"run:NAME"``, ``"base"`` …) and encode the collection's images and
    captions with it into the caches; returns what it did (counts and seconds)."""
    started = time.perf_counter()
    store = services.store
    found = store.collection_by_id(collection_id)
    cache = embedding_cache(services)
    before = cache.encoded_items
    loaded = load(services, resolve_model(store, services.model, model_key))
    corpus = ensure_corpus(services, loaded, found.id)
    images = cache.encoded_items - before
    cache.text_embeddings(loaded.model, loaded.fingerprint, list(dict.fromkeys(corpus.captions)))
    seconds = round(time.perf_counter() - started, 3)
    log.info("encoded %s for %r in %.1f s (%d images new)", model_key, found.name, seconds, images)
    return {
        "pairs": len(corpus),
        "images_encoded": images,
        "texts_encoded": cache.encoded_items - before - images,
        "seconds": seconds,
    }
