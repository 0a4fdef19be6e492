"""Things every tab uses: the shared top-level components and small handler helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import gradio as gr

from mmdemo.data.ingest import ProgressFn
from mmdemo.data.store import Collection
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.text import html_text, md


@dataclass
class Shared:
    """Top-level pieces of the app that tabs hand to each other.

    Built by :func:`mmdemo.ui.app.build_app` before the tabs, passed to every ``build_<tab>``.
    """

    demo: gr.Blocks
    """The app itself: register page-load handlers with ``shared.demo.load(...)``."""
    collection: gr.BrowserState
    """Name of the collection this browser works on (``None`` when there is none).

    Only a person's choice of collection writes it (Curate's picker, create, rename, delete;
    the Finetune picker). Nothing listens to its changes: tabs read it as an input when they are
    shown or the page loads. It lives in the browser's localStorage, so a reload reopens the
    same collection.
    """
    timer: gr.Timer
    """The one polling timer (top level, so it mounts even while its tab is hidden)."""
    label_focus: gr.State
    """Pairs a person chose elsewhere to label next (``{"collection": name, "pair_ids": [...]}``
    or ``None``), e.g. from a selection on the embedding map. Written only by that person's
    action; the Label tab reads it as an input when it is shown."""
    tabs: dict[str, gr.Tab] = field(default_factory=dict)
    """Every tab by id, registered before its builder runs: ``tabs["curate"].select(...)``
    refreshes a tab when a person comes back to it."""


def default_collection(services: Services) -> str | None:
    """The collection a new session opens: the demo collection, else the first by name."""
    names = collection_names(services)
    if DEMO_COLLECTION in names:
        return DEMO_COLLECTION
    return names[0] if names else None


def current_collection(services: Services, name: str | None) -> Collection | None:
    """The session's collection if it still exists, else the default one (None if none)."""
    if name is not None:
        found = services.store.find_collection(name)
        if found is not None:
            return found
    fallback = default_collection(services)
    return services.store.find_collection(fallback) if fallback else None


def collection_names(services: Services) -> list[str]:
    return [c.name for c in services.store.list_collections()]


def warn(message: str) -> str:
    """Show ``message`` (plain text, user text allowed) as a toast; return it escaped for a
    Markdown status line (Gradio renders a toast's text as HTML, so it is escaped too)."""
    gr.Warning(html_text(message))
    return md(message)


def progress_callback(progress: Callable | None) -> ProgressFn | None:
    """Adapt a ``gr.Progress`` (or any callable taking Gradio's arguments) to ``ProgressFn``."""
    if progress is None:
        return None

    def report(done: int, total: int | None, message: str = "") -> None:
        progress((done, total), desc=message or None, unit="items")

    return report


View = TypeVar("View")


def partial_view(view_type: type[View], **fields: Any) -> View:
    """A tab's view (a NamedTuple naming every output) that sets ``fields`` and leaves every
    other output as it is on the page (``gr.skip()``)."""
    values = {name: gr.skip() for name in view_type._fields}  # type: ignore[attr-defined]
    values.update(fields)
    return view_type(**values)


def without_trigger(
    fields: tuple[str, ...],
    components: dict[str, Any],
    to_outputs: Callable[[Any], tuple],
    trigger: str,
) -> tuple[list, Callable[[Any], tuple]]:
    """The outputs of an event fired by the component named ``trigger``, without it, and an
    adapter from a view to those outputs: what a person just set is never written back.

    ``fields`` names a view's outputs in order, ``components`` maps them to components, and
    ``to_outputs(view)`` gives every output's value in that order.
    """
    names = [name for name in fields if name != trigger]

    def outputs(view: Any) -> tuple:
        values = dict(zip(fields, to_outputs(view), strict=True))
        return tuple(values[name] for name in names)

    return [components[name] for name in names], outputs
