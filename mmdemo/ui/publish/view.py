"""The Publish tab's form and messages: dropdown choices, the checked publish targets, outcomes.

Pure view-building used by :mod:`mmdemo.ui.publish.handlers` (which does the sending) and by the
layout in :mod:`mmdemo.ui.publish.layout`: nothing here touches the network or the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import yaml

from mmdemo.data.store import StoreError
from mmdemo.hub.cards import split_front_matter
from mmdemo.hub.publish import PublishError, PublishResult, check_repo_id
from mmdemo.services import Services
from mmdemo.text import html_text, md
from mmdemo.ui.common import collection_names

EMPTY_FORM = (
    "*Nothing to publish yet: write a model repo (owner/name) to publish the run, and/or a"
    " dataset repo to publish the collection.*"
)
IF_EXISTS_CHOICES = [
    ("Overwrite: replace the repo's files with these", "overwrite"),
    ("Open a pull request with the new files", "pr"),
]


# -- choices -----------------------------------------------------------------------------------
def finished_runs(services: Services) -> list[str]:
    """Names of the runs that can be published (newest first)."""
    return [run.name for run in services.store.list_runs() if run.status == "finished"]


def run_collection(services: Services, run: str | None) -> str | None:
    """The collection a run trained on (``None`` when unknown or gone)."""
    if not run:
        return None
    try:
        found = services.store.get_run(run)
        if found.collection_id is None:
            return None
        return services.store.collection_by_id(found.collection_id).name
    except StoreError:
        return None


class Choices(NamedTuple):
    """Outputs of :func:`refresh_choices`: the two dropdowns and what they were built from."""

    run: Any
    collection: Any
    seen: tuple | None


def _seen_key(seen: Any) -> tuple | None:
    """``seen`` as built by :func:`refresh_choices` (a browser round trip may make lists)."""
    if not isinstance(seen, list | tuple) or len(seen) != 3:
        return None
    runs, names, current = seen
    return (tuple(runs), tuple(names), current)


def refresh_choices(
    services: Services,
    run: str | None,
    collection: str | None,
    seen: tuple | None,
    preferred: str | None = None,
) -> Choices:
    """Fresh dropdown choices, keeping the current picks when they still exist.

    ``preferred`` is the browser's current collection: the collection dropdown starts on the
    run's own collection, else on it, and follows it when it changed since ``seen`` (picked in
    Curate while this tab was away). ``seen`` is what the dropdowns were last built from; when
    nothing changed both outputs are ``gr.skip()``.
    """
    runs, names = finished_runs(services), collection_names(services)
    now = (tuple(runs), tuple(names), preferred)
    last = _seen_key(seen)
    if last == now:
        return Choices(gr.skip(), gr.skip(), now)
    run_value = run if run in runs else (runs[0] if runs else None)
    if last is not None and preferred != last[2]:
        candidates: tuple[str | None, ...] = (preferred, collection)
    else:
        candidates = (collection, run_collection(services, run_value), preferred)
    coll_value = next((c for c in candidates if c in names), names[0] if names else None)
    return Choices(
        gr.update(choices=runs, value=run_value),
        gr.update(choices=names, value=coll_value),
        now,
    )


def follow_run(services: Services, run: str | None) -> Any:
    """When a run is picked, pick the collection it trained on (a skip when it has none)."""
    name = run_collection(services, run)
    return gr.update(value=name) if name else gr.skip()


# -- what to publish ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Targets:
    """What one publish sends: a run to a model repo and/or a collection to a dataset repo."""

    run: str | None = None
    model_repo: str | None = None
    collection: str | None = None
    dataset_repo: str | None = None

    def describe(self) -> str:
        """What is sent where, in Markdown (names escaped; repo ids are checked ids, shown as
        code)."""
        parts = []
        if self.model_repo:
            parts.append(f"run **{md(self.run)}** → model repo `{self.model_repo}`")
        if self.dataset_repo:
            parts.append(
                f"collection **{md(self.collection)}** → dataset repo `{self.dataset_repo}`"
            )
        return " and ".join(parts)

    @property
    def slug(self) -> str:
        repo = self.model_repo or self.dataset_repo or "publish"
        return repo.split("/")[-1]


def plan_targets(
    services: Services,
    run: str | None,
    model_repo: str | None,
    collection: str | None,
    dataset_repo: str | None,
) -> Targets:
    """Check the form before anything is sent; raise :class:`PublishError` saying what is wrong.

    A filled repo box means "publish this part": the model repo needs a finished run, the dataset
    repo a collection.
    """
    model = (model_repo or "").strip()
    data = (dataset_repo or "").strip()
    if not model and not data:
        raise PublishError(
            "Nothing to publish yet: write a model repo (owner/name) to publish the run, and/or a"
            " dataset repo to publish the collection."
        )
    targets = Targets()
    if model:
        model = check_repo_id(model, "model")
        if not run:
            raise PublishError("Choose a finished run to publish to the model repo.")
        if run not in finished_runs(services):
            raise PublishError(f"Run {run!r} is not a finished run; pick another one.")
        targets = Targets(run=run, model_repo=model)
    if data:
        data = check_repo_id(data, "dataset")
        if not collection:
            raise PublishError("Choose a collection to publish to the dataset repo.")
        if services.store.find_collection(collection) is None:
            raise PublishError(f"There is no collection named {collection!r} any more.")
        targets = Targets(targets.run, targets.model_repo, collection, data)
    return targets


def check_targets(
    services: Services,
    run: str | None,
    model_repo: str | None,
    collection: str | None,
    dataset_repo: str | None,
) -> str:
    """The line under the form: what would be published, or what is wrong (nothing is sent).

    An empty form is not an error: the line says what to fill in, without a warning sign.
    """
    if not (model_repo or "").strip() and not (dataset_repo or "").strip():
        return EMPTY_FORM
    try:
        targets = plan_targets(services, run, model_repo, collection, dataset_repo)
    except PublishError as exc:
        return f"⚠️ {md(exc)}"
    return f"Ready: {targets.describe()}."


class FormCheck(NamedTuple):
    """Outputs of :func:`form_changed`: the check line and the last action's outcome."""

    check: str
    status: Any
    ask: Any
    download: Any
    preview: Any


def form_changed(
    services: Services,
    run: str | None,
    model_repo: str | None,
    collection: str | None,
    dataset_repo: str | None,
) -> FormCheck:
    """The form changed: check it again, and clear what the last dry run or push said (its
    message, the overwrite choice, its zip and card), which was about other targets."""
    return FormCheck(
        check_targets(services, run, model_repo, collection, dataset_repo),
        "",
        gr.update(visible=False),
        gr.update(value=None, visible=False),
        gr.update(value="", visible=False),
    )


# -- outcomes and messages ---------------------------------------------------------------------
class PublishOutcome(NamedTuple):
    """Outputs of the dry-run and push handlers, in the order of the event outputs."""

    status: str
    ask: Any
    """The overwrite / pull-request choice (a visibility update)."""
    download: Any
    """The download button of the dry-run zip."""
    preview: Any
    """The card preview."""


def result_lines(results: list[PublishResult]) -> list[str]:
    """One Markdown bullet per published repo: its URL, or the pull request opened."""
    lines = []
    for result in results:
        kind = "Dataset" if result.repo_type == "dataset" else "Model"
        if result.pr_url:
            lines.append(f"- {kind}: pull request opened at {result.pr_url}")
        else:
            lines.append(f"- {kind}: {result.url} ({len(result.files)} files)")
    return lines


_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)


def _markup_as_text(markdown: str) -> str:
    """Markdown with raw HTML (sentence-transformers' ``<code>``, ``<details>``) shown as text:
    ``<`` and ``>`` escaped outside code. User text in a card is escaped by the card itself
    (:func:`mmdemo.hub.cards._cell`), so its entities are left to render."""
    parts = _CODE.split(markdown)
    return "".join(
        part if index % 2 else part.replace("<", "&lt;").replace(">", "&gt;")
        for index, part in enumerate(parts)
    )


def card_preview(card: str) -> str:
    """A card as the preview shows it: front matter as a YAML block, images as their paths,
    raw HTML (a caption or name like ``<img …>``) as text.

    Example images sit next to the card in the repo, so the app cannot show them here.
    """
    meta, body = split_front_matter(card)
    body = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", r"🖼 `\2`", body)
    body = _markup_as_text(body)
    if not meta:
        return body
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip()
    return f"**Card metadata**\n\n```yaml\n{front}\n```\n\n{body}"


def failure(message: str) -> PublishOutcome:
    """A warning toast and the outcome that shows it (the overwrite choice hidden); the message
    is plain text (names, repo ids and errors in it stay text)."""
    gr.Warning(html_text(message))
    return PublishOutcome(f"⚠️ {md(message)}", gr.update(visible=False), gr.skip(), gr.skip())


def ask_choice(taken: list[str]) -> PublishOutcome:
    """Nothing sent: the ``taken`` repos exist, so show the overwrite / pull-request choice."""
    what = " and the ".join(taken)
    return PublishOutcome(
        f"⚠️ The {what} already exist{'s' if len(taken) == 1 else ''} on the Hub. Nothing was"
        " sent: choose to overwrite, or to open a pull request with the new files, then"
        " continue.",
        gr.update(visible=True),
        gr.skip(),
        gr.skip(),
    )


def cancel_choice() -> PublishOutcome:
    """The person chose neither overwrite nor pull request."""
    return PublishOutcome("Nothing was sent.", gr.update(visible=False), gr.skip(), gr.skip())
