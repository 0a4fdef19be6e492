"""The Publish tab's handlers (the layout is in :mod:`mmdemo.ui.publish.layout`, the form's choices,
checks and messages in :mod:`mmdemo.ui.publish.view`).

Handlers are plain functions ``handler(services, *values, ...)`` called directly by the tests; the
Hub stand-ins (``api`` for :class:`~mmdemo.hub.publish.HubPublisher`, ``download`` for
:func:`~mmdemo.hub.publish.pull_dataset`) are keyword arguments the layout never passes.

Tokens. The click handler receives the pasted token and Gradio's ``OAuthToken``;
:func:`mmdemo.ui.identity.token_for` turns them into a :class:`~mmdemo.hub.publish.Secret` that
goes to
the publisher and is dropped when the call returns. Every message goes through
:func:`~mmdemo.hub.publish.redact`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.importers import ImportFailed
from mmdemo.data.store import StoreError
from mmdemo.hub.publish import (
    DryRunPublisher,
    HubPublisher,
    Publisher,
    PublishError,
    PublishResult,
    RepoExists,
    Secret,
    check_repo_id,
    on_space,
    publish_dataset,
    publish_model,
    pull_dataset,
    redact,
    zip_folder,
)
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.text import md
from mmdemo.ui.common import collection_names, progress_callback
from mmdemo.ui.identity import LoginRequired, require_login, token_for
from mmdemo.ui.publish.view import (
    PublishOutcome,
    Targets,
    ask_choice,
    card_preview,
    failure,
    plan_targets,
    result_lines,
)

DOWNLOAD_MAX_AGE_S = 3600
"""Dry-run zips older than this are swept at the next dry run (Gradio serves its own copy)."""


# -- publishing --------------------------------------------------------------------------------
def _scaled(progress: Callable | None, index: int, count: int) -> Callable | None:
    """A publish step's progress (its steps out of its total) as part of ``count`` publishes."""
    report = progress_callback(progress)
    if report is None:
        return None

    def scaled(done: int, total: int | None, message: str) -> None:
        steps = total or 1
        report(index * steps + done, count * steps, message)

    return scaled


def _publish(
    services: Services,
    publisher: Publisher,
    targets: Targets,
    *,
    private: bool,
    if_exists: str,
    progress: Callable | None,
) -> tuple[list[PublishResult], PublishError | None]:
    """Publish the dataset (first, so both cards can link each other), then the model.

    Returns what was published and the error that stopped the rest (``None`` when all went).
    """
    store, settings = services.store, services.settings
    count = bool(targets.dataset_repo) + bool(targets.model_repo)
    done: list[PublishResult] = []
    try:
        if targets.dataset_repo:
            done.append(
                publish_dataset(
                    publisher,
                    store,
                    settings,
                    targets.collection or "",
                    targets.dataset_repo,
                    private=private,
                    if_exists=if_exists,
                    model_repo=targets.model_repo,
                    progress=_scaled(progress, len(done), count),
                )
            )
        if targets.model_repo:
            done.append(
                publish_model(
                    publisher,
                    store,
                    settings,
                    targets.run or "",
                    targets.model_repo,
                    private=private,
                    dataset_repo=targets.dataset_repo,
                    if_exists=if_exists,
                    progress=_scaled(progress, len(done), count),
                    load_model=services.models.get,
                )
            )
    except PublishError as exc:
        return done, exc
    return done, None


def _sweep_downloads(folder: Path) -> None:
    now = time.time()
    for old in folder.glob("*"):
        try:
            if now - old.stat().st_mtime > DOWNLOAD_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue


def downloads_dir(settings: Settings) -> Path:
    """A fresh folder for one dry-run zip under ``settings.downloads_dir`` (which the app serves);
    zips older than :data:`DOWNLOAD_MAX_AGE_S` are removed first."""
    folder = settings.downloads_dir
    folder.mkdir(parents=True, exist_ok=True)
    _sweep_downloads(folder)
    return Path(tempfile.mkdtemp(prefix="dry-run-", dir=folder))


def dry_run(
    services: Services,
    run: str | None,
    model_repo: str | None,
    collection: str | None,
    dataset_repo: str | None,
    *,
    progress: Callable | None = None,
) -> PublishOutcome:
    """Write exactly the files a push would upload and offer them as one zip; no network.

    The files are written under ``settings.tmp_dir`` (removed once zipped); the zip goes to
    ``settings.downloads_dir``, which the app serves, and is removed an hour later.
    """
    settings = services.settings
    try:
        targets = plan_targets(services, run, model_repo, collection, dataset_repo)
    except PublishError as exc:
        return failure(str(exc))
    settings.ensure_dirs()
    out = Path(tempfile.mkdtemp(prefix="dry-run-", dir=settings.tmp_dir))
    try:
        results, error = _publish(
            services,
            DryRunPublisher(out),
            targets,
            private=False,
            if_exists="ask",
            progress=progress,
        )
        if error is not None:
            raise error
        kind = "model" if targets.model_repo else "dataset"
        card = (out / kind / "README.md").read_text(encoding="utf-8")
        preview = f"### Preview of `{kind}/README.md`, the {kind} card\n\n{card_preview(card)}"
        archive = zip_folder(out, downloads_dir(settings) / f"mmdemo-dry-run-{targets.slug}.zip")
    except PublishError as exc:
        return failure(str(exc))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    lines = [f"**Dry run ready** — {targets.describe()}. Nothing was sent; the zip holds:", ""]
    lines += [f"- `{r.repo_type}/` — {len(r.files)} files for {r.url}" for r in results]
    return PublishOutcome(
        "\n".join(lines),
        gr.update(visible=False),
        gr.update(value=str(archive), visible=True),
        gr.update(value=preview, visible=True),
    )


def push(
    services: Services,
    run: str | None,
    model_repo: str | None,
    collection: str | None,
    dataset_repo: str | None,
    private: bool,
    if_exists: str,
    pasted_token: str | None,
    oauth_token: object = None,
    profile: object = None,
    *,
    api: Any = None,
    progress: Callable | None = None,
) -> PublishOutcome:
    """Publish to the Hub with the token of this click.

    ``if_exists="ask"`` checks the target repos first and, when one already has files, sends
    nothing and shows the overwrite / pull-request choice; the choice calls this again with
    ``"overwrite"`` or ``"pr"``.
    """
    settings = services.settings
    secret: Secret | None = None
    try:
        targets = plan_targets(services, run, model_repo, collection, dataset_repo)
        secret = token_for(settings, pasted_token, oauth_token, profile)
        if not secret:
            how = (
                "Log in with your Hugging Face account first."
                if on_space(settings)
                else "Paste a token with write access, set HF_TOKEN, or run `hf auth login`."
            )
            return failure(f"Not logged in to the Hugging Face Hub. {how} A dry run needs none.")
        publisher = HubPublisher(secret, api=api)
        if if_exists == "ask":
            taken = _existing_repos(publisher, targets)
            if taken:
                return ask_choice(taken)
        results, error = _publish(
            services,
            publisher,
            targets,
            private=bool(private),
            if_exists=if_exists,
            progress=progress,
        )
    except LoginRequired as exc:
        return failure(exc.message)
    except PublishError as exc:
        return failure(redact(exc, secret))
    if error is None:
        visibility = "private" if private else "public"
        lines = [
            f"**Published** (repos created now are {visibility}):",
            "",
            *result_lines(results),
        ]
        return PublishOutcome(
            "\n".join(lines), gr.update(visible=False), gr.update(visible=False), gr.skip()
        )
    if isinstance(error, RepoExists):  # created by someone else since the check above
        outcome = ask_choice([f"{error.repo_type} repo `{error.repo_id}`"])
    else:
        outcome = failure(redact(error, secret))
    if results:
        before = "\n".join(result_lines(results))
        outcome = outcome._replace(status=f"{outcome.status}\n\nPublished before that:\n{before}")
    return outcome


def _existing_repos(publisher: Publisher, targets: Targets) -> list[str]:
    """The target repos that already hold files (nothing is uploaded to find out)."""
    taken = []
    for repo_id, repo_type in ((targets.dataset_repo, "dataset"), (targets.model_repo, "model")):
        if not repo_id:
            continue
        files = publisher.repo_files(repo_id, repo_type)
        if files and set(files) - {".gitattributes"}:
            taken.append(f"{repo_type} repo `{repo_id}`")
    return taken


# -- the reverse: a collection from a dataset repo ---------------------------------------------
class ImportOutcome(NamedTuple):
    """Outputs of :func:`import_from_hub`: its message and the collection dropdown."""

    status: str
    collection: Any


def import_from_hub(
    services: Services,
    repo_id: str | None,
    name: str | None,
    pasted_token: str | None,
    oauth_token: object = None,
    profile: object = None,
    *,
    download: Callable[..., Any] | None = None,
    progress: Callable | None = None,
) -> ImportOutcome:
    """Import a collection from a Hub dataset repo (what a Space restarts from).

    ``name`` defaults to the repo's name; an existing collection gets the pairs it lacks.
    """
    settings = services.settings
    secret: Secret | None = None
    try:
        repo = check_repo_id(repo_id, "dataset")
        author = require_login(profile, settings)
        secret = token_for(settings, pasted_token, oauth_token, profile)
        if secret is None and on_space(settings):
            # pull_dataset would fall back to the Space's own HF_TOKEN: never for a visitor.
            raise LoginRequired("Your Space login gave no token: log out and in again.")
        target = (name or "").strip() or repo.split("/")[-1]
        options: dict[str, Any] = {"progress": progress_callback(progress)}
        if author:
            options["author"] = author
        report = pull_dataset(
            services.store, settings, target, repo, token=secret, download=download, **options
        )
    except LoginRequired as exc:
        return ImportOutcome(failure(exc.message).status, gr.skip())
    except (PublishError, ImportFailed, StoreError) as exc:
        return ImportOutcome(failure(redact(str(exc), secret)).status, gr.skip())
    names = collection_names(services)
    summary = report.summary()
    if report.rejected:
        summary += " Rejected: " + "; ".join(f"{r.item}: {r.reason}" for r in report.rejected[:5])
    return ImportOutcome(md(summary), gr.update(choices=names, value=target))
