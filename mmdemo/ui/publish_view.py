"""The Publish tab's form and messages: dropdown choices, the checked publish targets, outcomes.

Pure view-building used by :mod:`mmdemo.ui.publish_handlers` (which does the sending) and by the
layout in :mod:`mmdemo.ui.publish`: nothing here touches the network or the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import yaml

from mmdemo.cards import split_front_matter
from mmdemo.hub import PublishError, PublishResult, check_repo_id
from mmdemo.services import Services
from mmdemo.store import StoreError
from mmdemo.ui.common import collection_names

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


def refresh_choices(
    services: Services,
    run: str | None,
    collection: str | None,
    seen: tuple | None,
    preferred: str | None = None,
) -> Choices:
    """Fresh dropdown choices, keeping the current picks when they still exist.

    ``seen`` is what the dropdowns were last built from; when nothing changed both outputs are
    ``gr.skip()`` (the polling timer calls this every few seconds).
    """
    runs, names = finished_runs(services), collection_names(services)
    now = (tuple(runs), tuple(names))
    if seen is not None and tuple(map(tuple, seen)) == now:
        return Choices(gr.skip(), gr.skip(), seen)
    run_value = run if run in runs else (runs[0] if runs else None)
    fallback = run_collection(services, run_value) or preferred
    coll_value = next(
        (c for c in (collection, fallback) if c in names), names[0] if names else None
    )
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
        parts = []
        if self.model_repo:
            parts.append(f"run **{self.run}** → model repo `{self.model_repo}`")
        if self.dataset_repo:
            parts.append(f"collection **{self.collection}** → dataset repo `{self.dataset_repo}`")
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
    """The line under the form: what would be published, or what is wrong (nothing is sent)."""
    try:
        targets = plan_targets(services, run, model_repo, collection, dataset_repo)
    except PublishError as exc:
        return f"⚠️ {exc}"
    return f"Ready: {targets.describe()}."


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


def card_preview(card: str) -> str:
    """A card as the preview shows it: front matter as a YAML block, images as their paths.

    Example images sit next to the card in the repo, so the app cannot show them here.
    """
    meta, body = split_front_matter(card)
    body = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", r"🖼 `\2`", body)
    if not meta:
        return body
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip()
    return f"**Card metadata**\n\n```yaml\n{front}\n```\n\n{body}"


def failure(message: str) -> PublishOutcome:
    """A warning toast and the outcome that shows it (the overwrite choice hidden)."""
    gr.Warning(message)
    return PublishOutcome(f"⚠️ {message}", gr.update(visible=False), gr.skip(), gr.skip())


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
