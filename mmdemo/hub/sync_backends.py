"""The sync's targets: ``MMDEMO_SYNC_TO`` parsed, the folder and Hub backends (their reads,
writes and path checks), and this home's record of what it saved to each target (a state file under
``MMDEMO_HOME/sync/``, never the SQLite schema). Re-exported by :mod:`mmdemo.hub.sync`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmdemo.hub.client import HubPublisher, PublishError, check_repo_id, redact, resolve_token
from mmdemo.settings import Settings

log = logging.getLogger(__name__)

HUB_PREFIX = "hf://datasets/"
MAX_OPERATIONS_PER_COMMIT = 1000


class SyncError(Exception):
    """The state cannot be saved to or restored from the target; ``str(exc)`` says why."""


class SyncRefused(SyncError):
    """The target is reachable but refused (its rows, or another writer ahead): not retried."""


# -- targets ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the state goes: a Hub dataset repo (``repo_id``) or a local folder."""

    repo_id: str | None = None
    folder: Path | None = None

    @property
    def label(self) -> str:
        """``OWNER/NAME`` or the folder, as the header shows it."""
        return self.repo_id if self.repo_id else str(self.folder)


def parse_target(value: str) -> Target:
    """``hf://datasets/OWNER/NAME`` or a folder path; anything else hub-like is refused."""
    text = (value or "").strip()
    if text.startswith("hf://"):
        if not text.startswith(HUB_PREFIX):
            raise SyncError(
                f"MMDEMO_SYNC_TO={text!r}: only dataset repos are supported; write it as"
                " hf://datasets/OWNER/NAME."
            )
        try:
            repo_id = check_repo_id(text[len(HUB_PREFIX) :].strip("/"), "dataset")
        except PublishError as exc:
            raise SyncError(f"MMDEMO_SYNC_TO={text!r}: {exc}") from None
        return Target(repo_id=repo_id)
    if not text:
        raise SyncError("MMDEMO_SYNC_TO is empty: name hf://datasets/OWNER/NAME or a folder.")
    return Target(folder=Path(text).expanduser().resolve())


class Backend(Protocol):
    """The files of a target. Implementations raise :class:`SyncError` only."""

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or ``None`` when it does not exist."""

    def list(self) -> list[str]:
        """Every file of the target (empty when there is no target yet)."""

    def push(self, files: list[tuple[str, bytes | Path]], message: str) -> None:
        """Write the files in order; the last one is written only when all others are."""


class FolderBackend:
    """A local folder: each file written atomically (temp + rename), in the order given."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, path: str) -> Path:
        """``root/path``, refused when the name would leave the root (``..``, absolute, a link)."""
        parts = path.split("/")
        full = self.root / path
        if (
            not path
            or "\\" in path
            or "\0" in path
            or any(part in ("", ".", "..") for part in parts)
            or not full.resolve().is_relative_to(self.root.resolve())
        ):
            raise SyncError(f"Refusing the sync file name {path!r}: it leaves {self.root}.")
        return full

    def read(self, path: str) -> bytes | None:
        full = self._path(path)
        try:
            return full.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SyncError(f"Could not read {full}: {exc}") from None

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def push(self, files: list[tuple[str, bytes | Path]], message: str) -> None:
        try:
            for path, content in files:
                dest = self._path(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as out:
                        if isinstance(content, Path):
                            with content.open("rb") as src:
                                shutil.copyfileobj(src, out)
                        else:
                            out.write(content)
                    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the files from others
                    os.replace(tmp, dest)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as exc:
            raise SyncError(f"Could not write to {self.root}: {exc}") from None


class HubBackend(HubPublisher):
    """A private Hub dataset repo, written with ``HfApi.create_commit`` (created when missing).

    The token is the process's own (``HF_TOKEN``: on a Space, the owner's secret), never a
    visitor's login. Errors come out as :class:`SyncError` with the client's token-free messages.
    """

    def __init__(self, repo_id: str, token: object = None, api: Any = None):
        super().__init__(token if token is not None else resolve_token(), api=api)
        self.repo_id = repo_id
        self._exists: bool | None = None

    def _sync_call(self, action: str, fn: Callable, /, **kwargs: Any) -> Any:
        try:
            return self._call(action, self.repo_id, "dataset", fn, **kwargs)
        except PublishError as exc:
            raise SyncError(str(exc)) from None

    def list(self) -> list[str]:
        try:
            files = self.repo_files(self.repo_id, "dataset")
        except PublishError as exc:
            raise SyncError(str(exc)) from None
        self._exists = files is not None
        return list(files or [])

    def read(self, path: str) -> bytes | None:
        # Only the Hub saying "no such file/repo" means missing; LocalEntryNotFoundError (also an
        # EntryNotFoundError) is a network failure and must not read as "nothing saved".
        from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

        token = self._token.reveal() if self._token else False
        with tempfile.TemporaryDirectory(prefix="mmdemo-sync-") as folder:
            try:
                local = self._api.hf_hub_download(
                    self.repo_id, path, repo_type="dataset", token=token, local_dir=folder
                )
            except (RemoteEntryNotFoundError, RepositoryNotFoundError):
                return None
            except Exception as exc:  # noqa: BLE001 - one clear, token-free message
                message = redact(f"{type(exc).__name__}: {exc}", token)[:300]
                raise SyncError(f"Could not read {path} from {self.repo_id}: {message}") from None
            return Path(local).read_bytes()

    def push(self, files: list[tuple[str, bytes | Path]], message: str) -> None:
        from huggingface_hub import CommitOperationAdd

        if not self._token:
            raise SyncError(
                f"No token to save to {self.repo_id}: set the HF_TOKEN secret (a write token of"
                " the Space's owner)."
            )
        token = self._token.reveal()
        if self._exists is not True:
            self.list()
            if not self._exists:
                self.create_repo_private()
        batches = [
            files[start : start + MAX_OPERATIONS_PER_COMMIT]
            for start in range(0, len(files), MAX_OPERATIONS_PER_COMMIT)
        ]
        for index, batch in enumerate(batches):
            operations = [
                CommitOperationAdd(path_in_repo=path, path_or_fileobj=content)
                for path, content in batch
            ]
            part = f" ({index + 1}/{len(batches)})" if len(batches) > 1 else ""
            self._sync_call(
                "saving the state",
                self._api.create_commit,
                repo_id=self.repo_id,
                operations=operations,
                commit_message=message + part,
                repo_type="dataset",
                token=token,
            )

    def create_repo_private(self) -> None:
        try:
            self.create_repo(self.repo_id, "dataset", private=True)
        except PublishError as exc:
            raise SyncError(str(exc)) from None
        self._exists = True


def open_backend(target: Target, api: Any = None, token: object = None) -> Backend:
    """The backend for a target (``api`` stands in for ``HfApi`` in tests)."""
    if target.repo_id:
        return HubBackend(target.repo_id, token=token, api=api)
    return FolderBackend(target.folder)  # type: ignore[arg-type]


# -- the local record of what was saved -----------------------------------------------------------
@dataclass
class SyncState:
    """What this home saved to one target (a file under ``MMDEMO_HOME/sync/``)."""

    target: str
    lineage: str
    seq: int = 0
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    since_snapshot: int = 0
    saved_at: float | None = None


def state_path(settings: Settings, target: Target) -> Path:
    digest = hashlib.sha1(target.label.encode()).hexdigest()[:12]
    return settings.home / "sync" / f"state-{digest}.json.gz"


def load_state(settings: Settings, target: Target) -> SyncState | None:
    path = state_path(settings, target)
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError) as exc:
        log.warning("Ignoring a damaged sync state %s: %s", path, exc)
        return None
    if data.get("target") != target.label:
        return None
    return SyncState(**data)


def save_state(settings: Settings, target: Target, state: SyncState) -> None:
    path = state_path(settings, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(json.dumps(state.__dict__, separators=(",", ":")).encode(), mtime=0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
