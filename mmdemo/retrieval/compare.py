"""Choosing the models to compare, and the Compare tab's and the CLI's domain entry points.

A model is named the same way everywhere (the Compare tab's dropdowns, ``--model`` and
``--run`` on the command line):

- ``"base"``: the base model of this app (:attr:`Services.model`);
- ``"run:NAME"`` or plain ``NAME``: the model a finished finetune saved in ``runs/NAME/``;
- a local folder holding a sentence-transformers model.

Everything is computed from the on-disk embedding cache (:mod:`mmdemo.retrieval.embeddings`), so a
second
comparison of the same models encodes nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmdemo.data.images import image_path, thumb_path, train_path
from mmdemo.data.store import NegativeLabel, Run, Store, StoreError, author_key
from mmdemo.retrieval.embeddings import EmbeddingCache, Encoder, ProgressFn
from mmdemo.retrieval.evaluation import retrieval_metrics
from mmdemo.retrieval.models import ModelChoice, model_fingerprint
from mmdemo.retrieval.probe import compare_binding
from mmdemo.retrieval.search import (
    DIRECTIONS,
    Corpus,
    collection_corpus,
    compare_runs,
    search_collection,
)
from mmdemo.settings import Settings

if TYPE_CHECKING:  # the app's bundle of shared objects; the layer above
    from mmdemo.services import Services

BASE = "base"
RUN_PREFIX = "run:"
USABLE_RUN_STATUS = "finished"
METRIC_ROWS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")


class CompareError(ValueError):
    """A comparison that cannot be made (unknown run, empty collection); readable by people."""


@dataclass(frozen=True)
class ModelRef:
    """A model the person can pick: how to name it, show it and load it."""

    key: str
    """``"base"``, ``"run:NAME"`` or a local path: what a dropdown or the CLI passes."""
    label: str
    spec: str
    """What :meth:`ModelCache.get` loads (a local folder or a Hub id)."""
    run: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"key": self.key, "label": self.label, "spec": self.spec, "run": self.run}


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and the fingerprint its embeddings are cached under."""

    ref: ModelRef
    model: Encoder
    fingerprint: str


# -- naming and loading models ------------------------------------------------------------------
def run_model_dir(run_path: Path | str) -> Path | None:
    """The model folder of a run: ``model/`` when it holds ``modules.json``, else the run
    folder itself when it does, else ``None`` (the run saved no model)."""
    root = Path(run_path)
    for folder in (root / "model", root):
        if (folder / "modules.json").is_file():
            return folder
    return None


def base_ref(base: ModelChoice) -> ModelRef:
    return ModelRef(BASE, f"Base: {base.label}", base.spec)


def _run_ref(run: Run) -> ModelRef | None:
    folder = run_model_dir(run.path)
    if run.status != USABLE_RUN_STATUS or folder is None:
        return None
    label = f"Run: {run.name}"
    parent = _started_from(run)
    if parent:
        label += f" (from {parent})"  # a later round (:mod:`mmdemo.training.rounds`)
    return ModelRef(RUN_PREFIX + run.name, label, str(folder), run.name)


def _started_from(run: Run) -> str | None:
    """The run a run continued from, as its ``config.json`` records it (``None``: the base)."""
    try:
        start = json.loads(run.config_json or "{}").get("start_from")
    except (ValueError, AttributeError):
        return None
    return str(start["run"]) if isinstance(start, dict) and start.get("run") else None


def model_options(store: Store, base: ModelChoice) -> list[ModelRef]:
    """The base model, then every finished run that saved a model, newest first."""
    refs = [base_ref(base)]
    refs += [ref for run in store.list_runs() if (ref := _run_ref(run)) is not None]
    return refs


def default_keys(options: list[ModelRef]) -> tuple[str, str]:
    """Base vs the newest finished run; base vs base when there is no run yet."""
    newest = next((ref.key for ref in options if ref.run is not None), BASE)
    return BASE, newest


def resolve_model(store: Store, base: ModelChoice, key: str | None) -> ModelRef:
    """Turn ``"base"``, ``"run:NAME"``, a run name or a local model folder into a model."""
    key = (key or "").strip()
    if not key or key == BASE:
        return base_ref(base)
    name = key[len(RUN_PREFIX) :] if key.startswith(RUN_PREFIX) else key
    try:
        run = store.get_run(name)
    except StoreError:
        run = None
    if run is not None:
        ref = _run_ref(run)
        if ref is None:
            why = "saved no model" if run.status == USABLE_RUN_STATUS else f"is {run.status}"
            raise CompareError(f"The run {name!r} {why}; pick a finished run.")
        return ref
    local = Path(key).expanduser()
    if local.is_dir():
        folder = run_model_dir(local) or local
        return ModelRef(str(folder), f"Folder: {folder.name}", str(folder.resolve()))
    raise CompareError(
        f"No run or model folder named {key!r}: use 'base', a finished run or a local folder."
    )


def load(services: Services, ref: ModelRef) -> LoadedModel:
    """Load a model through the shared cache (``ModelLoadError`` when it cannot embed both)."""
    model = services.models.get(ref.spec)
    return LoadedModel(ref, model, model_fingerprint(ref.spec))


def embedding_cache(services: Services) -> EmbeddingCache:
    """The app's one embedding cache (made on first use), shared by every tab and chore."""
    if services.embeddings is None:
        services.embeddings = EmbeddingCache(services.settings)
    return services.embeddings


def ensure_corpus(
    services: Services,
    loaded: LoadedModel,
    collection_id: int,
    split: str | None = None,
    progress: ProgressFn | None = None,
) -> Corpus:
    """The collection's (or a split's) image matrix; encodes the images not cached yet."""
    return collection_corpus(
        services.store,
        embedding_cache(services),
        loaded.model,
        loaded.fingerprint,
        collection_id,
        split,
        progress=progress,
    )


# -- metrics --------------------------------------------------------------------------------------
def model_metrics(
    services: Services,
    loaded: LoadedModel,
    collection_id: int,
    split: str = "eval",
    progress: ProgressFn | None = None,
) -> dict[str, dict[str, float | int]] | None:
    """Text→image and image→text retrieval metrics on a split from cached embeddings, or
    ``None`` when the split is empty. Same conventions as :func:`evaluate_model`."""
    corpus = ensure_corpus(services, loaded, collection_id, split, progress)
    if len(corpus) == 0:
        return None
    cache = embedding_cache(services)
    texts = cache.text_embeddings(loaded.model, loaded.fingerprint, corpus.captions)
    return retrieval_metrics(texts, np.asarray(corpus.matrix), corpus.captions, corpus.shas)


def metric_rows(
    a: dict[str, dict[str, float | int]] | None, b: dict[str, dict[str, float | int]] | None
) -> list[dict[str, Any]]:
    """``{"metric", "t2i_a", "t2i_b", "t2i_delta", "i2t_a", …}`` per metric; ``None`` where a
    model has no numbers (``b`` may be ``None`` when only one model is shown)."""
    rows = []
    for metric in METRIC_ROWS:
        row: dict[str, Any] = {"metric": metric}
        for direction in ("t2i", "i2t"):
            va = a[direction][metric] if a else None
            vb = b[direction][metric] if b else None
            row[f"{direction}_a"] = va
            row[f"{direction}_b"] = vb
            row[f"{direction}_delta"] = vb - va if va is not None and vb is not None else None
        rows.append(row)
    return rows


# -- per-query changes ----------------------------------------------------------------------------
def rank_changes(
    services: Services,
    a: LoadedModel,
    b: LoadedModel,
    collection_id: int,
    split: str = "eval",
    direction: str = "text_to_image",
) -> list[dict]:
    """Per eval query, the rank of its positive under A and B, most improved first
    (:func:`mmdemo.retrieval.search.compare_runs`)."""
    return compare_runs(
        services.store,
        services.settings,
        embedding_cache(services),
        a.model,
        a.fingerprint,
        b.model,
        b.fingerprint,
        collection_id,
        split,
        direction,
    )


def binding(
    services: Services, a: LoadedModel, b: LoadedModel, collection_id: int, split: str = "eval"
) -> dict | None:
    """The attribute-binding probe under both models, or ``None`` where it does not apply."""
    return compare_binding(
        a.model,
        b.model,
        services.store,
        services.settings,
        collection_id,
        split,
        cache=embedding_cache(services),
        fingerprint_a=a.fingerprint,
        fingerprint_b=b.fingerprint,
    )


# -- displaying images ----------------------------------------------------------------------------
def display_path(store: Store, settings: Settings, sha256: str) -> Path:
    """The thumbnail of a stored image, else its training copy, else its original."""
    for path in (thumb_path(settings.images_dir, sha256), train_path(settings.images_dir, sha256)):
        if path.is_file():
            return path
    info = store.image_info(sha256)
    return image_path(settings.images_dir, sha256, info["ext"] if info is not None else "png")


# -- the CLI's entry points -----------------------------------------------------------------------
def _collection_id(store: Store, name: str) -> int:
    try:
        return store.collection(name).id
    except StoreError as exc:
        raise CompareError(str(exc)) from exc


def search_command(
    services: Services,
    collection: str,
    model: str,
    query: Any,
    k: int = 10,
    progress: ProgressFn | None = None,
) -> list[dict]:
    """``python -m mmdemo search``: the top ``k`` pairs for a query under one model.

    ``model`` is ``"base"``, a run name or a model folder; ``query`` a text (or, from Python,
    an :class:`~mmdemo.retrieval.search.ImageQuery` or a PIL image). Returns
    ``[{"pair_id", "score", "caption", "rank", "positive"}]``, best first.
    """
    collection_id = _collection_id(services.store, collection)
    loaded = load(services, resolve_model(services.store, services.model, model))
    ensure_corpus(services, loaded, collection_id, progress=progress)
    hits = search_collection(
        services.store,
        services.settings,
        embedding_cache(services),
        loaded.model,
        loaded.fingerprint,
        collection_id,
        query,
        k,
    )
    return [
        {
            "pair_id": h.pair_id,
            "score": round(h.score, 6),
            "caption": h.caption,
            "rank": h.rank,
            "positive": h.positive,
        }
        for h in hits
    ]


def compare_command(
    services: Services,
    collection: str,
    run: str,
    base: str = BASE,
    split: str = "eval",
    progress: Callable[[int, int | None, str], None] | None = None,
) -> dict:
    """``python -m mmdemo compare``: a run against the base model (or ``base``) on a split.

    Returns ``{"collection", "split", "models": {"base", "finetuned"}, "metrics": {"base",
    "finetuned"}, "binding", "queries"}``; ``queries`` holds one row per eval query and
    direction (``"text_to_image"`` / ``"image_to_text"``) with ``rank_base``,
    ``rank_finetuned`` and ``delta`` (positive: the run ranks the positive higher).
    """
    store = services.store
    collection_id = _collection_id(store, collection)
    if store.count_pairs(collection_id, split=split) == 0:
        raise CompareError(f"The {split} split of {collection!r} is empty: nothing to compare.")
    models = []
    for which, key in (("base", base), ("finetuned", run)):
        ref = resolve_model(store, services.model, key)
        if progress is not None:
            progress(0, None, f"loading {which} model {ref.label}")
        models.append(load(services, ref))
    a, b = models

    def encoding(which: str) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda done, total: progress(done, total, f"encoding images ({which})")

    metrics = {
        "base": model_metrics(services, a, collection_id, split, encoding("base")),
        "finetuned": model_metrics(services, b, collection_id, split, encoding("finetuned")),
    }
    queries = []
    for direction in DIRECTIONS:
        for row in rank_changes(services, a, b, collection_id, split, direction):
            queries.append(
                {
                    "direction": direction,
                    "query": row["query"],
                    "pair_id": row["pair_id"],
                    "image_sha256": row["image_sha256"],
                    "rank_base": row["rank_a"],
                    "rank_finetuned": row["rank_b"],
                    "delta": row["delta"],
                    "score_base": row["score_a"],
                    "score_finetuned": row["score_b"],
                }
            )
    return {
        "collection": collection,
        "split": split,
        "models": {"base": a.ref.as_json(), "finetuned": b.ref.as_json()},
        "metrics": metrics,
        "binding": binding(services, a, b, collection_id, split),
        "queries": queries,
    }


# -- labeling with undo ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelEdit:
    """One change to the labels, enough to undo it: the label written (if any) and the label it
    replaced or removed (if any)."""

    written: NegativeLabel | None
    previous: NegativeLabel | None

    def describe(
        self,
        store: Store | None = None,
        *,
        markdown: bool = False,
        with_kind: bool = True,
        limit: int = 60,
    ) -> str:
        """The label this edit wrote (or removed) in words, never a hash:
        ``hard negative: “a red circle…” (pair 12) for pair 7``, or ``… caption “…” for …``.

        An image is named by the caption of its pair in the anchor's collection, looked up in
        ``store`` (without one it is just "image"). Captions are cut to ``limit`` characters;
        ``markdown`` escapes them (:func:`mmdemo.text.md`) for a Markdown message.
        ``with_kind=False`` leaves out the leading ``hard negative:``.
        """
        from mmdemo.text import md, shorten

        label = self.written or self.previous
        if label is None:
            return "nothing"

        def quoted(text: str) -> str:
            return f"“{md(text, limit) if markdown else shorten(text, limit)}”"

        if label.negative_caption is not None:
            target = f"caption {quoted(label.negative_caption)}"
        else:
            target = "image"
            if store is not None:
                try:
                    anchor = store.get_pair(label.pair_id)
                    owner = store.find_pair_by_image(
                        anchor.collection_id, str(label.negative_sha256)
                    )
                except StoreError:
                    owner = None
                target = (
                    f"{quoted(owner.caption)} (pair {owner.id})"
                    if owner is not None
                    else "an image no longer in the collection"
                )
        kind = "hard negative" if label.kind == "negative" else "also correct"
        text = f"{target} for pair {label.pair_id}"
        return f"{kind}: {text}" if with_kind else text


def _same_target(label: NegativeLabel, sha256: str | None, caption: str | None) -> bool:
    if sha256 is not None:
        return label.negative_sha256 == sha256
    return label.negative_caption == (caption or "").strip()


def set_label(
    store: Store,
    pair_id: int,
    kind: str,
    *,
    sha256: str | None = None,
    caption: str | None = None,
    author: str | None = None,
) -> LabelEdit:
    """Label an image or a caption for a pair (saved at once); the edit can be undone.

    A label is one author's decision: the edit replaces only ``author``'s own label of the
    target (another author's stays, see :meth:`Store.add_label`)."""
    previous = next(
        (
            lab
            for lab in store.labels_for_pair(pair_id)
            if _same_target(lab, sha256, caption) and author_key(lab.author) == author_key(author)
        ),
        None,
    )
    written = store.add_label(pair_id, kind, sha256, caption, author)
    return LabelEdit(written, previous)


def clear_label(store: Store, label_id: int) -> LabelEdit:
    """Remove a label; the edit can be undone."""
    return LabelEdit(None, store.remove_label(label_id))


def undo_edit(store: Store, edit: LabelEdit) -> None:
    """Put the labels back as they were before ``edit``."""
    if edit.written is not None:
        with contextlib.suppress(StoreError):  # already gone: nothing to take back
            store.remove_label(edit.written.id)
    if edit.previous is not None:
        store.restore_label(edit.previous)
