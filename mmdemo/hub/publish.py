"""Publishing to the Hugging Face Hub: a finished run's model and a collection as a dataset.

:func:`publish_model` / :func:`publish_dataset` take a :class:`~mmdemo.hub.client.Publisher` (the
real :class:`HubPublisher` or the :class:`DryRunPublisher`, same calls, so callers never branch).
They check the repo first (an existing one raises :class:`RepoExists` unless the caller chose
``overwrite`` or ``pr``), prepare the files in a staging folder under ``tmp/`` (model files are
hard-linked, never modified; cards are written fresh), create the repo and upload the folder as
one commit. An upload that breaks leaves the local data as it was and the remote repo without a
new commit, so calling again is a clean retry (an empty repo left behind counts as new).

:func:`push_command` is ``python -m mmdemo push``; :func:`pull_dataset` brings a collection back
from a dataset repo; :func:`zip_folder` packs a dry run for download. Tokens, errors and the
publishers live in :mod:`mmdemo.hub.client` and are re-exported here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdemo.data.agreement import agreement
from mmdemo.data.store import Store, StoreError
from mmdemo.hub.cards import finish_dataset_card
from mmdemo.hub.client import (
    DryRunPublisher,
    HubPublisher,
    Publisher,
    PublishError,
    RepoExists,
    Secret,
    UploadResult,
    as_secret,
    check_repo_id,
    redact,
    repo_url,
    resolve_token,
    translate_error,
)
from mmdemo.hub.staging import (
    ModelLoader,
    find_model_dir,
    stage_model,
)
from mmdemo.settings import Settings

__all__ = [
    "DryRunPublisher",
    "HubPublisher",
    "PublishError",
    "PublishResult",
    "Publisher",
    "RepoExists",
    "Secret",
    "UploadResult",
    "as_secret",
    "check_repo_id",
    "find_model_dir",
    "on_space",
    "publish_dataset",
    "publish_model",
    "pull_dataset",
    "push_command",
    "redact",
    "repo_url",
    "resolve_token",
    "translate_error",
    "zip_folder",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None, str], None]
IF_EXISTS = ("ask", "overwrite", "pr")


def on_space(settings_or_env: Settings | Mapping[str, str]) -> bool:
    """Whether the app runs on a Hugging Face Space (``SPACE_ID`` is set)."""
    if isinstance(settings_or_env, Settings):
        return bool(settings_or_env.space_id)
    return bool(settings_or_env.get("SPACE_ID"))


def _check_if_exists(if_exists: str) -> str:
    if if_exists not in IF_EXISTS:
        raise PublishError(f"if_exists must be one of {', '.join(IF_EXISTS)}, not {if_exists!r}.")
    return if_exists


# -- shared steps ------------------------------------------------------------------------------
@dataclass
class PublishResult:
    """What a publish did. ``as_json()`` is for the CLI and the UI."""

    repo_id: str
    repo_type: str
    url: str
    dry_run: bool
    files: list[str] = field(default_factory=list)
    folder: Path | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    created: bool = False
    replaced: bool = False

    def as_json(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "url": self.url,
            "dry_run": self.dry_run,
            "folder": str(self.folder) if self.folder else None,
            "commit_url": self.commit_url,
            "pr_url": self.pr_url,
            "files": list(self.files),
        }


def _reporter(progress: ProgressFn | None, total: int) -> Callable[[int, str], None]:
    def report(step: int, message: str) -> None:
        if progress is not None:
            progress(step, total, message)

    return report


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _upload(
    publisher: Publisher,
    staging: Path,
    repo_id: str,
    repo_type: str,
    *,
    private: bool,
    existing: list[str] | None,
    if_exists: str,
    commit_message: str,
    report: Callable[[int, str], None],
) -> PublishResult:
    """Create the repo when needed, then upload ``staging`` as one commit."""
    has_files = bool(existing and set(existing) - {".gitattributes"})
    created = existing is None
    if created:
        report(3, f"creating {repo_id}")
        publisher.create_repo(repo_id, repo_type, private)
    create_pr = has_files and if_exists == "pr"
    replace = has_files and if_exists == "overwrite"
    report(4, f"uploading to {repo_id}" + (" as a pull request" if create_pr else ""))
    outcome = publisher.upload_folder(
        staging,
        repo_id,
        repo_type,
        commit_message=commit_message,
        create_pr=create_pr,
        replace=replace,
    )
    log.info("Published %s %s (dry run: %s)", repo_type, repo_id, publisher.dry_run)
    return PublishResult(
        repo_id=repo_id,
        repo_type=repo_type,
        url=outcome.url,
        dry_run=publisher.dry_run,
        files=_listing(staging),
        folder=outcome.folder,
        commit_url=outcome.commit_url,
        pr_url=outcome.pr_url,
        created=created,
        replaced=replace,
    )


def _existing(publisher: Publisher, repo_id: str, repo_type: str, if_exists: str) -> list | None:
    files = publisher.repo_files(repo_id, repo_type)
    if files and set(files) - {".gitattributes"} and if_exists == "ask":
        raise RepoExists(repo_id, repo_type)
    return files


# -- the model ---------------------------------------------------------------------------------
def publish_model(
    publisher: Publisher,
    store: Store,
    settings: Settings,
    run_name: str,
    repo_id: str,
    *,
    private: bool = False,
    dataset_repo: str | None = None,
    if_exists: str = "ask",
    progress: ProgressFn | None = None,
    load_model: ModelLoader | None = None,
) -> PublishResult:
    """Publish a finished run's model with its card; see the module docstring.

    The card's evaluation is measured here on the eval split's published images, with the base
    model from ``load_model`` (default :func:`mmdemo.retrieval.models.load_model`).

    Raises :class:`RepoExists` when the repo has files and ``if_exists="ask"``, and
    :class:`PublishError` for everything else (checked names before any request).
    """
    repo_id = check_repo_id(repo_id, "model")
    dataset_repo = check_repo_id(dataset_repo, "dataset") if dataset_repo else None
    _check_if_exists(if_exists)
    report = _reporter(progress, 5)
    report(1, f"checking {repo_id}")
    existing = _existing(publisher, repo_id, "model", if_exists)
    report(2, "preparing the model files and card")
    staging = stage_model(store, settings, run_name, repo_id, dataset_repo, load_model, report)
    try:
        result = _upload(
            publisher,
            staging,
            repo_id,
            "model",
            private=private,
            existing=existing,
            if_exists=if_exists,
            commit_message=f"Upload mmdemo run {run_name}",
            report=report,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(5, "done")
    return result


# -- the dataset -------------------------------------------------------------------------------
def _authors(store: Store, collection_id: int) -> list[str]:
    names = {p.author for p in store.list_pairs(collection_id)}
    names |= {lab.author for lab in store.labels_for_collection(collection_id)}
    return sorted(n for n in names if n)


def publish_dataset(
    publisher: Publisher,
    store: Store,
    settings: Settings,
    collection: str,
    repo_id: str,
    *,
    private: bool = False,
    if_exists: str = "ask",
    model_repo: str | None = None,
    progress: ProgressFn | None = None,
) -> PublishResult:
    """Publish a collection as a dataset repo (the export folder plus authors in its card)."""
    from mmdemo.data.export import ExportError, export_collection

    repo_id = check_repo_id(repo_id, "dataset")
    model_repo = check_repo_id(model_repo, "model") if model_repo else None
    _check_if_exists(if_exists)
    try:
        found = store.collection(collection)
    except StoreError as exc:
        raise PublishError(str(exc), retryable=False) from None
    report = _reporter(progress, 5)
    report(1, f"checking {repo_id}")
    existing = _existing(publisher, repo_id, "dataset", if_exists)
    report(2, f"exporting {found.name}")
    settings.ensure_dirs()
    holder = Path(tempfile.mkdtemp(prefix="publish-dataset-", dir=settings.tmp_dir))
    try:
        staging = holder / "dataset"
        try:
            export_collection(store, settings, found.name, staging)
        except ExportError as exc:
            raise PublishError(f"Exporting {found.name!r} failed: {exc}") from None
        card = staging / "README.md"
        card.write_text(
            finish_dataset_card(
                card.read_text(encoding="utf-8"),
                repo_id,
                _authors(store, found.id),
                model_repo,
                agreement(store.labels_for_collection(found.id)),
            ),
            encoding="utf-8",
        )
        result = _upload(
            publisher,
            staging,
            repo_id,
            "dataset",
            private=private,
            existing=existing,
            if_exists=if_exists,
            commit_message=f"Upload mmdemo collection {found.name}",
            report=report,
        )
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    report(5, "done")
    return result


def pull_dataset(
    store: Store,
    settings: Settings,
    collection: str,
    repo_id: str,
    token: object = None,
    *,
    download: Callable[..., Any] | None = None,
    **import_options: Any,
) -> Any:
    """Import a collection back from a Hub dataset repo (the durable copy of a Space's labels).

    Downloads the repo with ``huggingface_hub.snapshot_download`` (``download`` replaces it in
    tests) into a temporary folder and imports it with
    :func:`mmdemo.data.hf_import.import_hf_dataset`.
    """
    from mmdemo.data.hf_import import import_hf_dataset

    repo_id = check_repo_id(repo_id, "dataset")
    secret = as_secret(token) or resolve_token()
    if download is None:
        from huggingface_hub import snapshot_download as download
    settings.ensure_dirs()
    with tempfile.TemporaryDirectory(prefix="pull-dataset-", dir=settings.tmp_dir) as tmp:
        try:
            download(
                repo_id=repo_id,
                repo_type="dataset",
                local_dir=tmp,
                token=secret.reveal() if secret else False,
            )
        except Exception as exc:  # noqa: BLE001
            raise translate_error(
                exc, action="downloading", repo_id=repo_id, repo_type="dataset", token=secret
            ) from None
        return import_hf_dataset(store, settings, collection, tmp, **import_options)


# -- command line and download -----------------------------------------------------------------
def push_command(
    settings: Settings,
    run: str | None,
    repo: str | None,
    dataset_repo: str | None = None,
    collection: str | None = None,
    private: bool = False,
    dry_run_dir: str | Path | None = None,
    *,
    if_exists: str = "ask",
    token: object = None,
    api: Any = None,
    progress: ProgressFn | None = None,
) -> dict:
    """``python -m mmdemo push``: publish a run's model (and a collection as a dataset).

    The dataset goes first so the model card can link it; its collection defaults to the run's.
    With ``dry_run_dir`` the files land in ``DIR/model/`` and ``DIR/dataset/`` and no network is
    used. Returns the JSON object the CLI prints last.
    """
    if repo and not run:
        raise PublishError("--repo needs --run NAME: which run's model to publish.")
    repo = check_repo_id(repo, "model") if run else None
    dataset_repo = check_repo_id(dataset_repo, "dataset") if dataset_repo else None
    if collection and not dataset_repo:
        raise PublishError("--collection needs --dataset-repo USER/NAME to publish it to.")
    if not repo and not dataset_repo:
        raise PublishError("Nothing to publish: give --run and --repo, and/or --dataset-repo.")
    _check_if_exists(if_exists)
    if dry_run_dir:
        publisher: Publisher = DryRunPublisher(Path(dry_run_dir))
    else:
        secret = as_secret(token) or resolve_token()
        if not secret:
            raise PublishError(
                "No Hugging Face token: set HF_TOKEN or run `hf auth login`, or use --dry-run DIR."
            )
        publisher = HubPublisher(secret, api=api)
    settings.ensure_dirs()
    store = Store(settings.db_path, settings.max_caption_chars)
    try:
        if dataset_repo and not collection:
            if not run:
                raise PublishError("--dataset-repo needs --collection NAME (or --run).")
            run_row = store.get_run(run)
            if run_row.collection_id is None:
                raise PublishError(f"Run {run!r} has no collection: give --collection NAME.")
            collection = store.collection_by_id(run_row.collection_id).name
        out: dict[str, Any] = {"dry_run": publisher.dry_run}
        if dataset_repo:
            data = publish_dataset(
                publisher,
                store,
                settings,
                collection or "",
                dataset_repo,
                private=private,
                if_exists=if_exists,
                model_repo=repo,
                progress=progress,
            )
            out.update(dataset_url=data.url, dataset_pr_url=data.pr_url)
            out["dataset_dir"] = str(data.folder) if data.folder else None
        if repo and run:
            model = publish_model(
                publisher,
                store,
                settings,
                run,
                repo,
                private=private,
                dataset_repo=dataset_repo,
                if_exists=if_exists,
                progress=progress,
            )
            out.update(model_url=model.url, model_pr_url=model.pr_url)
            out["model_dir"] = str(model.folder) if model.folder else None
        return out
    except RepoExists as exc:
        exc.args = (f"{exc} On the command line: --if-exists overwrite, or --if-exists pr.",)
        raise
    except StoreError as exc:
        raise PublishError(str(exc), retryable=False) from None
    finally:
        store.close()


def zip_folder(folder: str | Path, dest: str | Path | None = None) -> Path:
    """Zip ``folder`` (paths inside relative to it) to ``dest`` or a sibling ``<folder>.zip``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder.", retryable=False)
    target = Path(dest) if dest else folder.with_name(folder.name + ".zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel in _listing(folder):
            archive.write(folder / rel, rel)
    os.replace(partial, target)
    return target
