"""Data checks of a collection: duplicates, leakage between splits, odd captions and images.

:func:`run_checks` looks for

- **duplicate images**: exact and near copies (re-encoded, resized, lightly cropped). Candidates
  come from the perceptual hashes (:mod:`mmdemo.retrieval.phash`: close hashes, or close colour
  layouts for smooth images) and from the model's image embeddings (a close neighbour by cosine
  whose hash is not far off); each one is
  confirmed by comparing the aligned pixels, so two distinct scenes that share a layout or a
  model's view are never reported. Confirmed pairs are joined into groups;
- **cross-split duplicates**: the groups with pairs in train *and* in eval or test (leakage that
  inflates eval metrics), as ``{"pair_ids", "captions", "splits", "similarity"}``;
- **identical captions across splits** and **near-duplicate captions**
  (:mod:`mmdemo.data.caption_checks`: the same words once case, accents, punctuation and articles
  are dropped, or the same but for a typo; "a red circle above a blue square" and "a blue circle
  above a red square" stay apart);
- **images too small** (shorter side below a setting) and **outliers**: images whose mean cosine
  to their nearest neighbours is far below the collection's (a z-score).

:func:`fix_leakage` moves every cross-split group into one split (the split most of its pairs are
in; a tie goes to train) as one :class:`~mmdemo.data.splits.SplitChange`, which
:func:`~mmdemo.data.splits.undo_split_change` takes back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mmdemo.data.caption_checks import (
    CaptionGroup,
    UnionFind,
    caption_groups,
)
from mmdemo.data.splits import SplitChange, assign_splits
from mmdemo.data.store import Pair, Store
from mmdemo.retrieval.compare import embedding_cache
from mmdemo.retrieval.embeddings import EmbeddingCache, Encoder
from mmdemo.retrieval.phash import (
    HashCache,
    PixelMatch,
    aligned_image,
    compare_pixels,
    hash_distance_pairs,
    layout_pairs,
    stored_image,
)
from mmdemo.retrieval.search import collection_corpus, top_k
from mmdemo.settings import Settings

if TYPE_CHECKING:  # the app's bundle of shared objects; the layer above
    from mmdemo.services import Services

ProgressFn = Callable[[int, int | None, str], None]
EVAL_SPLITS = ("eval", "test")


@dataclass(frozen=True)
class CheckOptions:
    """The knobs of :func:`run_checks` (defaults measured with ``bench/bench_check.py``)."""

    hash_distance: int = 16
    """Image pairs whose hash distance (0–64) is at most this are compared by pixels."""
    hash_distance_with_embedding: int = 22
    """…and those up to this when the model also finds them close (``embedding_threshold``)."""
    embedding_threshold: float = 0.95
    """Cosine of two image embeddings that makes them a candidate."""
    embedding_neighbours: int = 5
    """Nearest neighbours by embedding looked at per image."""
    layout_neighbours: int = 2
    """…and by colour layout (mean colours on an 8×8 grid: smooth images have noisy hashes)…"""
    layout_rms: float = 0.04
    """…when their layouts differ by at most this (RMS, share of full scale)."""
    max_mean_error: float = 0.018
    """Aligned pixels may differ by at most this on average (share of full scale)…"""
    max_block_error: float = 0.095
    """…and by at most this in their worst 4×4 block (a changed object shows there)."""
    caption_typo: float = 0.8
    """Two words at least this similar (``difflib`` ratio, words of 4+ letters) count as one
    word with a typo ("circle"/"cirlce"); "red"/"green" stay different words."""
    min_side: int = 64
    """Images whose shorter side is below this (pixels) are reported as too small."""
    outlier_z: float = 3.0
    """Images whose neighbour similarity is this many standard deviations below the mean."""
    outlier_neighbours: int = 10
    outlier_spread: float = 2.0
    """…and whose distance to its neighbours (1 − cosine) is this many times the median image's,
    so a model that sees every image alike flags nothing."""
    use_embeddings: bool = True
    """Use the model's image embeddings (candidates and outliers); off: hashes only."""


@dataclass(frozen=True)
class DuplicateGroup:
    """Pairs whose images are copies of each other (confirmed pixel by pixel)."""

    pair_ids: tuple[int, ...]
    captions: tuple[str, ...]
    splits: tuple[str, ...]
    image_sha256: tuple[str, ...]
    similarity: float
    """The lowest similarity of the links joining the group: the image embeddings' cosine when
    the model was used, else one minus the aligned pixels' mean error."""
    exact: bool
    """Every link is the same picture (same pixels), not an edited copy."""

    @property
    def crosses_splits(self) -> bool:
        """Pairs in train and in eval or test: the leak this check is for."""
        present = set(self.splits)
        return "train" in present and bool(present & set(EVAL_SPLITS))

    def leak_json(self) -> dict[str, Any]:
        """The shape of one ``cross_split_duplicates`` entry."""
        return {
            "pair_ids": list(self.pair_ids),
            "captions": list(self.captions),
            "splits": list(self.splits),
            "similarity": self.similarity,
        }

    def as_json(self) -> dict[str, Any]:
        return {**self.leak_json(), "exact": self.exact, "crosses_splits": self.crosses_splits}


@dataclass(frozen=True)
class OddImage:
    """One image the checks single out (too small, or unlike the rest)."""

    pair_id: int
    caption: str
    split: str
    image_sha256: str
    detail: str
    score: float | None = None
    """For an outlier: its mean cosine to its nearest neighbours."""
    z: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class CheckReport:
    """Everything :func:`run_checks` found in one collection."""

    collection: str
    collection_id: int
    pairs: int
    model: str | None
    duplicates: tuple[DuplicateGroup, ...]
    identical_captions: tuple[CaptionGroup, ...]
    """Identical captions (case-folded) whose pairs are in more than one split."""
    near_duplicate_captions: tuple[CaptionGroup, ...]
    """Captions equal once normalised, or overlapping strongly, but not identical."""
    small_images: tuple[OddImage, ...]
    outliers: tuple[OddImage, ...]
    options: CheckOptions = field(default_factory=CheckOptions)

    @property
    def leaks(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicates if g.crosses_splits)

    def counts(self) -> dict[str, int]:
        return {
            "duplicate_groups": len(self.duplicates),
            "duplicate_pairs": sum(len(g.pair_ids) for g in self.duplicates),
            "cross_split_duplicates": len(self.leaks),
            "identical_captions_across_splits": len(self.identical_captions),
            "near_duplicate_captions": len(self.near_duplicate_captions),
            "small_images": len(self.small_images),
            "outliers": len(self.outliers),
        }

    def summary(self) -> str:
        """One plain-text line, e.g. ``3 duplicate groups (1 across splits) · 2 outliers``."""
        c = self.counts()
        parts = [
            f"{c['duplicate_groups']:,} duplicate image group{_s(c['duplicate_groups'])}"
            f" ({c['cross_split_duplicates']:,} across splits)",
            f"{c['identical_captions_across_splits']:,} caption"
            f"{_s(c['identical_captions_across_splits'])} repeated across splits",
            f"{c['near_duplicate_captions']:,} near-duplicate caption group"
            f"{_s(c['near_duplicate_captions'])}",
            f"{c['small_images']:,} image{_s(c['small_images'])} under {self.options.min_side} px",
            f"{c['outliers']:,} outlier{_s(c['outliers'])}",
        ]
        return f"{self.pairs:,} pairs checked: " + " · ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "pairs": self.pairs,
            "model": self.model,
            "counts": self.counts(),
            "cross_split_duplicates": [g.leak_json() for g in self.leaks],
            "duplicates": [g.as_json() for g in self.duplicates],
            "identical_captions_across_splits": [g.as_json() for g in self.identical_captions],
            "near_duplicate_captions": [g.as_json() for g in self.near_duplicate_captions],
            "small_images": [o.as_json() for o in self.small_images],
            "outliers": [o.as_json() for o in self.outliers],
        }


def _s(n: int) -> str:
    return "" if n == 1 else "s"


# -- images ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Link:
    a: int
    b: int
    match: PixelMatch
    cosine: float | None


def _candidates(
    hashes: np.ndarray,
    layouts: np.ndarray | None,
    matrix: np.ndarray | None,
    options: CheckOptions,
) -> dict[tuple[int, int], float | None]:
    """Index pairs worth a pixel comparison, with their embedding cosine when known."""
    loose = max(options.hash_distance, options.hash_distance_with_embedding)
    distances = {(i, j): d for i, j, d in hash_distance_pairs(hashes, loose)}
    chosen: dict[tuple[int, int], float | None] = {}
    for (i, j), d in distances.items():
        if d <= options.hash_distance:
            chosen[(i, j)] = None
    if layouts is not None:
        for key in layout_pairs(layouts, options.layout_neighbours, options.layout_rms):
            chosen.setdefault(key, None)
    if matrix is not None and len(matrix) > 1:
        k = min(options.embedding_neighbours + 1, len(matrix))
        for start in range(0, len(matrix), 512):
            block = np.asarray(matrix[start : start + 512]) @ np.asarray(matrix).T
            for r, scores in enumerate(block):
                i = start + r
                scores[i] = -np.inf
                for j, score in zip(*top_k(scores, k), strict=True):
                    key = (min(i, int(j)), max(i, int(j)))
                    if score >= options.embedding_threshold and key in distances:
                        chosen[key] = float(score)
        for i, j in chosen:
            if chosen[(i, j)] is None:
                chosen[(i, j)] = float(np.dot(matrix[i], matrix[j]))
    return chosen


def find_duplicates(
    settings: Settings,
    pairs: Sequence[Pair],
    hashes: np.ndarray,
    matrix: np.ndarray | None = None,
    options: CheckOptions = CheckOptions(),
    progress: ProgressFn | None = None,
    across_splits_only: bool = False,
    layouts: np.ndarray | None = None,
) -> list[DuplicateGroup]:
    """Groups of pairs whose images are copies of each other (see the module docstring).

    ``hashes``, ``layouts`` and ``matrix`` (normalised image embeddings; both optional) are
    row-aligned with ``pairs``. ``across_splits_only`` compares only train images with eval/test
    ones (the groups that span those splits are still found whole, others partly or not at all).
    """
    candidates = _candidates(hashes, layouts, matrix, options)
    if across_splits_only:
        # A group that spans train and eval/test has at least one such link: enough to find it.
        candidates = {
            (i, j): c
            for (i, j), c in candidates.items()
            if (pairs[i].split == "train") != (pairs[j].split == "train")
        }
    prepared: dict[int, Any] = {}

    def image(i: int) -> Any:
        if i not in prepared:
            prepared[i] = aligned_image(stored_image(settings, pairs[i].image_sha256))
        return prepared[i]

    links: list[_Link] = []
    for done, ((i, j), cosine) in enumerate(sorted(candidates.items()), 1):
        match = compare_pixels(image(i), image(j))
        if match.mean_error <= options.max_mean_error and (
            match.block_error <= options.max_block_error
        ):
            links.append(_Link(i, j, match, cosine))
        if progress is not None and (done % 25 == 0 or done == len(candidates)):
            progress(done, len(candidates), "comparing look-alike images")
    union = UnionFind(len(pairs))
    for link in links:
        union.union(link.a, link.b)
    groups = []
    for members in union.groups([i for link in links for i in (link.a, link.b)]):
        inside = [link for link in links if union.find(link.a) == members[0]]
        if matrix is not None:
            similarity = min(
                link.cosine
                if link.cosine is not None
                else float(np.dot(matrix[link.a], matrix[link.b]))
                for link in inside
            )
        else:
            similarity = min(link.match.similarity() for link in inside)
        groups.append(
            DuplicateGroup(
                pair_ids=tuple(pairs[i].id for i in members),
                captions=tuple(pairs[i].caption for i in members),
                splits=tuple(pairs[i].split for i in members),
                image_sha256=tuple(pairs[i].image_sha256 for i in members),
                similarity=round(float(similarity), 4),
                exact=all(link.match.exact for link in inside),
            )
        )
    return groups


# -- odd images -----------------------------------------------------------------------------------
def small_images(store: Store, pairs: Sequence[Pair], min_side: int) -> list[OddImage]:
    """Pairs whose image's shorter side is below ``min_side`` pixels."""
    found = []
    for pair in pairs:
        info = store.image_info(pair.image_sha256)
        if info is None:
            continue
        side = min(int(info["width"]), int(info["height"]))
        if side < min_side:
            found.append(
                OddImage(
                    pair.id,
                    pair.caption,
                    pair.split,
                    pair.image_sha256,
                    f"{info['width']}×{info['height']} px",
                )
            )
    return found


def outliers(
    pairs: Sequence[Pair],
    matrix: np.ndarray,
    z_limit: float = 3.0,
    neighbours: int = 10,
    spread: float = 2.0,
) -> list[OddImage]:
    """Images whose mean cosine to their ``neighbours`` nearest is ``z_limit`` standard
    deviations below the collection's mean and whose distance to them (1 − that) is ``spread``
    times the median image's (needs a dozen images or more)."""
    n = len(pairs)
    if n < 12:
        return []
    k = min(neighbours, n - 1)
    scores = np.zeros(n, dtype=np.float64)
    for start in range(0, n, 512):
        block = np.asarray(matrix[start : start + 512]) @ np.asarray(matrix).T
        for r in range(block.shape[0]):
            block[r, start + r] = -np.inf
        top = np.partition(block, n - k, axis=1)[:, n - k :]
        scores[start : start + block.shape[0]] = top.mean(axis=1)
    deviation = float(scores.std())
    if deviation <= 1e-9:
        return []
    z = (scores - scores.mean()) / deviation
    far = (1.0 - scores) >= spread * max(1e-6, float(np.median(1.0 - scores)))
    order = np.argsort(z)
    return [
        OddImage(
            pairs[i].id,
            pairs[i].caption,
            pairs[i].split,
            pairs[i].image_sha256,
            "unlike the rest",
            round(float(scores[i]), 4),
            round(float(z[i]), 2),
        )
        for i in order
        if z[i] <= -z_limit and far[i]
    ]


# -- the whole check ------------------------------------------------------------------------------
def run_checks(
    store: Store,
    settings: Settings,
    collection_id: int,
    hash_cache: HashCache,
    embeddings: tuple[EmbeddingCache, Encoder, str] | None = None,
    options: CheckOptions = CheckOptions(),
    model_label: str | None = None,
    progress: ProgressFn | None = None,
) -> CheckReport:
    """Run every check on a collection. ``embeddings`` is ``(cache, model, fingerprint)``; without
    it (or with ``options.use_embeddings`` off) the checks use hashes only and find no outliers."""
    collection = store.collection_by_id(collection_id)
    pairs = store.list_pairs(collection_id)
    matrix = None
    if embeddings is not None and options.use_embeddings and pairs:
        cache, model, fingerprint = embeddings

        def encoded(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total, "encoding images")

        corpus = collection_corpus(
            store, cache, model, fingerprint, collection_id, progress=encoded
        )
        rows = {int(pid): r for r, pid in enumerate(corpus.pair_ids)}
        matrix = np.asarray(corpus.matrix)[[rows[p.id] for p in pairs]]

    def hashed(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total, "hashing images")

    exts = [_ext(store, p.image_sha256) for p in pairs]
    hashes, layouts = hash_cache.signatures([p.image_sha256 for p in pairs], exts, progress=hashed)
    duplicates = find_duplicates(
        settings, pairs, hashes, matrix, options, progress, layouts=layouts
    )
    identical, near = caption_groups(pairs, options.caption_typo)
    odd = (
        outliers(
            pairs, matrix, options.outlier_z, options.outlier_neighbours, options.outlier_spread
        )
        if matrix is not None
        else []
    )
    return CheckReport(
        collection=collection.name,
        collection_id=collection.id,
        pairs=len(pairs),
        model=model_label if matrix is not None else None,
        duplicates=tuple(duplicates),
        identical_captions=tuple(identical),
        near_duplicate_captions=tuple(near),
        small_images=tuple(small_images(store, pairs, options.min_side)),
        outliers=tuple(odd),
        options=options,
    )


def _ext(store: Store, sha256: str) -> str:
    info = store.image_info(sha256)
    return str(info["ext"]) if info is not None else "png"


def leak_target(splits: Sequence[str]) -> str:
    """The split a leaking group moves to: where most of its pairs are; a tie goes to train."""
    counts = Counter(splits)
    return max(counts, key=lambda s: (counts[s], s == "train"))


def fix_leakage(
    store: Store, collection_id: int, groups: Sequence[DuplicateGroup | CaptionGroup]
) -> SplitChange:
    """Move each group that spans splits into one (:func:`leak_target`), as one undoable change."""
    assignments: dict[int, str] = {}
    for group in groups:
        if len(set(group.splits)) < 2:
            continue
        target = leak_target(group.splits)
        assignments.update(dict.fromkeys(group.pair_ids, target))
    return assign_splits(store, collection_id, assignments)


def with_current_splits(store: Store, report: CheckReport) -> CheckReport:
    """``report`` with every group's splits read again (after a fix or an undo moved pairs);
    groups whose pairs were all deleted since are dropped."""
    ids = {pid for g in (*report.duplicates, *report.identical_captions) for pid in g.pair_ids}
    ids |= {pid for g in report.near_duplicate_captions for pid in g.pair_ids}
    now = {p.id: p.split for p in store.get_pairs(sorted(ids))} if ids else {}

    def moved(group: Any) -> Any:
        keep = [i for i, pid in enumerate(group.pair_ids) if pid in now]
        if len(keep) < 2:
            return None
        fields = {
            name: tuple(getattr(group, name)[i] for i in keep)
            for name in ("pair_ids", "captions", "image_sha256")
            if hasattr(group, name)
        }
        fields["splits"] = tuple(now[group.pair_ids[i]] for i in keep)
        return replace(group, **fields)

    def update(groups: Sequence[Any]) -> tuple:
        return tuple(g for g in (moved(g) for g in groups) if g is not None)

    identical = tuple(g for g in update(report.identical_captions) if g.crosses_splits)
    return replace(
        report,
        duplicates=update(report.duplicates),
        identical_captions=identical,
        near_duplicate_captions=update(report.near_duplicate_captions),
    )


# -- the app's and the CLI's entry points ---------------------------------------------------------
def hash_cache_of(services: Services) -> HashCache:
    """The process's hash cache (kept on the embedding cache's memo, so it lives as long)."""
    cache = embedding_cache(services)
    return cache.derived(("phash", "hash-cache"), lambda: HashCache(services.settings))


def check_collection(
    services: Services,
    collection: str,
    model: str | None = "base",
    options: CheckOptions = CheckOptions(),
    progress: ProgressFn | None = None,
) -> CheckReport:
    """Run the checks on a collection by name with a model (``"base"``, a run name or a folder;
    ``None`` or ``options.use_embeddings`` off: hashes only)."""
    from mmdemo.retrieval.compare import load, resolve_model

    found = services.store.collection(collection)
    embeddings = None
    label = None
    if model is not None and options.use_embeddings:
        loaded = load(services, resolve_model(services.store, services.model, model))
        embeddings = (embedding_cache(services), loaded.model, loaded.fingerprint)
        label = loaded.ref.label
    return run_checks(
        services.store,
        services.settings,
        found.id,
        hash_cache_of(services),
        embeddings,
        options,
        label,
        progress,
    )


MAX_HASHES_ON_VIEW = 2000
""":func:`eval_leaks` hashes at most this many new images (a few seconds); with more missing it
answers ``None`` until the Data checks (which hash everything once) have run."""


def eval_leaks(
    services: Services, collection_id: int, max_new_hashes: int = MAX_HASHES_ON_VIEW
) -> tuple[DuplicateGroup, ...] | None:
    """Duplicate groups across train and eval/test by hashes and pixels only (no model, only
    train-vs-eval/test candidates compared), memoised until the collection's pairs change, over
    hashes cached on disk: cheap enough for the Finetune tab to ask on every view. ``None``
    (not known yet) when more than ``max_new_hashes`` images have no cached hash."""
    store = services.store
    signature = store.pairs_signature(collection_id)
    key = ("phash", "leaks", collection_id, signature)

    def build() -> tuple[DuplicateGroup, ...]:
        pairs = store.list_pairs(collection_id)
        if not any(p.split in EVAL_SPLITS for p in pairs):
            return ()
        hashes, layouts = hash_cache_of(services).signatures(
            [p.image_sha256 for p in pairs], [_ext(store, p.image_sha256) for p in pairs]
        )
        groups = find_duplicates(
            services.settings,
            pairs,
            hashes,
            None,
            CheckOptions(),
            across_splits_only=True,
            layouts=layouts,
        )
        return tuple(g for g in groups if g.crosses_splits)

    shas = [p.image_sha256 for p in store.list_pairs(collection_id)]
    if len(hash_cache_of(services).missing(shas)) > max_new_hashes:
        return None
    return embedding_cache(services).derived(key, build)
