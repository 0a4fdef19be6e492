"""A 2-D map of a collection's image embeddings, and where the model gets its pairs wrong.

- :func:`pca_2d` projects rows onto their two principal components (numpy, deterministic
  signs); :func:`umap_2d` uses UMAP when the optional ``umap`` package is importable (it is not a
  requirement); :func:`project` picks one and scales the result into the unit square.
- :func:`collection_map` gives every pair of a collection a point, from the embedding cache
  (only images not cached yet are encoded), memoised until the collection's images change.
- :func:`own_image_ranks` says, for each pair, where its own image ranks among the collection's
  images for its caption: rank 1 means the model gets the pair right. Images of other pairs with
  the same caption (case and spacing ignored) are equally right answers and never push it down.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass

import numpy as np

from mmdemo.data.splits import caption_key
from mmdemo.data.store import Store
from mmdemo.retrieval.embeddings import EmbeddingCache, Encoder, ProgressFn
from mmdemo.retrieval.search import collection_corpus

PCA = "pca"
UMAP = "umap"
METHODS = (PCA, UMAP)
_RANK_CHUNK = 512
_EXACT_DIM = 64
"""Up to this many dimensions (or rows) PCA is an exact eigendecomposition."""
_ITERATIONS = 30


class ProjectionError(ValueError):
    """A projection that cannot be made (unknown method, UMAP not installed)."""


def umap_available() -> bool:
    """Whether the optional ``umap`` package (``umap-learn``) can be imported."""
    return importlib.util.find_spec("umap") is not None


def available_methods() -> tuple[str, ...]:
    """PCA always; UMAP too when it is installed."""
    return METHODS if umap_available() else (PCA,)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Rows projected onto their first two principal components: an ``(n, 2)`` float32 array.

    Each component's sign is fixed so its largest loading is positive (the same data always
    gives the same picture). Fewer than two rows, or rows with fewer than two dimensions, give
    zeros where there is no component.
    """
    data = np.asarray(vectors, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"Expected a 2-D array of rows, got shape {data.shape}")
    n, dim = data.shape
    out = np.zeros((n, 2), dtype=np.float32)
    if n < 2 or dim == 0:
        return out
    centred = data - data.mean(axis=0, keepdims=True)
    if dim <= _EXACT_DIM:
        values, vecs = np.linalg.eigh(centred.T @ centred)
        components = vecs[:, np.argsort(values)[::-1]].T
    elif n < _EXACT_DIM:  # few rows: their SVD is small
        _, _, components = np.linalg.svd(centred, full_matrices=False)
    else:
        components = _top_components(centred)
    components = components[:2].copy()
    for row in components:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    scores = centred @ components.T
    out[:, : scores.shape[1]] = scores
    return out


def _top_components(centred: np.ndarray, k: int = 2) -> np.ndarray:
    """The top ``k`` principal directions by subspace iteration on the covariance (a full
    ``eigh`` of a 512×512 covariance took seconds on two busy cores; this takes milliseconds).
    Seeded, so the same data gives the same directions."""
    cov = (centred.T @ centred).astype(np.float64)
    width = min(cov.shape[0], k + 8)
    basis = np.random.default_rng(0).normal(size=(cov.shape[0], width))
    for _ in range(_ITERATIONS):
        basis, _ = np.linalg.qr(cov @ basis)
    values, vecs = np.linalg.eigh(basis.T @ cov @ basis)
    return (basis @ vecs[:, np.argsort(values)[::-1]]).T


def umap_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """A UMAP layout of the rows (cosine metric), when ``umap`` is installed; PCA below 4 rows."""
    if not umap_available():
        raise ProjectionError("UMAP is not installed (pip install umap-learn); use PCA.")
    data = np.asarray(vectors, dtype=np.float32)
    if data.shape[0] < 4:
        return pca_2d(data)
    import umap  # optional, imported only when asked for

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(15, data.shape[0] - 1),
        metric="cosine",
        random_state=seed,
    )
    return np.asarray(reducer.fit_transform(data), dtype=np.float32)


def to_unit_square(points: np.ndarray) -> np.ndarray:
    """Points scaled (one factor for both axes, so distances keep their ratios) and centred
    into ``[0, 1] × [0, 1]``; a single point or identical points land in the middle."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.float32)
    low, high = pts.min(axis=0), pts.max(axis=0)
    span = float((high - low).max())
    if span <= 0:
        return np.full((pts.shape[0], 2), 0.5, dtype=np.float32)
    scaled = (pts - low) / span
    scaled += (1.0 - (high - low) / span) / 2.0
    return scaled.astype(np.float32)


def project(vectors: np.ndarray, method: str = PCA, seed: int = 0) -> np.ndarray:
    """``vectors`` mapped to the unit square with PCA or UMAP."""
    if method == PCA:
        points = pca_2d(vectors)
    elif method == UMAP:
        points = umap_2d(vectors, seed)
    else:
        raise ProjectionError(f"Unknown projection {method!r}; use one of {', '.join(METHODS)}.")
    return to_unit_square(points)


# -- a collection's map -------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingMap:
    """One point per pair of a collection (rows in the pairs' id order)."""

    pair_ids: np.ndarray
    shas: tuple[str, ...]
    points: np.ndarray
    """``(n, 2)`` float32 in the unit square."""
    method: str

    def __len__(self) -> int:
        return len(self.shas)


def _digest(values: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(values).encode("utf-8")).hexdigest()


def collection_map(
    store: Store,
    cache: EmbeddingCache,
    model: Encoder,
    fingerprint: str,
    collection_id: int,
    method: str = PCA,
    progress: ProgressFn | None = None,
) -> EmbeddingMap:
    """Every pair of the collection as a point of the model's image-embedding map.

    The projection is memoised in the cache per (model, method, images in order): editing a
    caption or a split reuses it, adding or deleting a pair recomputes it.
    """
    if method not in METHODS:
        raise ProjectionError(f"Unknown projection {method!r}; use one of {', '.join(METHODS)}.")
    corpus = collection_corpus(store, cache, model, fingerprint, collection_id, None, progress)
    key = (fingerprint, "projection", method, _digest(corpus.shas))
    points = cache.derived(key, lambda: project(np.asarray(corpus.matrix), method))
    return EmbeddingMap(corpus.pair_ids.copy(), corpus.shas, points, method)


def own_image_ranks(
    store: Store,
    cache: EmbeddingCache,
    model: Encoder,
    fingerprint: str,
    collection_id: int,
) -> dict[int, int]:
    """``{pair_id: rank}``: where each pair's own image ranks for its caption (1 = top) among
    all images of the collection. Ties count in the pair's favour, and images of pairs with the
    same caption are left out of the count. Memoised until the collection's pairs change."""
    corpus = collection_corpus(store, cache, model, fingerprint, collection_id)
    signature = store.pairs_signature(collection_id)
    key = (fingerprint, "own-ranks", collection_id, signature)

    def build() -> dict[int, int]:
        n = len(corpus)
        if n == 0:
            return {}
        norm = [caption_key(c) for c in corpus.captions]
        distinct = list(dict.fromkeys(norm))
        group_of = {c: i for i, c in enumerate(distinct)}
        groups = np.fromiter((group_of[c] for c in norm), dtype=np.int64, count=n)
        first_caption = {}
        for caption, k in zip(corpus.captions, norm, strict=True):
            first_caption.setdefault(k, caption)
        texts = cache.text_embeddings(model, fingerprint, [first_caption[c] for c in distinct])
        images = np.asarray(corpus.matrix, dtype=np.float32)
        ranks = np.ones(n, dtype=np.int64)
        for start in range(0, n, _RANK_CHUNK):
            rows = np.arange(start, min(n, start + _RANK_CHUNK))
            scores = texts[groups[rows]] @ images.T
            own = scores[np.arange(len(rows)), rows][:, None]
            beaten = (scores > own) & (groups[None, :] != groups[rows][:, None])
            ranks[rows] = 1 + beaten.sum(axis=1)
        return dict(zip(corpus.pair_ids.tolist(), ranks.tolist(), strict=True))

    return cache.derived(key, build)
