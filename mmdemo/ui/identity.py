"""Who is acting: the Space login, and the token a click publishes with.

On a Hugging Face Space (``SPACE_ID`` set) with ``hf_oauth: true``, visitors log in with
``gr.LoginButton``; a handler gets their profile and token by declaring arguments typed
``gr.OAuthProfile | None`` / ``gr.OAuthToken | None`` (Gradio fills them in, they are not event
inputs). Writing to collections or publishing there needs a logged-in visitor
(:func:`require_login`), and only the visitor's own token is used: the Space's ``HF_TOKEN``
secret, which :func:`~mmdemo.hub.publish.resolve_token` would fall back to, is never lent to
visitors.
Locally there is no login: a pasted token, else ``HF_TOKEN``, else a saved ``hf auth login``.
"""

from __future__ import annotations

import gradio as gr

from mmdemo.hub.publish import Secret, as_secret, on_space, resolve_token
from mmdemo.settings import Settings

LOCAL_AUTHOR = "local"
"""The author recorded for labels made without a login (locally)."""

NO_SPACE_LOGIN = (
    "⚠️ This Space has no Hugging Face login: add `hf_oauth: true` to its README's front matter"
    " to let visitors publish with their own account."
)


class LoginRequired(gr.Error):
    """An action that writes was attempted on a Space by a visitor who is not logged in."""


def require_login(profile: gr.OAuthProfile | None, settings: Settings) -> str | None:
    """The logged-in user's name, to record as the author of what they write.

    On a Space (``SPACE_ID`` set) writing to collections or publishing needs a logged-in user:
    without one this raises :class:`LoginRequired` (a ``gr.Error``, so a handler that lets it
    through shows it as a toast). Locally there is no login and this returns ``None``.
    Use it from any tab: give the handler a ``profile: gr.OAuthProfile | None`` argument (Gradio
    fills it in) and call ``require_login(profile, services.settings)`` first.
    """
    username = getattr(profile, "username", None) if profile is not None else None
    if on_space(settings) and not username:
        raise LoginRequired(
            "Log in with your Hugging Face account (the button above) first: on a shared Space,"
            " only logged-in users may change collections or publish."
        )
    return username or None


def label_author(settings: Settings, profile: object, author: str | None = None) -> str:
    """Who a label is saved by: the logged-in user (required on a Space), else ``author``,
    else ``"local"``. Raises :class:`LoginRequired` on a Space without a login."""
    return require_login(profile, settings) or author or LOCAL_AUTHOR


def token_for(
    settings: Settings, pasted: str | None, oauth_token: object, profile: object
) -> Secret | None:
    """The token one click publishes with: the Space login's, else pasted / HF_TOKEN / saved login.

    Raises :class:`LoginRequired` on a Space when nobody is logged in.
    """
    if on_space(settings):
        require_login(profile, settings)
        return as_secret(oauth_token)
    return resolve_token(pasted, oauth_token)


def token_hint(settings: Settings) -> str:
    """Where the token will come from (never its value), for the line under the login controls."""
    if on_space(settings):
        return (
            "Publishing uses **your own** Hugging Face login (scope `contribute-repos`: it can"
            " create repos and push to the repos it created)."
        )
    if resolve_token() is not None:
        return (
            "A token from `HF_TOKEN` or a saved `hf auth login` will be used unless you paste one."
        )
    return (
        "No token found in `HF_TOKEN` or a saved login: paste a token with write access to push."
        " A dry run needs none."
    )


def space_login_available(settings: Settings) -> bool:
    """Whether to show ``gr.LoginButton``: on a Space whose README turns on ``hf_oauth``.

    Gradio reads the Space's OAuth variables itself; without them a login button would make
    the app fail at start (and off a Space Gradio would mock the login with a local token).
    """
    from gradio import oauth, utils

    return (
        on_space(settings)
        and utils.get_space() is not None
        and getattr(oauth, "OAUTH_CLIENT_ID", None) is not None
    )
