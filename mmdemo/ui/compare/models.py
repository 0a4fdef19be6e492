"""The Compare tab's two models: the choices offered, loading A and B, and the comparison of
their eval metrics and per-query rank changes (used by :mod:`mmdemo.ui.compare.handlers`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from mmdemo.data.store import Collection
from mmdemo.retrieval.compare import (
    BASE,
    LoadedModel,
    ModelRef,
    binding,
    default_keys,
    load,
    model_metrics,
    model_options,
    rank_changes,
    resolve_model,
)
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.ui.common import current_collection
from mmdemo.ui.compare.view import CompareState, title
from mmdemo.ui.results import (
    TABLE_COLUMNS,
    image_progress,
    metrics_markdown,
    say_progress,
    table_frame,
)

NO_RUN_NOTE = (
    "No finished run yet: **train a model in the Finetune tab**, then compare it with the base "
    "model here. Until then you can explore the base model alone."
)
SAME_MODEL_NOTE = "A and B are the same model: pick another one for B to compare."


# -- model choice ---------------------------------------------------------------------------------
def model_refs(services: Services) -> list[ModelRef]:
    """The models to offer: the base model and the finished runs."""
    return model_options(services.store, services.model)


def model_dropdowns(services: Services, state: CompareState) -> dict[str, Any]:
    """Both model dropdowns, their choices refreshed (a typed folder stays a choice)."""
    choices = [(ref.label, ref.key) for ref in model_refs(services)]
    known = {key for _, key in choices}
    extra_a = [] if state.model_a in known else [(state.model_a, state.model_a)]
    extra_b = [] if state.model_b in known else [(state.model_b, state.model_b)]
    return {
        "model_a": gr.update(choices=choices + extra_a, value=state.model_a),
        "model_b": gr.update(choices=choices + extra_b, value=state.model_b),
    }


def keys_still_valid(services: Services, state: CompareState) -> CompareState:
    """Fall back to the defaults for models that are gone (a deleted run), and offer the newest
    run as B when the page was opened before any run had finished (base vs base)."""
    options = model_refs(services)
    known = {ref.key for ref in options}
    default_a, default_b = default_keys(options)
    model_a, model_b = state.model_a, state.model_b
    if model_a not in known and not _is_folder(model_a):
        model_a = default_a
    if (model_b not in known and not _is_folder(model_b)) or model_a == model_b == BASE:
        model_b = default_b
    return dataclasses.replace(state, model_a=model_a, model_b=model_b)


def _is_folder(key: str) -> bool:
    return bool(key) and Path(key).expanduser().is_dir()


def load_models(
    services: Services, state: CompareState, progress: Any
) -> tuple[LoadedModel, LoadedModel | None]:
    """Model A and model B (``None`` when B is the same model as A)."""
    store, base = services.store, services.model
    ref_a = resolve_model(store, base, state.model_a)
    say_progress(progress, f"Loading {ref_a.label}…")
    a = load(services, ref_a)
    ref_b = resolve_model(store, base, state.model_b)
    if ref_b.spec == ref_a.spec:
        return a, None
    say_progress(progress, f"Loading {ref_b.label}…")
    b = load(services, ref_b)
    return (a, None) if b.fingerprint == a.fingerprint else (a, b)


def model_note(services: Services, single: bool) -> str:
    """The note under the dropdowns: no run to compare with yet, or A and B the same."""
    if not any(ref.run for ref in model_refs(services)):
        return NO_RUN_NOTE
    return SAME_MODEL_NOTE if single else ""


# -- metrics and the table of per-query changes ----------------------------------------------------
def empty_table() -> pd.DataFrame:
    """The per-query table with no rows."""
    return pd.DataFrame([], columns=TABLE_COLUMNS)


def loaded_key(services: Services, state: CompareState, collection: Collection) -> tuple:
    """What a comparison depends on: while it is unchanged, the shown one is current."""
    signature = services.store.pairs_signature(collection.id)
    return (collection.name, state.model_a, state.model_b, signature)


def comparison(
    services: Services, state: CompareState, progress: Any
) -> tuple[CompareState, dict[str, Any]]:
    """Metrics, the binding probe and the rank table for the state's models and collection."""
    collection = current_collection(services, state.collection)
    if collection is None:
        state = dataclasses.replace(state, collection=None, loaded_for=None)
        return state, {"metrics": "No collection yet: create one in the Curate tab."}
    state = dataclasses.replace(state, collection=collection.name)
    a, b = load_models(services, state, progress)
    state = dataclasses.replace(state, single=b is None)
    n_eval = services.store.count_pairs(collection.id, split="eval")
    metrics_a = model_metrics(
        services,
        a,
        collection.id,
        "eval",
        image_progress(progress, f"Encoding images ({a.ref.label})"),
    )
    metrics_b = None
    if b is not None:
        metrics_b = model_metrics(
            services,
            b,
            collection.id,
            "eval",
            image_progress(progress, f"Encoding images ({b.ref.label})"),
        )
    say_progress(progress, "Comparing queries…")
    probe = binding(services, a, b or a, collection.id) if n_eval else None
    table = empty_table()
    if b is not None and n_eval:
        table = table_frame(rank_changes(services, a, b, collection.id, "eval", state.direction))
    fields = {
        "note": model_note(services, b is None),
        "metrics": metrics_markdown(
            metrics_a, metrics_b, md(a.ref.label), md(b.ref.label) if b else None, n_eval, probe
        ),
        "table": gr.update(value=table, visible=b is not None),
        "title_a": title("A", a.ref.label),
        "title_b": title("B", b.ref.label if b else None),
        "column_b": gr.update(visible=b is not None),
    }
    state = dataclasses.replace(state, loaded_for=loaded_key(services, state, collection))
    return state, fields
