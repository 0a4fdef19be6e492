"""Talking to the Hugging Face Hub safely: tokens, errors and the two publishers.

- :class:`HubPublisher` calls ``huggingface_hub.HfApi`` (``list_repo_files``, ``create_repo``,
  ``upload_folder``, ``whoami``); :class:`DryRunPublisher` takes the same calls and writes the
  files to ``DIR/model/`` and ``DIR/dataset/`` instead, touching no network. Both raise
  :class:`PublishError` only, with a message for people (:func:`translate_error`).
- Tokens. :func:`resolve_token` prefers the OAuth token of a Space login, then a pasted token, then
  ``huggingface_hub.get_token()`` (``HF_TOKEN`` or a saved ``hf auth login``). That call is the
  one place outside ``settings.py`` that reads the environment: it is the library's own
  mechanism, and a token must never sit in :class:`~mmdemo.settings.Settings` (which gets logged
  and shown). Tokens travel wrapped in :class:`Secret` and are scrubbed (:func:`redact`) from
  every message raised here; the original exceptions are dropped (``raise … from None``) because
  they carry the request and its ``Authorization`` header.

:mod:`mmdemo.hub.publish` builds the publishing workflow on top of this module.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

REPO_FOLDERS = {"model": "model", "dataset": "dataset"}
_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{20,}")
_BEARER_RE = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


# -- errors and secrets ------------------------------------------------------------------------
class PublishError(Exception):
    """A publish that did not happen; ``str(exc)`` is a message for people, token-free."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class RepoExists(PublishError):
    """The target repo already has files: the caller must choose ``overwrite`` or ``pr``."""

    def __init__(self, repo_id: str, repo_type: str):
        kind = "dataset" if repo_type == "dataset" else "model"
        super().__init__(
            f"The {kind} repo {repo_id} already exists on the Hub. Choose to overwrite it or to"
            " open a pull request with the new files.",
            status=409,
            retryable=False,
        )
        self.repo_id = repo_id
        self.repo_type = repo_type


class Secret:
    """A token that never shows itself: ``repr``/``str`` are ``'***'`` and it cannot be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict) -> Secret:
        return self

    def __reduce__(self) -> tuple:
        raise TypeError("A Secret cannot be pickled (tokens are never written anywhere).")


def _raw(token: object) -> str | None:
    """The plain value of a token given as a str, a :class:`Secret` or an object with ``.token``."""
    if token is None:
        return None
    if isinstance(token, Secret):
        return token.reveal() or None
    if isinstance(token, str):
        return token.strip() or None
    inner = getattr(token, "token", None)  # e.g. gradio's OAuthToken
    return inner.strip() or None if isinstance(inner, str) else None


def as_secret(token: object) -> Secret | None:
    value = _raw(token)
    return Secret(value) if value else None


def redact(text: object, token: object = None) -> str:
    """``text`` with the token (and anything shaped like an HF token or a bearer header) masked."""
    out = str(text)
    value = _raw(token)
    if value:
        out = out.replace(value, "***")
    out = _HF_TOKEN_RE.sub("hf_***", out)
    return _BEARER_RE.sub(r"\1***", out)


def resolve_token(explicit: object = None, oauth_token: object = None) -> Secret | None:
    """The token to publish with: a Space login's OAuth token, a pasted token, else the library's.

    The last step is ``huggingface_hub.get_token()`` (``HF_TOKEN``, then a saved login).
    """
    for candidate in (oauth_token, explicit):
        found = as_secret(candidate)
        if found:
            return found
    from huggingface_hub import get_token

    try:
        return as_secret(get_token())
    except Exception:  # noqa: BLE001 - a broken login setup means "no token", said later
        return None


def check_repo_id(repo_id: str | None, kind: str = "model") -> str:
    """Return the cleaned ``owner/name`` id, or raise :class:`PublishError` saying what is wrong."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    cleaned = (repo_id or "").strip()
    what = f"The {kind} repo name"
    if not cleaned:
        raise PublishError(f"{what} is empty: write it as owner/name, e.g. alice/my-clip.")
    if cleaned.count("/") != 1 or not all(cleaned.split("/")):
        raise PublishError(
            f"{what} {cleaned!r} must be owner/name (your user or organisation, a slash, a name)."
        )
    try:
        validate_repo_id(cleaned)
    except HFValidationError as exc:
        raise PublishError(f"{what} {cleaned!r} is not valid: {exc}", retryable=False) from None
    return cleaned


def _is_network_error(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    network = (httpx2.TransportError, ConnectionError, TimeoutError, OfflineModeIsEnabled)
    try:
        import httpx

        network += (httpx.TransportError,)
    except ImportError:  # pragma: no cover - httpx is a dependency of gradio
        pass
    return isinstance(exc, network + (LocalEntryNotFoundError,))


def translate_error(
    exc: BaseException, *, action: str, repo_id: str, repo_type: str, token: object
) -> PublishError:
    """Turn a Hub/network exception into a :class:`PublishError` people understand, token-free."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if isinstance(exc, PublishError):
        return exc
    kind = "dataset" if repo_type == "dataset" else "model"
    safe = " Nothing local was changed; retrying is safe."
    response = getattr(exc, "response", None) if isinstance(exc, HfHubHTTPError) else None
    status = getattr(response, "status_code", None)
    server = redact(getattr(exc, "server_message", None) or "", token).strip()
    said = f" (The Hub said: {server[:300]})" if server else ""
    if isinstance(exc, OfflineModeIsEnabled):
        return PublishError(
            f"Offline mode is on (HF_HUB_OFFLINE), so mmdemo may not talk to the Hub while"
            f" {action}. Turn it off, or use a dry run.{safe}"
        )
    if status == 409:
        return RepoExists(repo_id, repo_type)
    if status == 401:
        return PublishError(
            "The Hub did not accept the token (401 Unauthorized): log in again, or check"
            f" HF_TOKEN / the token you pasted.{said}{safe}",
            status=401,
        )
    if status == 403:
        owner = repo_id.split("/")[0]
        return PublishError(
            f"The token may not write to {repo_id} (403 Forbidden). It needs write access to"
            f" {owner!r}: a write token, or a Space login with the contribute-repos scope."
            f"{said}{safe}",
            status=403,
        )
    if status == 429:
        wait = response.headers.get("Retry-After") if response is not None else None
        when = f"{wait} seconds" if wait and str(wait).isdigit() else "a few minutes"
        return PublishError(
            f"The Hub is rate-limiting requests (429 Too Many Requests). Wait {when} and retry."
            f"{safe}",
            status=429,
        )
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return PublishError(
            f"The Hub does not know the {kind} repo {repo_id}, or the token cannot see it."
            f"{said}{safe}",
            status=status,
        )
    if status is not None and status >= 500:
        return PublishError(
            f"The Hub had a server error ({status}) while {action}. Try again in a few minutes."
            f"{safe}",
            status=status,
        )
    if status is not None:
        detail = redact(" ".join(str(exc).split()), token)[:400]
        return PublishError(f"The Hub refused {action} ({status}): {detail}{safe}", status=status)
    if _is_network_error(exc):
        return PublishError(
            f"Could not reach the Hub while {action} ({type(exc).__name__}): check the network"
            f" connection and retry.{safe}"
        )
    detail = redact(" ".join(str(exc).split()), token)[:400] or type(exc).__name__
    return PublishError(
        f"Something broke while {action}: {detail}. Nothing local was lost; the Hub keeps no"
        " half-finished commit, so retrying uploads everything again."
    )


# -- publishers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class UploadResult:
    url: str
    commit_url: str | None = None
    pr_url: str | None = None
    folder: Path | None = None
    """Where a dry run wrote the files."""


class Publisher(Protocol):
    """Where published files go. Implementations raise :class:`PublishError` only."""

    dry_run: bool

    def whoami(self) -> str | None: ...

    def repo_files(self, repo_id: str, repo_type: str) -> list[str] | None:
        """The repo's files, or ``None`` when it does not exist."""

    def create_repo(self, repo_id: str, repo_type: str, private: bool) -> str: ...

    def upload_folder(
        self,
        folder: Path,
        repo_id: str,
        repo_type: str,
        *,
        commit_message: str,
        create_pr: bool = False,
        replace: bool = False,
    ) -> UploadResult: ...


def repo_url(repo_id: str, repo_type: str) -> str:
    from huggingface_hub import constants

    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{constants.ENDPOINT.rstrip('/')}/{prefix}{repo_id}"


class HubPublisher:
    """Publishes through ``huggingface_hub.HfApi`` (or a stand-in with the same methods)."""

    dry_run = False

    def __init__(self, token: object, api: Any = None):
        self._token = as_secret(token)
        if api is None:
            from huggingface_hub import HfApi

            from mmdemo import __version__

            api = HfApi(library_name="mmdemo", library_version=__version__)
        self._api = api

    def __repr__(self) -> str:
        return f"HubPublisher(token={'***' if self._token else None})"

    def _write_token(self) -> str:
        if not self._token:
            raise PublishError(
                "Not logged in to the Hugging Face Hub: log in, paste a token with write access,"
                " or set HF_TOKEN (a dry run needs no token)."
            )
        return self._token.reveal()

    def _call(
        self, action: str, repo_id: str, repo_type: str, fn: Callable, /, **kwargs: Any
    ) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear PublishError
            error = translate_error(
                exc, action=action, repo_id=repo_id, repo_type=repo_type, token=self._token
            )
            log.warning("Hub call failed while %s %s: %s", action, repo_id, error)
            raise error from None

    def whoami(self) -> str | None:
        token = self._write_token()
        info = self._call("checking the login", "", "model", self._api.whoami, token=token)
        return info.get("name") if isinstance(info, dict) else None

    def repo_files(self, repo_id: str, repo_type: str) -> list[str] | None:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        token = self._token.reveal() if self._token else False
        try:
            return list(self._api.list_repo_files(repo_id, repo_type=repo_type, token=token))
        except GatedRepoError:
            return ["(gated)"]
        except RepositoryNotFoundError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (None, 401, 404):
                return None
            raise translate_error(
                exc, action="checking the repo", repo_id=repo_id, repo_type=repo_type, token=token
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise translate_error(
                exc, action="checking the repo", repo_id=repo_id, repo_type=repo_type, token=token
            ) from None

    def create_repo(self, repo_id: str, repo_type: str, private: bool) -> str:
        url = self._call(
            "creating the repo",
            repo_id,
            repo_type,
            self._api.create_repo,
            repo_id=repo_id,
            repo_type=repo_type,
            private=private,
            exist_ok=True,
            token=self._write_token(),
        )
        return str(url) if url else repo_url(repo_id, repo_type)

    def upload_folder(
        self,
        folder: Path,
        repo_id: str,
        repo_type: str,
        *,
        commit_message: str,
        create_pr: bool = False,
        replace: bool = False,
    ) -> UploadResult:
        info = self._call(
            "uploading",
            repo_id,
            repo_type,
            self._api.upload_folder,
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type=repo_type,
            commit_message=commit_message,
            create_pr=create_pr,
            delete_patterns="*" if replace else None,
            token=self._write_token(),
        )
        return UploadResult(
            url=repo_url(repo_id, repo_type),
            commit_url=getattr(info, "commit_url", None) or (str(info) if info else None),
            pr_url=getattr(info, "pr_url", None),
        )


class DryRunPublisher:
    """Writes what would be uploaded to ``out_dir/model/`` and ``out_dir/dataset/``; no network."""

    dry_run = True

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir).expanduser().resolve()

    def __repr__(self) -> str:
        return f"DryRunPublisher({str(self.out_dir)!r})"

    def folder_for(self, repo_type: str) -> Path:
        return self.out_dir / REPO_FOLDERS.get(repo_type, repo_type)

    def whoami(self) -> str | None:
        return None

    def repo_files(self, repo_id: str, repo_type: str) -> list[str] | None:
        return None  # nothing is asked; a dry run always shows a fresh repo's files

    def create_repo(self, repo_id: str, repo_type: str, private: bool) -> str:
        return repo_url(repo_id, repo_type)

    def upload_folder(
        self,
        folder: Path,
        repo_id: str,
        repo_type: str,
        *,
        commit_message: str,
        create_pr: bool = False,
        replace: bool = False,
    ) -> UploadResult:
        dest = self.folder_for(repo_type)
        if dest.exists() and any(dest.iterdir()) and not (dest / "README.md").is_file():
            raise PublishError(
                f"{dest} exists and does not look like an earlier dry run; choose another folder.",
                retryable=False,
            )
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(".git", ".cache"))
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(partial, dest)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise PublishError(f"Could not write the dry run to {dest}: {exc}") from None
        return UploadResult(url=repo_url(repo_id, repo_type), folder=dest)
