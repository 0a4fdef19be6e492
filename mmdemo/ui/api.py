"""The app's API: a few named endpoints that make sense without the page.

Every event listener of the tabs is wiring between components (``/lambda_3``,
``/on_confirm_delete``, …), useless to a client, so :func:`register_api` first makes all of them
private (hidden from "Use via API" and from ``gradio_client``; the page still calls them), then
adds the deliberate endpoints, each a plain function over the domain, the same the CLI uses:

- ``/list_collections`` → ``[{"name", "pairs", "splits", "negatives", "also_positives"}]``
- ``/list_models`` → ``[{"name", "label"}]``: ``"base"`` and the finished runs
- ``/search`` (collection, query, model, k) → the top-k pairs,
  ``[{"pair_id", "score", "caption", "rank", "positive"}]``, best first (as ``mmdemo search``)

A request that cannot be served raises ``gr.Error`` with a readable reason (the client raises it).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from mmdemo.data.store import StoreError
from mmdemo.retrieval.compare import BASE, RUN_PREFIX, CompareError, model_options, search_command
from mmdemo.retrieval.evaluation import EvaluationError
from mmdemo.retrieval.models import ModelLoadError
from mmdemo.services import Services
from mmdemo.text import CaptionRejected, clean_caption

API_NAMES = ("list_collections", "list_models", "search")
"""The public endpoints, as ``/<name>``; every other one is private."""
MAX_K = 100
DEFAULT_K = 10
API_CONCURRENCY = "api"
"""One search at a time (it may load a model and encode a collection), apart from the UI's."""


class ApiError(ValueError):
    """A request the API refuses; ``str(exc)`` says why."""


# -- the endpoints as plain functions ------------------------------------------------------------
def list_collections(services: Services) -> list[dict[str, Any]]:
    """Every collection with its counts, by name (what ``mmdemo collections`` prints)."""
    store = services.store
    rows = []
    for collection in store.list_collections():
        stats = store.collection_stats(collection.id)
        rows.append(
            {
                "name": collection.name,
                "pairs": stats.pairs,
                "splits": dict(stats.splits),
                "negatives": stats.negatives,
                "also_positives": stats.also_positives,
            }
        )
    return rows


def list_models(services: Services) -> list[dict[str, str]]:
    """The models ``search`` accepts: ``"base"`` and every finished run that saved a model."""
    return [
        {"name": ref.run or BASE, "label": ref.label}
        for ref in model_options(services.store, services.model)
    ]


def model_key(services: Services, model: str | None) -> str:
    """The model key of ``"base"``, a finished run's name or ``"run:NAME"``.

    Model folders are refused: a client names what the app offers, never a path on the server.
    """
    wanted = (model or "").strip() or BASE
    if wanted.startswith(RUN_PREFIX):
        wanted = wanted[len(RUN_PREFIX) :]
    names = [row["name"] for row in list_models(services)]
    if wanted not in names:
        raise ApiError(f"Unknown model {wanted!r}: use one of {', '.join(map(repr, names))}.")
    return BASE if wanted == BASE else RUN_PREFIX + wanted


def search(
    services: Services, collection: str, query: str, model: str = BASE, k: int = DEFAULT_K
) -> list[dict[str, Any]]:
    """The top ``k`` pairs of ``collection`` for a text ``query`` under ``model``.

    Raises :class:`ApiError` for a request that cannot be served.
    """
    try:
        text = clean_caption(query)
    except CaptionRejected as exc:
        raise ApiError(f"Bad query: {exc}.") from None
    try:
        count = int(k)
    except (TypeError, ValueError):
        raise ApiError(f"k must be a whole number from 1 to {MAX_K}.") from None
    if not 1 <= count <= MAX_K:
        raise ApiError(f"k must be from 1 to {MAX_K} (got {count}).")
    key = model_key(services, model)
    try:
        return search_command(services, (collection or "").strip(), key, text, k=count)
    except (CompareError, ModelLoadError, EvaluationError, StoreError) as exc:
        raise ApiError(str(exc)) from None


# -- registration --------------------------------------------------------------------------------
def hide_wiring(demo: gr.Blocks) -> int:
    """Make every endpoint registered so far private; returns how many were public."""
    hidden = 0
    for fn in demo.fns.values():
        if fn.api_visibility != "private":
            hidden += 1
            fn.api_visibility = "private"
    return hidden


def register_api(services: Services, demo: gr.Blocks) -> None:
    """Hide the tabs' wiring, then add the named endpoints (call inside ``demo``'s context,
    after every tab is built)."""
    hide_wiring(demo)

    def list_collections_endpoint() -> list[dict]:
        """Every collection with its counts of pairs, splits, hard negatives and also-correct
        labels."""
        return list_collections(services)

    def list_models_endpoint() -> list[dict]:
        """The models /search accepts: "base" and the finished runs (name and label)."""
        return list_models(services)

    def search_endpoint(
        collection: str, query: str, model: str = BASE, k: int = DEFAULT_K
    ) -> list[dict]:
        """The top-k pairs of a collection for a text query under a model ("base" or a
        finished run's name): [{pair_id, score, caption, rank, positive}], best first."""
        try:
            return search(services, collection, query, model, k)
        except ApiError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    quick = {"concurrency_limit": None}
    gr.api(list_collections_endpoint, api_name="list_collections", **quick)
    gr.api(list_models_endpoint, api_name="list_models", **quick)
    gr.api(search_endpoint, api_name="search", concurrency_id=API_CONCURRENCY)
